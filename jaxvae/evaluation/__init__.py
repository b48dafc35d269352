"""Evaluation: likelihood bounds (:mod:`~jaxvae.evaluation.likelihood`), latent diagnostics, the
in-training monitor, samplers, ex-post densities, disentanglement metrics and the Fréchet proxy.

Every name loads on first use (:mod:`jaxvae._lazy`)."""

from __future__ import annotations

from jaxvae._lazy import attach

_EXPORTS = {
    "likelihood": (
        "LogLikelihoodEstimate",
        "default_sample_chunk",
        "disentanglement_metrics",
        "eval_compiler_options",
        "evaluate_elbo",
        "iwae_log_likelihood",
        "make_elbo_evaluator",
        "make_iwae_evaluator",
        "make_iwae_fn",
        "posterior_mean_fn",
    ),
}
_SUBMODULES = ("diagnostics", "disentanglement", "expost", "frechet", "likelihood", "monitor", "samplers")

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, _SUBMODULES)
