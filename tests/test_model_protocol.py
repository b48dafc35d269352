"""The model protocol and the distribution interface: a two-stochastic-layer model written only against the public
API trains with jv.elbo and jv.iwae, is evaluated by iwae_log_likelihood and diagnosed per group; the library's
own components pass the contract checks users run on theirs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import special, stats

import jaxvae as jv
from jaxvae import testing as jvt


class TwoLayerVAE(jv.Model):
    """Two stochastic layers, inferred top-down: q(z2|x) q(z1|x, z2); generative p(z2) p(z1|z2) p(x|z1).

    Both KL terms are then closed-form given the sample of z2 (the chain rule splits the joint KL exactly).
    """

    def __init__(self, event_shape, likelihood, *, d1=4, d2=2, hidden=32, rngs):
        self.event_shape = tuple(event_shape)
        self.likelihood = likelihood
        n_in = math.prod(event_shape)
        self.d1, self.d2 = d1, d2
        self.trunk = nnx.Linear(n_in, hidden, rngs=rngs)
        self.q2 = nnx.Linear(hidden, 2 * d2, rngs=rngs)
        self.q1 = nnx.Linear(hidden + d2, 2 * d1, rngs=rngs)
        self.p1 = nnx.Linear(d2, 2 * d1, rngs=rngs)
        self.dec = nnx.Linear(d1, n_in * likelihood.num_outputs, rngs=rngs)

    def _decode(self, z1):
        out = self.dec(z1)
        return out.reshape(*z1.shape[:-1], *self.event_shape, self.likelihood.num_outputs)

    def forward(self, x, key, num_samples=1):
        k2, k1 = jax.random.split(key)
        h = jnp.tanh(self.trunk(x.reshape(x.shape[0], -1)))  # [B, H]
        q2 = jv.DiagonalGaussian.from_raw(self.q2(h))  # [B, d2]
        p2 = jv.DiagonalGaussian.standard(self.d2)
        z2, log_q2 = q2.sample_and_log_prob(k2, num_samples)  # [K, B, d2]
        h_k = jnp.broadcast_to(h, (num_samples, *h.shape))
        q1 = jv.DiagonalGaussian.from_raw(self.q1(jnp.concatenate([h_k, z2], -1)))  # [K, B, d1]
        p1 = jv.DiagonalGaussian.from_raw(self.p1(z2))  # [K, B, d1]
        z1, log_q1 = q1.sample_and_log_prob(k1)
        out = self._decode(z1)  # [K, B, *E, P]
        log_px = self.likelihood.log_prob(out, x, event_ndim=len(self.event_shape))
        kl1 = jnp.mean(jv.kl_diagonal_gaussians_per_dim(q1, p1), axis=0)  # [B, d1], averaged over z2
        kl2 = jv.kl_diagonal_gaussians_per_dim(q2, p2)  # [B, d2]
        first = lambda d: jax.tree.map(lambda a: a[0], d)  # the conditional group given the first sample
        return jv.ModelOutput(log_px, log_q1 + log_q2, p1.log_prob(z1) + p2.log_prob(z2), {"z1": z1, "z2": z2},
                              {"z1": kl1, "z2": kl2}, {"z1": first(q1), "z2": q2}, {"z1": first(p1), "z2": p2},
                              out)

    def prior_sample(self, key, n):
        k2, k1 = jax.random.split(key)
        z2 = jv.DiagonalGaussian.standard(self.d2).sample(k2, n)
        z1 = jv.DiagonalGaussian.from_raw(self.p1(z2)).sample(k1)
        return {"z1": z1, "z2": z2}

    def decode(self, z):
        return self._decode(z["z1"])


@pytest.fixture(scope="module")
def digits():
    ds = jv.data.load_dataset("digits")
    return ds.train[:512], ds.test[:128]


def _toy(event_shape=(8, 8, 1)):
    return TwoLayerVAE(event_shape, jv.Bernoulli(), rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_two_layer_model_passes_the_contract(digits):
    jvt.check_model(_toy(), digits[0][:16], kl_samples=2000)


def _train(model, params, objective, data, steps=150):
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, key):
        (loss, _), grads = jax.value_and_grad(lambda p: objective(model, p, x, key), has_aux=True)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for i in range(steps):
        x = data[(i * 64) % 512:(i * 64) % 512 + 64]
        params, state, loss = step(params, state, jax.random.bernoulli(jax.random.key(i), x).astype(x.dtype),
                                   jax.random.key(10_000 + i))
        losses.append(float(loss))
    return params, losses


@pytest.mark.parametrize("objective", [
    pytest.param(lambda m, p, x, k: jv.elbo(m, p, x, k), id="elbo"),
    pytest.param(lambda m, p, x, k: jv.iwae(m, p, x, k, num_samples=5), id="iwae", marks=pytest.mark.slow)])
def test_two_layer_model_trains_evaluates_and_reports_per_group_kl(digits, objective):
    train, test = digits
    model, params = jv.split(_toy())
    assert model.groups == (("z1", 4), ("z2", 2)) and model.latent_dim == 6
    params, losses = _train(model, params, objective, train)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 5.0, (losses[:3], losses[-3:])

    test_bin = np.asarray(jax.random.bernoulli(jax.random.key(7), test), np.float32)
    terms = jv.evaluation.likelihood.evaluate_elbo(model, params, test_bin, jax.random.key(1))
    est = jv.iwae_log_likelihood(model, params, test_bin, jax.random.key(2), num_samples=500, batch_size=64)
    assert est.mean > terms["elbo"]  # log p(x) >= IWAE_500 >= ELBO (here: IWAE_500 above the ELBO)
    assert set(terms["kl_groups"]) == {"z1", "z2"}
    np.testing.assert_allclose(sum(terms["kl_groups"].values()), terms["kl"], rtol=1e-4)

    report = jv.latent_report(model, params, np.asarray(train[:256]), test_bin, jax.random.key(3),
                              num_prior_samples=500, mmd_samples=200)
    assert set(report["kl_per_group"]) == {"z1", "z2"} and report["latent_dim"] == 6
    assert set(report["active_units_per_group"]) == {"z1", "z2"}
    assert all(v >= 0 for v in report["kl_per_group"].values())


def test_one_group_features_refuse_a_two_group_model_with_a_clear_message(digits):
    model, params = jv.split(_toy())
    x = digits[0][:8]
    with pytest.raises(jv.ConfigError, match="one latent group"):
        jv.beta_tcvae(model, params, x, jax.random.key(0), dataset_size=100)
    with pytest.raises(jv.ConfigError, match="diagonal Gaussian or Gaussian-mixture prior"):
        jv.evaluation.samplers.prior_samples(model, params, jax.random.key(0), 4, temperature=0.5)


# ------------------------------------------------------------------------------------- library components


# Default tier: the MLP with the standard normal (the conv layers are checked against lax in test_convops);
# every other network x prior pairing in the slow tier.
@pytest.mark.parametrize("network, prior", [
    ("mlp", "standard_normal"),
    *[pytest.param(n, p, marks=pytest.mark.slow) for n, p in (
        ("mlp", "learned_gaussian"), ("mlp", "mixture"), ("mlp", "vamp"), ("conv", "standard_normal"),
        ("conv", "learned_gaussian"), ("conv", "mixture"), ("conv", "vamp"))],
])
def test_builtin_models_pass_the_contract(network, prior, digits):
    cfg = jv.config.apply_overrides(jv.get_preset("digits"), [
        f"model.network={network}", f"model.prior={prior}", "model.hidden=32", "model.channels=8,8",
        "model.conv_hidden=16", "model.latent_dim=3", "model.prior_components=3"])
    x = digits[0][:8]
    model = jv.models.factory.model_builder(cfg, x.shape[1:])(nnx.Rngs(0))
    jvt.check_model(model, x, kl_samples=2000)


@pytest.mark.parametrize("make", [
    lambda: jv.StandardNormal(3),
    lambda: jv.LearnedGaussian(2),
    lambda: jv.MixtureOfGaussians(2, 3, rngs=nnx.Rngs(1)),
], ids=["standard_normal", "learned_gaussian", "mixture"])
def test_builtin_priors_pass_the_contract(make):
    jvt.check_prior(make())


def test_vamp_prior_passes_the_contract_with_its_encoder():
    rngs = nnx.Rngs(0)
    encoder = jv.MLPEncoder((6,), 2, (8,), rngs=rngs)
    jvt.check_prior(jv.VampPrior(2, 5, (6,), rngs=rngs), encode=encoder)


def test_check_prior_catches_an_unnormalised_density():
    class Broken(jv.Prior):
        def __init__(self):
            self.latent_dim = 2

        def __call__(self, encode=None):
            return jv.DiagonalGaussian(jnp.zeros(2), jnp.log(jnp.full(2, 2.0)))  # samples std 2 ...

    class Wrong(jv.DiagonalGaussian):
        def log_prob(self, z):  # ... but the density of std 1
            return jv.DiagonalGaussian.standard(2).log_prob(z)

    class Mismatched(Broken):
        def __call__(self, encode=None):
            return Wrong(jnp.zeros(2), jnp.log(jnp.full(2, 2.0)))

    jvt.check_prior(Broken())
    with pytest.raises(AssertionError, match="standard deviations implied"):
        jvt.check_prior(Mismatched())


@pytest.mark.parametrize("name", ["bernoulli", "continuous_bernoulli", "gaussian", "laplace", "categorical256",
                                  pytest.param("discretized_logistic_mixture", marks=pytest.mark.slow)])
def test_builtin_likelihoods_pass_the_contract(name):
    lik = jv.distributions.likelihoods.get(name)
    x = np.random.default_rng(0).uniform(size=(4, 3, 2)).astype(np.float32)
    if name == "bernoulli":
        x = (x > 0.5).astype(np.float32)
    if name in ("categorical256", "discretized_logistic_mixture"):
        x = np.floor(x * 255).astype(np.float32)
    out = jax.random.normal(jax.random.key(0), (*x.shape, lik.num_outputs))
    jvt.check_likelihood(lik, out, jnp.asarray(x))


# --------------------------------------------------------------------------------------- distributions


def test_mixture_density_against_scipy_and_registered_kl_against_monte_carlo():
    log_w = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    comps = jv.DiagonalGaussian(jnp.array([[-2.0, 0.0], [1.0, 1.0], [0.0, -3.0]]),
                                jnp.log(jnp.array([[0.5, 1.0], [1.0, 0.3], [2.0, 1.0]])))
    mix = jv.Mixture(log_w, comps)
    z = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32) * 2
    dens = sum(np.exp(log_w[k]) * stats.multivariate_normal.pdf(z, comps.loc[k], np.diag(comps.variance()[k]))
               for k in range(3))
    np.testing.assert_allclose(mix.log_prob(z), np.log(dens), rtol=1e-5)
    assert not jv.distributions.has_analytic_kl(comps, mix)

    q = jv.DiagonalGaussian(jnp.array([[0.3, -1.0]]), jnp.log(jnp.array([[0.7, 1.5]])))
    p = jv.DiagonalGaussian(jnp.array([0.5, 0.0]), jnp.log(jnp.array([1.2, 0.8])))
    analytic = jv.kl_divergence(q, p)
    estimate = jv.distributions.kl_divergence(q, jv.Mixture(jnp.zeros(1), jax.tree.map(lambda a: a[None], p)),
                                              key=jax.random.key(0), num_samples=400_000)  # no closed form: MC
    np.testing.assert_allclose(estimate, analytic, atol=0.01)
    with pytest.raises(ValueError, match="key"):
        jv.kl_divergence(q, mix)
    s = mix.sample(jax.random.key(2), 300_000)
    np.testing.assert_allclose(s.mean(0), mix.mean(), atol=0.02)
    np.testing.assert_allclose(s.var(0), mix.variance(), rtol=0.02)
    np.testing.assert_allclose(special.logsumexp(np.asarray(comps.log_prob(z[:, None, :])) + np.asarray(log_w),
                                                 axis=-1), mix.log_prob(z), rtol=1e-5)


def test_iwae_log_likelihood_works_in_float64():
    """It raised TypeError (scan carry float32 vs float64 weights) with jax_enable_x64 and float64 inputs."""
    with jax.enable_x64(True):
        vae = jv.VAE.mlp((5,), 2, jv.Gaussian(sigma=1.0), hidden=(8,), rngs=nnx.Rngs(0))
        model, params = jv.split(vae)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x = np.random.default_rng(0).normal(size=(7, 5))
        est = jv.iwae_log_likelihood(model, params, x, jax.random.key(0), num_samples=50, batch_size=4)
        assert est.log_px.dtype == np.float64 and np.all(np.isfinite(est.log_px))
        elbo = jv.evaluation.likelihood.evaluate_elbo(model, params, x, jax.random.key(1), batch_size=4)
        assert est.mean > elbo["elbo"] - 0.05  # the IWAE bound is above the ELBO (up to noise)


def test_a_builder_that_returns_no_model_is_a_clear_error():
    with pytest.raises(jv.ConfigError, match="not a jaxvae model"):
        jv.PureModel.from_builder(lambda rngs: nnx.Linear(2, 2, rngs=rngs))


# Every declared objective (read from the catalog, so a new one is covered the day it is declared) and each KL
# controller on the ELBO pass the objective contract that users run on theirs.
_OBJECTIVE_CASES = [(name, "none") for name in jv.catalog.OBJECTIVES] + [("elbo", "geco"), ("elbo", "pi")]


@pytest.mark.parametrize("name, controller", _OBJECTIVE_CASES, ids=[f"{n}-{c}" for n, c in _OBJECTIVE_CASES])
def test_every_declared_objective_passes_the_contract(name, controller, digits):
    from jaxvae.objectives.factory import build_objective

    cfg = jv.config.apply_overrides(jv.get_preset("digits"), [
        f"objective.name={name}", f"objective.controller={controller}", "model.hidden=16", "model.latent_dim=2",
        "objective.num_samples=3"])
    x = digits[0][:8]
    model = jv.models.factory.build_model(cfg, x.shape[1:])
    params = model.init(jax.random.key(0))
    objective = build_objective(cfg, model, 100, dataset_size=512)
    jvt.check_objective(objective, model.training(), params, x)


def test_the_objective_contract_catches_what_a_sweep_or_the_optimizer_cannot_take(digits):
    x = digits[0][:8]
    model = jv.models.factory.build_model(jv.get_preset("digits"), x.shape[1:])
    params = model.init(jax.random.key(0))

    def objective(loss):
        return jv.objectives.Objective(init=lambda p: {}, hyper=lambda step: {"beta": 1.0}, loss=loss,
                                       update=lambda state, out, step, hp: state)

    def python_weight(params, state, x, key, step, hp):  # reads a traced weight as a Python number
        loss, out = jv.elbo(model, params, x, key, beta=float(hp["beta"]))
        return loss, out

    with pytest.raises(jax.errors.ConcretizationTypeError):
        jvt.check_objective(objective(python_weight), model, params, x)

    def kinked(params, state, x, key, step, hp):  # sqrt at 0: a NaN gradient
        loss, out = jv.elbo(model, params, x, key, beta=hp["beta"])
        return loss + jnp.sqrt(0.0 * loss), out

    with pytest.raises(AssertionError, match="gradients has non-finite"):
        jvt.check_objective(objective(kinked), model, params, x)
