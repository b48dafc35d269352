r"""Feedback controllers for the KL weight :math:`\beta`, in the style of optax's gradient transformations.

A schedule (:mod:`jaxvae.objectives.schedules`) fixes :math:`\beta` as a function of the step; a controller sets it
from what the model does. Each controller is a :class:`KLController` ``(init, update)`` of pure functions over a
small ``NamedTuple`` state that always has a float32 scalar ``beta``: the KL weight for the loss

.. math:: \mathcal{L} = \frac1B \sum_b \mathrm{recon}(x_b) + \beta \, \mathrm{kl}(x_b)

at the *next* step. A training step reads ``state.beta``, computes the loss and the batch means of the
reconstruction loss and the KL (nats, see :mod:`jaxvae.objectives`), and calls
``state = controller.update(state, recon, kl)``::

    ctrl = jv.controllers.pi_controller(kl_target=25.0)
    ctrl_state = ctrl.init()
    ...
    loss, out = jv.objectives.elbo(model, params, x, key, beta=ctrl_state.beta)
    ctrl_state = ctrl.update(ctrl_state, jnp.mean(out.recon), jnp.mean(out.kl))

``update`` is jittable and vmappable (states stacked on a leading axis) and uses no Python control flow on its
inputs. It does not stop gradients: pass plain (or ``jax.lax.stop_gradient``-ed) values, the controller state is
not meant to be differentiated through. Arguments are validated eagerly and raise
:class:`~jaxvae.errors.ConfigError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxvae.errors import ConfigError

__all__ = ["GECOState", "KLController", "PIState", "geco", "pi_controller"]

Array = jax.Array


class KLController(NamedTuple):
    """A KL-weight controller: ``init() -> state`` and ``update(state, recon, kl) -> state``.

    ``state.beta`` (a float32 scalar) is the KL weight to use at the next step; ``recon`` and ``kl`` are the
    batch-mean reconstruction loss and KL observed at the current step (scalars, nats).
    """

    init: Callable[[], Any]
    update: Callable[[Any, Array, Array], Any]


class GECOState(NamedTuple):
    r"""State of :func:`geco`.

    Attributes:
      beta: the KL weight :math:`1/\lambda`, float32 scalar.
      lagrange: the Lagrange multiplier :math:`\lambda`, float32 scalar.
      constraint_ma: moving average :math:`\bar C` of the constraint (nats), float32 scalar.
      count: number of updates so far, int32 scalar (the first update initialises :math:`\bar C`).
    """

    beta: Array
    lagrange: Array
    constraint_ma: Array
    count: Array


class PIState(NamedTuple):
    """State of :func:`pi_controller`.

    Attributes:
      beta: the KL weight, float32 scalar in ``[beta_min, beta_max]``.
      integral: the integral term :math:`I`, float32 scalar.
    """

    beta: Array
    integral: Array


def _real(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"`{name}` must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"`{name}` must be finite, got {value!r}.")
    if positive and value <= 0.0:
        raise ConfigError(f"`{name}` must be > 0, got {value!r}.")
    if nonnegative and value < 0.0:
        raise ConfigError(f"`{name}` must be >= 0, got {value!r}.")
    return value


def _f32(x: Any) -> Array:
    return jnp.asarray(x, jnp.float32)


def geco(tolerance: float, *, alpha: float = 0.99, step_size: float = 1e-2, lambda_init: float = 1.0,
         lambda_min: float = 1e-6, lambda_max: float = 1e6) -> KLController:
    r"""GECO: a reconstruction constraint enforced by a Lagrange multiplier (Rezende & Viola 2018, "Taming VAEs").

    The constraint is :math:`C = \mathrm{recon} - \kappa \le 0` with :math:`\kappa` = ``tolerance``, the batch-mean
    reconstruction loss (nats per example) the user accepts. Each update:

    .. math::
        C_t &= \mathrm{recon}_t - \kappa, \\
        \bar C_t &= \alpha \bar C_{t-1} + (1 - \alpha) C_t \quad (\bar C_1 = C_1), \\
        \lambda_t &= \mathrm{clip}\left(\lambda_{t-1} \exp(\nu \bar C_t),\ \lambda_{\min},\ \lambda_{\max}\right),

    with :math:`\nu` = ``step_size`` (computed in log space, so it never overflows). While the constraint is
    violated (:math:`\bar C > 0`) :math:`\lambda` grows; once it is satisfied with margin it shrinks.

    **Why** ``beta = 1 / lambda``. GECO minimises the Lagrangian :math:`\mathrm{KL} + \lambda C`. Dividing by
    :math:`\lambda > 0` gives :math:`\mathrm{recon} + \lambda^{-1} \mathrm{KL} - \kappa`: the same stationary
    points and, up to the constant :math:`\kappa` and the overall scale (to which Adam-like optimisers are
    invariant), the beta-ELBO loss with :math:`\beta = 1/\lambda`. So ``state.beta`` plugs into
    :func:`jaxvae.objectives.elbo`. (With plain SGD the two differ by the learning-rate scale :math:`\lambda`.)
    Rezende & Viola also feed :math:`\bar C` into the loss through a straight-through estimator; in the beta form
    the constraint's value does not enter the gradient, so that detail disappears.

    Args:
      tolerance: :math:`\kappa`, nats per example (same reduction as the objectives' ``recon``).
      alpha: moving-average decay in ``[0, 1)``; 0 uses the current constraint only.
      step_size: :math:`\nu > 0`; the multiplier changes by a factor :math:`e^{\nu \bar C}` per step, so scale it
        to the size of the constraint in nats.
      lambda_init: initial :math:`\lambda` (``beta = 1 / lambda_init`` at the first step).
      lambda_min, lambda_max: clipping range of :math:`\lambda`, ``0 < lambda_min <= lambda_max``.
    """
    tolerance = _real("tolerance", tolerance)
    alpha = _real("alpha", alpha, nonnegative=True)
    if alpha >= 1.0:
        raise ConfigError(f"`alpha` must be in [0, 1), got {alpha!r}.")
    step_size = _real("step_size", step_size, positive=True)
    lambda_min = _real("lambda_min", lambda_min, positive=True)
    lambda_max = _real("lambda_max", lambda_max, positive=True)
    if lambda_min > lambda_max:
        raise ConfigError(f"`lambda_min` ({lambda_min}) must be <= `lambda_max` ({lambda_max}).")
    lambda_init = _real("lambda_init", lambda_init, positive=True)
    if not lambda_min <= lambda_init <= lambda_max:
        raise ConfigError(f"`lambda_init` ({lambda_init}) must lie in [lambda_min, lambda_max] = "
                          f"[{lambda_min}, {lambda_max}].")
    log_min, log_max = math.log(lambda_min), math.log(lambda_max)

    def init() -> GECOState:
        return GECOState(beta=_f32(1.0 / lambda_init), lagrange=_f32(lambda_init), constraint_ma=_f32(0.0),
                         count=jnp.asarray(0, jnp.int32))

    def update(state: GECOState, recon: Array, kl: Array) -> GECOState:
        del kl  # GECO only constrains the reconstruction.
        constraint = _f32(recon) - tolerance
        ma = jnp.where(state.count == 0, constraint, alpha * state.constraint_ma + (1.0 - alpha) * constraint)
        log_lambda = jnp.clip(jnp.log(state.lagrange) + step_size * ma, log_min, log_max)
        return GECOState(beta=jnp.exp(-log_lambda), lagrange=jnp.exp(log_lambda), constraint_ma=_f32(ma),
                         count=state.count + 1)

    return KLController(init, update)


def pi_controller(kl_target: float, *, kp: float = 0.01, ki: float = 1e-4, beta_min: float = 0.0,
                  beta_max: float = 1.0, beta_init: float | None = None) -> KLController:
    r"""ControlVAE's non-linear PI controller (Shao et al. 2020, ICML, "ControlVAE"), with real anti-windup.

    It drives the batch-mean KL to ``kl_target`` (nats per example) by adjusting :math:`\beta`:

    .. math::
        e_t &= \mathrm{KL}^{*} - \mathrm{KL}_t, \qquad
        P_t = \frac{K_p}{1 + \exp(e_t)} = K_p \, \sigma(-e_t), \qquad
        I_t = I_{t-1} - K_i \, e_t, \\
        \beta_t &= P_t + I_t + \beta_{\min} \in [\beta_{\min}, \beta_{\max}].

    KL above target (:math:`e < 0`) raises :math:`\beta`, KL below it lowers :math:`\beta`.
    :math:`1/(1+\exp(e))` is computed as ``jax.nn.sigmoid(-e)``, finite for any error.

    **Anti-windup by back-calculation.** The integral is clamped so that the output sits exactly on the bound it
    would cross: :math:`I_t \leftarrow \mathrm{clip}(I_t,\ -P_t,\ \beta_{\max} - \beta_{\min} - P_t)`. Then
    :math:`\beta_t` needs no further clipping, :math:`I` stays in :math:`[-K_p, \beta_{\max} - \beta_{\min}]`
    however long the target is unreachable, and :math:`\beta` leaves the bound on the first step after the
    error changes sign. The alternative rule, not accumulating while saturated, can lock the output at a bound
    (the last accepted :math:`I` may already put :math:`P + I` past it for every :math:`P \ge 0`). The
    authors' released code (``Image_generation/PID.py``) guards its integrator with ``W < 0 and W >= 1``, which
    is never true, so it has no anti-windup at all.

    **Start.** ``beta_init`` defaults to ``beta_max``: training starts as a :math:`\beta_{\max}`-VAE and the
    controller lowers :math:`\beta` only as far as needed (ControlVAE's use against KL vanishing). The integral
    starts at ``beta_init - beta_min`` so the first update continues from ``beta_init`` (bumpless start; the
    proportional term adds at most ``kp``).

    Args:
      kl_target: the set point :math:`\mathrm{KL}^*`, nats per example.
      kp: :math:`K_p \ge 0`.
      ki: :math:`K_i \ge 0`.
      beta_min, beta_max: output range, ``beta_min <= beta_max`` (finite).
      beta_init: :math:`\beta` at the first step, in ``[beta_min, beta_max]``; default ``beta_max``.
    """
    kl_target = _real("kl_target", kl_target)
    kp = _real("kp", kp, nonnegative=True)
    ki = _real("ki", ki, nonnegative=True)
    beta_min = _real("beta_min", beta_min)
    beta_max = _real("beta_max", beta_max)
    if beta_min > beta_max:
        raise ConfigError(f"`beta_min` ({beta_min}) must be <= `beta_max` ({beta_max}).")
    beta_init = beta_max if beta_init is None else _real("beta_init", beta_init)
    if not beta_min <= beta_init <= beta_max:
        raise ConfigError(f"`beta_init` ({beta_init}) must lie in [beta_min, beta_max] = "
                          f"[{beta_min}, {beta_max}].")
    span = beta_max - beta_min

    def init() -> PIState:
        return PIState(beta=_f32(beta_init), integral=_f32(beta_init - beta_min))

    def update(state: PIState, recon: Array, kl: Array) -> PIState:
        del recon  # the controller only tracks the KL.
        error = kl_target - _f32(kl)
        p = kp * jax.nn.sigmoid(-error)
        integral = jnp.clip(state.integral - ki * error, -p, span - p)
        beta = jnp.clip(p + integral + beta_min, beta_min, beta_max)  # a no-op up to rounding
        return PIState(beta=_f32(beta), integral=_f32(integral))

    return KLController(init, update)
