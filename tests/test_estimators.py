"""The IWAE family (MIWAE, CIWAE, PIWAE) and the low-variance gradients (DReG, STL) on probabilistic PCA, where the
exact posterior is known: values against the plain bounds on the same samples, the bounds' ordering, gradients
against the estimators they must equal, unbiasedness and variance over many keys, and the zero-variance property
at the exact posterior."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvae import objectives
from jaxvae.distributions import likelihoods
from jaxvae.errors import ConfigError
from jaxvae.models import priors
from jaxvae.models.posteriors import DiagonalGaussian
from jaxvae.models.protocol import VAE, split
from jaxvae.objectives import estimators

D_X, D_Z, SIGMA = 6, 3, 0.5


class LinearEncoder(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(D_X, D_Z, rngs=rngs)
        self.log_scale = nnx.Param(jnp.zeros((D_Z,)))

    def __call__(self, x):
        loc = self.linear(x)
        return DiagonalGaussian(loc, jnp.broadcast_to(self.log_scale[...], loc.shape))


class LinearDecoder(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(D_Z, D_X, rngs=rngs)

    def __call__(self, z):
        return self.linear(z)[..., None]  # [..., D_X, P=1]


def _ppca(exact: bool):
    """PPCA with orthogonal loadings, so the true posterior is a diagonal Gaussian; ``exact=False`` perturbs the
    encoder away from it."""
    rng = np.random.default_rng(0)
    w = np.linalg.qr(rng.normal(size=(D_X, D_Z)))[0] * np.array([2.0, 1.2, 0.7])  # orthogonal columns
    b = rng.normal(size=(D_X,))
    vae = VAE(LinearEncoder(nnx.Rngs(0)), LinearDecoder(nnx.Rngs(1)), likelihoods.Gaussian(sigma=SIGMA),
              priors.StandardNormal(D_Z), (D_X,))
    vae.decoder.linear.kernel[...] = jnp.asarray(w.T, jnp.float32)
    vae.decoder.linear.bias[...] = jnp.asarray(b, jnp.float32)
    m = w.T @ w + SIGMA**2 * np.eye(D_Z)  # diagonal
    a = np.linalg.solve(m, w.T)
    post_sd = SIGMA * np.sqrt(np.diag(np.linalg.inv(m)))
    scale = 1.0 if exact else 1.15
    vae.encoder.linear.kernel[...] = jnp.asarray(a.T * scale, jnp.float32)
    vae.encoder.linear.bias[...] = jnp.asarray(-a @ b * scale + (0.0 if exact else 0.1), jnp.float32)
    vae.encoder.log_scale[...] = jnp.asarray(np.log(post_sd * (1.0 if exact else 1.4)), jnp.float32)
    x = rng.multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(D_X), size=8).astype(np.float32)
    model, params = split(vae)
    return model, params, jnp.asarray(x)


def _grad(fn, model, params, x, key, **kw):
    return jax.grad(lambda p: fn(model, p, x, key, **kw)[0])(params)


def _close(a, b, **kw):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, **kw)


@pytest.mark.slow
def test_miwae_with_one_group_is_iwae_and_the_bounds_order_on_the_same_samples():
    model, params, x = _ppca(exact=False)
    key = jax.random.key(0)
    loss_m, out_m = estimators.miwae(model, params, x, key, num_samples=6, outer=1)
    loss_i, _ = objectives.iwae(model, params, x, key, num_samples=6)
    np.testing.assert_allclose(loss_m, loss_i, rtol=1e-6)
    _close(_grad(estimators.miwae, model, params, x, key, num_samples=6, outer=1),
           _grad(objectives.iwae, model, params, x, key, num_samples=6), rtol=1e-5, atol=1e-6)
    # On one set of M*K log weights: mean log w <= MIWAE(M, K) <= IWAE(M K), for every example (Jensen twice).
    fwd = model.forward(params, x, key, 12)
    lw = fwd.log_weights
    elbo_mc, mi, iw = (jnp.mean(lw, 0), estimators.miwae_bound_from_log_weights(lw, 3),
                       objectives.iwae_bound_from_log_weights(lw))
    assert np.all(elbo_mc <= mi + 1e-6) and np.all(mi <= iw + 1e-6)
    assert float(jnp.mean(iw - mi)) > 1e-3  # strictly tighter here (q is not the posterior)
    _, out = estimators.miwae(model, params, x, key, num_samples=4, outer=3)
    np.testing.assert_allclose(out.metrics["miwae"], jnp.mean(mi), rtol=1e-6)
    np.testing.assert_allclose(out.metrics["iwae"], jnp.mean(iw), rtol=1e-6)
    assert out_m.metrics["miwae"] == out_m.metrics["iwae"]


def test_ciwae_interpolates_between_the_monte_carlo_elbo_and_iwae():
    model, params, x = _ppca(exact=False)
    key = jax.random.key(1)
    l1, _ = estimators.ciwae(model, params, x, key, num_samples=5, beta=1.0)
    le, _ = objectives.elbo(model, params, x, key, num_samples=5, analytic_kl=False)
    np.testing.assert_allclose(l1, le, rtol=1e-6)
    l0, _ = estimators.ciwae(model, params, x, key, num_samples=5, beta=0.0)
    li, _ = objectives.iwae(model, params, x, key, num_samples=5)
    np.testing.assert_allclose(l0, li, rtol=1e-6)
    lh, _ = estimators.ciwae(model, params, x, key, num_samples=5, beta=0.3)
    np.testing.assert_allclose(lh, 0.3 * le + 0.7 * li, rtol=1e-6)


def _split(g):
    return g["encoder"], g["decoder"]


def test_dreg_has_iwae_value_and_decoder_gradient_and_is_unbiased_with_lower_variance_for_the_encoder():
    model, params, x = _ppca(exact=False)
    key = jax.random.key(2)
    k = 8
    l_d, out_d = estimators.iwae_dreg(model, params, x, key, num_samples=k)
    l_i, _ = objectives.iwae(model, params, x, key, num_samples=k)
    np.testing.assert_allclose(l_d, l_i, rtol=1e-6)
    np.testing.assert_allclose(out_d.metrics["iwae"], -l_i, rtol=1e-6)
    g_d, g_i = (_grad(fn, model, params, x, key, num_samples=k) for fn in (estimators.iwae_dreg, objectives.iwae))
    _close(_split(g_d)[1], _split(g_i)[1], rtol=1e-4, atol=1e-5)  # the generative gradient is IWAE's exactly

    def encoder_grads(fn):
        keys = jax.random.split(jax.random.key(3), 4000)
        g = jax.jit(jax.vmap(lambda kk: _grad(fn, model, params, x, kk, num_samples=k)["encoder"]))(keys)
        return jnp.concatenate([v.reshape(v.shape[0], -1) for v in jax.tree.leaves(g)], axis=1)  # [N, P]

    dreg, plain = np.asarray(encoder_grads(estimators.iwae_dreg)), np.asarray(encoder_grads(objectives.iwae))
    n = dreg.shape[0]
    se = np.sqrt(dreg.var(0) / n + plain.var(0) / n)
    z = np.abs(dreg.mean(0) - plain.mean(0)) / se
    assert np.all(z < 4.5), z  # same expectation: unbiased for the same bound
    assert np.mean(dreg.var(0)) < 0.25 * np.mean(plain.var(0)), (dreg.var(0), plain.var(0))


def test_stl_and_dreg_encoder_gradients_vanish_at_the_exact_posterior_where_the_plain_ones_do_not():
    model, params, x = _ppca(exact=True)
    key = jax.random.key(4)
    for fn, kw in ((estimators.elbo_stl, {"num_samples": 3}), (estimators.iwae_dreg, {"num_samples": 5})):
        g = _grad(fn, model, params, x, key, **kw)["encoder"]
        assert max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(g)) < 1e-4, fn.__name__
    g_plain = _grad(objectives.elbo, model, params, x, key, num_samples=3, analytic_kl=False)["encoder"]
    assert max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(g_plain)) > 1e-2
    # STL's value is the Monte Carlo ELBO's, with beta too.
    l_s, _ = estimators.elbo_stl(model, params, x, key, num_samples=3, beta=0.7)
    l_e, _ = objectives.elbo(model, params, x, key, num_samples=3, analytic_kl=False, beta=0.7)
    np.testing.assert_allclose(l_s, l_e, rtol=1e-6)


def test_piwae_gives_the_decoder_iwae_and_the_encoder_miwae_on_the_same_samples():
    model, params, x = _ppca(exact=False)
    key = jax.random.key(5)
    m, k = 3, 4
    loss, out = estimators.piwae(model, params, x, key, num_samples=k, outer=m)
    l_i, _ = objectives.iwae(model, params, x, key, num_samples=m * k)
    np.testing.assert_allclose(loss, l_i, rtol=1e-6)
    g_p = _grad(estimators.piwae, model, params, x, key, num_samples=k, outer=m)
    g_i = _grad(objectives.iwae, model, params, x, key, num_samples=m * k)
    g_m = _grad(estimators.miwae, model, params, x, key, num_samples=k, outer=m)
    _close(g_p["decoder"], g_i["decoder"], rtol=1e-4, atol=1e-5)
    _close(g_p["encoder"], g_m["encoder"], rtol=1e-4, atol=1e-5)
    _, out_m = estimators.miwae(model, params, x, key, num_samples=k, outer=m)
    np.testing.assert_allclose(out.metrics["miwae"], out_m.metrics["miwae"], rtol=1e-6)


def test_estimators_that_rescore_one_group_refuse_hierarchies_and_bad_group_counts():
    from jaxvae.models.hierarchy import BottomUpVAE

    h = BottomUpVAE((6,), (3, 2), likelihoods.Bernoulli(), hidden=(8, 4), rngs=nnx.Rngs(0))
    model, params = split(h)
    x = jnp.zeros((2, 6))
    for fn in (estimators.elbo_stl, estimators.iwae_dreg, estimators.piwae):
        with pytest.raises(ConfigError, match=r"2 groups.*miwae or ciwae"):
            fn(model, params, x, jax.random.key(0))
    # The generic ones work on the hierarchy.
    loss, _ = estimators.miwae(model, params, x, jax.random.key(0), num_samples=2, outer=2)
    assert np.isfinite(loss)
    ppca, p, xx = _ppca(exact=False)
    with pytest.raises(ConfigError, match="M must be >= 1"):
        estimators.miwae(ppca, p, xx, jax.random.key(0), outer=0)


@pytest.mark.parametrize("name", [pytest.param("miwae", marks=pytest.mark.slow),
                                  pytest.param("ciwae", marks=pytest.mark.slow), "piwae", "iwae_dreg",
                                  pytest.param("elbo_stl", marks=pytest.mark.slow)])
def test_each_estimator_trains_from_the_config_and_reports_its_bound(tmp_path, name):
    import jaxvae as jv

    cfg = jv.config.apply_overrides(jv.config.get_preset("digits"), [
        f"objective.name={name}", "objective.num_samples=4", "objective.miwae.outer=2", "objective.piwae.outer=2",
        "train.steps=30", "train.log_every=10", "eval.num_samples=8", "eval.max_examples=32", "monitor.every=0"])
    summary = jv.fit(cfg, tmp_path / name, progress=False, log=lambda _: None)
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "split" not in r and "loss" in r]
    assert len(records) == 3 and all(np.isfinite(r["loss"]) for r in records)
    bound = {"miwae": "miwae", "ciwae": "ciwae", "piwae": "iwae", "iwae_dreg": "iwae", "elbo_stl": "elbo"}[name]
    assert bound in records[-1], records[-1]
    if name in ("piwae", "iwae_dreg"):  # the loss is the negative IWAE bound
        np.testing.assert_allclose(records[-1]["loss"], -records[-1]["iwae"], rtol=1e-5)
    assert np.isfinite(summary["test_elbo"]) and summary["test_nll_iwae"] <= -summary["test_elbo"] + 0.5


@pytest.mark.parametrize("overrides, match", [
    (["model.network=hierarchical", "model.latent_dims=4,2", "objective.name=piwae"], "several"),
    (["objective.name=ciwae", "objective.ciwae.beta=1.5"], r"in \[0, 1\]"),
    (["objective.name=miwae", "objective.miwae.outer=0"], "must be positive"),
])
def test_estimator_settings_are_validated(overrides, match):
    import jaxvae as jv

    with pytest.raises(ConfigError, match=match):
        jv.config.apply_overrides(jv.config.get_preset("digits"), overrides)
