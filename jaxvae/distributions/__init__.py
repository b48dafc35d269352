"""The distribution interface (:mod:`~jaxvae.distributions.base`), the KL registry
(:mod:`~jaxvae.distributions.kl`) and the likelihoods of the data (:mod:`~jaxvae.distributions.likelihoods`).

Every name loads on first use (:mod:`jaxvae._lazy`)."""

from __future__ import annotations

from jaxvae._lazy import attach

_EXPORTS = {
    "base": (
        "Bijection",
        "DiagonalGaussian",
        "Distribution",
        "Mixture",
        "TransformedDistribution",
        "analytic_kl_per_dim",
        "gaussian_log_prob_per_dim",
        "has_analytic_kl",
        "kl_divergence",
        "register_kl",
    ),
}
_SUBMODULES = ("base", "kl", "likelihoods")

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, _SUBMODULES)
