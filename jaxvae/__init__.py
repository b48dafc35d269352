"""jaxvae: train, control and diagnose Variational Autoencoders in JAX.

The public API is flat: ``import jaxvae as jv`` then ``jv.VAE``, ``jv.elbo``, ``jv.fit``, ``jv.Program``, ...
The packages hold the full set, by concept (``jv.models``, ``jv.objectives``, ``jv.training``, ``jv.evaluation``,
``jv.distributions``, ``jv.runs``, ``jv.config``, ``jv.data``; docs/architecture.md draws their layers).

Every name is imported on first use (PEP 562 ``__getattr__``), so ``import jaxvae`` and the parts of the CLI that
do not train (``jaxvae --help``, ``jaxvae presets``, ``jaxvae config show``) start without importing JAX.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from jaxvae import _moved

__version__ = "0.1.0"

# The flat API: each name and the submodule that defines it.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "config": ("Config", "apply_overrides", "get_preset"),
    "objectives.controllers": ("KLController", "geco", "pi_controller"),
    "evaluation.diagnostics": (
        "active_units", "aggregate_log_density", "latent_report", "mutual_information", "outlier_scores",
        "prior_holes"),
    "distributions.base": (
        "Bijection", "DiagonalGaussian", "Distribution", "Mixture", "TransformedDistribution", "kl_divergence",
        "register_kl"),
    "training.early_stopping": ("EarlyStopping",),
    "errors": (
        "CheckpointError", "ChecksumError", "ConfigError", "DataError", "JaxvaeError", "DiskFullError",
        "RunDirectoryBusyError", "RunFileWarning"),
    "objectives.estimators": ("ciwae", "elbo_stl", "iwae_dreg", "miwae", "piwae"),
    "evaluation.likelihood": ("disentanglement_metrics", "iwae_log_likelihood"),
    "distributions.kl": ("kl_diagonal_gaussians_per_dim", "kl_monte_carlo", "kl_standard_normal_per_dim"),
    "distributions.likelihoods": (
        "Bernoulli", "Categorical256", "ContinuousBernoulli", "DiscretizedLogisticMixture", "Gaussian",
        "Laplace", "Likelihood", "bits_per_dim"),
    "models.protocol": ("VAE", "Model", "ModelOutput", "PureModel", "PureVAE", "count_params", "split"),
    "models.nets": ("ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"),
    "objectives.losses": (
        "Objective", "ObjectiveOutput", "beta_tcvae", "capacity", "elbo", "free_bits", "free_bits_kl",
        "free_bits_per_group", "info_vae", "iwae", "iwae_bound_from_log_weights", "kl_decomposition", "mmd"),
    "models.priors": ("LearnedGaussian", "MixtureOfGaussians", "Prior", "StandardNormal", "VampPrior"),
    "runs.run": ("LoadedRun", "fit", "load_run"),
    "evaluation.samplers": ("fit_gmm", "gmm_sample", "interpolate", "prior_samples", "slerp", "traversals"),
    "objectives.schedules": (
        "capacity_schedule", "constant_schedule", "cosine_schedule", "cyclical_schedule", "get_schedule",
        "linear_schedule", "sigmoid_schedule"),
    "sharding": ("make_mesh", "maybe_initialize_distributed"),
    "runs.sweep": ("run_sweep",),
    "training.state": ("TrainState",),
    "training.step": ("init_train_state", "make_train_step"),
    "training.program": ("Player", "Program", "Schedule", "StateUpdate"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

# The packages and modules of the public API. The flat modules of jaxvae 0.1 (``jv.kl``, ``jaxvae.training.step``,
# ...) moved into the packages and still resolve for one release (jaxvae._moved).
_SUBMODULES = (
    "builders", "cli", "config", "data", "distributions", "errors", "evaluation", "models", "objectives", "rundir",
    "runs", "sharding", "testing", "training",
)

_moved.install()

__all__ = sorted([*_WHERE, *_SUBMODULES, *_moved.MOVED])


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
