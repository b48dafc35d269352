"""Diagonal Gaussian posterior: densities against scipy, sampling moments, reparameterized gradients."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxvae.posteriors import DiagonalGaussian


def test_log_prob_and_entropy_match_scipy():
    q = DiagonalGaussian(jnp.array([[0.3, -1.0, 2.0]]), jnp.array([[0.1, -0.5, 0.7]]))
    z = jnp.array([[[0.0, 0.5, 1.0]], [[1.0, -2.0, 3.0]]])  # [K=2, B=1, D=3]
    expected = stats.norm.logpdf(np.asarray(z), np.asarray(q.loc), np.exp(np.asarray(q.log_scale))).sum(-1)
    np.testing.assert_allclose(q.log_prob(z), expected, rtol=1e-5)
    np.testing.assert_allclose(
        q.entropy(), stats.norm.entropy(np.asarray(q.loc), np.exp(np.asarray(q.log_scale))).sum(-1), rtol=1e-5
    )


def test_sample_shapes_and_moments():
    q = DiagonalGaussian(jnp.array([[1.0, -2.0]]), jnp.log(jnp.array([[0.5, 2.0]])))
    assert q.sample(jax.random.key(0)).shape == (1, 2)
    z = q.sample(jax.random.key(1), 100_000)
    assert z.shape == (100_000, 1, 2)
    np.testing.assert_allclose(z.mean(0), q.loc, atol=0.03)
    np.testing.assert_allclose(z.std(0), q.scale, rtol=0.02)


def test_reparameterized_gradient_of_mean_square():
    # E[z^2] = mu^2 + sigma^2, so d/dmu = 2 mu and d/dlog_sigma = 2 sigma^2.
    def f(loc, log_scale):
        return jnp.mean(DiagonalGaussian(loc, log_scale).sample(jax.random.key(3), 200_000) ** 2)

    g_loc, g_ls = jax.grad(f, argnums=(0, 1))(jnp.array(0.7), jnp.array(-0.3))
    np.testing.assert_allclose(g_loc, 1.4, rtol=0.02)
    np.testing.assert_allclose(g_ls, 2 * np.exp(-0.6), rtol=0.02)
