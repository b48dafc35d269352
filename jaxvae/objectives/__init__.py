"""Training objectives: the bounds and their regularized forms (:mod:`~jaxvae.objectives.losses`), the
IWAE-family estimators, KL-weight schedules, KL controllers, gradient regularizers, and the factory from a
config to an objective.

Every name loads on first use (:mod:`jaxvae._lazy`)."""

from __future__ import annotations

from jaxvae._lazy import attach

_EXPORTS = {
    "losses": (
        "KLDecomposition",
        "Objective",
        "ObjectiveOutput",
        "beta_tcvae",
        "capacity",
        "elbo",
        "elbo_terms",
        "free_bits",
        "free_bits_kl",
        "free_bits_per_group",
        "info_vae",
        "iwae",
        "iwae_bound_from_log_weights",
        "kl_balancing_coefficients",
        "kl_decomposition",
        "mmd",
    ),
}
_SUBMODULES = ("controllers", "discrepancy", "estimators", "factory", "losses", "regularizers", "schedules")

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, _SUBMODULES)
