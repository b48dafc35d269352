"""Tests for jaxvae.objectives.schedules: formulas at hand-computed steps, jit/scan/vmap, optax composition,
validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvae import config as config_lib
from jaxvae.errors import ConfigError
from jaxvae.objectives import schedules as S
from jaxvae.training import optimizers

ATOL = 1e-6


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _check(schedule, expected: dict[int, float], atol=ATOL):
    for step, want in expected.items():
        got = schedule(step)
        np.testing.assert_allclose(float(got), want, rtol=0, atol=atol, err_msg=f"step={step}")


# ---------------------------------------------------------------------------------------------------- formulas


def test_constant():
    _check(S.constant_schedule(0.25), {0: 0.25, 7: 0.25, 10**6: 0.25})


def test_linear_with_begin():
    _check(
        S.linear_schedule(0.0, 1.0, transition_steps=100, transition_begin=10),
        {0: 0.0, 10: 0.0, 11: 0.01, 35: 0.25, 60: 0.5, 109: 0.99, 110: 1.0, 500: 1.0},
    )


def test_linear_decreasing_and_exact_endpoints():
    sched = S.linear_schedule(init_value=2.0, end_value=-1.0, transition_steps=4)
    _check(sched, {0: 2.0, 1: 1.25, 2: 0.5, 3: -0.25, 4: -1.0, 9: -1.0})
    # Endpoints are bit-exact even when init + (end - init) rounds differently in float32.
    sched = S.linear_schedule(init_value=0.1, end_value=0.7, transition_steps=3)
    assert sched(0) == np.float32(0.1) and sched(3) == np.float32(0.7) and sched(100) == np.float32(0.7)


def test_nonpositive_transition_steps_holds_init_like_optax():
    for n in (0, -5):
        sched = S.linear_schedule(0.3, 1.0, transition_steps=n)
        ref = optax.linear_schedule(0.3, 1.0, transition_steps=n)
        for step in (0, 10, 10**5):
            assert float(sched(step)) == pytest.approx(0.3) == pytest.approx(float(ref(step)))


def test_linear_matches_optax():
    ours = S.linear_schedule(0.5, 3.0, transition_steps=37, transition_begin=5)
    ref = optax.linear_schedule(0.5, 3.0, transition_steps=37, transition_begin=5)
    steps = jnp.arange(0, 60)
    np.testing.assert_allclose(jax.vmap(ours)(steps), jax.vmap(ref)(steps), rtol=0, atol=1e-6)


def test_sigmoid_rescaled_hits_endpoints():
    # expected = (sig(k (tau - 1/2)) - sig(-k/2)) / (sig(k/2) - sig(-k/2)); k=10, tau=0.25 -> 0.0701037165
    sched = S.sigmoid_schedule(0.0, 1.0, transition_steps=100, transition_begin=0, steepness=10.0)
    q = (_sig(-2.5) - _sig(-5.0)) / (_sig(5.0) - _sig(-5.0))
    assert q == pytest.approx(0.0701037165, abs=1e-9)
    _check(sched, {-3: 0.0, 0: 0.0, 25: q, 50: 0.5, 75: 1.0 - q, 100: 1.0, 1000: 1.0})
    # Shifted, scaled, and a gentle steepness: k=2, tau=0.25 -> 0.2350037122.
    sched = S.sigmoid_schedule(1.0, 3.0, transition_steps=40, transition_begin=20, steepness=2.0)
    _check(sched, {0: 1.0, 20: 1.0, 30: 1.0 + 2.0 * 0.2350037122, 40: 2.0, 60: 3.0, 61: 3.0})


def test_cosine():
    sched = S.cosine_schedule(0.0, 1.0, transition_steps=100, transition_begin=0)
    _check(sched, {0: 0.0, 25: 0.1464466094, 50: 0.5, 75: 0.8535533906, 100: 1.0, 200: 1.0})
    sched = S.cosine_schedule(0.5, 1.5, transition_steps=10, transition_begin=5)
    _check(sched, {0: 0.5, 5: 0.5, 10: 1.0, 15: 1.5})


def test_capacity():
    sched = S.capacity_schedule(max_capacity=25.0, transition_steps=100_000, transition_begin=1000)
    _check(sched, {0: 0.0, 1000: 0.0, 11_000: 2.5, 51_000: 12.5, 101_000: 25.0, 10**6: 25.0}, atol=1e-5)


# -------------------------------------------------------------------------------------------------- cyclical


def test_cyclical_basic():
    # N=100, M=4 -> L=25, R=0.5 -> ramp over 12.5 steps: tau/R = (t mod 25) / 12.5.
    sched = S.cyclical_schedule(total_steps=100, num_cycles=4, ratio=0.5)
    _check(sched, {0: 0.0, 1: 0.08, 10: 0.8, 12: 0.96, 13: 1.0, 24: 1.0, 25: 0.0, 30: 0.4, 50: 0.0, 75: 0.0})
    _check(sched, {85: 0.8, 99: 1.0, 100: 1.0, 150: 1.0, 10**6: 1.0})


def test_cyclical_ratio_one_always_ramping():
    sched = S.cyclical_schedule(total_steps=100, num_cycles=4, ratio=1.0)
    _check(sched, {0: 0.0, 10: 0.4, 24: 0.96, 25: 0.0, 26: 0.04, 99: 0.96, 100: 1.0, 101: 1.0})


def test_cyclical_tiny_ratio_is_a_step_and_finite():
    sched = S.cyclical_schedule(total_steps=100, num_cycles=4, ratio=1e-6, shape="sigmoid")
    _check(sched, {0: 0.0, 1: 1.0, 24: 1.0, 25: 0.0, 26: 1.0, 99: 1.0, 100: 1.0})
    values = jax.vmap(sched)(jnp.arange(200))
    assert bool(jnp.all(jnp.isfinite(values)))


def test_cyclical_non_integer_cycle_length_is_exact():
    # N=10, M=3 -> L=10/3; tau = (3 t mod 10) / 10 computed in integers.
    sched = S.cyclical_schedule(total_steps=10, num_cycles=3, ratio=1.0)
    _check(sched, {0: 0.0, 1: 0.3, 3: 0.9, 4: 0.2, 6: 0.8, 7: 0.1, 9: 0.7, 10: 1.0})


def test_cyclical_boundaries_restart_at_floor():
    sched = S.cyclical_schedule(total_steps=1000, num_cycles=5, ratio=0.8, init_value=0.2, end_value=1.0)
    for boundary in (0, 200, 400, 600, 800):
        assert float(sched(boundary)) == pytest.approx(0.2, abs=ATOL)
        assert float(sched(boundary - 1 if boundary else 0)) >= 0.2
    # step 80 -> tau = 0.4, tau / R = 0.5 -> 0.2 + 0.8 * 0.5 = 0.6; step 999 -> plateau.
    _check(sched, {80: 0.6, 159: 0.2 + 0.8 * (159 / 160), 160: 1.0, 199: 1.0, 999: 1.0, 1000: 1.0})
    values = jax.vmap(sched)(jnp.arange(-5, 1100))
    assert float(values.min()) == pytest.approx(0.2) and float(values.max()) == pytest.approx(1.0)


def test_cyclical_single_cycle_equals_warmup_then_flat():
    cyc = S.cyclical_schedule(total_steps=100, num_cycles=1, ratio=0.5)
    lin = S.linear_schedule(0.0, 1.0, transition_steps=50)
    steps = jnp.arange(0, 300)
    np.testing.assert_allclose(jax.vmap(cyc)(steps), jax.vmap(lin)(steps), rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        # N=400, M=4 -> L=100, R=0.5; step 10 -> x=0.2, step 25 -> x=0.5.
        ("linear", {10: 0.2, 25: 0.5}),
        ("cosine", {10: (1 - math.cos(0.2 * math.pi)) / 2, 25: 0.5}),
        ("sigmoid", {10: (_sig(-3.0) - _sig(-5.0)) / (_sig(5.0) - _sig(-5.0)), 25: 0.5}),
    ],
)
def test_cyclical_shapes(shape, expected):
    sched = S.cyclical_schedule(total_steps=400, num_cycles=4, ratio=0.5, shape=shape)
    _check(sched, {0: 0.0, 50: 1.0, 99: 1.0, 100: 0.0, 399: 1.0, 400: 1.0, **expected})


def test_cyclical_float_steps_agree_with_integer_steps():
    sched = S.cyclical_schedule(total_steps=100, num_cycles=4, ratio=0.5)
    ints = jnp.arange(0, 130, dtype=jnp.int32)
    np.testing.assert_allclose(jax.vmap(sched)(ints.astype(jnp.float32)), jax.vmap(sched)(ints), atol=1e-5)


# -------------------------------------------------------------------------------------------- jax transforms

ALL = {
    "constant": S.constant_schedule(0.7),
    "linear": S.linear_schedule(0.1, 0.9, transition_steps=50, transition_begin=7),
    "sigmoid": S.sigmoid_schedule(0.0, 2.0, transition_steps=60, transition_begin=3),
    "cosine": S.cosine_schedule(1.0, 0.0, transition_steps=80),
    "cyclical": S.cyclical_schedule(total_steps=90, num_cycles=3, ratio=0.6, shape="cosine"),
    "capacity": S.capacity_schedule(10.0, transition_steps=40),
}
STEPS = np.arange(-3, 130)


@pytest.mark.parametrize("name", sorted(ALL))
def test_dtype_and_shape(name):
    sched = ALL[name]
    for step in (5, jnp.int32(5), np.int64(5)):
        out = sched(step)
        assert out.dtype == jnp.float32 and out.shape == ()


@pytest.mark.parametrize("name", sorted(ALL))
def test_jit_matches_eager(name):
    sched = ALL[name]
    eager = np.array([float(sched(int(s))) for s in STEPS])
    jitted = jax.jit(sched)
    traced = np.array([float(jitted(jnp.int32(s))) for s in STEPS])
    np.testing.assert_allclose(traced, eager, rtol=0, atol=ATOL)
    np.testing.assert_allclose(jax.jit(jax.vmap(sched))(jnp.asarray(STEPS)), eager, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", sorted(ALL))
def test_scan_matches_vmap(name):
    sched = ALL[name]

    def body(total, step):
        value = sched(step)
        return total + value, value

    total, values = jax.lax.scan(body, jnp.float32(0.0), jnp.asarray(STEPS, jnp.int32))
    np.testing.assert_allclose(values, jax.vmap(sched)(jnp.asarray(STEPS)), rtol=0, atol=ATOL)
    assert float(total) == pytest.approx(float(values.sum()), rel=1e-5)


def test_schedule_works_as_optax_learning_rate_count():
    # The optimizer's int32 count is a traced step: check the KL weight at the third update.
    sched = S.cyclical_schedule(total_steps=100, num_cycles=4, ratio=0.5)
    state = optax.scale_by_schedule(sched).init(jnp.zeros(()))
    step = jax.jit(lambda s: optax.scale_by_schedule(sched).update(jnp.ones(()), s)[1])
    for _ in range(10):
        state = step(state)
    assert float(sched(state.count)) == pytest.approx(0.8, abs=ATOL)


# -------------------------------------------------------------------------------------------- composition


def test_join_cyclical_then_constant():
    sched = optax.join_schedules(
        [S.cyclical_schedule(total_steps=100, num_cycles=4, ratio=0.5), S.constant_schedule(0.5)], [100]
    )
    _check(sched, {0: 0.0, 10: 0.8, 25: 0.0, 99: 1.0, 100: 0.5, 1000: 0.5})
    np.testing.assert_allclose(jax.jit(sched)(jnp.int32(99)), 1.0, atol=ATOL)


def test_join_warmup_then_cyclical_restarts_count():
    sched = optax.join_schedules(
        [S.linear_schedule(0.0, 1.0, transition_steps=50), S.cyclical_schedule(100, num_cycles=4, ratio=0.5)],
        [50],
    )
    values = jax.jit(jax.vmap(sched))(jnp.arange(0, 200))
    # step 25 -> warm-up 0.5; 50 -> cyclical(0) = 0; 60 -> cyclical(10) = 0.8; 75 -> cyclical(25) = 0.
    expected = {25: 0.5, 49: 0.98, 50: 0.0, 60: 0.8, 75: 0.0, 149: 1.0, 150: 1.0}
    np.testing.assert_allclose(values[np.array(list(expected))], list(expected.values()), rtol=0, atol=ATOL)


# -------------------------------------------------------------------------------------------- monotonicity


@pytest.mark.parametrize(
    "sched",
    [
        S.linear_schedule(0.0, 1.0, transition_steps=10_000, transition_begin=100),
        S.linear_schedule(0.1, 0.7, transition_steps=333),
        S.sigmoid_schedule(0.0, 1.0, transition_steps=10_000, transition_begin=100),
        S.sigmoid_schedule(0.2, 5.0, transition_steps=777, steepness=40.0),
        S.sigmoid_schedule(0.0, 1.0, transition_steps=5000, steepness=200.0),
        S.cosine_schedule(0.0, 1.0, transition_steps=10_000, transition_begin=100),
        S.cosine_schedule(-1.0, 0.3, transition_steps=555),
        S.capacity_schedule(25.0, transition_steps=10_000),
    ],
    ids=["linear", "linear2", "sigmoid", "sigmoid2", "sigmoid_steep", "cosine", "cosine2", "capacity"],
)
def test_monotone_non_decreasing_and_bounded(sched):
    values = np.asarray(jax.jit(jax.vmap(sched))(jnp.arange(-50, 12_000)))
    assert np.all(np.diff(values) >= 0), np.flatnonzero(np.diff(values) < 0)[:10]
    assert values[0] == sched(0) and values[-1] == sched(10**7)


# -------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": -10}, "total_steps"),
        ({"total_steps": 10.5}, "total_steps"),
        ({"total_steps": 100, "num_cycles": 0}, "num_cycles"),
        ({"total_steps": 100, "num_cycles": 2.0}, "num_cycles"),
        ({"total_steps": 100, "num_cycles": True}, "num_cycles"),
        ({"total_steps": 100, "ratio": 0.0}, "ratio"),
        ({"total_steps": 100, "ratio": 1.5}, "ratio"),
        ({"total_steps": 100, "ratio": -0.1}, "ratio"),
        ({"total_steps": 100, "ratio": float("nan")}, "ratio"),
        ({"total_steps": 100, "shape": "exponential"}, "shape.*linear"),
        ({"total_steps": 100, "shape": "sigmoid", "steepness": 0.0}, "steepness"),
        ({"total_steps": 2**30, "num_cycles": 4}, "2\\*\\*31"),
        ({"total_steps": 100, "end_value": "1"}, "end_value"),
    ],
)
def test_cyclical_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        S.cyclical_schedule(**kwargs)


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (S.linear_schedule, {"transition_begin": -1}, "transition_begin"),
        (S.linear_schedule, {"transition_steps": 1.5}, "transition_steps"),
        (S.cosine_schedule, {"init_value": float("inf")}, "init_value"),
        (S.sigmoid_schedule, {"steepness": -1.0}, "steepness"),
        (S.capacity_schedule, {"max_capacity": -1.0}, "max_capacity"),
        (S.constant_schedule, {"value": None}, "value"),
    ],
)
def test_ramp_validation(factory, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        factory(**kwargs)


def test_config_error_is_value_error():
    with pytest.raises(ValueError):
        S.cyclical_schedule(total_steps=100, ratio=2.0)


# -------------------------------------------------------------------------------------------- get_schedule


def test_get_schedule_number_is_constant():
    for spec in (0.5, 2):
        sched = S.get_schedule(spec)
        _check(sched, {0: float(spec), 10**5: float(spec)})
        assert sched(3).dtype == jnp.float32


def test_get_schedule_builds_each_factory():
    spec = {"name": "cyclical", "total_steps": 100, "num_cycles": 4, "ratio": 0.5}
    sched = S.get_schedule(spec)
    assert spec == {"name": "cyclical", "total_steps": 100, "num_cycles": 4, "ratio": 0.5}  # not mutated
    _check(sched, {10: 0.8, 25: 0.0, 99: 1.0})
    _check(S.get_schedule({"name": "linear", "transition_steps": 10}), {5: 0.5})
    _check(S.get_schedule({"name": "sigmoid", "transition_steps": 10}), {5: 0.5})
    _check(S.get_schedule({"name": "cosine", "transition_steps": 10}), {5: 0.5})
    _check(S.get_schedule({"name": "capacity", "max_capacity": 4.0, "transition_steps": 10}), {5: 2.0})
    _check(S.get_schedule({"name": "constant", "value": 3.0}), {5: 3.0})


def test_get_schedule_unknown_name_suggests_closest():
    with pytest.raises(ConfigError, match="Unknown schedule name 'cyclic'") as info:
        S.get_schedule({"name": "cyclic", "total_steps": 10})
    msg = str(info.value)
    assert "Did you mean 'cyclical'?" in msg
    for name in ("capacity", "constant", "cosine", "cyclical", "linear", "sigmoid"):
        assert name in msg


def test_get_schedule_unknown_key_names_it_and_valid_keys():
    with pytest.raises(ConfigError, match="Unknown key 'ration'") as info:
        S.get_schedule({"name": "cyclical", "total_steps": 10, "ration": 0.5})
    msg = str(info.value)
    assert "Did you mean 'ratio'?" in msg and "num_cycles" in msg and "total_steps" in msg


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "cyclical"}, "missing.*total_steps"),
        ({"total_steps": 10}, "no 'name'"),
        ("linear", "number or a mapping"),
        (True, "number or a mapping"),
        ({"name": "cyclical", "total_steps": 10, "ratio": 0}, "ratio"),
    ],
)
def test_get_schedule_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        S.get_schedule(spec)


def test_iwae_schedule_has_the_papers_stages_of_3_to_the_i_epochs():
    """Burda et al. (2016): pass i in 0..7 lasts 3^i epochs at 1e-3 * 10^(-i/7); 3,280 epochs in all."""
    spe = 7
    f = jax.jit(S.iwae_learning_rate_schedule(1e-3, spe))
    epoch, expected = 0, []
    for i in range(8):
        expected += [1e-3 * 10 ** (-i / 7)] * (3**i * spe)
        epoch += 3**i
    assert epoch == 3280 and len(expected) == 3280 * spe
    steps = np.arange(len(expected) + 50)
    got = np.asarray(jax.vmap(f)(jnp.asarray(steps)))
    np.testing.assert_allclose(got[:len(expected)], expected, rtol=1e-6)
    np.testing.assert_allclose(got[len(expected):], 1e-3 * 10 ** (-1.0), rtol=1e-6)  # stays at the last rate
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        S.iwae_learning_rate_schedule(1e-3, 0)


def test_multistep_schedule_equals_optax_piecewise_constant_at_pythaes_milestones():
    """pythae's MultiStepLR: x 10^(-1/5) at epochs 200, 350, 500, 750, 1000; the oracle is optax's own
    piecewise-constant schedule with the same boundaries in steps."""
    spe, milestones, gamma = 3, (200, 350, 500, 750, 1000), 10 ** (-1 / 5)
    f = jax.jit(S.multistep_learning_rate_schedule(1e-3, milestones, gamma, spe))
    oracle = optax.piecewise_constant_schedule(1e-3, {spe * m: gamma for m in milestones})
    steps = np.arange(spe * 1100)
    got = np.asarray(jax.vmap(f)(jnp.asarray(steps)))
    np.testing.assert_allclose(got, [float(oracle(int(t))) for t in steps], rtol=1e-5)
    assert got[spe * 200 - 1] == pytest.approx(1e-3) and got[-1] == pytest.approx(1e-3 * gamma**5, rel=1e-5)
    with pytest.raises(ConfigError, match="increasing"):
        S.multistep_learning_rate_schedule(1e-3, (350, 200), gamma, spe)
    with pytest.raises(ConfigError, match="decay"):
        S.multistep_learning_rate_schedule(1e-3, (200,), 1.5, spe)


def test_multistep_schedule_from_the_config_and_its_errors():
    overrides = ["optimizer.schedule=multistep", "optimizer.milestones=2,5", "optimizer.milestone_factor=0.5"]
    cfg = config_lib.apply_overrides(config_lib.Config(), overrides)
    f = optimizers.learning_rate_schedule(cfg, total_steps=100, steps_per_epoch=10)
    assert [float(f(t)) for t in (19, 20, 49, 50)] == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4])
    with pytest.raises(ConfigError, match="needs optimizer"):
        config_lib.apply_overrides(config_lib.Config(), ["optimizer.schedule=multistep"])
    with pytest.raises(ConfigError, match="only read by it"):
        config_lib.apply_overrides(config_lib.Config(), ["optimizer.milestones=200"])
    with pytest.raises(ConfigError, match="strictly increasing"):
        config_lib.apply_overrides(config_lib.Config(),
                                   ["optimizer.schedule=multistep", "optimizer.milestones=5,2"])
