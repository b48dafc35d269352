"""IWAE log-likelihood: the chunked, masked, streaming estimate equals the direct computation; it converges to the
exact PPCA log-likelihood; diagnostics have their closed-form limits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy.special import logsumexp

import jaxvae as jv
from jaxvae.evaluation import diagnostics
from jaxvae.evaluation import likelihood as evaluate
from jaxvae.models.posteriors import DiagonalGaussian
from tests.test_objectives import _ppca


def test_chunked_streaming_iwae_equals_direct_log_sum_exp():
    model, params, x, _ = _ppca()
    key = jax.random.key(3)
    # 10 samples in chunks of 4: three chunks, the last one half masked.
    fn = evaluate.make_iwae_fn(model, num_samples=10, sample_chunk=4)
    got = np.asarray(fn(params, x, key))
    q = model.encode(params, x)
    log_w = []
    for c in range(3):
        z = q.sample(jax.random.fold_in(key, c), 4)
        fwd_lpx = model.likelihood.log_prob(model.decode(params, z), x, event_ndim=1)
        prior = model.prior_distribution(params)
        log_w.append(np.asarray(fwd_lpx + prior.log_prob(z) - q.log_prob(z)))
    log_w = np.concatenate(log_w)[:10]
    np.testing.assert_allclose(got, logsumexp(log_w, axis=0) - math.log(10), rtol=1e-5)


def test_evaluation_compiler_options_change_no_value_and_the_plain_fn_nests_in_user_jit():
    """The evaluator compiles with :func:`evaluate.eval_compiler_options` (YNNPACK fusions off on CPU); the
    estimate is the one of the default compilation, and ``make_iwae_fn`` without options composes with a user's
    jit."""
    model, params, x, _ = _ppca()
    key = jax.random.key(4)
    plain = evaluate.make_iwae_fn(model, num_samples=50, sample_chunk=8)
    tuned = evaluate.make_iwae_fn(model, num_samples=50, sample_chunk=8,
                                  compiler_options=evaluate.eval_compiler_options())
    np.testing.assert_allclose(tuned(params, x, key), plain(params, x, key), rtol=1e-6)
    nested = jax.jit(lambda p: jnp.mean(plain(p, x, key)))(params)
    np.testing.assert_allclose(nested, jnp.mean(plain(params, x, key)), rtol=1e-6)


def test_iwae_log_likelihood_matches_exact_ppca_and_is_deterministic():
    model, params, x, log_px = _ppca()
    data = np.asarray(x)
    est = evaluate.iwae_log_likelihood(model, params, data, jax.random.key(0), num_samples=5000, batch_size=5)
    assert est.log_px.shape == (16,)  # 16 examples, batch 5: the last batch is padded and trimmed
    np.testing.assert_allclose(est.log_px, log_px, atol=0.05)
    assert abs(est.mean - log_px.mean()) < 0.015
    again = evaluate.iwae_log_likelihood(model, params, data, jax.random.key(0), num_samples=5000, batch_size=5)
    np.testing.assert_array_equal(est.log_px, again.log_px)
    # The sample standard error (ddof=1), not the population one (ddof=0, what it reported before).
    np.testing.assert_allclose(est.standard_error, np.std(est.log_px, ddof=1) / 4.0, rtol=1e-6)
    assert not np.isclose(est.standard_error, np.std(est.log_px) / 4.0, rtol=1e-3)


def test_evaluate_elbo_is_below_the_log_likelihood():
    model, params, x, log_px = _ppca()
    terms = evaluate.evaluate_elbo(model, params, np.asarray(x), jax.random.key(1), batch_size=8)
    assert terms["elbo"] < log_px.mean()
    np.testing.assert_allclose(terms["elbo"], -(terms["recon"] + terms["kl"]), rtol=1e-5)
    np.testing.assert_allclose(sum(terms["kl_per_dim"]), terms["kl"], rtol=1e-5)


def test_active_units_threshold():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(0, 1.0, 5000), rng.normal(0, 0.05, 5000), np.zeros(5000)], axis=1)
    count, var = diagnostics.active_units(means)
    assert count == 1  # variances ~1, ~0.0025, 0
    np.testing.assert_allclose(var, [1.0, 0.0025, 0.0], atol=0.05)
    assert diagnostics.active_units(means, threshold=0.001)[0] == 2


def test_mutual_information_limits():
    n, d = 2000, 3
    # Every example has the same posterior (a collapsed encoder): z carries no information about x, and since
    # log q(z_n|x_n) and log q(z_n) are evaluated at the same samples the estimate is 0 up to float rounding, for
    # any key and dimension. With the closed-form entropy in the first term (He et al.'s estimator, used here
    # before) it scattered by sqrt(D / 2N), about 0.18 nats at the monitor's N = 512, D = 32 (seen: 0.24, -0.22,
    # 0.14 for keys 0, 1, 2).
    for n_same, d_same in ((n, d), (512, 32)):
        same = DiagonalGaussian(jnp.full((n_same, d_same), 0.3), jnp.full((n_same, d_same), -0.2))
        for seed in range(3):
            assert abs(float(diagnostics.mutual_information(same, jax.random.key(seed)))) < 1e-4
    # Far-apart, sharp posteriors: z identifies x, so I(x; z) reaches its maximum log N (same MC error).
    sharp = DiagonalGaussian(jax.random.normal(jax.random.key(1), (n, d)) * 100.0, jnp.full((n, d), -5.0))
    np.testing.assert_allclose(float(diagnostics.mutual_information(sharp, jax.random.key(2))), math.log(n),
                               atol=0.1)


class _DropoutEncoder(nnx.Module):
    """A user's encoder with an ``nnx.Dropout`` (training-only noise, switched by NNX's ``deterministic``)."""

    def __init__(self, rate, *, rngs):
        self.hidden = nnx.Linear(6, 8, rngs=rngs)
        self.dropout = nnx.Dropout(rate, rngs=nnx.Rngs(dropout=0))
        self.head = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        return jv.DiagonalGaussian.from_raw(self.head(self.dropout(jax.nn.relu(self.hidden(x)))))


def test_a_user_models_dropout_is_off_in_iwae_evaluation_and_on_in_training():
    """Issue 36 (6): evaluation entry points use the model's evaluation view (NNX's Module.eval()), so a user's
    nnx.Dropout does not randomize the IWAE estimate (jv.iwae_log_likelihood's evaluator) or the ELBO evaluation:
    they do not change with the dropout's random stream (which the split module carries in its parameters), while
    the training forward pass does."""
    def build(rngs):
        return jv.VAE(_DropoutEncoder(0.5, rngs=rngs), jv.MLPDecoder(2, (6,), (8,), num_outputs=1, rngs=rngs),
                      jv.Bernoulli(), jv.StandardNormal(2), (6,))

    model = jv.PureModel.from_builder(build)  # abstract: no eager initialization (5 s of op compiles)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype)
                          if jnp.issubdtype(s.dtype, jnp.floating) else jnp.zeros(s.shape, s.dtype),
                          model.abstract_params())
    params["encoder"]["dropout"]["rngs"]["key"] = jax.random.key(0)
    other = jax.tree.map(lambda a: a, params)  # the same weights, another dropout stream
    other["encoder"]["dropout"]["rngs"]["key"] = jax.random.key(7)
    x = (np.random.default_rng(0).uniform(size=(5, 6)) > 0.5).astype(np.float32)
    key = jax.random.key(1)
    iwae = evaluate.make_iwae_evaluator(model, num_samples=8, batch_size=5)  # what jv.iwae_log_likelihood runs
    np.testing.assert_array_equal(iwae(params, x, key).log_px, iwae(other, x, key).log_px)
    elbo = evaluate.make_elbo_evaluator(model, batch_size=5)
    assert elbo(params, x, key)["elbo"] == elbo(other, x, key)["elbo"]
    train = jax.jit(model.forward, static_argnums=3)
    assert not np.allclose(train(params, x, key, 2).log_weights, train(other, x, key, 2).log_weights, atol=1e-4)
