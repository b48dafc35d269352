"""From a :class:`~jaxvae.config.Config` to the pure pieces: model, optimizer, objective.

Each builder is a small pure function of the config (plus what only the data knows: the event shape, the number
of steps), so the training loop contains no construction logic and a researcher can reuse any piece alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax
from flax import nnx

from jaxvae import likelihoods, objectives, priors, schedules
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
                        activation=m.activation, prior=prior, rngs=rngs)

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
    """A training objective: ``init(params) -> state`` and
    ``loss(params, state, x, key, step) -> (loss, ObjectiveOutput)`` and
    ``update(state, output, step) -> state`` (for stateful KL controllers; identity for the others).

    The state lives in the :class:`~jaxvae.train.TrainState`, so it is checkpointed and resumed.
    """

    init: Callable[[Params], Any]
    loss: Callable[[Params, Any, Array, Array, Array], tuple[Array, ObjectiveOutput]]
    update: Callable[[Any, ObjectiveOutput, Array], Any]


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


def build_objective(cfg: Config, model: PureVAE, total_steps: int) -> Objective:
    """The configured objective as an :class:`Objective` (beta / capacity follow their schedules)."""
    ob = cfg.objective
    beta = beta_schedule(cfg, total_steps)

    if ob.name == "elbo":
        def loss(params, state, x, key, step):
            return objectives.elbo(model, params, x, key, beta=beta(step), num_samples=ob.num_samples,
                                   analytic_kl=ob.analytic_kl)
    elif ob.name == "iwae":
        def loss(params, state, x, key, step):
            return objectives.iwae(model, params, x, key, num_samples=ob.num_samples)
    elif ob.name == "free_bits":
        def loss(params, state, x, key, step):
            return objectives.free_bits(model, params, x, key, threshold=ob.free_bits, beta=beta(step),
                                        group_size=ob.free_bits_group, num_samples=ob.num_samples)
    else:
        capacity = schedules.capacity_schedule(ob.capacity, ob.capacity_steps)

        def loss(params, state, x, key, step):
            return objectives.capacity(model, params, x, key, capacity=capacity(step), gamma=ob.gamma,
                                       num_samples=ob.num_samples, analytic_kl=ob.analytic_kl)

    return Objective(init=lambda params: {}, loss=loss, update=lambda state, out, step: state)
