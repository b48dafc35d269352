"""beta-TCVAE and InfoVAE: the KL decomposition against a NumPy reference and closed-form Gaussian values, the
telescoping identity, the MMD estimator's exactness and unbiasedness, loss formulas, gradients and jit."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads
from scipy.special import logsumexp

from jaxvae import objectives
from jaxvae.distributions import likelihoods
from jaxvae.models import priors
from jaxvae.models.posteriors import DiagonalGaussian
from jaxvae.models.protocol import VAE, split


def _small_vae(prior=None, seed=0, event=(6,)):
    vae = VAE.mlp(event, 2, likelihoods.Bernoulli(), hidden=(4,), prior=prior, rngs=nnx.Rngs(seed))
    return split(vae)


def _binary_batch(b, d=6, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 2, (b, d)), jnp.float32)


STANDARD_NORMAL_2D = DiagonalGaussian(jnp.zeros(2), jnp.zeros(2))

# Jitted entry points (one compilation per shape instead of one per primitive keeps the file fast).
kl_decomposition = jax.jit(objectives.kl_decomposition, static_argnames=("dataset_size", "estimator"))
mmd = jax.jit(objectives.mmd, static_argnames=("kernel",))
beta_tcvae = jax.jit(objectives.beta_tcvae, static_argnums=0,
                     static_argnames=("dataset_size", "num_samples", "estimator"))
info_vae = jax.jit(objectives.info_vae, static_argnums=0, static_argnames=("kernel", "num_samples"))
elbo = jax.jit(objectives.elbo, static_argnums=0, static_argnames=("num_samples", "analytic_kl"))

# ---------------------------------------------------------------------------------------------- KL decomposition


def _np_gauss(z, loc, log_scale):
    return -0.5 * np.log(2 * np.pi) - log_scale - 0.5 * ((z - loc) / np.exp(log_scale)) ** 2


def _np_decomposition(loc, log_scale, z, prior_loc, prior_log_scale, n, estimator):
    """Direct loops over samples i and posteriors j, float64."""
    k_, m, d = z.shape
    w = np.full((m, m), 1.0 / (n * m))
    if estimator == "mss":
        w = np.full((m, m), (n - 1) / (n * (m - 1)))
        np.fill_diagonal(w, 1.0 / n)
    mi, tc, dw = np.zeros((k_, m)), np.zeros((k_, m)), np.zeros((k_, m))
    for k in range(k_):
        for i in range(m):
            per = np.array([_np_gauss(z[k, i], loc[j], log_scale[j]) for j in range(m)])  # [M(j), D]
            log_qz = logsumexp(per.sum(-1), b=w[i])
            log_prod = sum(logsumexp(per[:, dd], b=w[i]) for dd in range(d))
            log_qzx = _np_gauss(z[k, i], loc[i], log_scale[i]).sum()
            log_pz = _np_gauss(z[k, i], prior_loc, prior_log_scale).sum()
            mi[k, i], tc[k, i], dw[k, i] = log_qzx - log_qz, log_qz - log_prod, log_prod - log_pz
    return mi.mean(0), tc.mean(0), dw.mean(0)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_kl_decomposition_matches_a_numpy_reference(estimator):
    rng = np.random.default_rng(0)
    m, d, k, n = 5, 3, 2, 50
    loc, log_scale = rng.normal(size=(m, d)), rng.normal(scale=0.3, size=(m, d))
    z = loc + np.exp(log_scale) * rng.normal(size=(k, m, d))
    prior_loc, prior_log_scale = rng.normal(size=d), rng.normal(scale=0.2, size=d)
    expected = _np_decomposition(loc, log_scale, z, prior_loc, prior_log_scale, n, estimator)
    with jax.enable_x64(True):
        got = kl_decomposition(
            DiagonalGaussian(jnp.asarray(loc), jnp.asarray(log_scale)), jnp.asarray(z),
            DiagonalGaussian(jnp.asarray(prior_loc), jnp.asarray(prior_log_scale)), dataset_size=n,
            estimator=estimator)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)
        # Telescoping: whatever the weights, the sum is the Monte Carlo KL on the same samples.
        mc_kl = (_np_gauss(z, loc, log_scale).sum(-1) - _np_gauss(z, prior_loc, prior_log_scale).sum(-1)).mean(0)
        np.testing.assert_allclose(got.mi + got.tc + got.dimwise_kl, mc_kl, rtol=1e-10, atol=1e-10)


def test_mws_bias_is_the_documented_constant_when_the_batch_is_the_dataset():
    # With N = M the "mss" weights are exactly 1/M and the "mws" weights 1/M^2: every log q(.) estimate differs by
    # log M, so mi is too large by log M, tc by (D - 1) log M, and dimwise_kl too small by D log M.
    rng = np.random.default_rng(1)
    m, d = 64, 3
    q = DiagonalGaussian(jnp.asarray(rng.normal(size=(m, d)), jnp.float32), jnp.full((m, d), -1.0))
    z = q.sample(jax.random.key(0), 2)
    prior = DiagonalGaussian(jnp.zeros(d), jnp.zeros(d))
    mws = kl_decomposition(q, z, prior, dataset_size=m, estimator="mws")
    mss = kl_decomposition(q, z, prior, dataset_size=m, estimator="mss")
    np.testing.assert_allclose(mws.mi - mss.mi, math.log(m), rtol=1e-5)
    np.testing.assert_allclose(mws.tc - mss.tc, (d - 1) * math.log(m), rtol=1e-5)
    np.testing.assert_allclose(mws.dimwise_kl - mss.dimwise_kl, -d * math.log(m), rtol=1e-5)


def _gaussian_posteriors(kind, b, sigma, seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    u = jax.random.normal(k1, (b, 2))
    loc = u if kind == "independent" else jnp.stack([u[:, 0], u[:, 0]], axis=-1)  # means on the line z1 = z2
    q = DiagonalGaussian(loc, jnp.full((b, 2), math.log(sigma)))
    return q, q.sample(k2, 1)


def _mean_and_se(values):
    v = np.asarray(values, np.float64)
    return v.mean(), v.std() / math.sqrt(v.size)


B_LARGE = 2000  # batch = dataset (N = M): the "mss" mixture is then exactly the aggregate posterior of the batch.


def test_decomposition_of_a_factorized_aggregate_matches_closed_forms():
    # x ~ N(0, I_2), q(z|x) = N(x, s^2 I): q(z) = N(0, (1 + s^2) I) is factorized, so TC = 0, and
    # I(x; z) = 2 * 0.5 log(1 + 1/s^2), dimwise KL = 2 * KL(N(0, 1 + s^2) || N(0, 1)). Tolerances: 4 standard
    # errors of the per-example terms plus 0.01 nats for the finite-batch (kernel density) bias, which is O(1/B).
    s = 0.5
    q, z = _gaussian_posteriors("independent", B_LARGE, s, seed=0)
    terms = kl_decomposition(
        q, z, STANDARD_NORMAL_2D, dataset_size=B_LARGE, estimator="mss")
    expected = {"tc": 0.0, "mi": math.log(1 + 1 / s**2), "dimwise_kl": s**2 - math.log(1 + s**2)}
    for name, value in expected.items():
        mean, se = _mean_and_se(getattr(terms, name))
        assert abs(mean - value) < 4 * se + 0.01, (name, mean, value, se)
    assert abs(float(jnp.mean(terms.tc))) < 0.01


def test_total_correlation_is_large_for_correlated_latents():
    # Means on the line z1 = z2 with s = 0.1: q(z) = N(0, [[1 + s^2, 1], [1, 1 + s^2]]), whose total correlation
    # is -0.5 log(1 - rho^2) with rho = 1 / (1 + s^2), i.e. 1.963 nats.
    s = 0.1
    rho = 1 / (1 + s**2)
    q, z = _gaussian_posteriors("correlated", B_LARGE, s, seed=1)
    fn = kl_decomposition
    terms = fn(q, z, STANDARD_NORMAL_2D, dataset_size=B_LARGE, estimator="mss")
    mean, se = _mean_and_se(terms.tc)
    assert abs(mean - (-0.5 * math.log(1 - rho**2))) < 4 * se + 0.01, (mean, se)
    # The paper's MWS estimate is shifted by the documented constant but separates the two cases just as well.
    q_ind, z_ind = _gaussian_posteriors("independent", B_LARGE, s, seed=1)
    tc_mws = float(jnp.mean(fn(q, z, STANDARD_NORMAL_2D, dataset_size=B_LARGE, estimator="mws").tc))
    tc_mws_ind = float(jnp.mean(fn(q_ind, z_ind, STANDARD_NORMAL_2D, dataset_size=B_LARGE, estimator="mws").tc))
    assert tc_mws - tc_mws_ind > 1.5


def test_beta_tcvae_with_unit_weights_is_the_monte_carlo_negative_elbo():
    model, params = _small_vae()
    x = _binary_batch(8)
    key = jax.random.key(3)
    for estimator in ("mws", "mss"):
        loss, out = beta_tcvae(model, params, x, key, dataset_size=100, alpha=1.0, beta=1.0, gamma=1.0,
                                          num_samples=2, estimator=estimator)
        loss_mc, out_mc = elbo(model, params, x, key, analytic_kl=False, num_samples=2)
        np.testing.assert_allclose(loss, loss_mc, rtol=1e-5)
        m = out.metrics
        np.testing.assert_allclose(m["mi"] + m["tc"] + m["dimwise_kl"], out_mc.kl.mean(), rtol=1e-4, atol=1e-5)
    # The output carries the true ELBO (analytic KL), not the loss.
    _, out_an = elbo(model, params, x, key, num_samples=2)
    np.testing.assert_allclose(out.elbo, out_an.elbo, rtol=1e-6)
    np.testing.assert_allclose(out.kl_per_dim, out_an.kl_per_dim, rtol=1e-6)


def test_beta_tcvae_weights_each_term():
    model, params = _small_vae()
    x = _binary_batch(8)
    key = jax.random.key(4)
    base, out = beta_tcvae(model, params, x, key, dataset_size=1000, alpha=1.0, beta=1.0, gamma=1.0)
    m = out.metrics
    for kwargs, extra in (({"alpha": 3.0}, 2.0 * m["mi"]), ({"beta": 6.0}, 5.0 * m["tc"]),
                          ({"gamma": 0.5}, -0.5 * m["dimwise_kl"])):
        weights = {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, **kwargs}
        loss, out2 = beta_tcvae(model, params, x, key, dataset_size=1000, **weights)
        np.testing.assert_allclose(loss, base + extra, rtol=1e-5, atol=1e-5)
        for name, value in weights.items():
            np.testing.assert_allclose(out2.metrics[name], value)
    # Default weights are the paper's (1, 6, 1).
    loss_default, _ = beta_tcvae(model, params, x, key, dataset_size=1000)
    np.testing.assert_allclose(loss_default, base + 5.0 * m["tc"], rtol=1e-5, atol=1e-5)


def test_beta_tcvae_rejects_bad_inputs():
    model, params = _small_vae(prior=priors.MixtureOfGaussians(2, 3, rngs=nnx.Rngs(5)))
    x = _binary_batch(4)
    with pytest.raises(ValueError, match="factorized prior"):
        beta_tcvae(model, params, x, jax.random.key(0), dataset_size=100)
    model, params = _small_vae()
    with pytest.raises(ValueError, match="dataset_size"):
        beta_tcvae(model, params, x, jax.random.key(0), dataset_size=3)
    with pytest.raises(ValueError, match="estimator"):
        beta_tcvae(model, params, x, jax.random.key(0), dataset_size=100, estimator="mwss")


# ---------------------------------------------------------------------------------------------------------- MMD


def _np_mmd(x, y, kernel, s):
    def k(a, b):
        sq = np.sum((a - b) ** 2)
        if kernel == "rbf":
            return np.exp(-sq / (2 * s**2))
        c = 2 * a.shape[-1] * s**2
        return c / (c + sq)

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_matches_a_numpy_double_loop_and_is_symmetric(kernel):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(loc=0.5, size=(5, 3))
    with jax.enable_x64(True):
        for s in (0.5, 1.0, 2.0):
            got = mmd(jnp.asarray(x), jnp.asarray(y), kernel=kernel, scale=s)
            np.testing.assert_allclose(got, _np_mmd(x, y, kernel, s), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(mmd(jnp.asarray(y), jnp.asarray(x), kernel=kernel, scale=s), got,
                                       rtol=1e-12, atol=1e-14)
    got32 = mmd(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), kernel=kernel)
    np.testing.assert_allclose(got32, _np_mmd(x, y, kernel, 1.0), rtol=1e-4, atol=1e-6)


@functools.partial(jax.jit, static_argnames=("kernel", "n", "reps", "d"))
def _replicates_jit(shift, scale, *, kernel, n, reps, d):
    def one(key):
        kx, ky = jax.random.split(key)
        x = jax.random.normal(kx, (n, d))
        y = jax.random.normal(ky, (n, d)) + shift
        return objectives.mmd(x, y, kernel=kernel, scale=scale)

    return jax.vmap(one)(jax.random.split(jax.random.key(0), reps))


def _replicates(kernel, shift, n=100, reps=200, d=2, scale=1.0):
    """``reps`` independent estimates from samples of size ``n``: N(0, I_d) against N(shift, I_d)."""
    return np.asarray(_replicates_jit(shift, scale, kernel=kernel, n=n, reps=reps, d=d), np.float64)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_unbiased_zero_for_equal_distributions(kernel):
    vals = _replicates(kernel, shift=0.0)
    mean, se = _mean_and_se(vals)
    assert abs(mean) < 4 * se, (mean, se)
    assert vals.min() < 0 < vals.max()  # a U-statistic, not a squared norm: it straddles zero under the null


def test_mmd_rbf_is_unbiased_for_the_population_value_between_shifted_gaussians():
    # For N(0, I_d) vs N(mu, I_d) and the RBF kernel of scale s (differences ~ N(., 2 I)):
    #   MMD^2 = 2 (s^2 / (s^2 + 2))^(d/2) (1 - exp(-|mu|^2 / (2 (s^2 + 2)))).
    d, s, shift = 2, 1.0, 0.5
    mu2 = d * shift**2
    population = 2 * (s**2 / (s**2 + 2)) ** (d / 2) * (1 - math.exp(-mu2 / (2 * (s**2 + 2))))
    vals = _replicates("rbf", shift=shift, d=d, scale=s)
    mean, se = _mean_and_se(vals)
    assert abs(mean - population) < 4 * se, (mean, population, se)
    assert mean > 10 * se


def test_mmd_imq_is_clearly_positive_for_shifted_distributions():
    null_mean, null_se = _mean_and_se(_replicates("imq", shift=0.0))
    vals = _replicates("imq", shift=0.5)
    assert np.all(vals > 0)
    assert vals.mean() - null_mean > 20 * null_se


def test_mmd_rejects_bad_arguments():
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="kernel"):
        objectives.mmd(x, x, kernel="gaussian")
    with pytest.raises(ValueError, match="scale"):
        objectives.mmd(x, x, scale=0.0)
    with pytest.raises(ValueError, match="2 samples"):
        objectives.mmd(x[:1], x)


# ------------------------------------------------------------------------------------------------------- InfoVAE


def test_info_vae_loss_formula_and_true_elbo():
    model, params = _small_vae()
    x = _binary_batch(8)
    key = jax.random.key(5)
    loss, out = info_vae(model, params, x, key, alpha=0.3, lambda_=50.0, kernel="rbf", kernel_scale=0.7)
    m = out.metrics
    np.testing.assert_allclose(loss, out.recon.mean() + 0.7 * out.kl.mean() + 49.3 * m["mmd"], rtol=1e-5)
    np.testing.assert_allclose(m["alpha"], 0.3)
    np.testing.assert_allclose(m["lambda"], 50.0)
    # The MMD is between the posterior samples and as many prior samples, from the documented key split.
    key_q, key_p = jax.random.split(key)
    fwd = jax.jit(model.forward)(params, x, key_q)
    z_p = jax.jit(model.prior_sample, static_argnums=2)(params, key_p, 8)
    np.testing.assert_allclose(m["mmd"], mmd(fwd.z["z"][0], z_p, kernel="rbf", scale=0.7), rtol=1e-5)
    # The output's ELBO is the true (analytic-KL) ELBO on the posterior samples.
    _, out_elbo = elbo(model, params, x, key_q)
    np.testing.assert_allclose(out.elbo, out_elbo.elbo, rtol=1e-6)
    # alpha = 0, lambda = 1 is the negative ELBO exactly.
    loss_elbo, _ = info_vae(model, params, x, key, alpha=0.0, lambda_=1.0)
    np.testing.assert_allclose(loss_elbo, -out_elbo.elbo.mean(), rtol=1e-6)


def test_info_vae_default_kernel_scale_is_one_and_num_samples_pools_all_samples():
    model, params = _small_vae()
    x = _binary_batch(6)
    key = jax.random.key(6)
    _, out = info_vae(model, params, x, key, num_samples=3)  # kernel="imq", kernel_scale=None
    key_q, key_p = jax.random.split(key)
    z = jax.jit(model.forward, static_argnums=3)(params, x, key_q, 3).z["z"].reshape(18, 2)
    z_p = jax.jit(model.prior_sample, static_argnums=2)(params, key_p, 18)
    np.testing.assert_allclose(out.metrics["mmd"], mmd(z, z_p, kernel="imq", scale=1.0), rtol=1e-5)
    with pytest.raises(ValueError, match="kernel"):
        info_vae(model, params, x, key, kernel="laplace")


def test_info_vae_with_a_mixture_prior_uses_monte_carlo_kl():
    model, params = _small_vae(prior=priors.MixtureOfGaussians(2, 3, rngs=nnx.Rngs(5)))
    loss, out = info_vae(model, params, _binary_batch(6), jax.random.key(7))
    assert out.kl_per_dim is None and np.isfinite(float(loss))


# ------------------------------------------------------------------------------------------- gradients and jit

# "mss" exercises the general (non-uniform) weights; "mws" differs only by constant weights.
NEW_OBJECTIVES = {
    "beta_tcvae": lambda m, p, x, k: objectives.beta_tcvae(m, p, x, k, dataset_size=50, num_samples=2,
                                                           estimator="mss"),
    "info_vae": lambda m, p, x, k: objectives.info_vae(m, p, x, k, alpha=0.5, lambda_=10.0, num_samples=2),
}


@pytest.mark.parametrize("name", sorted(NEW_OBJECTIVES))
def test_gradients_are_finite_and_match_finite_differences(name):
    with jax.enable_x64(True):
        model, params = _small_vae()
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (4, 6)), jnp.float64)
        key = jax.random.key(0)
        loss_fn = jax.jit(lambda p: NEW_OBJECTIVES[name](model, p, x, key)[0])
        grads = jax.grad(loss_fn)(params)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
        check_grads(loss_fn, (params,), order=1, modes=["rev"], atol=1e-4, rtol=1e-4, eps=1e-6)
