"""Learned ex-post samplers (jaxvae.evaluation.expost): the flow's density is normalized and reaches the true
density of a Gaussian; both samplers beat the prior on held-out latents of a non-Gaussian aggregate posterior;
their samples follow the data; fits are deterministic for a key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxvae.errors import ConfigError
from jaxvae.evaluation import expost


def _moons(n: int, seed: int) -> jnp.ndarray:
    """Two interleaved half circles in 2 dimensions (a non-Gaussian 'aggregate posterior'), plus a standard normal
    dimension and a shifted narrow one."""
    rng = np.random.default_rng(seed)
    theta, which = rng.uniform(0, np.pi, n), rng.integers(0, 2, n)
    x = np.where(which, np.cos(theta), 1 - np.cos(theta))
    y = np.where(which, np.sin(theta), 0.5 - np.sin(theta))
    z = np.stack([x, y, rng.normal(size=n), 3 + 0.5 * rng.normal(size=n)], 1) + 0.05 * rng.normal(size=(n, 4))
    return jnp.asarray(z, jnp.float32)


# The tests of the module fixture share a worker (fitted once). They and the Gaussian fit are in the slow tier, at
# XLA's default level (shipped_level): a thousand training steps each, whose run time -O0 compilation doubles.
MOONS = [pytest.mark.slow, pytest.mark.shipped_level, pytest.mark.xdist_group("moons_fits")]


def _moons_test(test):
    for mark in MOONS:
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def moons_fits():
    train, test = _moons(4000, 0), _moons(1000, 1)
    flow = expost.fit_flow(jax.random.key(0), train, steps=1000)
    two = expost.fit_two_stage(jax.random.key(1), train, steps=1000)
    return train, test, flow, two


@pytest.mark.slow
@pytest.mark.shipped_level
def test_the_flow_reaches_the_true_density_of_a_gaussian():
    """Held-out log-likelihood of a correlated Gaussian: the fitted flow is within 0.1 nats of the true density
    (scipy's), which no density beats in expectation."""
    mean, cov = np.array([1.0, -2.0, 0.5]), np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    rng = np.random.default_rng(0)
    train, test = rng.multivariate_normal(mean, cov, 4000), rng.multivariate_normal(mean, cov, 2000)
    fit = expost.fit_flow(jax.random.key(0), jnp.asarray(train, jnp.float32), steps=800)
    truth = stats.multivariate_normal(mean, cov).logpdf(test).mean()
    ours = float(jnp.mean(expost.flow_log_prob(fit, jnp.asarray(test, jnp.float32))))
    assert truth - 0.1 < ours < truth + 0.05, (ours, truth)


@_moons_test
def test_the_flow_density_integrates_to_one(moons_fits):
    """The exact density of a 2-D flow, summed over a fine grid that covers its mass, is 1."""
    train = moons_fits[0][:, :2]
    fit = expost.fit_flow(jax.random.key(3), train, steps=500)
    lo, hi, n = -3.0, 4.0, 250
    g = jnp.linspace(lo, hi, n)
    xx, yy = jnp.meshgrid(g, g)
    density = jnp.exp(expost.flow_log_prob(fit, jnp.stack([xx.ravel(), yy.ravel()], 1)))
    total = float(jnp.sum(density) * ((hi - lo) / (n - 1)) ** 2)
    assert total == pytest.approx(1.0, abs=0.02)


@_moons_test
def test_both_samplers_beat_the_prior_on_held_out_latents(moons_fits):
    train, test, flow, two = moons_fits
    prior = float(jnp.mean(-0.5 * jnp.sum(test ** 2 + jnp.log(2 * jnp.pi), -1)))
    m, s = train.mean(0), train.std(0)
    gaussian = float(jnp.mean(jnp.sum(-0.5 * ((test - m) / s) ** 2 - jnp.log(s) - 0.5 * jnp.log(2 * jnp.pi), -1)))
    flow_ll = float(jnp.mean(expost.flow_log_prob(flow, test)))
    two_ll = float(jnp.mean(expost.two_stage_log_prob(two, jax.random.key(2), test)))
    assert flow_ll > two_ll - 0.5 and flow_ll > gaussian + 1.0, (flow_ll, gaussian)  # the moons are not Gaussian
    assert two_ll > prior + 3.0, (two_ll, prior)
    for fit in (flow, two):  # training lowered the negative log-likelihood (flow) or -ELBO (two-stage)
        assert fit.losses[-100:].mean() < fit.losses[:100].mean()


@_moons_test
def test_samples_follow_the_data(moons_fits):
    """Samples of each fitted density match the data's moments; the two-stage VAE's mean decoding (how Dai & Wipf
    sample) keeps the mean but drops the decoder's gamma noise, so its spread is smaller."""
    train, _, flow, two = moons_fits
    for name, z in (("flow", expost.flow_sample(flow, jax.random.key(5), 5000)),
                    ("two_stage", expost.two_stage_sample(two, jax.random.key(5), 5000, noise=True))):
        assert z.shape == (5000, 4), name
        np.testing.assert_allclose(z.mean(0), train.mean(0), atol=0.1, err_msg=name)
        np.testing.assert_allclose(z.std(0), train.std(0), rtol=0.15, err_msg=name)
    means = expost.two_stage_sample(two, jax.random.key(5), 5000)
    np.testing.assert_allclose(means.mean(0), train.mean(0), atol=0.1)
    assert bool(jnp.all(means.std(0) < train.std(0)))


def test_fits_are_deterministic_for_a_key_and_bad_input_is_refused():
    z = _moons(600, 2)
    a, b = (expost.fit_flow(jax.random.key(1), z, steps=50) for _ in range(2))
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    c = expost.fit_flow(jax.random.key(2), z, steps=50)
    assert not np.array_equal(a.losses, c.losses)
    with pytest.raises(ConfigError, match=r"shape \[N, D\]"):
        expost.fit_flow(jax.random.key(0), z[0])
    with pytest.raises(ConfigError, match="latent_dim >= 1"):
        expost.fit_two_stage(jax.random.key(0), z, latent_dim=0)
