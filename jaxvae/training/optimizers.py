"""From a :class:`~jaxvae.config.Config` to an optax chain: the learning-rate schedules and optimizers declared in
:mod:`jaxvae.catalog`, clipping, spectral regularization, reduction on plateau and the parameters' moving
average."""

from __future__ import annotations

import jax
import optax

from jaxvae.catalog import (
    LR_SCHEDULES,
    OPTIMIZERS,
)
from jaxvae.config import Config
from jaxvae.objectives import regularizers, schedules
from jaxvae.training.state import ema_params

Array = jax.Array


# A learning-rate schedule's builder: (cfg, total steps, steps per epoch) -> optax schedule.
LR_SCHEDULES.implement("constant")(lambda cfg, total, spe: optax.constant_schedule(cfg.optimizer.learning_rate))
LR_SCHEDULES.implement("cosine")(
    lambda cfg, total, spe: optax.cosine_decay_schedule(cfg.optimizer.learning_rate, max(total, 1)))
LR_SCHEDULES.implement("warmup_cosine")(lambda cfg, total, spe: optax.warmup_cosine_decay_schedule(
    0.0, cfg.optimizer.learning_rate, cfg.optimizer.warmup_steps, max(total, 1)))
LR_SCHEDULES.implement("iwae")(lambda cfg, total, spe: schedules.iwae_learning_rate_schedule(
    cfg.optimizer.learning_rate, spe))
LR_SCHEDULES.implement("multistep")(lambda cfg, total, spe: schedules.multistep_learning_rate_schedule(
    cfg.optimizer.learning_rate, cfg.optimizer.milestones, cfg.optimizer.milestone_factor, spe))

OPTIMIZERS.implement("adam")(lambda cfg, lr: optax.adam(lr, b1=cfg.optimizer.b1, b2=cfg.optimizer.b2,
                                                       eps=cfg.optimizer.eps))
OPTIMIZERS.implement("adamax")(lambda cfg, lr: optax.adamax(lr, b1=cfg.optimizer.b1, b2=cfg.optimizer.b2,
                                                           eps=cfg.optimizer.eps))
OPTIMIZERS.implement("adamw")(lambda cfg, lr: optax.adamw(lr, b1=cfg.optimizer.b1, b2=cfg.optimizer.b2,
                                                         eps=cfg.optimizer.eps,
                                                         weight_decay=cfg.optimizer.weight_decay))


def learning_rate_schedule(cfg: Config, total_steps: int, steps_per_epoch: int | None = None) -> optax.Schedule:
    """``optimizer.schedule`` (:data:`LR_SCHEDULES`) over ``total_steps`` (``steps_per_epoch``: for schedules
    defined in epochs; default: ``total_steps / train.epochs``)."""
    return LR_SCHEDULES[cfg.optimizer.schedule](cfg, total_steps, _epoch_steps(cfg, total_steps, steps_per_epoch))


def _epoch_steps(cfg: Config, total_steps: int, steps_per_epoch: int | None) -> int:
    if steps_per_epoch is not None:
        return steps_per_epoch
    return max(1, total_steps // max(cfg.train.epochs, 1))


def skip_threshold(cfg: Config) -> float | None:
    """``optimizer.skip_threshold`` for :func:`jaxvae.training.step.make_train_step` (``None`` when 0:
    disabled)."""
    return cfg.optimizer.skip_threshold or None


def build_optimizer(cfg: Config, total_steps: int, steps_per_epoch: int | None = None
                    ) -> optax.GradientTransformation:
    """``optimizer.name`` (:data:`OPTIMIZERS`) with its learning-rate schedule, after NVAE's spectral
    regularization (:func:`jaxvae.objectives.regularizers.spectral_regularization`,
    ``optimizer.spectral_reg.weight``) and global-norm clipping when set, followed by the reduction on plateau
    (``optimizer.plateau``, which reads the training loss the train step passes as ``value``) and the parameters'
    moving average (:func:`jaxvae.training.step.ema_params`) when set. ``steps_per_epoch`` (default ``total_steps /
    train.epochs``) sizes what is defined in epochs."""
    o = cfg.optimizer
    spe = _epoch_steps(cfg, total_steps, steps_per_epoch)
    opt = OPTIMIZERS[o.name](cfg, learning_rate_schedule(cfg, total_steps, spe))
    opt = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), opt) if o.grad_clip_norm > 0 else opt
    sr = o.spectral_reg
    if sr.weight > 0:
        weight = regularizers.spectral_weight_schedule(sr.weight, sr.init_weight, sr.warmup_steps)
        opt = optax.chain(regularizers.spectral_regularization(weight, power_iterations=sr.power_iterations), opt)
    pl = o.plateau
    if pl.patience > 0:  # optax counts in accumulated values: one per epoch of training losses
        opt = optax.chain(opt, optax.contrib.reduce_on_plateau(
            factor=pl.factor, patience=pl.patience, rtol=pl.rtol, cooldown=pl.cooldown, accumulation_size=spe,
            min_scale=pl.min_scale))
    return optax.chain(opt, ema_params(o.ema_decay)) if o.ema_decay > 0 else opt
