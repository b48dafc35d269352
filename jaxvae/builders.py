"""From a :class:`~jaxvae.config.Config` to the pure pieces: model, optimizer, objective.

Each builder is a small pure function of the config (plus what only the data knows: the event shape, the number
of steps), so the training loop contains no construction logic and a researcher can reuse any piece alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxvae import controllers, likelihoods, objectives, priors, schedules
from jaxvae.config import Config
from jaxvae.errors import ConfigError
from jaxvae.model import VAE, Params, PureVAE
from jaxvae.objectives import ObjectiveOutput

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


def vae_builder(cfg: Config, event_shape: tuple[int, ...]) -> Callable[[nnx.Rngs], VAE]:
    """A function ``rngs -> VAE`` for the configured architecture and data shape."""
    m = cfg.model
    likelihood = build_likelihood(cfg)
    if m.network == "conv" and (len(event_shape) != 3 or event_shape[0] % 4 or event_shape[1] % 4):
        raise ConfigError(f"model.network=conv needs images (H, W, C) with H and W divisible by 4; the data has "
                          f"event shape {event_shape}. Use model.network=mlp.")

    def build(rngs: nnx.Rngs) -> VAE:
        if m.prior == "standard_normal":
            prior = priors.StandardNormal(m.latent_dim)
        elif m.prior == "learned_gaussian":
            prior = priors.LearnedGaussian(m.latent_dim)
        elif m.prior == "mixture":
            prior = priors.MixtureOfGaussians(m.latent_dim, m.prior_components, rngs=rngs)
        else:
            init_mean = 127.5 if cfg.data.scale == "uint8" else 0.5
            prior = priors.VampPrior(m.latent_dim, m.prior_components, event_shape, init_mean=init_mean,
                                     init_scale=0.05 * (255.0 if cfg.data.scale == "uint8" else 1.0), rngs=rngs)
        if m.network == "mlp":
            return VAE.mlp(event_shape, m.latent_dim, likelihood, hidden=m.hidden, activation=m.activation,
                           prior=prior, rngs=rngs)
        return VAE.conv(event_shape, m.latent_dim, likelihood, channels=m.channels, hidden=m.conv_hidden,
                        activation=m.activation, conv_impl=m.conv_impl, prior=prior, rngs=rngs)

    return build


def build_model(cfg: Config, event_shape: tuple[int, ...]) -> PureVAE:
    """The pure VAE for ``cfg`` and the data's event shape (no parameters allocated)."""
    return PureVAE.from_builder(vae_builder(cfg, tuple(event_shape)))


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

class Objective(NamedTuple):
    """A training objective as pure functions (optax style); its state lives in the TrainState.

    * ``init(params) -> state``: objective / KL-controller state (``{}`` for stateless objectives).
    * ``hyper(step) -> {name: scalar}``: the scheduled weights at ``step`` (beta, capacity, free bits, ...).
      Kept apart from ``loss`` so that a sweep can stack the values of many models (``[N]`` each) and ``vmap``
      one loss over them: models in a sweep may differ in anything that only changes these numbers.
    * ``loss(params, state, x, key, step, hyper) -> (loss, ObjectiveOutput)``.
    * ``update(state, output, step, hyper) -> state``: the controller update after each step.
    """

    init: Callable[[Params], Any]
    hyper: Callable[[Array], dict[str, Array]]
    loss: Callable[..., tuple[Array, ObjectiveOutput]]
    update: Callable[..., Any]


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


def build_objective(cfg: Config, model: PureVAE, total_steps: int, *, dataset_size: int | None = None
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
