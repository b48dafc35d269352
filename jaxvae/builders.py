"""From a :class:`~jaxvae.config.Config` to the pure pieces: model, optimizer, objective.

Each builder is a small pure function of the config (plus what only the data knows: the event shape, the number
of steps), so the training loop contains no construction logic and a researcher can reuse any piece alone.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxvae import controllers, likelihoods, objectives, priors, schedules
from jaxvae.config import Config
from jaxvae.errors import ConfigError
from jaxvae.model import VAE, Model, PureModel
from jaxvae.objectives import Objective

Array = jax.Array


# ------------------------------------------------------------------------------------------------- model

def build_likelihood(cfg: Config) -> likelihoods.Likelihood:
    m = cfg.model
    name = m.likelihood
    if name in ("gaussian", "laplace"):
        scale: float | str = m.likelihood_scale
        try:
            scale = float(scale)
        except ValueError:
            pass
        return likelihoods.get(name, **({"sigma": scale} if name == "gaussian" else {"scale": scale}))
    if name == "discretized_logistic_mixture":
        return likelihoods.get(name, num_mixtures=m.num_mixtures)
    return likelihoods.get(name)


# A model builder is ``(event_shape, latent_dim, likelihood, rngs) -> Model``: the signature of user builders
# given as `model.network=MODULE:FUNCTION` or `jv.fit(..., model=builder)`.
ModelBuilder = Callable[..., Model]

# Built-in priors and networks: name -> constructor. Adding one here adds it to `model.prior` / `model.network`
# (the config validates against these tables).
PRIORS: dict[str, Callable[[Config, tuple[int, ...], nnx.Rngs], priors.Prior]] = {
    "standard_normal": lambda cfg, event_shape, rngs: priors.StandardNormal(cfg.model.latent_dim),
    "learned_gaussian": lambda cfg, event_shape, rngs: priors.LearnedGaussian(cfg.model.latent_dim),
    "mixture": lambda cfg, event_shape, rngs: priors.MixtureOfGaussians(
        cfg.model.latent_dim, cfg.model.prior_components, rngs=rngs),
    "vamp": lambda cfg, event_shape, rngs: priors.VampPrior(
        cfg.model.latent_dim, cfg.model.prior_components, event_shape,
        init_mean=127.5 if cfg.data.scale == "uint8" else 0.5,
        init_scale=0.05 * (255.0 if cfg.data.scale == "uint8" else 1.0), rngs=rngs),
}


def _mlp(cfg: Config, event_shape, likelihood, prior, rngs) -> VAE:
    m = cfg.model
    return VAE.mlp(event_shape, m.latent_dim, likelihood, hidden=m.hidden, activation=m.activation, prior=prior,
                   rngs=rngs)


def _conv(cfg: Config, event_shape, likelihood, prior, rngs) -> VAE:
    m = cfg.model
    if len(event_shape) != 3 or event_shape[0] % 4 or event_shape[1] % 4:
        raise ConfigError(f"model.network=conv needs images (H, W, C) with H and W divisible by 4; the data has "
                          f"event shape {event_shape}. Use model.network=mlp.")
    return VAE.conv(event_shape, m.latent_dim, likelihood, channels=m.channels, hidden=m.conv_hidden,
                    activation=m.activation, conv_impl=m.conv_impl, prior=prior, rngs=rngs)


NETWORKS: dict[str, Callable[..., VAE]] = {"mlp": _mlp, "conv": _conv}


def is_builder_reference(network: str) -> bool:
    """Whether ``model.network`` names a user builder ``MODULE:FUNCTION`` rather than a built-in network."""
    return ":" in network


def builder_reference(builder: ModelBuilder) -> str:
    """``"MODULE:QUALNAME"`` of a builder function, as recorded in ``config.json``."""
    return f"{builder.__module__}:{builder.__qualname__}"


def reference_is_importable(builder: ModelBuilder) -> bool:
    """Whether :func:`resolve_builder` of the builder's reference finds this very function again (not true for
    lambdas, local functions or functions defined in ``__main__``)."""
    try:
        return resolve_builder(builder_reference(builder)) is builder
    except ConfigError:
        return False


def resolve_builder(reference: str) -> ModelBuilder:
    """Imports the builder named ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted, e.g. ``Class.method``) from
    the working directory or ``PYTHONPATH``; a missing module or function is a :class:`ConfigError`."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model.network={reference!r}: a user model is given as MODULE:FUNCTION, e.g. "
                          "model.network=mymodels:build (mymodels.py in the working directory or on PYTHONPATH).")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # the console script does not put the working directory on the path
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        path = module_name.replace(".", "/")
        raise ConfigError(f"model.network={reference!r}: cannot import module {module_name!r} ({e}). Run from "
                          f"the folder that holds {path}.py or add it to PYTHONPATH.") from None
    if "<" in attr:
        raise ConfigError(f"model.network={reference!r} was a lambda or a local function, which cannot be "
                          "imported again: reopen the run from Python with jv.load_run(workdir, model=builder), "
                          "or define the builder at the top level of a module.")
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model.network={reference!r}: module {module_name!r} ({module.__file__}) has no "
                              f"{attr!r}; it may have been renamed or removed since the run was created.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model.network={reference!r} is a {type(obj).__name__}, not a function "
                          "(event_shape, latent_dim, likelihood, rngs) -> model.")
    return obj


def model_builder(cfg: Config, event_shape: tuple[int, ...], builder: ModelBuilder | None = None
                  ) -> Callable[[nnx.Rngs], Model]:
    """A function ``rngs -> Model`` for the configured architecture and data shape.

    ``builder`` (a user function ``(event_shape, latent_dim, likelihood, rngs) -> Model``) takes precedence;
    otherwise ``model.network`` is a built-in name (:data:`NETWORKS`, with ``model.prior`` from :data:`PRIORS`)
    or a ``MODULE:FUNCTION`` reference to such a function.
    """
    m = cfg.model
    likelihood = build_likelihood(cfg)
    event_shape = tuple(event_shape)
    if builder is None and is_builder_reference(m.network):
        builder = resolve_builder(m.network)
    if builder is not None:
        user = builder
        return lambda rngs: user(event_shape, m.latent_dim, likelihood, rngs)
    network = NETWORKS[m.network]
    make_prior = PRIORS[m.prior]
    return lambda rngs: network(cfg, event_shape, likelihood, make_prior(cfg, event_shape, rngs), rngs)


def build_model(cfg: Config, event_shape: tuple[int, ...], builder: ModelBuilder | None = None) -> PureModel:
    """The pure model for ``cfg`` and the data's event shape (no parameters allocated); see
    :func:`model_builder`."""
    return PureModel.from_builder(model_builder(cfg, tuple(event_shape), builder))


# --------------------------------------------------------------------------------------------- optimizer

def learning_rate_schedule(cfg: Config, total_steps: int) -> optax.Schedule:
    o = cfg.optimizer
    if o.schedule == "constant":
        return optax.constant_schedule(o.learning_rate)
    if o.schedule == "cosine":
        return optax.cosine_decay_schedule(o.learning_rate, max(total_steps, 1))
    return optax.warmup_cosine_decay_schedule(0.0, o.learning_rate, o.warmup_steps, max(total_steps, 1))


def build_optimizer(cfg: Config, total_steps: int) -> optax.GradientTransformation:
    """Adam/AdamW with the configured learning-rate schedule, after optional global-norm clipping."""
    o = cfg.optimizer
    lr = learning_rate_schedule(cfg, total_steps)
    if o.name == "adam":
        opt = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
    else:
        opt = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
    return optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), opt) if o.grad_clip_norm > 0 else opt


# --------------------------------------------------------------------------------------------- objective

def beta_schedule(cfg: Config, total_steps: int) -> optax.Schedule:
    ob = cfg.objective
    if ob.beta_schedule == "constant":
        return schedules.constant_schedule(ob.beta)
    if ob.beta_schedule == "cyclical":
        return schedules.cyclical_schedule(total_steps, num_cycles=ob.num_cycles, ratio=ob.cycle_ratio,
                                           init_value=ob.beta_start, end_value=ob.beta)
    factory = {"linear": schedules.linear_schedule, "sigmoid": schedules.sigmoid_schedule,
               "cosine": schedules.cosine_schedule}[ob.beta_schedule]
    if ob.warmup_steps <= 0:
        raise ConfigError(f"objective.beta_schedule={ob.beta_schedule} needs objective.warmup_steps > 0 "
                          "(the length of the ramp in steps).")
    return factory(init_value=ob.beta_start, end_value=ob.beta, transition_steps=ob.warmup_steps)


def build_controller(cfg: Config) -> controllers.KLController | None:
    """The configured KL controller (GECO or PI), or ``None`` when beta follows ``objective.beta_schedule``."""
    ob = cfg.objective
    if ob.controller == "geco":
        return controllers.geco(ob.geco_tolerance, alpha=ob.geco_alpha, step_size=ob.geco_step_size)
    if ob.controller == "pi":
        return controllers.pi_controller(ob.kl_target, kp=ob.pi_kp, ki=ob.pi_ki, beta_min=ob.beta_start,
                                         beta_max=ob.beta)
    return None


def _f32(value: Any) -> Array:
    return jnp.asarray(value, jnp.float32)


def build_objective(cfg: Config, model: PureModel, total_steps: int, *, dataset_size: int | None = None
                    ) -> Objective:
    """The configured objective as an :class:`Objective`.

    ``dataset_size`` (the number of training examples) is needed by beta-TCVAE's minibatch-weighted sampling.
    """
    ob = cfg.objective
    beta = beta_schedule(cfg, total_steps)
    controller = build_controller(cfg)
    k = ob.num_samples

    if ob.name == "elbo":
        hyper = lambda step: {"beta": beta(step)}
        loss = lambda params, state, x, key, step, hp: objectives.elbo(
            model, params, x, key, beta=hp["beta"], num_samples=k, analytic_kl=ob.analytic_kl)
    elif ob.name == "iwae":
        hyper = lambda step: {}
        loss = lambda params, state, x, key, step, hp: objectives.iwae(model, params, x, key, num_samples=k)
    elif ob.name == "free_bits":
        hyper = lambda step: {"beta": beta(step), "free_bits": _f32(ob.free_bits)}
        loss = lambda params, state, x, key, step, hp: objectives.free_bits(
            model, params, x, key, threshold=hp["free_bits"], beta=hp["beta"], group_size=ob.free_bits_group,
            num_samples=k)
    elif ob.name == "capacity":
        capacity = schedules.capacity_schedule(ob.capacity, ob.capacity_steps)
        hyper = lambda step: {"capacity": capacity(step), "gamma": _f32(ob.gamma)}
        loss = lambda params, state, x, key, step, hp: objectives.capacity(
            model, params, x, key, capacity=hp["capacity"], gamma=hp["gamma"], num_samples=k,
            analytic_kl=ob.analytic_kl)
    elif ob.name == "beta_tcvae":
        if not dataset_size:
            raise ValueError("beta_tcvae needs dataset_size (the number of training examples).")
        hyper = lambda step: {"beta": beta(step), "tc_alpha": _f32(ob.tc_alpha), "tc_gamma": _f32(ob.tc_gamma)}
        loss = lambda params, state, x, key, step, hp: objectives.beta_tcvae(
            model, params, x, key, dataset_size=dataset_size, alpha=hp["tc_alpha"], beta=hp["beta"],
            gamma=hp["tc_gamma"], num_samples=k)
    else:
        hyper = lambda step: {"mmd_alpha": _f32(ob.mmd_alpha), "mmd_lambda": _f32(ob.mmd_lambda)}
        loss = lambda params, state, x, key, step, hp: objectives.info_vae(
            model, params, x, key, alpha=hp["mmd_alpha"], lambda_=hp["mmd_lambda"], kernel=ob.mmd_kernel,
            num_samples=k)

    if controller is None:
        return Objective(init=lambda params: {}, hyper=hyper, loss=loss,
                         update=lambda state, out, step, hp: state)

    # A controller owns beta: it is read from the controller state, and updated from the step's batch means.
    def controlled_loss(params, state, x, key, step, hp):
        return loss(params, state, x, key, step, {**hp, "beta": state.beta})

    def update(state, out, step, hp):
        return controller.update(state, jnp.mean(out.recon), jnp.mean(out.kl))

    scheduled = lambda step: {k: v for k, v in hyper(step).items() if k != "beta"}
    return Objective(init=lambda params: controller.init(), hyper=scheduled, loss=controlled_loss, update=update)
