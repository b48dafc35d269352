"""jaxvae: train, control and diagnose Variational Autoencoders in JAX.

The public API is flat: ``import jaxvae as jv`` then ``jv.VAE``, ``jv.elbo``, ``jv.cyclical_schedule``, ...
Submodules (``jv.likelihoods``, ``jv.priors``, ``jv.objectives``, ...) hold the full set.

Every name is imported on first use (PEP 562 ``__getattr__``), so ``import jaxvae`` and the parts of the CLI that
do not train (``jaxvae --help``, ``jaxvae presets``, ``jaxvae config show``) start without importing JAX.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

# The flat API: each name and the submodule that defines it.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "config": ("Config", "apply_overrides", "get_preset"),
    "controllers": ("KLController", "geco", "pi_controller"),
    "diagnostics": (
        "active_units", "aggregate_log_density", "latent_report", "mutual_information", "outlier_scores",
        "prior_holes"),
    "distributions": (
        "Bijection", "DiagonalGaussian", "Distribution", "Mixture", "TransformedDistribution", "kl_divergence",
        "register_kl"),
    "early_stopping": ("EarlyStopping",),
    "errors": (
        "CheckpointError", "ChecksumError", "ConfigError", "DataError", "JaxvaeError", "DiskFullError",
        "RunDirectoryBusyError", "RunFileWarning"),
    "estimators": ("ciwae", "elbo_stl", "iwae_dreg", "miwae", "piwae"),
    "evaluate": ("disentanglement_metrics", "iwae_log_likelihood"),
    "kl": ("kl_diagonal_gaussians_per_dim", "kl_monte_carlo", "kl_standard_normal_per_dim"),
    "likelihoods": (
        "Bernoulli", "Categorical256", "ContinuousBernoulli", "DiscretizedLogisticMixture", "Gaussian",
        "Laplace", "Likelihood", "bits_per_dim"),
    "model": ("VAE", "Model", "ModelOutput", "PureModel", "PureVAE", "count_params", "split"),
    "nets": ("ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"),
    "objectives": (
        "Objective", "ObjectiveOutput", "beta_tcvae", "capacity", "elbo", "free_bits", "free_bits_kl",
        "free_bits_per_group", "info_vae", "iwae", "iwae_bound_from_log_weights", "kl_decomposition", "mmd"),
    "priors": ("LearnedGaussian", "MixtureOfGaussians", "Prior", "StandardNormal", "VampPrior"),
    "runs": ("LoadedRun", "fit", "load_run"),
    "samplers": ("fit_gmm", "gmm_sample", "interpolate", "prior_samples", "slerp", "traversals"),
    "schedules": (
        "capacity_schedule", "constant_schedule", "cosine_schedule", "cyclical_schedule", "get_schedule",
        "linear_schedule", "sigmoid_schedule"),
    "sharding": ("make_mesh", "maybe_initialize_distributed"),
    "sweep": ("run_sweep",),
    "train": ("TrainState", "init_train_state", "make_train_step"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

# The submodules of the public API (any other submodule, e.g. ``jv.rundir``, also resolves on first use).
_SUBMODULES = (
    "aggressive", "autoregressive", "builders", "chunks", "config", "controllers", "data", "diagnostics",
    "discrepancy", "disentanglement", "distributions", "early_stopping", "errors", "estimators", "evaluate",
    "flows", "hierarchy", "inits", "kl", "likelihoods", "loop", "model", "nets", "nn", "objectives", "posteriors",
    "priors", "progress", "regularizers", "results", "runs", "samplers", "schedules", "sharding", "sweep",
    "topdown", "train"
)

__all__ = sorted([*_WHERE, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"jaxvae.{_WHERE[name]}"), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"jaxvae.{name}") is not None:
        value = importlib.import_module(f"jaxvae.{name}")
    else:
        raise AttributeError(f"module 'jaxvae' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
