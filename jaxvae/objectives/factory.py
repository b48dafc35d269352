"""From a :class:`~jaxvae.config.Config` to an :class:`~jaxvae.objectives.losses.Objective`: the factories of the
objectives, KL-weight schedules and KL controllers declared in :mod:`jaxvae.catalog`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxvae.catalog import (
    BETA_SCHEDULES,
    CONTROLLERS,
    OBJECTIVES,
)
from jaxvae.config import Config
from jaxvae.errors import ConfigError
from jaxvae.models.protocol import PureModel
from jaxvae.objectives import controllers, estimators, schedules
from jaxvae.objectives import losses as objectives
from jaxvae.objectives.losses import Objective

Array = jax.Array


BETA_SCHEDULES.implement("constant")(lambda cfg, total: schedules.constant_schedule(cfg.objective.beta))
BETA_SCHEDULES.implement("cyclical")(lambda cfg, total: schedules.cyclical_schedule(
    total, num_cycles=cfg.objective.num_cycles, ratio=cfg.objective.cycle_ratio,
    init_value=cfg.objective.beta_start, end_value=cfg.objective.beta))


def _ramp(factory: Callable[..., optax.Schedule]) -> Callable[[Config, int], optax.Schedule]:
    def build(cfg: Config, total: int) -> optax.Schedule:
        ob = cfg.objective
        if ob.warmup_steps <= 0:
            raise ConfigError(f"objective.beta_schedule={ob.beta_schedule} needs objective.warmup_steps > 0 "
                              "(the length of the ramp in steps).")
        return factory(init_value=ob.beta_start, end_value=ob.beta, transition_steps=ob.warmup_steps)

    return build


BETA_SCHEDULES.implement("linear")(_ramp(schedules.linear_schedule))
BETA_SCHEDULES.implement("sigmoid")(_ramp(schedules.sigmoid_schedule))
BETA_SCHEDULES.implement("cosine")(_ramp(schedules.cosine_schedule))


def beta_schedule(cfg: Config, total_steps: int) -> optax.Schedule:
    """``objective.beta_schedule`` (:data:`BETA_SCHEDULES`) over ``total_steps``."""
    return BETA_SCHEDULES[cfg.objective.beta_schedule](cfg, total_steps)


CONTROLLERS.implement("none")(lambda cfg: None)
CONTROLLERS.implement("geco")(lambda cfg: controllers.geco(
    cfg.objective.geco.tolerance, alpha=cfg.objective.geco.alpha, step_size=cfg.objective.geco.step_size))
CONTROLLERS.implement("pi")(lambda cfg: controllers.pi_controller(
    cfg.objective.pi.kl_target, kp=cfg.objective.pi.kp, ki=cfg.objective.pi.ki, beta_min=cfg.objective.beta_start,
    beta_max=cfg.objective.beta))


def build_controller(cfg: Config) -> controllers.KLController | None:
    """The configured KL controller (:data:`CONTROLLERS`), or ``None`` when beta follows
    ``objective.beta_schedule``."""
    return CONTROLLERS[cfg.objective.controller](cfg)


def _f32(value: Any) -> Array:
    return jnp.asarray(value, jnp.float32)


class ObjectiveParts(NamedTuple):
    """What an objective's builder returns: the per-step traced weights and the loss that reads them."""

    hyper: Callable[[Array], dict[str, Array]]  # step -> {name: weight}
    loss: Callable[..., tuple[Array, objectives.ObjectiveOutput]]  # (params, state, x, key, step, hyper)


class ObjectiveContext(NamedTuple):
    """What an objective's builder may use besides the config."""

    model: PureModel
    beta: optax.Schedule  # objective.beta_schedule
    num_samples: int
    dataset_size: int | None


# An objective's builder: (cfg, context) -> ObjectiveParts. `sweepable` names the settings (keys under
# `objective.`) that only change the traced weights of `hyper`, so models that differ in them share a program.


@OBJECTIVES.implement("elbo")
def _elbo(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The (beta-weighted) ELBO (Kingma & Welling 2014; Higgins et al. 2017)."""
    return ObjectiveParts(lambda step: {"beta": c.beta(step)},
                          lambda params, state, x, key, step, hp: objectives.elbo(
                              c.model, params, x, key, beta=hp["beta"], num_samples=c.num_samples,
                              analytic_kl=cfg.objective.analytic_kl, kl_balance=cfg.objective.kl_balance))


@OBJECTIVES.implement("iwae")
def _iwae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The importance-weighted bound with objective.num_samples samples (Burda et al. 2016)."""
    return ObjectiveParts(lambda step: {}, lambda params, state, x, key, step, hp: objectives.iwae(
        c.model, params, x, key, num_samples=c.num_samples))


@OBJECTIVES.implement("free_bits")
def _free_bits(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The ELBO with a KL floor per group of dimensions (Kingma et al. 2016)."""
    fb = cfg.objective.free_bits
    if fb.per_layer:  # one floor per latent group (the layers of a hierarchy)
        return ObjectiveParts(lambda step: {"beta": c.beta(step), "free_bits": _f32(fb.nats)},
                              lambda params, state, x, key, step, hp: objectives.free_bits_per_group(
                                  c.model, params, x, key, threshold=hp["free_bits"], beta=hp["beta"],
                                  num_samples=c.num_samples))
    return ObjectiveParts(lambda step: {"beta": c.beta(step), "free_bits": _f32(fb.nats)},
                          lambda params, state, x, key, step, hp: objectives.free_bits(
                              c.model, params, x, key, threshold=hp["free_bits"], beta=hp["beta"],
                              group_size=fb.group, num_samples=c.num_samples))


@OBJECTIVES.implement("capacity")
def _capacity(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """gamma |KL - C(t)| with a growing capacity C (Burgess et al. 2018)."""
    cap = cfg.objective.capacity
    capacity = schedules.capacity_schedule(cap.nats, cap.steps)
    return ObjectiveParts(lambda step: {"capacity": capacity(step), "gamma": _f32(cap.gamma)},
                          lambda params, state, x, key, step, hp: objectives.capacity(
                              c.model, params, x, key, capacity=hp["capacity"], gamma=hp["gamma"],
                              num_samples=c.num_samples, analytic_kl=cfg.objective.analytic_kl))


@OBJECTIVES.implement("beta_tcvae")
def _beta_tcvae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The KL decomposed into index-code MI, total correlation and dimension-wise KL (Chen et al. 2018)."""
    tc = cfg.objective.beta_tcvae
    if not c.dataset_size:
        raise ValueError("beta_tcvae needs dataset_size (the number of training examples).")
    return ObjectiveParts(
        lambda step: {"beta": c.beta(step), "tc_alpha": _f32(tc.alpha), "tc_gamma": _f32(tc.gamma)},
        lambda params, state, x, key, step, hp: objectives.beta_tcvae(
            c.model, params, x, key, dataset_size=c.dataset_size, alpha=hp["tc_alpha"], beta=hp["beta"],
            gamma=hp["tc_gamma"], num_samples=c.num_samples))


@OBJECTIVES.implement("info_vae")
def _info_vae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The InfoVAE / MMD-VAE objective (Zhao et al. 2019)."""
    iv = cfg.objective.info_vae
    return ObjectiveParts(lambda step: {"mmd_alpha": _f32(iv.alpha), "mmd_lambda": _f32(iv.mmd_weight)},
                          lambda params, state, x, key, step, hp: objectives.info_vae(
                              c.model, params, x, key, alpha=hp["mmd_alpha"], lambda_=hp["mmd_lambda"],
                              kernel=iv.kernel, num_samples=c.num_samples))


@OBJECTIVES.implement("miwae")
def _miwae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """MIWAE(M, K): the mean of M IWAE bounds of K = objective.num_samples samples (Rainforth et al. 2018)."""
    return ObjectiveParts(lambda step: {}, lambda params, state, x, key, step, hp: estimators.miwae(
        c.model, params, x, key, num_samples=c.num_samples, outer=cfg.objective.miwae.outer))


@OBJECTIVES.implement("ciwae")
def _ciwae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """CIWAE(beta): beta ELBO + (1 - beta) IWAE on the same samples (Rainforth et al. 2018)."""
    return ObjectiveParts(lambda step: {"ciwae_beta": _f32(cfg.objective.ciwae.beta)},
                          lambda params, state, x, key, step, hp: estimators.ciwae(
                              c.model, params, x, key, num_samples=c.num_samples, beta=hp["ciwae_beta"]))


@OBJECTIVES.implement("piwae")
def _piwae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """PIWAE: IWAE for the generative network, MIWAE(M, K) for the inference network (Rainforth et al. 2018)."""
    return ObjectiveParts(lambda step: {}, lambda params, state, x, key, step, hp: estimators.piwae(
        c.model, params, x, key, num_samples=c.num_samples, outer=cfg.objective.piwae.outer))


@OBJECTIVES.implement("iwae_dreg")
def _iwae_dreg(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """IWAE with the doubly reparameterized gradient (Tucker et al. 2019)."""
    return ObjectiveParts(lambda step: {}, lambda params, state, x, key, step, hp: estimators.iwae_dreg(
        c.model, params, x, key, num_samples=c.num_samples))


@OBJECTIVES.implement("elbo_stl")
def _elbo_stl(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The (beta-weighted) Monte Carlo ELBO with the sticking-the-landing gradient (Roeder et al. 2017)."""
    return ObjectiveParts(lambda step: {"beta": c.beta(step)},
                          lambda params, state, x, key, step, hp: estimators.elbo_stl(
                              c.model, params, x, key, beta=hp["beta"], num_samples=c.num_samples))


def build_objective(cfg: Config, model: PureModel, total_steps: int, *, dataset_size: int | None = None
                    ) -> Objective:
    """The configured objective (:data:`OBJECTIVES`) as an :class:`Objective`, with its controller
    (:data:`CONTROLLERS`) if one is set.

    ``dataset_size`` (the number of training examples) is needed by beta-TCVAE's minibatch-weighted sampling.
    """
    ob = cfg.objective
    model = model.training()  # an objective trains: word dropout and dropout on (same parameters)
    parts = OBJECTIVES[ob.name](cfg, ObjectiveContext(model, beta_schedule(cfg, total_steps), ob.num_samples,
                                                      dataset_size))
    hyper, loss = parts.hyper, parts.loss
    controller = build_controller(cfg)
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
