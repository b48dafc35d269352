"""Samplers: tempered prior samples, EM for Gaussian mixtures against scikit-learn and scipy, VampPrior samples,
interpolation and traversals."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import optimize, special, stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from jaxvae.distributions import likelihoods
from jaxvae.errors import ConfigError
from jaxvae.evaluation import samplers
from jaxvae.evaluation.samplers import GaussianMixture
from jaxvae.models import priors
from jaxvae.models.protocol import VAE, split

# ----------------------------------------------------------------------------------------------------------------
# Models


def _model(prior=None, seed=0):
    vae = VAE.mlp((6,), 2, likelihoods.Bernoulli(), hidden=(4,), prior=prior, rngs=nnx.Rngs(seed))
    return split(vae)


def _learned_gaussian():
    prior = priors.LearnedGaussian(2)
    prior.loc[...] = jnp.array([1.5, -2.0])
    prior.log_scale[...] = jnp.log(jnp.array([0.5, 3.0]))
    return prior


def _mixture():
    prior = priors.MixtureOfGaussians(2, 3, rngs=nnx.Rngs(1))
    prior.logits[...] = jnp.array([0.0, 1.0, -1.0])
    prior.loc[...] = jnp.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    prior.log_scale[...] = jnp.log(jnp.array([[0.5, 0.5], [1.0, 1.0], [0.3, 2.0]]))
    return prior


def _vamp():
    return priors.VampPrior(2, 3, (6,), rngs=nnx.Rngs(2))


PRIORS = {
    "standard_normal": lambda: None,
    "learned_gaussian": _learned_gaussian,
    "mixture": _mixture,
    "vamp": _vamp,
}


# ----------------------------------------------------------------------------------------------------------------
# Tempered prior samples


@pytest.mark.parametrize("name", list(PRIORS))
def test_prior_samples_shape_determinism_and_temperature_zero(name):
    model, params = _model(PRIORS[name]())
    key = jax.random.key(3)
    z = samplers.prior_samples(model, params, key, 64)
    assert z.shape == (64, 2) and bool(jnp.all(jnp.isfinite(z)))
    np.testing.assert_array_equal(z, samplers.prior_samples(model, params, key, 64))
    z0 = np.asarray(samplers.prior_samples(model, params, key, 64, temperature=0.0))
    vae = model.merge(params)
    if name in ("standard_normal", "learned_gaussian"):
        mean = np.asarray(vae.prior().loc)
        np.testing.assert_array_equal(z0, np.broadcast_to(mean, z0.shape))  # exactly the prior mean
    else:
        prior = vae.prior
        means = np.asarray(prior.loc[...] if name == "mixture" else vae.encoder(prior.pseudo_inputs[...]).loc)
        # Every sample is exactly one component mean.
        assert np.all(np.any(np.all(z0[:, None, :] == means[None], axis=-1), axis=-1))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_scales_std_diagonal_prior(temperature):
    model, params = _model(_learned_gaussian())
    z = np.asarray(samplers.prior_samples(model, params, jax.random.key(0), 40_000, temperature=temperature))
    np.testing.assert_allclose(z.mean(0), [1.5, -2.0], atol=0.05 * temperature)
    np.testing.assert_allclose(z.std(0), temperature * np.array([0.5, 3.0]), rtol=0.02)


def test_temperature_scales_component_std_mixture_prior():
    model, params = _model(_mixture())
    t = 0.5
    z = np.asarray(samplers.prior_samples(model, params, jax.random.key(1), 40_000, temperature=t))
    w = special.softmax([0.0, 1.0, -1.0])[:, None]
    mu = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    sd = np.array([[0.5, 0.5], [1.0, 1.0], [0.3, 2.0]])
    mean = (w * mu).sum(0)
    var = (w * ((t * sd) ** 2 + mu**2)).sum(0) - mean**2
    np.testing.assert_allclose(z.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(z.var(0), var, rtol=0.03)
    # Within-component spread: the points nearest component 1 (isolated at (3, 0)) have std T * 1.
    near = z[np.linalg.norm(z - mu[1], axis=1) < 2.5]
    np.testing.assert_allclose(near.std(0), t, rtol=0.05)


def test_prior_moments_of_mixture():
    model, params = _model(_mixture())
    mean, std = samplers.prior_moments(model, params)
    z = np.asarray(samplers.prior_samples(model, params, jax.random.key(2), 40_000))
    np.testing.assert_allclose(mean, z.mean(0), atol=0.05)
    np.testing.assert_allclose(std, z.std(0), rtol=0.02)


def test_vamp_samples():
    model, params = _model(_vamp())
    key = jax.random.key(4)
    z = samplers.vamp_samples(model, params, key, 64)
    assert z.shape == (64, 2)
    # Same draw as the temperature-1 sampler: pick a pseudo-input's posterior, then sample it.
    np.testing.assert_allclose(z, samplers.prior_samples(model, params, key, 64), rtol=1e-6, atol=1e-6)
    sn_model, sn_params = _model()
    with pytest.raises(ConfigError, match=r"VampPrior.*StandardNormal"):
        samplers.vamp_samples(sn_model, sn_params, key, 4)


# ----------------------------------------------------------------------------------------------------------------
# Gaussian mixtures

TRUE_WEIGHTS = np.array([0.5, 0.3, 0.2])
TRUE_MEANS = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 0.0, -1.0], [-3.0, 2.0, 2.0, 1.0]])


def _true_covs():
    rng = np.random.default_rng(7)
    covs = []
    for _ in range(3):
        a = rng.normal(size=(4, 4)) * 0.5
        covs.append(a @ a.T + 0.3 * np.eye(4))
    return np.stack(covs)


@functools.cache
def _mixture_data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    covs = _true_covs()
    labels = rng.choice(3, size=n, p=TRUE_WEIGHTS)
    x = np.stack([rng.multivariate_normal(TRUE_MEANS[k], covs[k]) for k in labels])
    return x.astype(np.float32)


def _match(a, b):
    """Permutation of the rows of ``b`` closest to those of ``a``."""
    cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
    _, perm = optimize.linear_sum_assignment(cost)
    return perm


def _sklearn_fit(x, covariance, tol=1e-6, max_iter=500, **kwargs):
    sk = SkGaussianMixture(3, covariance_type=covariance, tol=tol, max_iter=max_iter, reg_covar=1e-6, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x.astype(np.float64))
    return sk


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_fit_gmm_matches_sklearn_from_same_init(covariance):
    x = _mixture_data()
    means0 = TRUE_MEANS + np.array([[1.0, -0.5, 0.5, 0.0], [-0.8, 0.3, 0.0, 0.6], [0.5, 0.5, -0.7, 0.0]])
    weights0 = np.full(3, 1 / 3)
    covs0 = np.stack([np.eye(4)] * 3) if covariance == "full" else np.ones((3, 4))
    precisions0 = np.linalg.inv(covs0) if covariance == "full" else 1.0 / covs0
    # tol=0: both run exactly 40 EM steps from the same start, so they reach the same iterate.
    sk = _sklearn_fit(x, covariance, tol=0.0, max_iter=40, weights_init=weights0, means_init=means0,
                      precisions_init=precisions0)
    init = GaussianMixture(jnp.asarray(weights0, jnp.float32), jnp.asarray(means0, jnp.float32),
                           jnp.asarray(covs0, jnp.float32))
    fit = samplers.fit_gmm(jax.random.key(0), x, 3, covariance=covariance, num_iters=40, tol=0.0,
                           init_params=init)
    assert int(fit.num_iters) == sk.n_iter_ == 40
    ll_sk = sk.score(x.astype(np.float64))
    assert abs(float(fit.log_likelihood) - ll_sk) <= 1e-5 * abs(ll_sk)
    perm = _match(sk.means_, np.asarray(fit.gmm.means))
    np.testing.assert_array_equal(perm, np.arange(3))  # same start, same local optimum, same order
    np.testing.assert_allclose(fit.gmm.means, sk.means_, atol=1e-4)
    np.testing.assert_allclose(fit.gmm.weights, sk.weights_, atol=1e-5)
    np.testing.assert_allclose(fit.gmm.covariances, sk.covariances_, atol=1e-4)
    assert fit.gmm.covariances.shape == ((3, 4, 4) if covariance == "full" else (3, 4))
    # The final log-likelihood is that of the returned mixture.
    np.testing.assert_allclose(fit.log_likelihood, jnp.mean(samplers.gmm_log_prob(fit.gmm, x)), rtol=1e-6)


@pytest.mark.parametrize(("covariance", "init"), [("full", "kmeans++"), ("diag", "random")])
def test_fit_gmm_own_init_finds_sklearn_optimum_deterministically(covariance, init):
    x = _mixture_data(seed=1)
    sk = _sklearn_fit(x, covariance, random_state=0)
    fit = samplers.fit_gmm(jax.random.key(1), x, 3, covariance=covariance, num_iters=500, tol=1e-6, init=init)
    assert bool(fit.converged) and int(fit.num_iters) < 500
    ll_sk = sk.score(x.astype(np.float64))
    assert abs(float(fit.log_likelihood) - ll_sk) <= 1e-3 * abs(ll_sk)
    perm = _match(sk.means_, np.asarray(fit.gmm.means))
    np.testing.assert_allclose(np.asarray(fit.gmm.means)[perm], sk.means_, atol=1e-2)
    np.testing.assert_allclose(np.asarray(fit.gmm.weights)[perm], sk.weights_, atol=1e-2)
    # Deterministic for a key.
    again = samplers.fit_gmm(jax.random.key(1), x, 3, covariance=covariance, num_iters=500, tol=1e-6, init=init)
    for a, b in zip(jax.tree.leaves(fit), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)
    # The history is the mean log-likelihood before each step: finite, then NaN; EM never decreases it.
    steps = int(fit.num_iters)
    hist = np.asarray(fit.history)
    assert np.all(np.isfinite(hist[:steps])) and np.all(np.isnan(hist[steps:]))
    assert np.all(np.diff(hist[:steps]) >= -1e-5)
    assert hist[-1 if steps == 500 else steps - 1] <= float(fit.log_likelihood) + 1e-5
    assert hist[steps - 1] - hist[0] > 0.01  # the initialisation was not already the optimum


def test_em_step_reports_input_log_likelihood_and_never_lowers_it():
    x = jnp.asarray(_mixture_data())
    gmm = GaussianMixture(jnp.array([0.2, 0.3, 0.5]), jnp.asarray(TRUE_MEANS[::-1].copy(), jnp.float32),
                          jnp.ones((3, 4)))
    lls = []
    for _ in range(5):
        new, ll = samplers.em_step(gmm, x)
        np.testing.assert_allclose(ll, jnp.mean(samplers.gmm_log_prob(gmm, x)), rtol=1e-6)
        np.testing.assert_allclose(jnp.sum(new.weights), 1.0, rtol=1e-6)
        assert new.covariances.shape == (3, 4)
        lls.append(float(ll))
        gmm = new
    assert np.all(np.diff(lls) >= -1e-5) and lls[-1] > lls[0]


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gmm_log_prob_matches_scipy(covariance):
    covs = _true_covs()
    if covariance == "diag":
        covs_arg = np.stack([np.diag(c) for c in covs])
        dense = np.stack([np.diag(v) for v in covs_arg])
    else:
        covs_arg = dense = covs
    gmm = GaussianMixture(jnp.asarray(TRUE_WEIGHTS), jnp.asarray(TRUE_MEANS), jnp.asarray(covs_arg))
    assert gmm.covariance_type == covariance
    z = np.random.default_rng(3).normal(size=(50, 4)) * 3
    parts = [np.log(w) + stats.multivariate_normal.logpdf(z, m, c)
             for w, m, c in zip(TRUE_WEIGHTS, TRUE_MEANS, dense)]
    expected = special.logsumexp(parts, axis=0)
    np.testing.assert_allclose(samplers.gmm_log_prob(gmm, jnp.asarray(z, jnp.float32)), expected, rtol=1e-4)
    assert samplers.gmm_log_prob(gmm, jnp.zeros((2, 5, 4))).shape == (2, 5)


def test_gmm_log_prob_normalised_in_1d():
    gmm = GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[-2.0], [1.0]]), jnp.array([[[0.5]], [[2.0]]]))
    grid = jnp.linspace(-15.0, 15.0, 6001)[:, None]
    density = jnp.exp(samplers.gmm_log_prob(gmm, grid))
    np.testing.assert_allclose(jnp.sum(density) * (30.0 / 6000), 1.0, rtol=1e-4)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gmm_sample_moments(covariance):
    covs = _true_covs()
    dense = covs if covariance == "full" else np.stack([np.diag(np.diag(c)) for c in covs])
    arg = dense if covariance == "full" else np.stack([np.diag(c) for c in dense])
    gmm = GaussianMixture(jnp.asarray(TRUE_WEIGHTS, jnp.float32), jnp.asarray(TRUE_MEANS, jnp.float32),
                          jnp.asarray(arg, jnp.float32))
    s = np.asarray(samplers.gmm_sample(gmm, jax.random.key(0), 60_000), np.float64)
    w = TRUE_WEIGHTS[:, None]
    mean = (w * TRUE_MEANS).sum(0)
    cov = sum(wk * (c + np.outer(m - mean, m - mean)) for wk, m, c in zip(TRUE_WEIGHTS, TRUE_MEANS, dense))
    np.testing.assert_allclose(s.mean(0), mean, atol=0.04)
    np.testing.assert_allclose(np.cov(s.T), cov, atol=0.08)
    np.testing.assert_array_equal(s, samplers.gmm_sample(gmm, jax.random.key(0), 60_000))


def test_gmm_is_a_jittable_pytree_and_decodes():
    model, params = _model()
    gmm = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.ones((2, 2)) * 0.1)
    assert gmm.covariance_type == "diag" and gmm.num_components == 2 and gmm.dim == 2
    scaled = jax.jit(lambda g: jax.tree.map(lambda a: a * 1.0, g))(gmm)
    assert isinstance(scaled, GaussianMixture) and scaled.covariance_type == "diag"
    images = jax.jit(model.decode_mean)(params, samplers.gmm_sample(gmm, jax.random.key(2), 5))
    assert images.shape == (5, 6) and bool(jnp.all((images >= 0) & (images <= 1)))


def test_fit_gmm_rejects_bad_arguments():
    x = jnp.zeros((10, 2))
    with pytest.raises(ConfigError, match="covariance"):
        samplers.fit_gmm(jax.random.key(0), x, 2, covariance="spherical")
    with pytest.raises(ConfigError, match="init"):
        samplers.fit_gmm(jax.random.key(0), x, 2, init="kmeans")
    with pytest.raises(ConfigError, match="num_components"):
        samplers.fit_gmm(jax.random.key(0), x, 11)
    bad = GaussianMixture(jnp.ones(2) / 2, jnp.zeros((2, 2)), jnp.ones((2, 2)))
    with pytest.raises(ConfigError, match="init_params"):
        samplers.fit_gmm(jax.random.key(0), x, 2, covariance="full", init_params=bad)


# ----------------------------------------------------------------------------------------------------------------
# Interpolation and traversals


def test_lerp_and_slerp_endpoints_and_unit_norm():
    z0, z1 = np.array([1.0, 0.0, 0.0], np.float32), np.array([0.0, 0.6, 0.8], np.float32)
    for fn in (samplers.lerp, samplers.slerp):
        path = np.asarray(fn(z0, z1, 7))
        assert path.shape == (7, 3)
        np.testing.assert_array_equal(path[0], z0)
        np.testing.assert_array_equal(path[-1], z1)
    np.testing.assert_allclose(samplers.lerp(z0, z1, 3)[1], (z0 + z1) / 2)
    path = np.asarray(samplers.slerp(z0, z1, 11), np.float64)
    np.testing.assert_allclose(np.linalg.norm(path, axis=-1), 1.0, rtol=1e-6)
    # Constant angular speed: consecutive points are equally far apart on the circle.
    angles = np.arccos(np.clip(np.sum(path[1:] * path[:-1], axis=-1), -1, 1))
    np.testing.assert_allclose(angles, np.pi / 2 / 10, rtol=1e-4)


def test_slerp_degenerate_cases_fall_back_to_lerp():
    z = np.array([0.3, -1.2, 2.0], np.float32)
    for other in (2.0 * z, -z, np.zeros(3, np.float32), z + 1e-9):
        path = samplers.slerp(z, other, 5)
        assert np.all(np.isfinite(path))
        np.testing.assert_allclose(path, samplers.lerp(z, other, 5), rtol=1e-6, atol=1e-6)
    # Small but resolvable angles stay on the arc (unit norm) rather than cutting the chord.
    a = np.array([1.0, 0.0], np.float32)
    b = np.array([np.cos(1e-2), np.sin(1e-2)], np.float32)
    np.testing.assert_allclose(np.linalg.norm(samplers.slerp(a, b, 5), axis=-1), 1.0, rtol=1e-6)
    with pytest.raises(ConfigError, match="same shape"):
        samplers.slerp(np.zeros((2, 3)), np.zeros((2, 3)), 4)


def test_interpolate_endpoints_are_reconstructions():
    model, params = _model()
    x = jax.random.bernoulli(jax.random.key(1), 0.5, (2, 6)).astype(jnp.float32)
    recon = jax.jit(model.reconstruct)(params, x)
    for method in ("slerp", "lerp"):
        out = samplers.interpolate(model, params, x[0], x[1], 5, method=method)
        assert out.shape == (5, 6)
        np.testing.assert_allclose(out[0], recon[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[-1], recon[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="method"):
        samplers.interpolate(model, params, x[0], x[1], 5, method="cubic")


def test_traversal_latents_change_only_the_chosen_dim():
    z = np.array([0.5, -1.0, 2.0, 0.1], np.float32)
    lat = np.asarray(samplers.traversal_latents(z, (2, 0), num=5, span=2.0, loc=np.array([0.0, 0.0, 1.0, 0.0]),
                                                scale=np.array([3.0, 1.0, 0.5, 1.0])))
    assert lat.shape == (2, 5, 4)
    for i, d in enumerate((2, 0)):
        others = [j for j in range(4) if j != d]
        np.testing.assert_array_equal(lat[i][:, others], np.broadcast_to(z[others], (5, 3)))
    np.testing.assert_allclose(lat[0, :, 2], 1.0 + 0.5 * np.linspace(-2, 2, 5), rtol=1e-6)
    np.testing.assert_allclose(lat[1, :, 0], 3.0 * np.linspace(-2, 2, 5), rtol=1e-6)
    # Default loc/scale: absolute values, right for N(0, I).
    np.testing.assert_allclose(samplers.traversal_latents(z, (1,), 3, 3.0)[0, :, 1], [-3.0, 0.0, 3.0])


def test_traversals_decode_the_traversal_latents():
    model, params = _model(_learned_gaussian())
    x = jax.random.bernoulli(jax.random.key(2), 0.5, (6,)).astype(jnp.float32)
    out = samplers.traversals(model, params, x, num=4, span=1.5)
    assert out.shape == (2, 4, 6)
    z = jax.jit(model.encode)(params, x[None]).loc[0]
    lat = samplers.traversal_latents(z, (0, 1), 4, 1.5, loc=np.array([1.5, -2.0]), scale=np.array([0.5, 3.0]))
    np.testing.assert_allclose(out, jax.jit(model.decode_mean)(params, lat), rtol=1e-5, atol=1e-6)
    assert samplers.traversals(model, params, x, dims=[1], num=3).shape == (1, 3, 6)
    with pytest.raises(ConfigError, match="dims"):
        samplers.traversals(model, params, x, dims=[2])
