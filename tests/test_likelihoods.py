"""Tests for jaxvae.distributions.likelihoods: agreement with scipy/numpy float64 references, normalisation,
sampling moments, gradients at extreme parameters, data validation and jit/vmap compatibility."""

import dataclasses
import decimal
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxvae.distributions import likelihoods as L
from jaxvae.errors import ConfigError, DataError

E = (3, 4)  # event shape used throughout
RTOL, ATOL = 1e-5, 1e-4


# Jitted entry points with the likelihood as a static (hashable) argument: this exercises jit everywhere and is
# ~10x faster than op-by-op dispatch.
@functools.partial(jax.jit, static_argnames=("lik", "event_ndim"))
def _log_prob(lik, out, x, event_ndim=None):
    return lik.log_prob(out, x, event_ndim)


@functools.partial(jax.jit, static_argnames="lik")
def _elements(lik, out, x):
    return lik.log_prob_elements(out, x)


@functools.partial(jax.jit, static_argnames="lik")
def _mean(lik, out):
    return lik.mean(out)


@functools.partial(jax.jit, static_argnames="lik")
def _sample(lik, key, out):
    return lik.sample(key, out)


def _dlm_ref(o, x, m):
    """Independent float64 discretized-logistic-mixture log pmf per element (scipy logistic CDF differences)."""
    logits, loc, log_s = o[..., :m], o[..., m:2 * m], np.maximum(o[..., 2 * m:], -7.0)
    c = (x / 127.5 - 1.0)[..., None]
    s = np.exp(log_s)
    lo, up = c - 1 / 255, c + 1 / 255

    def log_diff(log_a, log_b):  # log(a - b) for a > b, from logs (the tails underflow even in float64)
        return log_a + np.log(-np.expm1(log_b - log_a))

    # Differences of log CDFs below the mode and of log survival functions above it.
    with np.errstate(divide="ignore"):
        mid = np.where(c > loc, log_diff(stats.logistic.logsf(lo, loc, s), stats.logistic.logsf(up, loc, s)),
                       log_diff(stats.logistic.logcdf(up, loc, s), stats.logistic.logcdf(lo, loc, s)))
    log_mass = np.where(c <= -1, stats.logistic.logcdf(up, loc, s),
                        np.where(c >= 1, stats.logistic.logsf(lo, loc, s), mid))
    return special.logsumexp(special.log_softmax(logits, axis=-1) + log_mass, axis=-1)


def _log_expit(v):
    return special.log_expit(v)


# name -> (likelihood, decoder-output generator, data generator, float64 per-element reference)
CASES = {
    "bernoulli_binary": (L.Bernoulli(), lambda r, s: 3 * r.normal(size=(*s, 1)), lambda r, s: r.integers(0, 2, s),
                         lambda o, x: stats.bernoulli.logpmf(x, special.expit(o[..., 0]))),
    "bernoulli_grey": (L.Bernoulli(), lambda r, s: 3 * r.normal(size=(*s, 1)), lambda r, s: r.uniform(size=s),
                       lambda o, x: x * _log_expit(o[..., 0]) + (1 - x) * _log_expit(-o[..., 0])),
    "continuous_bernoulli": (
        L.ContinuousBernoulli(), lambda r, s: 3 * r.normal(size=(*s, 1)), lambda r, s: r.uniform(size=s),
        lambda o, x: (x * _log_expit(o[..., 0]) + (1 - x) * _log_expit(-o[..., 0])
                      + np.log(o[..., 0] / np.tanh(o[..., 0] / 2)))),
    "gaussian_fixed": (L.Gaussian(0.7), lambda r, s: r.normal(size=(*s, 1)), lambda r, s: r.normal(size=s),
                       lambda o, x: stats.norm.logpdf(x, o[..., 0], 0.7)),
    "gaussian_per_pixel": (
        L.Gaussian("per_pixel"), lambda r, s: r.normal(size=(*s, 2)), lambda r, s: r.normal(size=s),
        lambda o, x: stats.norm.logpdf(x, o[..., 0], np.exp(o[..., 1]))),
    "laplace_fixed": (L.Laplace(0.3), lambda r, s: r.normal(size=(*s, 1)), lambda r, s: r.normal(size=s),
                      lambda o, x: stats.laplace.logpdf(x, o[..., 0], 0.3)),
    "laplace_per_pixel": (
        L.Laplace(), lambda r, s: r.normal(size=(*s, 2)), lambda r, s: r.normal(size=s),
        lambda o, x: stats.laplace.logpdf(x, o[..., 0], np.exp(o[..., 1]))),
    "categorical256": (
        L.Categorical256(), lambda r, s: 3 * r.normal(size=(*s, 256)), lambda r, s: r.integers(0, 256, s),
        lambda o, x: np.take_along_axis(special.log_softmax(o, -1),
                                        np.broadcast_to(x, o.shape[:-1])[..., None], -1)[..., 0]),
    "discretized_logistic_mixture": (
        L.DiscretizedLogisticMixture(3),
        lambda r, s: np.concatenate([2 * r.normal(size=(*s, 3)), r.uniform(-1, 1, (*s, 3)),
                                     r.uniform(-8, 0, (*s, 3))], -1),
        lambda r, s: np.where(r.uniform(size=s) < 0.2, r.choice([0, 255], s), r.integers(0, 256, s)),
        lambda o, x: _dlm_ref(o, x, 3)),
}
ALL = list(dict.fromkeys(c[0] for c in CASES.values()))  # unique (hashable) likelihoods


@pytest.mark.parametrize("name", list(CASES))
def test_log_prob_matches_reference(name):
    lik, gen_out, gen_x, ref = CASES[name]
    rng = np.random.default_rng(0)
    k, b, d = 3, 5, len(E)
    out, x = gen_out(rng, (k, b, *E)), gen_x(rng, (k, b, *E))
    expected = ref(out, x).sum(axis=(-2, -1))  # [K, B]
    out32, x32 = jnp.asarray(out, jnp.float32), jnp.asarray(x, jnp.float32)
    # x [B, *E] with out [B, *E, P] -> [B]
    got = _log_prob(lik, out32[0], x32[0])
    assert got.shape == (b,)
    np.testing.assert_allclose(got, expected[0], rtol=RTOL, atol=ATOL)
    # x [K, B, *E] with event_ndim -> [K, B]
    got = _log_prob(lik, out32, x32, event_ndim=d)
    assert got.shape == (k, b)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    # x [B, *E] shared by K decoder outputs [K, B, *E, P] (importance sampling) -> [K, B]
    got = _log_prob(lik, out32, x32[0])
    np.testing.assert_allclose(got, ref(out, x[0]).sum(axis=(-2, -1)), rtol=RTOL, atol=ATOL)
    assert _elements(lik, out32, x32).shape == (k, b, *E)


CB_LOGITS = [-50.0, -13.8, -9.21, -3.0, -1.0, -1e-4, 0.0, 1e-6, 0.01, 0.99, 1.0, 1.01, 2.0, 13.8, 50.0]


@pytest.mark.parametrize("logit", CB_LOGITS)
def test_continuous_bernoulli_normalised_and_mean(logit):
    cb = L.ContinuousBernoulli()
    grid = np.linspace(0.0, 1.0, 200_001)
    out = jnp.full((1, 1), logit, jnp.float32)
    density = np.exp(np.asarray(_elements(cb, out, jnp.asarray(grid, jnp.float32)), np.float64))
    assert abs(np.trapezoid(density, grid) - 1.0) < 1e-4
    np.testing.assert_allclose(_mean(cb, out)[0], np.trapezoid(grid * density, grid), atol=1e-4)


def test_continuous_bernoulli_log_normalizer_matches_direct_formula():
    # Away from 1/2 and from l > 20 (where expit(l) rounds in float64, spoiling the direct formula).
    logits = np.array([-30, -5, -1.5, -1.0001, -0.9999, -0.3, -1e-2, 1e-3, 0.5, 0.9999, 1.0001, 7, 20])
    lam = special.expit(logits)
    direct = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    got = jax.jit(L.continuous_bernoulli_log_normalizer)(jnp.asarray(logits, jnp.float32))
    np.testing.assert_allclose(got, direct, rtol=2e-6, atol=1e-6)
    at_half = jax.jit(L.continuous_bernoulli_log_normalizer)(jnp.zeros(()))
    np.testing.assert_allclose(at_half, math.log(2), rtol=1e-7)


def _cb_log_normalizer_oracle(logit):
    """Value and derivative of log C = log(l / tanh(l/2)) to ~40 significant digits (stdlib ``decimal``), via
    C = l (e^l + 1) / (e^l - 1) and d/dl log C = 1/l - 1/sinh(l); the limits log 2 and 0 at l = 0."""
    d = decimal.Decimal(float(logit))  # exact binary value of the float64 input
    if d == 0:
        return math.log(2.0), 0.0
    with decimal.localcontext() as ctx:
        # e^l - e^-l cancels ~|log10 l| digits and 1/l - 1/sinh(l) ~ l/6 ~2 |log10 l| more: carry them.
        ctx.prec = 50 + max(0, -3 * abs(d).adjusted())
        e, e_inv = d.exp(), (-d).exp()
        return float((d * (e + 1) / (e - 1)).ln()), float(1 / d - 2 / (e - e_inv))


# |l| in [0, 2], dense around the series/closed-form switch at |l| = 1, and both signs.
_CB_GRID = np.concatenate([[0.0, 1e-300, 1e-8, 1e-4, 1e-2], np.linspace(0.02, 2.0, 100),
                           1.0 - np.array([2**-53, 1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 1e-2]),
                           1.0 + np.array([2**-52, 1e-12, 1e-6, 1e-3, 1e-2])])
_CB_GRID = np.concatenate([_CB_GRID, -_CB_GRID])


def test_continuous_bernoulli_log_normalizer_float64_value_and_gradient_near_switch():
    """In float64, log C and d log C / dl agree with a 50-digit oracle to 1e-12 relative on |l| <= 2, also just
    below the Taylor-series switch at |l| = 1 (a 5-term series was off by 2e-8 in value, 1e-6 in gradient)."""
    ref = np.array([_cb_log_normalizer_oracle(v) for v in _CB_GRID])  # [N, 2]
    with jax.enable_x64(True):
        fn = jax.jit(jax.vmap(jax.value_and_grad(L.continuous_bernoulli_log_normalizer)))
        value, grad = fn(jnp.asarray(_CB_GRID, jnp.float64))
        assert value.dtype == grad.dtype == jnp.float64
        value, grad = np.asarray(value), np.asarray(grad)
    np.testing.assert_allclose(value, ref[:, 0], rtol=1e-12, atol=0)
    # The derivative is ~l/6 near 0 (and exactly 0 at l = 0): relative tolerance, with a floor far below it.
    np.testing.assert_allclose(grad, ref[:, 1], rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(grad[_CB_GRID == 0], 0.0)


def test_continuous_bernoulli_log_normalizer_float32_near_zero_and_switch():
    """float32 stays finite and accurate to float32 rounding around l = 0 and the switch at |l| = 1."""
    grid = _CB_GRID.astype(np.float32)
    ref = np.array([_cb_log_normalizer_oracle(v) for v in grid.astype(np.float64)])
    value, grad = jax.jit(jax.vmap(jax.value_and_grad(L.continuous_bernoulli_log_normalizer)))(jnp.asarray(grid))
    assert value.dtype == grad.dtype == jnp.float32
    value, grad = np.asarray(value, np.float64), np.asarray(grad, np.float64)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, ref[:, 0], rtol=3e-7, atol=0)
    # Gradient ~l/6: float32 closed form loses ~eps/|l| absolutely just above the switch, the series does not.
    np.testing.assert_allclose(grad, ref[:, 1], rtol=2e-6, atol=1e-7)


def _cb_mean_oracle(logit):
    """E[x] = 1/2 + (coth(l/2) - 2/l)/2 of the continuous Bernoulli to ~40 significant digits (stdlib ``decimal``,
    coth(a) = (e^{2a} + 1)/(e^{2a} - 1) at the exact binary value of the float64 input; 1/2 at l = 0)."""
    d = decimal.Decimal(float(logit))
    if d == 0:
        return 0.5
    with decimal.localcontext() as ctx:
        ctx.prec = 50 + max(0, -3 * abs(d).adjusted())  # coth a - 1/a ~ a/3 cancels ~2 |log10 a| digits
        e = d.exp()  # e^{2a} with a = l/2
        return float(decimal.Decimal("0.5") + ((e + 1) / (e - 1) - 2 / d) / 2)


def test_continuous_bernoulli_mean_float64_is_exact_to_a_few_ulps_around_the_switch_and_zero():
    """Issue 36 (7): the mean's 4-term Langevin series for |l| < 1 was 2e-8 off its closed form just below
    |l| = 1 in float64; it must agree with a 50-digit oracle to a few ulps everywhere on the grid (|l| <= 2,
    dense around 1 and 2, and near 0), and stay within float32 rounding in float32."""
    grid = np.concatenate([_CB_GRID, np.linspace(0.9, 1.1, 41), 2.0 + np.array([-1e-3, -2**-51, 0.0, 2**-51,
                                                                                1e-3]), [3.0, 7.5, 40.0]])
    grid = np.concatenate([grid, -grid])
    ref = np.array([_cb_mean_oracle(v) for v in grid])
    out = grid[:, None]
    with jax.enable_x64(True):
        mean = jax.jit(L.ContinuousBernoulli().mean)(jnp.asarray(out, jnp.float64))
        assert mean.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(mean), ref, rtol=4 * np.finfo(np.float64).eps, atol=0)
    mean32 = jax.jit(L.ContinuousBernoulli().mean)(jnp.asarray(out, jnp.float32))
    ref32 = np.array([_cb_mean_oracle(v) for v in grid.astype(np.float32).astype(np.float64)])
    np.testing.assert_allclose(np.asarray(mean32, np.float64), ref32, rtol=4 * np.finfo(np.float32).eps, atol=0)


def test_the_coth_series_coefficients_are_the_exact_bernoulli_ratios():
    """c_n = 2^{2n} B_{2n} / (2n)! from exact arithmetic equals the log-normalizer's hand-written rationals."""
    written = (1 / 3, -1 / 45, 2 / 945, -1 / 4725, 2 / 93555, -1382 / 638512875, 4 / 18243225,
               -3617 / 162820783125, 87734 / 38979295480125, -349222 / 1531329465290625)
    assert L._COTH_SERIES[:10] == written
    ratios = np.abs(np.array(L._COTH_SERIES[1:]) / np.array(L._COTH_SERIES[:-1]))
    np.testing.assert_allclose(ratios[-5:], 1 / np.pi**2, rtol=1e-6)  # |c_n| ~ 2 / pi^{2n}


def test_discretized_logistic_mixture_sums_to_one():
    rng = np.random.default_rng(1)
    m, n = 5, 64
    out = np.concatenate([20 * rng.normal(size=(n, m)), 3 * rng.normal(size=(n, m)),
                          rng.uniform(-12, 8, (n, m))], -1)
    out[0, 2 * m:] = 100.0  # enormous scale (exp(-100) underflows in float32)
    out[1, 2 * m:] = -50.0  # below the -7 floor
    out[2, :m] = [50, -50, 0, 50, -50]
    out[3, m:2 * m] = [-5, 5, -1, 1, 0]
    lp = _elements(L.DiscretizedLogisticMixture(m), jnp.asarray(out[:, None], jnp.float32), jnp.arange(256.0))
    assert lp.shape == (n, 256)
    np.testing.assert_allclose(np.exp(np.asarray(lp, np.float64)).sum(-1), 1.0, atol=1e-4)


def _dlm_edge_case_outputs(m=3):
    """Decoder outputs [N, 3M] with components centred near and beyond 0 and 255 (mu ~ -1 or +1), where the
    clipped ``127.5 (sum_m pi_m mu_m + 1)`` is far from E[x], plus random and extreme ones."""
    rng = np.random.default_rng(12)
    n = 48
    logits = 2 * rng.normal(size=(n, m))
    loc = np.where(rng.uniform(size=(n, m)) < 0.5, -1.0, 1.0) + rng.uniform(-0.3, 0.3, (n, m))
    loc[:12] = rng.uniform(-1.2, 1.2, (12, m))
    log_s = rng.uniform(-7.0, 0.5, (n, m))
    out = np.concatenate([logits, loc, log_s], -1)
    out[0] = [0, 0, 0, -1, -1, -1, 0, 0, 0]  # all mass near 0 with s = 1 (~127 grey levels)
    out[1] = [0, 0, 0, 1, 1, 1, 0, 0, 0]
    out[2] = [5, -5, 0, -1.02, 0.4, 1.0, -2.0, -7.0, -1.0]
    out[3] = [0, 0, 0, -50, 50, 0.3, -9, -9, -9]  # far outside [-1, 1], scale below the floor
    out[4] = [0, 0, 0, 0.2, -0.7, 3.0, 100, 100, 100]  # enormous scale: E[x] -> 127.5
    return out


def test_discretized_logistic_mixture_mean_is_expectation():
    """mean() is E[x] = sum_v v p(v) of the discretized distribution (edge bins absorbing the tails), also for
    components centred near 0 and 255, and lies in [0, 255]."""
    m = 3
    lik = L.DiscretizedLogisticMixture(m)
    out = _dlm_edge_case_outputs(m)
    values = np.arange(256.0)
    # Brute force from the float64 scipy reference pmf and from this module's own float32 log_prob.
    pmf_ref = np.exp(_dlm_ref(out[:, None, :], values, m))  # [N, 256]
    np.testing.assert_allclose(pmf_ref.sum(-1), 1.0, rtol=1e-12)
    want = pmf_ref @ values
    lp = _elements(lik, jnp.asarray(out[:, None], jnp.float32), jnp.asarray(values, jnp.float32))  # [N, 256]
    from_log_prob = np.exp(np.asarray(lp, np.float64)) @ values
    np.testing.assert_allclose(from_log_prob, want, atol=2e-3)
    got = np.asarray(_mean(lik, jnp.asarray(out, jnp.float32)), np.float64)  # [N]
    assert got.shape == (len(out),) and np.all((got >= 0) & (got <= 255))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)
    np.testing.assert_allclose(got[4], 127.5, atol=1e-4)
    # float64: the same sum, exact to rounding.
    with jax.enable_x64(True):
        got64 = np.asarray(jax.jit(lik.mean)(jnp.asarray(out, jnp.float64)))
    np.testing.assert_allclose(got64, want, rtol=0, atol=1e-9)


def test_categorical256_sums_to_one():
    out = 10 * np.random.default_rng(2).normal(size=(8, 256))
    out[0, :] = -50.0
    out[0, 7] = 50.0
    lp = _elements(L.Categorical256(), jnp.asarray(out[:, None], jnp.float32), jnp.arange(256))
    np.testing.assert_allclose(np.exp(np.asarray(lp, np.float64)).sum(-1), 1.0, atol=1e-4)


def test_optimal_sigma_gaussian_is_maximiser_and_closed_form():
    rng = np.random.default_rng(3)
    k, b = 2, 4
    d = math.prod(E)
    loc, x = rng.normal(size=(k, b, *E, 1)), rng.normal(size=(b, *E)) * rng.uniform(0.1, 3, (b, 1, 1))
    lik = L.Gaussian("optimal")
    got = _log_prob(lik, jnp.asarray(loc, jnp.float32), jnp.asarray(x, jnp.float32))  # [K, B], per example
    var = ((x - loc[..., 0]) ** 2).mean(axis=(-2, -1))
    np.testing.assert_allclose(got, -d / 2 * (np.log(2 * np.pi * var) + 1), rtol=RTOL, atol=ATOL)
    for sigma in np.logspace(-2, 1.5, 40):
        fixed = stats.norm.logpdf(x, loc[..., 0], sigma).sum(axis=(-2, -1))
        assert np.all(np.asarray(got) >= fixed - 1e-4 * np.abs(fixed))
    # x == mu: sigma* is floored at exp(-6), the log density stays finite.
    exact = _log_prob(lik, jnp.zeros((2, *E, 1)), jnp.zeros((2, *E)))
    np.testing.assert_allclose(exact, -d / 2 * (math.log(2 * math.pi) - 12.0), rtol=RTOL)
    assert lik.num_outputs == 1 and np.all(_sample(lik, jax.random.key(0), loc) == loc[..., 0])


def test_learned_global_sigma_reads_last_output():
    lik = L.Gaussian("learned")
    assert (lik.num_outputs, lik.num_global_outputs) == (2, 1)
    rng = np.random.default_rng(4)
    log_sigma = np.array([-1.2, 0.0, 0.8])
    loc, x = rng.normal(size=(3, *E)), rng.normal(size=(3, *E))
    out = np.stack([loc, np.broadcast_to(log_sigma[:, None, None], loc.shape)], -1)
    expected = stats.norm.logpdf(x, loc, np.exp(log_sigma)[:, None, None]).sum(axis=(-2, -1))
    np.testing.assert_allclose(_log_prob(lik, jnp.asarray(out, jnp.float32), jnp.asarray(x, jnp.float32)),
                               expected, rtol=RTOL, atol=ATOL)


# likelihood, decoder outputs for 6 elements, tolerance on |empirical mean - mean| (>= 5 standard errors)
_r = np.random.default_rng(5)
_LOC_LOG_SCALE = [[-2, -1], [0, 0], [1, 0.3], [3, -7], [0.5, -20], [-1, 0.5]]
SAMPLE_CASES = {
    "bernoulli": (L.Bernoulli(), [[-50], [-3], [-0.5], [0], [2], [50]], 0.02, 20_000),
    "continuous_bernoulli": (L.ContinuousBernoulli(), [[-50], [-5], [-0.3], [0], [0.7], [50]], 0.012, 20_000),
    "gaussian": (L.Gaussian("per_pixel"), _LOC_LOG_SCALE, 0.05, 20_000),
    "laplace": (L.Laplace(), _LOC_LOG_SCALE, 0.05, 20_000),
    "categorical256": (L.Categorical256(), 2 * _r.normal(size=(6, 256)), 4.0, 10_000),
    "discretized_logistic_mixture": (
        L.DiscretizedLogisticMixture(3),
        np.concatenate([_r.normal(size=(6, 3)), _r.uniform(-0.5, 0.5, (6, 3)), _r.uniform(-4, -3, (6, 3))], -1),
        2.5, 20_000),
}


@pytest.mark.parametrize("name", list(SAMPLE_CASES))
def test_sample_mean_matches_mean(name):
    lik, out, tol, n = SAMPLE_CASES[name]
    out = jnp.asarray(out, jnp.float32)
    samples = _sample(lik, jax.random.key(0), jnp.broadcast_to(out, (n, *out.shape)))
    assert samples.shape == (n, 6) and samples.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(samples, np.float64).mean(0), _mean(lik, out), atol=tol)


def test_samples_lie_in_support():
    key = jax.random.key(1)
    logits = np.repeat([[[-50.0]], [[0.0]], [[1e-5]], [[50.0]]], 500, axis=1)  # [4, 500, 1]
    cb = _sample(L.ContinuousBernoulli(), key, jnp.asarray(logits, jnp.float32))
    assert np.all((np.asarray(cb) >= 0) & (np.asarray(cb) <= 1))
    for lik in (L.Categorical256(), L.DiscretizedLogisticMixture(2)):
        s = _sample(lik, key, jnp.asarray(np.random.default_rng(6).normal(size=(500, lik.num_outputs)) * 5,
                                        jnp.float32))
        s = np.asarray(s)
        assert np.all((s >= 0) & (s <= 255) & (s == np.round(s)))
    b = _sample(L.Bernoulli(), key, jnp.zeros((100, 1)))
    assert set(np.unique(b)) <= {0.0, 1.0}


@pytest.mark.parametrize("lik", [*ALL, L.Gaussian("optimal"), L.Gaussian("learned")], ids=repr)
def test_gradients_finite_at_extremes(lik):
    p = lik.num_outputs
    vals = np.array([-50.0, -7.0, -1e-3, 0.0, 1e-6, 0.5, 7.0, 50.0])
    out = np.stack([np.roll(vals, i) for i in range(p)], -1)  # [8, P]
    if lik.support in ("binary", "unit_interval"):
        x = np.array([0, 1, 0.5, 0, 1, 0.25, 1, 0])
    elif lik.support == "integer_0_255":
        x = np.array([0, 255, 1, 128, 254, 7, 0, 255])
    else:
        x = np.array([-100.0, 0.0, 1e-3, 0.0, 3.0, 0.5, 100.0, -3.0])
    out, x = jnp.asarray(out[None], jnp.float32), jnp.asarray(x[None], jnp.float32)
    value, grad = jax.jit(jax.value_and_grad(lambda o: lik.log_prob(o, x).sum()))(out)
    assert np.isfinite(value) and np.all(np.isfinite(grad)), (value, grad)
    assert np.all(np.isfinite(jax.jit(jax.grad(lambda o: lik.mean(o).sum()))(out)))


def test_continuous_bernoulli_gradient_at_half():
    cb = L.ContinuousBernoulli()
    g = jax.jit(jax.grad(lambda o: cb.log_prob(o, jnp.asarray([[0.3]])).sum()))(jnp.zeros((1, 1, 1)))
    # d/dl [x log sig(l) + (1-x) log sig(-l) + log C(l)] at l = 0 is x - 1/2 (+ 0: log C is even).
    np.testing.assert_allclose(g.ravel(), [-0.2], atol=1e-6)


@pytest.mark.parametrize("lik", [*ALL, L.Gaussian("optimal")], ids=repr)
def test_jit_static_and_vmap(lik):
    rng = np.random.default_rng(7)
    out = jnp.asarray(rng.normal(size=(2, *E, lik.num_outputs)), jnp.float32)
    x = jnp.asarray({"real": rng.normal(size=(2, *E)), "integer_0_255": rng.integers(0, 256, (2, *E))}
                    .get(lik.support, rng.uniform(size=(2, *E))), jnp.float32)

    def fn(lk, o, xx, key):  # vmap over examples needs an explicit event_ndim
        per_example = jax.vmap(lambda oi, xi: lk.log_prob(oi, xi, event_ndim=len(E)))(o, xx)
        return lk.log_prob(o, xx), lk.mean(o), lk.sample(key, o), per_example

    lp, mean, sample, per_example = jax.jit(fn, static_argnums=0)(lik, out, x, jax.random.key(0))
    assert lp.shape == (2,) and mean.shape == sample.shape == (2, *E)
    np.testing.assert_allclose(per_example, lp, rtol=RTOL, atol=ATOL)
    assert hash(lik) == hash(type(lik)(**{f.name: getattr(lik, f.name) for f in dataclasses.fields(lik)}))


def test_num_outputs_and_shape_check():
    assert [lk.num_outputs for lk in ALL] == [1, 1, 1, 2, 1, 2, 256, 9]
    assert L.Gaussian(2).sigma == 2.0 and L.Gaussian(2) == L.Gaussian(2.0)
    assert L.DiscretizedLogisticMixture(10).num_outputs == 30
    assert all(lk.num_global_outputs == 0 for lk in ALL)
    with pytest.raises(ValueError, match="expects decoder outputs"):
        L.Gaussian("per_pixel").log_prob(jnp.zeros((2, *E, 1)), jnp.zeros((2, *E)))


@pytest.mark.parametrize("lik", [L.Bernoulli(), L.ContinuousBernoulli()], ids=repr)
def test_validate_unit_interval(lik):
    lik.validate_data(np.array([0.0, 0.3, 1.0], np.float32))
    lik.validate_data(np.array([0, 1], np.uint8))
    with pytest.raises(DataError, match=r"needs data in \[0, 1\]; got min -0.5, max 2.*divide 8-bit images"):
        lik.validate_data(np.array([-0.5, 2.0]))
    with pytest.raises(DataError, match="NaN/Inf"):
        lik.validate_data(np.array([0.5, np.nan]))


def test_validate_real_and_discrete():
    L.Gaussian().validate_data(np.array([-1e3, 0.0, 7.5]))
    with pytest.raises(DataError, match="NaN/Inf"):
        L.Laplace().validate_data(np.array([0.0, np.inf]))
    with pytest.raises(DataError, match="numeric"):
        L.Gaussian().validate_data(np.array(["a", "b"]))
    for lik in (L.Categorical256(), L.DiscretizedLogisticMixture()):
        lik.validate_data(np.arange(256, dtype=np.uint8))
        lik.validate_data(np.array([0.0, 17.0, 255.0]))
        with pytest.raises(DataError, match=r"non-integer.*scaled to \[0, 1\]"):
            lik.validate_data(np.array([0.0, 0.5, 1.0]))
        with pytest.raises(DataError, match="min -1, max 256"):
            lik.validate_data(np.array([-1, 3, 256]))
        with pytest.raises(DataError, match="NaN/Inf"):
            lik.validate_data(np.array([1.0, np.nan]))


def test_get_and_config_errors():
    assert isinstance(L.get("bernoulli"), L.Bernoulli)
    assert L.get("gaussian", sigma="optimal") == L.Gaussian("optimal")
    assert L.get("discretized_logistic_mixture", num_mixtures=2).num_outputs == 6
    assert {type(L.get(n)).__name__ for n in ["continuous_bernoulli", "laplace", "categorical256"]} == {
        "ContinuousBernoulli", "Laplace", "Categorical256"}
    with pytest.raises(ConfigError, match=r"Did you mean 'bernoulli'\?.*Valid names: bernoulli, continuous_"):
        L.get("bernouli")
    with pytest.raises(ConfigError, match="Invalid arguments"):
        L.get("bernoulli", sigma=1.0)
    for bad in [0.0, -1.0, float("nan"), True, "fixed"]:
        with pytest.raises(ConfigError, match="sigma must be a positive finite float"):
            L.Gaussian(bad)
    with pytest.raises(ConfigError, match="'per_pixel'"):
        L.Laplace("learned")
    for bad in [0, 2.5, True]:
        with pytest.raises(ConfigError, match="positive integer"):
            L.DiscretizedLogisticMixture(bad)


def test_bits_per_dim():
    np.testing.assert_allclose(L.bits_per_dim(784 * math.log(2) * 3.0, 784), 3.0)
    np.testing.assert_allclose(L.bits_per_dim(jnp.asarray([0.0, 2 * math.log(2)]), 2), [0.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("lik", [*ALL, L.Gaussian("optimal")], ids=repr)
def test_flattened_event_sum_equals_the_per_element_sum_with_broadcasting(lik):
    """log_prob merges the event dims before the per-element terms (a CPU speed-up); the values must not change,
    also with K importance samples broadcast against x [B, *E]."""
    rng = np.random.default_rng(11)
    out = jnp.asarray(rng.normal(size=(5, 2, 6, *E, lik.num_outputs)), jnp.float32)  # [K, B, 6, 3, 4, P]
    x = jnp.asarray({"real": rng.normal(size=(2, 6, *E)), "integer_0_255": rng.integers(0, 256, (2, 6, *E))}
                    .get(lik.support, rng.uniform(size=(2, 6, *E))), jnp.float32)
    kwargs = {"event_ndim": 3} if isinstance(lik, L.Gaussian) else {}
    elements = lik.log_prob_elements(out, jnp.broadcast_to(x, out.shape[:-1]), **kwargs)  # no flattening
    want = np.asarray(elements, np.float64).sum(axis=(-3, -2, -1))
    got = lik.log_prob(out, x, event_ndim=3)
    assert got.shape == (5, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
