"""Property-based tests (hypothesis) of the numerics: decoder likelihoods are finite with finite gradients over a
generous range of raw decoder outputs and over their data support, discrete ones are sub-normalised (log p <= 0),
the analytic KL divergences are finite, non-negative and vanish at q = p, and DiagonalGaussian.log_prob is finite
and sums the per-dimension densities.

Every array is drawn with a fixed shape and dtype, and every function is jitted once (the likelihood is a static
argument), so hypothesis examples reuse one compiled executable instead of retracing per example.
``database=None`` keeps hypothesis from writing a ``.hypothesis/`` example database into the working tree.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jaxvae.distributions import likelihoods as L
from jaxvae.distributions.kl import kl_diagonal_gaussians_per_dim, kl_standard_normal_per_dim
from jaxvae.models.posteriors import DiagonalGaussian

B, E = 4, (6,)  # batch size and event shape of every drawn example
D = 6  # latent dimension for the KL / posterior properties
OUT_BOUND = 30.0  # raw decoder outputs are drawn from [-OUT_BOUND, OUT_BOUND]
LOG_PROB_SLACK = 1e-5  # float32 slack on "log p <= 0" for discrete likelihoods
KL_SLACK = 1e-6  # float32 slack on "KL >= 0"
SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large]

LIKELIHOODS = [
    L.Bernoulli(),
    L.ContinuousBernoulli(),
    L.Gaussian(sigma=0.5),
    L.Gaussian(sigma="learned"),
    L.Gaussian(sigma="per_pixel"),
    L.Gaussian(sigma="optimal"),
    L.Laplace(scale=0.3),
    L.Laplace(scale="per_pixel"),
    L.Categorical256(),
    L.DiscretizedLogisticMixture(num_mixtures=3),
]
DISCRETE = [L.Bernoulli(), L.Categorical256(), L.DiscretizedLogisticMixture(num_mixtures=3)]


def _id(lik):
    return repr(lik)


def _f32(lo, hi):
    return st.floats(lo, hi, width=32, allow_nan=False, allow_infinity=False)


def _outs(lik):
    """Finite raw decoder outputs ``[B, *E, P]`` in [-OUT_BOUND, OUT_BOUND]."""
    return arrays(np.float32, (B, *E, lik.num_outputs), elements=_f32(-OUT_BOUND, OUT_BOUND))


def _data(support):
    """Data ``[B, *E]`` (float32) in a likelihood's support."""
    elements = {
        "binary": st.sampled_from([0.0, 1.0]),
        "unit_interval": _f32(0.0, 1.0),
        "real": _f32(-10.0, 10.0),
        "integer_0_255": st.integers(0, 255).map(float),
    }[support]
    return arrays(np.float32, (B, *E), elements=elements)


def _data_for(lik):
    # Bernoulli's declared support is binary, but it also serves as binary cross-entropy on grey values in [0, 1].
    return _data("unit_interval" if isinstance(lik, L.Bernoulli) else lik.support)


@functools.partial(jax.jit, static_argnames="lik")
def _log_prob_and_grad(lik, out, x):
    """``log p(x | out) [B]`` and the gradient of its sum w.r.t. ``out``."""
    lp, vjp = jax.vjp(lambda o: lik.log_prob(o, x), out)
    (grad,) = vjp(jnp.ones_like(lp))
    return lp, grad


@functools.partial(jax.jit, static_argnames="lik")
def _log_prob_elements(lik, out, x):
    return lik.log_prob_elements(out, x)


# --------------------------------------------------------------------------------------------- likelihoods


@pytest.mark.parametrize("lik", LIKELIHOODS, ids=_id)
def test_log_prob_and_its_gradient_are_finite(lik):
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=SUPPRESS)
    @given(out=_outs(lik), x=_data_for(lik))
    def check(out, x):
        lp, grad = _log_prob_and_grad(lik, jnp.asarray(out), jnp.asarray(x))
        lp, grad = np.asarray(lp), np.asarray(grad)
        assert lp.shape == (B,) and grad.shape == out.shape
        assert np.all(np.isfinite(lp)), (lp, out, x)
        assert np.all(np.isfinite(grad)), (grad, out, x)

    check()


@pytest.mark.parametrize("lik", DISCRETE, ids=_id)
def test_discrete_log_probs_are_at_most_zero(lik):
    support = "binary" if isinstance(lik, L.Bernoulli) else lik.support

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=SUPPRESS)
    @given(out=_outs(lik), x=_data(support))
    def check(out, x):
        lp = np.asarray(_log_prob_elements(lik, jnp.asarray(out), jnp.asarray(x)))
        assert lp.shape == (B, *E)
        assert np.all(np.isfinite(lp))
        assert lp.max() <= LOG_PROB_SLACK, (lp.max(), out, x)

    check()


# ---------------------------------------------------------------------------------------------------- KL

_locs = arrays(np.float32, (B, D), elements=_f32(-50.0, 50.0))
_log_scales = arrays(np.float32, (B, D), elements=_f32(-8.0, 8.0))


@jax.jit
def _kls(q_loc, q_log_scale, p_loc, p_log_scale):
    q, p = DiagonalGaussian(q_loc, q_log_scale), DiagonalGaussian(p_loc, p_log_scale)
    return kl_standard_normal_per_dim(q), kl_diagonal_gaussians_per_dim(q, p), kl_diagonal_gaussians_per_dim(q, q)


@settings(max_examples=200, deadline=None, database=None)
@given(q_loc=_locs, q_log_scale=_log_scales, p_loc=_locs, p_log_scale=_log_scales)
def test_kl_is_finite_non_negative_and_zero_against_itself(q_loc, q_log_scale, p_loc, p_log_scale):
    kl_std, kl_qp, kl_qq = (np.asarray(v) for v in _kls(q_loc, q_log_scale, p_loc, p_log_scale))
    for kl in (kl_std, kl_qp, kl_qq):
        assert kl.shape == (B, D)
        assert np.all(np.isfinite(kl)), kl
    assert kl_std.min() >= -KL_SLACK, (kl_std.min(), q_loc, q_log_scale)
    assert kl_qp.min() >= -KL_SLACK, (kl_qp.min(), q_loc, q_log_scale, p_loc, p_log_scale)
    np.testing.assert_allclose(kl_qq, 0.0, atol=1e-5)


@jax.jit
def _kl_std_both_ways(loc, log_scale):
    q = DiagonalGaussian(loc, log_scale)
    std = DiagonalGaussian(jnp.zeros_like(loc), jnp.zeros_like(log_scale))
    return kl_standard_normal_per_dim(q), kl_diagonal_gaussians_per_dim(q, std)


@settings(max_examples=50, deadline=None, database=None)
@given(loc=_locs, log_scale=_log_scales)
def test_kl_against_a_standard_normal_prior_matches_the_closed_form(loc, log_scale):
    a, b = (np.asarray(v) for v in _kl_std_both_ways(loc, log_scale))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------------- posteriors

K = 3  # extra leading sample axis for z


@jax.jit
def _posterior_log_probs(loc, log_scale, z):
    q = DiagonalGaussian(loc, log_scale)
    return q.log_prob(z), q.log_prob_per_dim(z)


@settings(max_examples=200, deadline=None, database=None)
@given(loc=_locs, log_scale=_log_scales, z=arrays(np.float32, (K, B, D), elements=_f32(-50.0, 50.0)))
def test_diagonal_gaussian_log_prob_is_finite_and_sums_the_per_dim_terms(loc, log_scale, z):
    total, per_dim = (np.asarray(v) for v in _posterior_log_probs(loc, log_scale, z))
    assert total.shape == (K, B) and per_dim.shape == (K, B, D)
    assert np.all(np.isfinite(total)) and np.all(np.isfinite(per_dim))
    np.testing.assert_allclose(total, per_dim.sum(-1, dtype=np.float64), rtol=1e-5, atol=1e-4)
    # ... and the per-dim terms are the Gaussian log density (float64 reference).
    l64, s64, z64 = (np.asarray(v, np.float64) for v in (loc, log_scale, z))
    ref = -0.5 * math.log(2 * math.pi) - s64 - 0.5 * np.square((z64 - l64) * np.exp(-s64))
    np.testing.assert_allclose(per_dim, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(total, ref.sum(-1), rtol=1e-5, atol=1e-3)
