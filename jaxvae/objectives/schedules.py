r"""Schedules for the KL weight :math:`\beta` and the capacity target :math:`C`.

Every factory returns an :data:`optax.Schedule`: a pure function ``step -> value`` that is jittable, accepts a
Python int or a (traced) integer array and returns a float32 scalar. They therefore compose with optax's own
combinators, e.g. ``optax.join_schedules([cyclical_schedule(10_000), constant_schedule(1.0)], [10_000])``.

Conventions: steps are counted from 0 (like optax's update counts). A schedule with ``transition_steps <= 0`` is
held at ``init_value`` forever, as in :func:`optax.linear_schedule`. Ramps hit ``init_value`` and ``end_value``
exactly at their ends and are monotone between them. Arguments are validated eagerly, raising
:class:`~jaxvae.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import itertools
import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxvae.errors import ConfigError

__all__ = [
    "capacity_schedule",
    "constant_schedule",
    "cosine_schedule",
    "cyclical_schedule",
    "get_schedule",
    "iwae_learning_rate_schedule",
    "linear_schedule",
    "sigmoid_schedule",
]

_Shape = Callable[[jax.Array], jax.Array]  # maps progress t in [0, 1] to a weight in [0, 1], f(0)=0, f(1)=1


# ----------------------------------------------------------------------------------------------------- validation


def _int(name: str, value, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"`{name}` must be an integer, got the bool {value!r}.")
    try:
        value = operator.index(value)
    except TypeError:
        raise ConfigError(f"`{name}` must be an integer, got {value!r} of type {type(value).__name__}.") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"`{name}` must be >= {minimum}, got {value}.")
    return value


def _real(name: str, value) -> None:
    """Checks Python numbers only; arrays are passed through untouched (they may be traced)."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise ConfigError(f"`{name}` must be a number, got {value!r}.")
    if isinstance(value, numbers.Real) and not math.isfinite(value):
        raise ConfigError(f"`{name}` must be finite, got {value!r}.")


# ---------------------------------------------------------------------------------------------------------- shapes


def _linear(t: jax.Array) -> jax.Array:
    return t


def _cosine(t: jax.Array) -> jax.Array:
    return 0.5 * (1.0 - jnp.cos(jnp.pi * t))


def _sigmoid(t: jax.Array, steepness: float) -> jax.Array:
    # sigma(k (t - 1/2)) rescaled so that 0 -> 0 and 1 -> 1. For t <= 1/2, with x = k (t - 1/2) <= 0,
    #   (sigma(x) - sigma(-k/2)) / (sigma(k/2) - sigma(-k/2)) = sigma(x) * expm1(-k t) / expm1(-k/2),
    # and the upper half follows from the symmetry f(t) = 1 - f(1 - t). Unlike the tanh form this has no
    # cancellation near the ends, so it stays monotone in float32 even for steep ramps.
    k = jnp.asarray(steepness, jnp.float32)

    def lower_half(u):  # u in [0, 1/2]
        e = jnp.exp(k * (u - 0.5))
        return e / (1.0 + e) * (jnp.expm1(-k * u) / jnp.expm1(-0.5 * k))

    return jnp.where(t <= 0.5, lower_half(jnp.minimum(t, 0.5)), 1.0 - lower_half(jnp.minimum(1.0 - t, 0.5)))


def _shape(name: str, steepness: float) -> _Shape:
    if name == "sigmoid":
        _real("steepness", steepness)
        if isinstance(steepness, numbers.Real) and steepness <= 0:
            raise ConfigError(f"`steepness` must be > 0, got {steepness!r}.")
        return functools.partial(_sigmoid, steepness=steepness)
    shapes = {"linear": _linear, "cosine": _cosine}
    if name not in shapes:
        raise ConfigError(f"Unknown `shape` {name!r}; expected one of 'linear', 'sigmoid', 'cosine'.")
    return shapes[name]


def _interpolate(init_value, end_value, w: jax.Array) -> jax.Array:
    """``init + w (end - init)`` in float32, exact at ``w = 0`` and ``w = 1`` and monotone in ``w``."""
    init = jnp.asarray(init_value, jnp.float32)
    end = jnp.asarray(end_value, jnp.float32)
    value = jnp.clip(init + w * (end - init), jnp.minimum(init, end), jnp.maximum(init, end))
    return jnp.where(w >= 1.0, end, value)


def _ramp(shape: _Shape, init_value, end_value, transition_steps, transition_begin) -> optax.Schedule:
    _real("init_value", init_value)
    _real("end_value", end_value)
    transition_steps = _int("transition_steps", transition_steps)
    transition_begin = _int("transition_begin", transition_begin, minimum=0)
    if transition_steps <= 0:  # optax's convention: no transition, hold the initial value.
        return constant_schedule(init_value)

    def schedule(step):
        elapsed = jnp.clip(jnp.asarray(step) - transition_begin, 0, transition_steps)
        t = elapsed.astype(jnp.float32) / jnp.float32(transition_steps)
        return _interpolate(init_value, end_value, shape(t))

    return schedule


# ------------------------------------------------------------------------------------------------------- factories


def constant_schedule(value: float = 1.0) -> optax.Schedule:
    r"""A schedule that always returns ``value`` (as a float32 scalar); see :func:`optax.constant_schedule`.

    .. math:: \beta_t = v

    Args:
        value: the constant value, e.g. :math:`\beta = 1` for the plain VAE or :math:`\beta > 1` for
            :math:`\beta`-VAE (Higgins et al., 2017).
    """
    _real("value", value)
    return lambda step: jnp.broadcast_to(jnp.asarray(value, jnp.float32), jnp.shape(step))


def linear_schedule(
    init_value: float = 0.0, end_value: float = 1.0, transition_steps: int = 10000, transition_begin: int = 0
) -> optax.Schedule:
    r"""Linear KL annealing (warm-up) from ``init_value`` to ``end_value`` (Bowman et al., 2016).

    .. math::
        \beta_t = I + (E - I)\, \tau_t, \qquad \tau_t = \operatorname{clip}\big((t - B) / T, 0, 1\big)

    so :math:`\beta_t = I` for :math:`t \le B` and :math:`\beta_t = E` for :math:`t \ge B + T`.

    Args:
        init_value: :math:`I`, the value up to ``transition_begin``.
        end_value: :math:`E`, the value from ``transition_begin + transition_steps`` on.
        transition_steps: :math:`T`. If ``<= 0`` the schedule is constant at ``init_value`` (optax's convention).
        transition_begin: :math:`B >= 0`, the step at which the ramp starts.

    References:
        Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016.
    """
    return _ramp(_linear, init_value, end_value, transition_steps, transition_begin)


def sigmoid_schedule(
    init_value: float = 0.0,
    end_value: float = 1.0,
    transition_steps: int = 10000,
    transition_begin: int = 0,
    steepness: float = 10.0,
) -> optax.Schedule:
    r"""Logistic KL annealing, rescaled to hit ``init_value`` and ``end_value`` exactly.

    With :math:`\sigma` the logistic function, :math:`k` the steepness and :math:`\tau_t` as in
    :func:`linear_schedule`,

    .. math::
        \beta_t = I + (E - I)\, \frac{\sigma(k(\tau_t - \tfrac12)) - \sigma(-\tfrac k2)}
            {\sigma(\tfrac k2) - \sigma(-\tfrac k2)}
          = I + (E - I) \Big(\tfrac12 + \frac{\tanh(k(\tau_t - \frac12)/2)}{2 \tanh(k/4)}\Big).

    The ramp is centred at :math:`B + T/2` (where it is halfway), is :math:`I` at :math:`\tau=0` and :math:`E`
    at :math:`\tau=1`; larger :math:`k` gives a sharper step, :math:`k \to 0` tends to the linear ramp.

    Args:
        init_value: :math:`I`, the value up to ``transition_begin``.
        end_value: :math:`E`, the value from ``transition_begin + transition_steps`` on.
        transition_steps: :math:`T`. If ``<= 0`` the schedule is constant at ``init_value``.
        transition_begin: :math:`B >= 0`.
        steepness: :math:`k > 0`.

    References:
        Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016 (logistic KL annealing).
    """
    return _ramp(_shape("sigmoid", steepness), init_value, end_value, transition_steps, transition_begin)


def cosine_schedule(
    init_value: float = 0.0, end_value: float = 1.0, transition_steps: int = 10000, transition_begin: int = 0
) -> optax.Schedule:
    r"""Half-cosine KL annealing from ``init_value`` to ``end_value``.

    .. math:: \beta_t = I + (E - I)\, \frac{1 - \cos(\pi \tau_t)}{2}, \qquad
        \tau_t = \operatorname{clip}\big((t - B) / T, 0, 1\big)

    Args:
        init_value: :math:`I`, the value up to ``transition_begin``.
        end_value: :math:`E`, the value from ``transition_begin + transition_steps`` on.
        transition_steps: :math:`T`. If ``<= 0`` the schedule is constant at ``init_value``.
        transition_begin: :math:`B >= 0`.
    """
    return _ramp(_cosine, init_value, end_value, transition_steps, transition_begin)


def cyclical_schedule(
    total_steps: int,
    num_cycles: int = 4,
    ratio: float = 0.5,
    init_value: float = 0.0,
    end_value: float = 1.0,
    shape: str = "linear",
    steepness: float = 10.0,
) -> optax.Schedule:
    r"""Cyclical KL annealing (Fu et al., 2019).

    The first ``total_steps`` steps are split into :math:`M` cycles of (real) length :math:`L = N / M`. Within a
    cycle the value ramps from :math:`I` to :math:`E` during the first fraction :math:`R` and then stays at
    :math:`E`:

    .. math::
        \tau_t = \frac{t \bmod L}{L} = \frac{(t M) \bmod N}{N}, \qquad
        \beta_t = \begin{cases}
            I + (E - I)\, f\big(\min(\tau_t / R, 1)\big), & 0 \le t < N \\
            E, & t \ge N
        \end{cases}

    with :math:`f` the ``shape`` (``linear``: :math:`f(x)=x`; ``cosine``: :math:`(1-\cos\pi x)/2`;
    ``sigmoid``: the rescaled logistic of :func:`sigmoid_schedule`). Steps are 0-based (the paper's :math:`t-1`),
    so each cycle starts exactly at :math:`I`; after ``total_steps`` the value stays at ``end_value``. ``M = 1``
    is a single warm-up over :math:`R N` steps, ``R = 1`` ramps over the whole cycle, and ``init_value > 0``
    acts as a floor. :math:`\tau_t` is computed in exact integer arithmetic for integer steps.

    Args:
        total_steps: :math:`N > 0`, number of steps covered by the cycles.
        num_cycles: :math:`M \ge 1`.
        ratio: :math:`R \in (0, 1]`, the fraction of each cycle spent increasing.
        init_value: :math:`I`, the value at the start of each cycle.
        end_value: :math:`E`, the value reached at fraction :math:`R` of each cycle.
        shape: ``"linear"``, ``"sigmoid"`` or ``"cosine"``.
        steepness: :math:`k > 0` for the sigmoid shape.

    References:
        Fu et al., "Cyclical Annealing Schedule: A Simple Approach to Mitigating KL Vanishing", NAACL 2019.

    Example (4 cycles over 1000 steps, rising during the first half of each):

    >>> beta = cyclical_schedule(total_steps=1000, num_cycles=4, ratio=0.5)
    >>> [round(float(beta(t)), 3) for t in (0, 62, 125, 249, 250, 1000)]
    [0.0, 0.496, 1.0, 1.0, 0.0, 1.0]
    """
    total_steps = _int("total_steps", total_steps, minimum=1)
    num_cycles = _int("num_cycles", num_cycles, minimum=1)
    if total_steps * num_cycles >= 2**31:
        raise ConfigError(f"`total_steps * num_cycles` must be < 2**31 (int32), got {total_steps * num_cycles}.")
    _real("ratio", ratio)
    if not isinstance(ratio, numbers.Real) or not 0.0 < ratio <= 1.0:
        raise ConfigError(f"`ratio` must be a number in (0, 1], got {ratio!r}.")
    _real("init_value", init_value)
    _real("end_value", end_value)
    f = _shape(shape, steepness)

    def schedule(step):
        step = jnp.asarray(step)
        if jnp.issubdtype(step.dtype, jnp.integer):
            position = (jnp.clip(step, 0, total_steps) * num_cycles) % total_steps  # exact
            tau = position.astype(jnp.float32) / jnp.float32(total_steps)
        else:
            tau = jnp.mod(jnp.maximum(step.astype(jnp.float32), 0.0) * num_cycles, total_steps) / total_steps
        w = f(jnp.minimum(tau / jnp.float32(ratio), 1.0))
        w = jnp.where(step >= total_steps, 1.0, w)
        return _interpolate(init_value, end_value, w)

    return schedule


def capacity_schedule(
    max_capacity: float = 25.0, transition_steps: int = 100000, transition_begin: int = 0
) -> optax.Schedule:
    r"""Linearly increasing KL capacity :math:`C` in nats (Burgess et al., 2018).

    The loss :math:`-\mathbb{E}[\log p(x|z)] + \gamma\, |\mathrm{KL}(q(z|x) \| p(z)) - C_t|` pushes the KL
    towards a target that grows from 0 to :math:`C_{max}`:

    .. math:: C_t = C_{max}\, \operatorname{clip}\big((t - B) / T, 0, 1\big)

    This is :func:`linear_schedule` with ``init_value=0`` and ``end_value=max_capacity``.

    Args:
        max_capacity: :math:`C_{max} \ge 0` in nats (the paper uses 25 for dSprites).
        transition_steps: :math:`T`. If ``<= 0`` the capacity stays 0.
        transition_begin: :math:`B \ge 0`.

    References:
        Burgess et al., "Understanding disentangling in beta-VAE", NIPS 2017 Workshop (arXiv:1804.03599, 2018).
    """
    _real("max_capacity", max_capacity)
    if isinstance(max_capacity, numbers.Real) and max_capacity < 0:
        raise ConfigError(f"`max_capacity` must be >= 0 nats, got {max_capacity!r}.")
    return linear_schedule(0.0, max_capacity, transition_steps, transition_begin)


def iwae_learning_rate_schedule(learning_rate: float = 1e-3, steps_per_epoch: int = 1,
                                stages: int = 8) -> optax.Schedule:
    r"""The learning-rate schedule of the IWAE paper (Burda, Grosse & Salakhutdinov 2016, Sec. 5): stage
    :math:`i = 0, \dots, 7` lasts :math:`3^i` epochs at :math:`\eta_i = \eta \cdot 10^{-i/7}`
    (:math:`\eta = 10^{-3}`), 3,280 epochs in all; after the last stage the rate stays at its value.

    .. math:: \eta(t) = \eta \, 10^{-s(t)/7}, \qquad
              s(t) = \#\{\, i \in 1..S-1 : t \ge E \, (3^i - 1) / 2 \,\}

    with :math:`E` steps per epoch (stage :math:`i` starts after :math:`\sum_{j<i} 3^j = (3^i - 1)/2` epochs).

    Args:
        learning_rate: :math:`\eta`, the rate of stage 0.
        steps_per_epoch: :math:`E`.
        stages: :math:`S` (the paper: 8).
    """
    _real("learning_rate", learning_rate)
    steps_per_epoch = _int("steps_per_epoch", steps_per_epoch, minimum=1)
    stages = _int("stages", stages, minimum=1)
    starts = jnp.asarray([steps_per_epoch * (3**i - 1) // 2 for i in range(1, stages)], jnp.int32)  # [S - 1]

    def schedule(step):
        stage = jnp.sum(jnp.asarray(step) >= starts)
        return learning_rate * jnp.power(10.0, -stage.astype(jnp.float32) / 7.0)

    return schedule


def multistep_learning_rate_schedule(learning_rate: float = 1e-3, milestones: Sequence[int] = (),
                                     decay: float = 0.1, steps_per_epoch: int = 1) -> optax.Schedule:
    r"""A piecewise-constant rate multiplied by ``decay`` at each milestone epoch (PyTorch's ``MultiStepLR``;
    pythae's reproduction scripts use milestones 200, 350, 500, 750, 1000 and decay :math:`10^{-1/5}`).

    .. math:: \eta(t) = \eta \, \gamma^{\#\{\, m \in M : t \ge E m \,\}}

    Args:
        learning_rate: :math:`\eta`, the rate before the first milestone.
        milestones: :math:`M`, strictly increasing epochs (>= 1) at which the rate is multiplied by ``decay``.
        decay: :math:`\gamma`, in (0, 1].
        steps_per_epoch: :math:`E`.
    """
    _real("learning_rate", learning_rate)
    _real("decay", decay)
    steps_per_epoch = _int("steps_per_epoch", steps_per_epoch, minimum=1)
    milestones = tuple(_int("milestones", m, minimum=1) for m in milestones)
    if any(b <= a for a, b in itertools.pairwise(milestones)):
        raise ConfigError(f"`milestones` must be strictly increasing epochs, got {list(milestones)}.")
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"`decay` must be in (0, 1] (the rate is multiplied by it), got {decay!r}.")
    starts = jnp.asarray([steps_per_epoch * m for m in milestones], jnp.int32)  # [len(M)]

    def schedule(step):
        passed = jnp.sum(jnp.asarray(step) >= starts)
        return learning_rate * jnp.power(jnp.float32(decay), passed.astype(jnp.float32))

    return schedule


# --------------------------------------------------------------------------------------------------------- configs

_FACTORIES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": constant_schedule,
    "linear": linear_schedule,
    "sigmoid": sigmoid_schedule,
    "cosine": cosine_schedule,
    "cyclical": cyclical_schedule,
    "capacity": capacity_schedule,
}


def get_schedule(spec: Mapping | float) -> optax.Schedule:
    """Builds a schedule from a number (a constant) or a config mapping.

    Example: ``get_schedule({"name": "cyclical", "total_steps": 1000, "num_cycles": 4, "ratio": 0.5})``. The
    ``name`` is one of ``constant``, ``linear``, ``sigmoid``, ``cosine``, ``cyclical``, ``capacity``; the other
    keys are the keyword arguments of the matching ``*_schedule`` factory.

    Raises:
        ConfigError: for an unknown name, an unknown or missing key, or an invalid value.
    """
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return constant_schedule(float(spec))
    if not isinstance(spec, Mapping):
        raise ConfigError(f"A schedule must be a number or a mapping with a 'name' key, got {spec!r}.")
    kwargs = dict(spec)
    if "name" not in kwargs:
        raise ConfigError(f"Schedule config {spec!r} has no 'name'; expected one of {sorted(_FACTORIES)}.")
    name = kwargs.pop("name")
    if name not in _FACTORIES:
        close = difflib.get_close_matches(str(name), _FACTORIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"Unknown schedule name {name!r}; valid names are {sorted(_FACTORIES)}.{hint}")
    params = inspect.signature(_FACTORIES[name]).parameters
    for key in kwargs:
        if key not in params:
            close = difflib.get_close_matches(str(key), params, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown key {key!r} for schedule {name!r}; valid keys are {['name', *params]}.{hint}"
            )
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ConfigError(f"Schedule {name!r} is missing required key(s) {missing}.")
    return _FACTORIES[name](**kwargs)
