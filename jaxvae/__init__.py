"""jaxvae: train, control and diagnose Variational Autoencoders in JAX.

The public API is flat: ``import jaxvae as jv`` then ``jv.VAE``, ``jv.elbo``, ``jv.cyclical_schedule``, ...
Submodules (``jv.likelihoods``, ``jv.priors``, ``jv.objectives``, ...) hold the full set.
"""

from jaxvae import (
    aggressive,
    autoregressive,
    builders,
    chunks,
    config,
    controllers,
    data,
    diagnostics,
    discrepancy,
    disentanglement,
    distributions,
    early_stopping,
    errors,
    estimators,
    evaluate,
    flows,
    hierarchy,
    inits,
    kl,
    likelihoods,
    loop,
    model,
    nets,
    objectives,
    posteriors,
    priors,
    progress,
    regularizers,
    results,
    runs,
    samplers,
    schedules,
    sharding,
    sweep,
    topdown,
    train,
)
from jaxvae.config import Config, apply_overrides, get_preset
from jaxvae.controllers import KLController, geco, pi_controller
from jaxvae.diagnostics import (
    active_units,
    aggregate_log_density,
    latent_report,
    mutual_information,
    outlier_scores,
    prior_holes,
)
from jaxvae.distributions import (
    Bijection,
    DiagonalGaussian,
    Distribution,
    Mixture,
    TransformedDistribution,
    kl_divergence,
    register_kl,
)
from jaxvae.early_stopping import EarlyStopping
from jaxvae.errors import CheckpointError, ChecksumError, ConfigError, DataError, JaxvaeError
from jaxvae.estimators import ciwae, elbo_stl, iwae_dreg, miwae, piwae
from jaxvae.evaluate import disentanglement_metrics, iwae_log_likelihood
from jaxvae.kl import kl_diagonal_gaussians_per_dim, kl_monte_carlo, kl_standard_normal_per_dim
from jaxvae.likelihoods import (
    Bernoulli,
    Categorical256,
    ContinuousBernoulli,
    DiscretizedLogisticMixture,
    Gaussian,
    Laplace,
    Likelihood,
    bits_per_dim,
)
from jaxvae.model import VAE, Model, ModelOutput, PureModel, PureVAE, count_params, split
from jaxvae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from jaxvae.objectives import (
    Objective,
    ObjectiveOutput,
    beta_tcvae,
    capacity,
    elbo,
    free_bits,
    free_bits_kl,
    free_bits_per_group,
    info_vae,
    iwae,
    iwae_bound_from_log_weights,
    kl_decomposition,
    mmd,
)
from jaxvae.priors import LearnedGaussian, MixtureOfGaussians, Prior, StandardNormal, VampPrior
from jaxvae.runs import LoadedRun, fit, load_run
from jaxvae.samplers import fit_gmm, gmm_sample, interpolate, prior_samples, slerp, traversals
from jaxvae.schedules import (
    capacity_schedule,
    constant_schedule,
    cosine_schedule,
    cyclical_schedule,
    get_schedule,
    linear_schedule,
    sigmoid_schedule,
)
from jaxvae.sharding import make_mesh, maybe_initialize_distributed
from jaxvae.sweep import run_sweep
from jaxvae.train import TrainState, init_train_state, make_train_step

__version__ = "0.1.0"
