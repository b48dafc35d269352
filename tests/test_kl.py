"""KL divergences: closed forms against Monte Carlo, non-negativity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae.distributions import kl as kl_lib
from jaxvae.models.posteriors import DiagonalGaussian


def _assert_within_standard_errors(samples, expected, num_se=5.0):
    """``samples`` [N, ...] Monte Carlo terms; their mean must be within ``num_se`` standard errors."""
    mean = jnp.mean(samples, axis=0)
    se = jnp.std(samples, axis=0) / jnp.sqrt(samples.shape[0])
    np.testing.assert_array_less(jnp.abs(mean - expected), num_se * se + 1e-6)


def _random_gaussian(key, shape, scale_range=1.0):
    k1, k2 = jax.random.split(key)
    return DiagonalGaussian(
        jax.random.normal(k1, shape) * 1.5, jax.random.uniform(k2, shape, minval=-scale_range, maxval=scale_range)
    )


def test_standard_normal_kl_matches_monte_carlo():
    q = _random_gaussian(jax.random.key(0), (4, 3), scale_range=0.7)
    analytic = kl_lib.kl_standard_normal_per_dim(q)  # [4, 3]
    z = q.sample(jax.random.key(1), 200_000)  # [N, 4, 3]
    log_p = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * z**2
    _assert_within_standard_errors(q.log_prob_per_dim(z) - log_p, analytic)


def test_diagonal_gaussians_kl_matches_monte_carlo_and_reduces_to_standard_normal():
    q = _random_gaussian(jax.random.key(2), (5, 4), 0.5)
    p = _random_gaussian(jax.random.key(3), (4,), 0.5)  # broadcasts like a prior
    analytic = kl_lib.kl_diagonal_gaussians_per_dim(q, p)
    z = q.sample(jax.random.key(4), 200_000)
    _assert_within_standard_errors(q.log_prob_per_dim(z) - p.log_prob_per_dim(z), analytic)
    std = DiagonalGaussian(jnp.zeros(4), jnp.zeros(4))
    np.testing.assert_allclose(
        kl_lib.kl_diagonal_gaussians_per_dim(q, std), kl_lib.kl_standard_normal_per_dim(q), rtol=1e-5, atol=1e-6
    )


def test_monte_carlo_kl_for_any_prior_is_unbiased():
    q = _random_gaussian(jax.random.key(5), (3, 2), 0.5)
    p = _random_gaussian(jax.random.key(6), (2,), 0.5)
    mc = kl_lib.kl_monte_carlo(q, p.log_prob, jax.random.key(7), num_samples=200_000)
    analytic = jnp.sum(kl_lib.kl_diagonal_gaussians_per_dim(q, p), -1)
    # Same key and samples as kl_monte_carlo draws internally, to get the standard error of its estimate.
    z = q.sample(jax.random.key(7), 200_000)
    terms = q.log_prob(z) - p.log_prob(z)
    np.testing.assert_allclose(mc, terms.mean(0), rtol=1e-5)
    _assert_within_standard_errors(terms, analytic)


@pytest.mark.parametrize("seed", range(5))
def test_kl_is_non_negative_and_zero_only_at_equality(seed):
    q = _random_gaussian(jax.random.key(seed), (1000, 8), scale_range=5.0)
    assert jnp.all(kl_lib.kl_standard_normal_per_dim(q) >= 0.0)
    p = _random_gaussian(jax.random.key(seed + 100), (1000, 8), scale_range=5.0)
    assert jnp.all(kl_lib.kl_diagonal_gaussians_per_dim(q, p) >= 0.0)
    np.testing.assert_allclose(kl_lib.kl_diagonal_gaussians_per_dim(q, q), 0.0, atol=1e-6)


def test_kl_of_collapsed_dimension_is_tiny_and_accurate():
    # mu = 1e-4, log sigma = 1e-4: KL = mu^2/2 + (e^{2s} - 1)/2 - s ~= 5e-9 + 1e-8 = 1.5e-8 (second order).
    q = DiagonalGaussian(jnp.array([1e-4]), jnp.array([1e-4]))
    kl = kl_lib.kl_standard_normal_per_dim(q)
    np.testing.assert_allclose(kl, 0.5e-8 + 1e-8, rtol=1e-3)
