"""Priors: densities against direct formulas, samples against their moments, VampPrior semantics."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import special, stats

from jaxvae.models import nets, priors


def test_standard_normal():
    p = priors.StandardNormal(3)()
    z = jax.random.normal(jax.random.key(0), (5, 3)) * 2
    np.testing.assert_allclose(p.log_prob(z), stats.norm.logpdf(np.asarray(z)).sum(-1), rtol=1e-5)
    s = p.sample(jax.random.key(1), 50_000)
    assert s.shape == (50_000, 3)
    np.testing.assert_allclose(s.std(0), 1.0, atol=0.02)


def test_learned_gaussian_matches_scipy_and_samples():
    p = priors.LearnedGaussian(2)
    p.loc[...] = jnp.array([1.0, -1.0])
    p.log_scale[...] = jnp.log(jnp.array([0.5, 3.0]))
    p = p()
    z = jnp.array([[0.0, 0.0], [1.0, 2.0]])
    np.testing.assert_allclose(
        p.log_prob(z), stats.norm.logpdf(np.asarray(z), [1.0, -1.0], [0.5, 3.0]).sum(-1), rtol=1e-5
    )
    s = p.sample(jax.random.key(0), 100_000)
    np.testing.assert_allclose(s.mean(0), [1.0, -1.0], atol=0.03)
    np.testing.assert_allclose(s.std(0), [0.5, 3.0], rtol=0.02)


def test_mixture_of_gaussians_density_and_samples():
    p = priors.MixtureOfGaussians(2, num_components=3, rngs=nnx.Rngs(0))
    p.logits[...] = jnp.array([0.0, 1.0, -1.0])
    p.loc[...] = jnp.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    p.log_scale[...] = jnp.log(jnp.array([[0.5, 0.5], [1.0, 1.0], [0.3, 2.0]]))
    w = special.softmax([0.0, 1.0, -1.0])
    z = jax.random.normal(jax.random.key(1), (7, 2)) * 3
    dens = sum(
        w[k] * stats.multivariate_normal.pdf(
            np.asarray(z), np.asarray(p.loc[k]), np.diag(np.exp(2 * p.log_scale[k]))
        )
        for k in range(3)
    )
    dist = p()
    np.testing.assert_allclose(dist.log_prob(z), np.log(dens), rtol=1e-4)
    s = dist.sample(jax.random.key(2), 200_000)
    np.testing.assert_allclose(s.mean(0), w @ np.asarray(p.loc[...]), atol=0.03)
    # The closed-form marginal moments of the mixture against the samples.
    np.testing.assert_allclose(dist.mean(), s.mean(0), atol=0.03)
    np.testing.assert_allclose(np.sqrt(dist.variance()), s.std(0), rtol=0.01)


def test_vamp_prior_is_uniform_mixture_of_encoder_posteriors():
    rngs = nnx.Rngs(0)
    enc = nets.MLPEncoder((6,), 2, (8,), rngs=rngs)
    p = priors.VampPrior(2, num_pseudo_inputs=4, event_shape=(6,), rngs=rngs)
    comps = enc(p.pseudo_inputs[...])
    z = jax.random.normal(jax.random.key(3), (5, 2))
    expected = special.logsumexp(np.asarray(comps.log_prob(z[:, None, :])), axis=-1) - np.log(4)
    np.testing.assert_allclose(p(enc).log_prob(z), expected, rtol=1e-5)
    s = p(enc).sample(jax.random.key(4), 100_000)
    np.testing.assert_allclose(s.mean(0), comps.loc.mean(0), atol=0.03)
    try:
        p()
    except ValueError as e:
        assert "encoder" in str(e)
    else:
        raise AssertionError("VampPrior without an encoder must raise")
