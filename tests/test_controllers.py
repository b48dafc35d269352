"""KL-weight controllers: GECO and the ControlVAE PI controller on toy plants, at saturation, under jit/vmap."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxvae import objectives
from jaxvae.distributions import likelihoods
from jaxvae.errors import ConfigError
from jaxvae.models.protocol import VAE, split
from jaxvae.objectives import controllers

# ----------------------------------------------------------------------------------------------------------------
# Toy plants. KL relaxes towards f(beta) = 30 / (1 + 20 beta) (decreasing in beta); the reconstruction loss relaxes
# towards g(beta) = 50 + 100 beta (increasing in beta). Both with a time constant of 20 steps.


def _kl_plant(kl, beta):
    return kl + 0.05 * (30.0 / (1.0 + 20.0 * beta) - kl)


def _recon_plant(recon, beta):
    return recon + 0.05 * (50.0 + 100.0 * beta - recon)


def _run_closed_loop(ctrl, plant, y0, steps, *, observe_kl):
    """Scan ``steps`` controller updates against ``plant``; returns the per-step states and plant outputs."""

    def body(carry, _):
        state, y = carry
        state = ctrl.update(state, 0.0, y) if observe_kl else ctrl.update(state, y, 0.0)
        y = plant(y, state.beta)
        return (state, y), (state, y)

    _, (states, ys) = jax.jit(lambda: jax.lax.scan(body, (ctrl.init(), jnp.float32(y0)), None, length=steps))()
    return jax.tree.map(np.asarray, states), np.asarray(ys)


def _run_open_loop(ctrl, inputs, *, observe_kl, state=None):
    """Feed a fixed sequence of observations; returns the per-step states (after each update)."""
    state = ctrl.init() if state is None else state

    def body(state, y):
        state = ctrl.update(state, 0.0, y) if observe_kl else ctrl.update(state, y, 0.0)
        return state, state

    final, states = jax.jit(lambda s, ys: jax.lax.scan(body, s, ys))(state, jnp.asarray(inputs, jnp.float32))
    return final, jax.tree.map(np.asarray, states)


# ----------------------------------------------------------------------------------------------------------- GECO


def test_geco_init_state_and_first_updates_follow_the_formulas():
    ctrl = controllers.geco(80.0, alpha=0.9, step_size=1e-3, lambda_init=2.0)
    s0 = ctrl.init()
    assert isinstance(s0, controllers.GECOState)
    assert s0.beta.dtype == jnp.float32 and s0.beta.shape == () and s0.lagrange.dtype == jnp.float32
    np.testing.assert_allclose(s0.beta, 0.5)
    s1 = ctrl.update(s0, 100.0, 5.0)
    np.testing.assert_allclose(s1.constraint_ma, 20.0)  # initialised to the first constraint, not decayed from 0
    np.testing.assert_allclose(s1.lagrange, 2.0 * math.exp(1e-3 * 20.0), rtol=1e-6)
    s2 = ctrl.update(s1, 70.0, 5.0)
    ma2 = 0.9 * 20.0 + 0.1 * (70.0 - 80.0)
    np.testing.assert_allclose(s2.constraint_ma, ma2, rtol=1e-6)
    np.testing.assert_allclose(s2.lagrange, 2.0 * math.exp(1e-3 * (20.0 + ma2)), rtol=1e-6)
    np.testing.assert_allclose(s2.beta, 1.0 / s2.lagrange, rtol=1e-6)
    assert int(s2.count) == 2


def test_geco_lambda_rises_while_violated_and_falls_once_the_average_changes_sign():
    ctrl = controllers.geco(80.0, alpha=0.99, step_size=1e-3)
    violated = np.full(100, 150.0)  # C = +70
    satisfied = np.full(300, 20.0)  # C = -60
    _, st = _run_open_loop(ctrl, np.concatenate([violated, satisfied]), observe_kl=False)
    lam = np.concatenate([[1.0], st.lagrange])
    beta = np.concatenate([[1.0], st.beta])
    dlog = np.diff(np.log(lam))
    # Phase 1: strictly monotone, lambda up and beta down.
    assert np.all(dlog[:100] > 0) and np.all(np.diff(beta[:101]) < 0)
    # Phase 2: the direction of lambda follows the sign of the moving average, which turns negative with a lag.
    ma = st.constraint_ma
    big = np.abs(1e-3 * ma) > 1e-4  # steps large enough to resolve in float32
    np.testing.assert_array_equal(np.sign(dlog[big]), np.sign(ma[big]))
    turn = int(np.argmax(ma < 0))
    assert 100 < turn < 400, turn  # the average lags the constraint...
    assert np.all(ma[turn:] < 0)  # ...then stays negative
    assert lam[-1] < lam[turn] and beta[-1] > beta[turn]


def test_geco_saturates_at_lambda_max_without_overflow_and_recovers():
    ctrl = controllers.geco(10.0, step_size=1.0, lambda_min=1e-3, lambda_max=1e3)
    final, st = _run_open_loop(ctrl, np.full(50, 1e30), observe_kl=False)  # absurd constraint: exp would overflow
    assert np.all(np.isfinite(st.lagrange)) and np.all(np.isfinite(st.beta))
    np.testing.assert_allclose(final.lagrange, 1e3, rtol=1e-6)
    np.testing.assert_allclose(final.beta, 1e-3, rtol=1e-6)
    # Then far below tolerance with no memory of the violation (alpha=0 variant): down to lambda_min.
    ctrl0 = controllers.geco(10.0, alpha=0.0, step_size=1.0, lambda_min=1e-3, lambda_max=1e3)
    final0, st0 = _run_open_loop(ctrl0, np.full(30, -1e30), observe_kl=False)
    assert np.all(np.isfinite(st0.beta))
    np.testing.assert_allclose(final0.lagrange, 1e-3, rtol=1e-6)
    np.testing.assert_allclose(final0.beta, 1e3, rtol=1e-6)


def test_geco_drives_a_toy_reconstruction_to_the_tolerance():
    ctrl = controllers.geco(80.0, step_size=1e-3)
    states, recon = _run_closed_loop(ctrl, _recon_plant, 150.0, 4000, observe_kl=False)
    # The initial violation (recon 150 > 80) makes beta fall and lambda rise at first.
    assert states.beta[50] < states.beta[0] < 1.0 and states.lagrange[50] > states.lagrange[0] > 1.0
    # At equilibrium recon = tolerance, i.e. 50 + 100 beta = 80: beta = 0.3, lambda = 1/0.3.
    np.testing.assert_allclose(recon[-500:], 80.0, rtol=0.01)
    np.testing.assert_allclose(states.beta[-1], 0.3, rtol=0.02)
    np.testing.assert_allclose(states.beta, 1.0 / states.lagrange, rtol=1e-6)


# ------------------------------------------------------------------------------------------------------------ PI


def test_pi_init_defaults_to_beta_max_and_validates():
    ctrl = controllers.pi_controller(10.0, beta_min=0.1, beta_max=0.8)
    s0 = ctrl.init()
    assert isinstance(s0, controllers.PIState)
    assert s0.beta.dtype == jnp.float32 and s0.beta.shape == () and s0.integral.dtype == jnp.float32
    np.testing.assert_allclose(s0.beta, 0.8)
    np.testing.assert_allclose(controllers.pi_controller(10.0, beta_init=0.3).init().beta, 0.3)
    for kwargs in ({"beta_min": 1.0, "beta_max": 0.5}, {"beta_init": 2.0}, {"kp": -1.0}, {"ki": float("nan")},
                   {"beta_max": float("inf")}):
        with pytest.raises(ConfigError):
            controllers.pi_controller(10.0, **kwargs)
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        controllers.geco(10.0, alpha=1.0)
    with pytest.raises(ConfigError):
        controllers.geco(10.0, lambda_init=1e9)


def test_pi_single_update_matches_the_formula_when_unsaturated():
    kp, ki = 0.05, 1e-2
    ctrl = controllers.pi_controller(10.0, kp=kp, ki=ki, beta_min=0.1, beta_max=1.0)
    state = controllers.PIState(beta=jnp.float32(0.5), integral=jnp.float32(0.4))
    for kl in (7.0, 10.0, 13.0):
        e = 10.0 - kl
        p = kp / (1.0 + math.exp(e))
        integral = 0.4 - ki * e
        new = ctrl.update(state, 123.0, kl)  # recon is ignored
        np.testing.assert_allclose(new.integral, integral, rtol=1e-6)
        np.testing.assert_allclose(new.beta, p + integral + 0.1, rtol=1e-6)
    # KL above target raises beta, below lowers it.
    assert ctrl.update(state, 0.0, 13.0).beta > ctrl.update(state, 0.0, 7.0).beta


@pytest.mark.parametrize(("target", "beta_min", "beta_max"),
                         [(10.0, 0.0, 1.0), (15.0, 0.0, 1.0), (6.0, 0.05, 0.5)])
def test_pi_drives_a_toy_kl_to_reachable_set_points(target, beta_min, beta_max):
    ctrl = controllers.pi_controller(target, beta_min=beta_min, beta_max=beta_max)
    states, kl = _run_closed_loop(ctrl, _kl_plant, 0.0, 4000, observe_kl=True)
    assert np.all(states.beta >= beta_min) and np.all(states.beta <= beta_max)
    np.testing.assert_allclose(kl[-500:], target, rtol=0.05)
    beta_star = (30.0 / target - 1.0) / 20.0  # f(beta*) = target
    np.testing.assert_allclose(states.beta[-1], beta_star, rtol=0.05)


@pytest.mark.parametrize("side", ["kl_above_target", "kl_below_target"])
def test_pi_anti_windup_keeps_the_integral_bounded_and_leaves_the_bound_at_once(side):
    beta_min, beta_max, kp, ki = 0.05, 1.0, 0.01, 1e-4
    ctrl = controllers.pi_controller(10.0, kp=kp, ki=ki, beta_min=beta_min, beta_max=beta_max, beta_init=0.5)
    stuck, after = (100.0, 0.0) if side == "kl_above_target" else (0.0, 100.0)
    final, st = _run_open_loop(ctrl, np.full(10_000, stuck), observe_kl=True)
    # Without anti-windup the integral would move by ki * 90 * 10_000 = 90.
    assert np.all(st.integral <= beta_max - beta_min + 1e-6) and np.all(st.integral >= -kp - 1e-6)
    assert np.all(st.beta >= beta_min) and np.all(st.beta <= beta_max)
    bound = beta_max if side == "kl_above_target" else beta_min
    np.testing.assert_allclose(st.beta[-1000:], bound, atol=1e-6)
    # The error changes sign: beta leaves the bound on the very next step, by about ki * |e| at least.
    _, st2 = _run_open_loop(ctrl, np.full(5, after), observe_kl=True, state=final)
    moved = np.abs(st2.beta - bound)
    assert np.all(moved[0] >= 0.5 * ki * 10.0) and np.all(np.diff(moved) > 0), moved


def test_pi_is_finite_for_huge_errors():
    ctrl = controllers.pi_controller(10.0)
    for kl in (1e30, -1e30, 1e4, -1e4):
        s = ctrl.update(ctrl.init(), 0.0, kl)
        assert np.isfinite(s.beta) and np.isfinite(s.integral) and 0.0 <= float(s.beta) <= 1.0


# ------------------------------------------------------------------------------------------------ jit and vmap


@pytest.mark.parametrize("name", ["geco", "pi"])
def test_update_is_jittable_and_vmappable_over_stacked_states(name):
    ctrl = controllers.geco(50.0, step_size=1e-2) if name == "geco" else controllers.pi_controller(10.0, ki=1e-2)
    n = 4
    rng = np.random.default_rng(0)
    recons = jnp.asarray(rng.uniform(20, 80, (3, n)), jnp.float32)
    kls = jnp.asarray(rng.uniform(0, 20, (3, n)), jnp.float32)
    stacked = jax.vmap(lambda _: ctrl.init())(jnp.arange(n))
    singles = [ctrl.init() for _ in range(n)]
    vupdate = jax.jit(jax.vmap(ctrl.update))
    for t in range(3):
        stacked = vupdate(stacked, recons[t], kls[t])
        singles = [ctrl.update(s, recons[t, i], kls[t, i]) for i, s in enumerate(singles)]
    for i, s in enumerate(singles):
        for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(stacked), strict=True):
            np.testing.assert_allclose(b[i], a, rtol=1e-6)
    assert stacked.beta.shape == (n,) and stacked.beta.dtype == jnp.float32


def test_pi_controller_inside_a_jitted_training_step():
    vae = VAE.mlp((6,), 2, likelihoods.Bernoulli(), hidden=(4,), rngs=nnx.Rngs(0))
    model, params = split(vae)
    x = jnp.asarray(np.random.default_rng(1).integers(0, 2, (16, 6)), jnp.float32)
    ctrl = controllers.pi_controller(0.5, kp=0.1, ki=0.05)
    opt = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, ctrl_state, key):
        def loss_fn(p):
            return objectives.elbo(model, p, x, key, beta=ctrl_state.beta)

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        ctrl_state = ctrl.update(ctrl_state, jnp.mean(out.recon), jnp.mean(out.kl))
        return optax.apply_updates(params, updates), opt_state, ctrl_state, loss

    opt_state, ctrl_state = opt.init(params), ctrl.init()
    betas = []
    for i in range(20):
        params, opt_state, ctrl_state, loss = step(params, opt_state, ctrl_state, jax.random.key(i))
        betas.append(float(ctrl_state.beta))
        assert np.isfinite(float(loss))
    assert all(0.0 <= b <= 1.0 for b in betas)
    assert betas[-1] != betas[0]
