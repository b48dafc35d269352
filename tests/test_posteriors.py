"""Diagonal Gaussian posterior: densities against scipy, sampling moments, reparameterized gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxvae.models.posteriors import DiagonalGaussian


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


@pytest.mark.parametrize("rate", [0.01, 0.25, 2.0])
def test_the_committed_rate_scale_gives_exactly_that_kl_at_mean_zero_and_more_elsewhere(rate):
    from jaxvae.distributions import analytic_kl_per_dim
    from jaxvae.models.posteriors import committed_rate_log_scale

    log_scale = committed_rate_log_scale(rate)
    assert log_scale < 0
    prior = DiagonalGaussian.standard(3)
    at_zero = analytic_kl_per_dim(DiagonalGaussian(jnp.zeros((1, 3)), jnp.full((1, 3), log_scale)), prior)
    np.testing.assert_allclose(at_zero, rate, rtol=1e-5)
    means = 3.0 * jax.random.normal(jax.random.key(0), (100, 3))
    kl = analytic_kl_per_dim(DiagonalGaussian(means, jnp.full_like(means, log_scale)), prior)
    np.testing.assert_allclose(kl, rate + 0.5 * means ** 2, rtol=1e-4)  # the mean only adds mu^2 / 2


@pytest.mark.slow
def test_a_committed_rate_model_never_goes_below_its_rate(tmp_path):
    from jaxvae import config, runs
    from jaxvae.errors import ConfigError

    cfg = config.apply_overrides(config.get_preset("digits"), [
        "model.committed_rate=0.5", "train.steps=30", "eval.num_samples=10", "eval.max_examples=50",
        "objective.beta=4"])  # a heavy KL weight pushes towards the prior: the floor must hold
    summary = runs.fit(cfg, tmp_path, progress=False, log=lambda _: None)
    assert summary["test_kl"] >= cfg.model.latent_dim * 0.5 * (1 - 1e-5)
    run = runs.load_run(tmp_path)
    q = run.model.encode(run.params, run.dataset.test[:4])
    assert float(jnp.ptp(q.log_scale)) == 0.0
    with pytest.raises(ConfigError, match=r"model\.prior=standard_normal"):
        config.apply_overrides(config.get_preset("digits"), ["model.committed_rate=0.5", "model.prior=mixture"])
