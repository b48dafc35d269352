"""Objectives: the bounds' orderings, the exact log-likelihood of probabilistic PCA, gradients, recompilation,
free bits and capacity arithmetic, and an end-to-end descent through Optax."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads
from scipy import stats

from jaxvae import objectives
from jaxvae.distributions import likelihoods
from jaxvae.models import priors
from jaxvae.models.posteriors import DiagonalGaussian
from jaxvae.models.protocol import VAE, PureVAE, split

# ----------------------------------------------------------------------------------------------------------------
# Probabilistic PCA: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D), so log p(x) = log N(x; b, W W^T + s^2 I) exactly.
# The encoder is linear with learnable log-scale; we set it to a deliberately imperfect posterior.

D_X, D_Z, SIGMA = 5, 2, 0.6


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


def _ppca():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(D_X, D_Z))
    b = rng.normal(size=(D_X,))
    vae = VAE(LinearEncoder(nnx.Rngs(0)), LinearDecoder(nnx.Rngs(1)), likelihoods.Gaussian(sigma=SIGMA),
              priors.StandardNormal(D_Z), (D_X,))
    vae.decoder.linear.kernel[...] = jnp.asarray(w.T, jnp.float32)
    vae.decoder.linear.bias[...] = jnp.asarray(b, jnp.float32)
    # Exact posterior mean map (M^-1 W^T (x - b)), then perturbed; scale inflated: q is close but not exact.
    m = w.T @ w + SIGMA**2 * np.eye(D_Z)
    a = np.linalg.solve(m, w.T)
    vae.encoder.linear.kernel[...] = jnp.asarray(a.T * 1.1, jnp.float32)
    vae.encoder.linear.bias[...] = jnp.asarray(-a @ b * 1.1 + 0.05, jnp.float32)
    post_sd = SIGMA * np.sqrt(np.diag(np.linalg.inv(m)))
    vae.encoder.log_scale[...] = jnp.asarray(np.log(post_sd * 1.3), jnp.float32)
    x = rng.multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(D_X), size=16).astype(np.float32)
    log_px = stats.multivariate_normal.logpdf(x, b, w @ w.T + SIGMA**2 * np.eye(D_X))
    model, params = split(vae)
    return model, params, jnp.asarray(x), log_px


def test_iwae_with_one_sample_equals_elbo_on_the_same_samples():
    model, params, x, _ = _ppca()
    key = jax.random.key(0)
    loss_iwae, out_iwae = objectives.iwae(model, params, x, key, num_samples=1)
    loss_elbo, out_elbo = objectives.elbo(model, params, x, key, analytic_kl=False)
    np.testing.assert_allclose(loss_iwae, loss_elbo, rtol=1e-6)
    np.testing.assert_allclose(out_iwae.elbo, out_elbo.elbo, rtol=1e-6)


def test_ppca_bounds_order_and_iwae_converges_to_exact_log_likelihood():
    model, params, x, log_px = _ppca()
    # Analytic KL; the reconstruction expectation averaged over 20k samples (MC error ~ 1e-3 nats).
    _, out = objectives.elbo(model, params, x, jax.random.key(1), num_samples=20_000)
    # The ELBO is the exact log-likelihood minus KL(q || posterior) > 0 for our imperfect q.
    gap = log_px - np.asarray(out.elbo)
    assert np.all(gap > 0.01), gap
    iwae_k = jax.jit(lambda key: objectives.iwae(model, params, x, key, num_samples=5000)[1].metrics["iwae"])
    per_example = jax.jit(
        lambda key: objectives.iwae_bound_from_log_weights(_log_weights(model, params, x, key, 5000))
    )(jax.random.key(2))
    np.testing.assert_allclose(per_example, log_px, atol=0.02)
    assert float(iwae_k(jax.random.key(3))) <= log_px.mean() + 0.01


def _log_weights(model, params, x, key, k):
    fwd = model.forward(params, x, key, k)
    return fwd.log_px_z + fwd.log_pz - fwd.log_qz_x


def test_iwae_expectation_does_not_decrease_with_k():
    model, params, x, log_px = _ppca()

    @functools.partial(jax.jit, static_argnums=1)
    def mean_bound(keys, k):
        return jnp.mean(jax.vmap(lambda key: objectives.iwae(model, params, x, key, num_samples=k)[0])(keys))

    keys = jax.random.split(jax.random.key(4), 400)
    bounds = [-float(mean_bound(keys, k)) for k in (1, 2, 8, 64)]
    assert bounds == sorted(bounds), bounds
    assert bounds[-1] < log_px.mean() + 1e-3


# ----------------------------------------------------------------------------------------------------------------
# A small nonlinear VAE for gradient, recompilation and descent checks.


def _small_vae(likelihood=None, prior=None, seed=0, event=(6,)):
    likelihood = likelihood or likelihoods.Bernoulli()
    vae = VAE.mlp(event, 2, likelihood, hidden=(4,), prior=prior, rngs=nnx.Rngs(seed))
    return split(vae)


OBJECTIVES = {
    "elbo": lambda m, p, x, k: objectives.elbo(m, p, x, k, beta=0.7),
    "elbo_mc_kl": lambda m, p, x, k: objectives.elbo(m, p, x, k, analytic_kl=False, num_samples=2),
    "iwae": lambda m, p, x, k: objectives.iwae(m, p, x, k, num_samples=3),
    "free_bits": lambda m, p, x, k: objectives.free_bits(m, p, x, k, threshold=0.01),
    "capacity": lambda m, p, x, k: objectives.capacity(m, p, x, k, capacity=3.0, gamma=2.0),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "capacity" else n
                                  for n in sorted(OBJECTIVES)])
def test_gradients_are_finite_and_match_finite_differences(name):
    with jax.enable_x64(True):
        model, params = _small_vae()
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (3, 6)), jnp.float64)
        key = jax.random.key(0)
        # jitted: check_grads evaluates it at many points of one shape (op by op, each evaluation dispatched
        # hundreds of small programs)
        loss_fn = jax.jit(lambda p: OBJECTIVES[name](model, p, x, key)[0])
        grads = jax.grad(loss_fn)(params)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
        check_grads(loss_fn, (params,), order=1, modes=["rev"], atol=1e-4, rtol=1e-4, eps=1e-6)


def test_jitted_objective_does_not_recompile_for_new_data():
    model, params = _small_vae()
    traces = []

    @jax.jit
    def step(params, x, key):
        traces.append(1)  # runs only while tracing
        return objectives.elbo(model, params, x, key)[0]

    for i in range(4):
        x = jax.random.bernoulli(jax.random.key(i), 0.5, (8, 6)).astype(jnp.float32)
        step(params, x, jax.random.fold_in(jax.random.key(0), i)).block_until_ready()
    assert len(traces) == 1


def test_beta_one_loss_is_negative_mean_elbo_and_beta_weights_kl():
    model, params = _small_vae()
    x = jnp.ones((5, 6))
    key = jax.random.key(1)
    loss1, out = objectives.elbo(model, params, x, key, beta=1.0)
    np.testing.assert_allclose(loss1, -out.elbo.mean(), rtol=1e-6)
    loss3, _ = objectives.elbo(model, params, x, key, beta=3.0)
    np.testing.assert_allclose(loss3, (out.recon + 3.0 * out.kl).mean(), rtol=1e-6)
    np.testing.assert_allclose(out.kl, out.kl_per_dim.sum(-1), rtol=1e-6)


def test_free_bits_clamp_exactly_where_documented():
    kl_per_dim = jnp.array([[0.1, 2.0, 0.5, 0.0], [0.3, 4.0, 0.5, 0.0]])  # batch means: .2, 3, .5, 0
    np.testing.assert_allclose(objectives.free_bits_kl(kl_per_dim, 0.4), 0.4 + 3.0 + 0.5 + 0.4, rtol=1e-6)
    # groups of 2: (0.2 + 3.0) and (0.5 + 0.0); threshold 1.0 clamps the second group only.
    np.testing.assert_allclose(objectives.free_bits_kl(kl_per_dim, 1.0, group_size=2), 3.2 + 1.0, rtol=1e-6)
    # Below the threshold the KL gets no gradient; above it, d/dKL = 1/B per example.
    g = jax.grad(lambda k: objectives.free_bits_kl(k, 0.4))(kl_per_dim)
    np.testing.assert_allclose(g, [[0.0, 0.5, 0.5, 0.0], [0.0, 0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match="divide"):
        objectives.free_bits_kl(kl_per_dim, 1.0, group_size=3)


def test_capacity_loss_formula():
    model, params = _small_vae()
    x = jnp.ones((5, 6))
    key = jax.random.key(2)
    loss, out = objectives.capacity(model, params, x, key, capacity=10.0, gamma=5.0)
    np.testing.assert_allclose(loss, out.recon.mean() + 5.0 * abs(out.kl.mean() - 10.0), rtol=1e-6)


def test_mixture_prior_uses_monte_carlo_kl():
    prior = priors.MixtureOfGaussians(2, 3, rngs=nnx.Rngs(5))
    model, params = _small_vae(prior=prior)
    x = jnp.ones((4, 6))
    _, out = objectives.elbo(model, params, x, jax.random.key(0))
    assert out.kl_per_dim is None
    fwd = model.forward(params, x, jax.random.key(0))
    np.testing.assert_allclose(out.kl, (fwd.log_qz_x - fwd.log_pz)[0], rtol=1e-5)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_optax_steps_lower_the_loss_on_a_toy_batch(objective):
    model, params = _small_vae(seed=3, event=(12,))
    model = PureVAE(model.graphdef, model.likelihood, model.event_shape, model.latent_dim)
    x = jnp.asarray(np.random.default_rng(1).integers(0, 2, (32, 12)), jnp.float32)
    opt = optax.adam(3e-2)
    opt_state = opt.init(params)
    fn = OBJECTIVES[objective]

    @jax.jit
    def step(params, opt_state, key):
        loss, grads = jax.value_and_grad(lambda p: fn(model, p, x, key)[0])(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    eval_loss = jax.jit(lambda p: fn(model, p, x, jax.random.key(99))[0])
    before = float(eval_loss(params))
    for i in range(150):
        params, opt_state, _ = step(params, opt_state, jax.random.fold_in(jax.random.key(0), i))
    after = float(eval_loss(params))
    assert after < before - 0.5, (before, after)
