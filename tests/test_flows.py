"""Flow posteriors: every step's log-determinant against log|det| of jax.jacfwd of its transform (random,
far-from-identity parameters), the posterior's log-density of its own samples against change of variables through
the whole composed flow, IAF's triangular Jacobian in both orders, the planar invertibility constraint, and the
flows through config, training, evaluation, sampling and diagnosis."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvae import config, estimators, flows, runs
from jaxvae.distributions import DiagonalGaussian, TransformedDistribution
from jaxvae.errors import ConfigError

B, D = 5, 4


def _random_bijection(kind, key, reverse=False, scale=1.0):
    ks = jax.random.split(key, 8)

    def n(k, shape):
        return scale * jax.random.normal(k, shape)

    if kind == "planar":
        return flows.Planar(n(ks[0], (B, D)), n(ks[1], (B, D)), n(ks[2], (B,)))
    if kind == "radial":
        return flows.Radial(n(ks[0], (B, D)), n(ks[1], (B,)), n(ks[2], (B,)))
    if kind == "sylvester":
        return flows.Sylvester(n(ks[0], (B, D, D)), n(ks[1], (B, D, D)), n(ks[2], (B, D)), n(ks[3], (B, 3, D)))
    width, c = 7, 3
    m1, m2 = flows.made_masks(D, width, reverse=reverse)
    return flows.IAF(n(ks[0], (D, width)), n(ks[1], (c, width)), n(ks[2], (width,)), n(ks[3], (width, D)),
                     n(ks[4], (width, D)), n(ks[5], (D,)), n(ks[6], (D,)), n(ks[7], (B, c)), jnp.asarray(m1),
                     jnp.asarray(m2))


def _per_example_jacobians(f, z):
    """[B, D, D] Jacobians of example b's output with respect to its own input."""
    def one(b):
        return jax.jacfwd(lambda v: f(z.at[b].set(v))[b])(z[b])
    return jnp.stack([one(b) for b in range(z.shape[0])])


@pytest.mark.parametrize("kind", flows.FLOWS)
def test_log_det_equals_the_log_abs_det_of_the_jacobian(kind):
    for seed in range(3):
        f = _random_bijection(kind, jax.random.key(seed))
        z = 1.5 * jax.random.normal(jax.random.key(100 + seed), (B, D))
        _, log_det = f.forward_and_log_det(z)
        jac = _per_example_jacobians(lambda zz, f=f: f.forward_and_log_det(zz)[0], z)
        sign, logabs = np.linalg.slogdet(np.asarray(jac, np.float64))
        np.testing.assert_allclose(log_det, logabs, rtol=1e-4, atol=1e-4)
        assert np.all(sign != 0)
        # Leading sample axes broadcast: [K, B, D] gives [K, B] log-determinants equal to the per-sample ones.
        zk = jnp.stack([z, z * 0.5])
        np.testing.assert_allclose(f.forward_and_log_det(zk)[1][1], f.forward_and_log_det(z * 0.5)[1], rtol=1e-5)


@pytest.mark.parametrize("kind", flows.FLOWS)
def test_the_posterior_log_density_of_its_samples_is_the_change_of_variables_of_the_composed_flow(kind):
    key = jax.random.key(7)
    base = DiagonalGaussian(jax.random.normal(key, (B, D)), 0.3 * jax.random.normal(jax.random.key(8), (B, D)))
    # Moderate parameters: a composed Jacobian with a tiny determinant loses it to cancellation in float32.
    steps = tuple(_random_bijection(kind, jax.random.key(20 + k), reverse=bool(k % 2), scale=0.5)
                  for k in range(3))
    q = TransformedDistribution(base, steps)
    z, log_q = q.sample_and_log_prob(jax.random.key(9), 2)  # [2, B, D], [2, B]
    z0 = base.sample(jax.random.key(9), 2)  # the same base draws
    for k in range(2):
        jac = _per_example_jacobians(lambda zz: q.transform(zz)[0], z0[k])
        expected = base.log_prob(z0[k]) - np.linalg.slogdet(np.asarray(jac, np.float64))[1]
        np.testing.assert_allclose(log_q[k], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(z[k], q.transform(z0[k])[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match="only along its own samples"):
        q.log_prob(z)


@pytest.mark.parametrize("kind", flows.FLOWS)
def test_a_scan_over_stacked_steps_equals_applying_them_one_after_another(kind):
    steps = [_random_bijection(kind, jax.random.key(40 + k), reverse=bool(k % 2), scale=0.5) for k in range(3)]
    stacked = flows.Scan(jax.tree.map(lambda *leaves: jnp.stack(leaves), *steps))
    assert stacked.num_steps == 3
    z = jax.random.normal(jax.random.key(5), (2, B, D))
    base = DiagonalGaussian(jnp.zeros((B, D)), jnp.zeros((B, D)))
    z_seq, ld_seq = TransformedDistribution(base, tuple(steps)).transform(z)
    z_scan, ld_scan = stacked.forward_and_log_det(z)
    np.testing.assert_allclose(z_scan, z_seq, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ld_scan, ld_seq, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_iaf_jacobian_is_triangular_in_its_order_with_sigma_on_the_diagonal(reverse):
    f = _random_bijection("iaf", jax.random.key(3), reverse=reverse)
    z = jax.random.normal(jax.random.key(4), (B, D))
    jac = np.asarray(_per_example_jacobians(lambda zz: f.forward_and_log_det(zz)[0], z))  # [B, out, in]
    order = np.arange(D)[::-1] if reverse else np.arange(D)
    rank = np.empty(D, int)
    rank[order] = np.arange(D)
    later = rank[None, :] > rank[:, None]  # input comes later in the order than the output
    assert np.all(jac[:, later] == 0.0)
    assert np.any(np.abs(jac[:, rank[None, :] < rank[:, None]]) > 1e-3)  # and it is not diagonal
    hidden = jax.nn.elu(z @ (f.w1 * f.mask1) + f.h @ f.wc + f.b1)
    sigma = jax.nn.sigmoid(hidden @ (f.ws * f.mask2) + f.bs)
    np.testing.assert_allclose(np.diagonal(jac, axis1=1, axis2=2), sigma, rtol=1e-5)


def test_planar_steps_are_invertible_for_any_raw_parameters():
    f = _random_bijection("planar", jax.random.key(11))
    for s in (0.5, 1.0, 3.0):
        g = flows.Planar(-s * f.w, f.w, f.b)  # u anti-aligned with w: w^T u << -1 before the correction
        wu = np.sum(g.w * g.u_hat(), axis=-1)
        np.testing.assert_allclose(wu, -1.0 + jax.nn.softplus(np.sum(g.w * g.u, axis=-1)), atol=1e-4)
        assert np.all(wu >= -1.0 - 1e-4)  # m(a) = -1 + softplus(a) > -1: invertible (float rounding aside)


@pytest.mark.parametrize("posterior", [pytest.param("planar", marks=pytest.mark.slow),
                                       pytest.param("radial", marks=pytest.mark.slow),
                                       pytest.param("iaf", marks=pytest.mark.slow),
                                       pytest.param("sylvester", marks=pytest.mark.slow)])
def test_flow_posteriors_train_from_the_config_with_iwae_evaluation(tmp_path, posterior):
    cfg = config.apply_overrides(config.get_preset("digits"), [
        f"model.posterior={posterior}", "model.flow_steps=2", "train.steps=40", "eval.num_samples=32",
        "eval.max_examples=64", "monitor.every=20", "train.log_every=20"])
    summary = runs.fit(cfg, tmp_path, progress=False, log=lambda _: None)
    assert np.isfinite(summary["test_elbo"]) and np.isfinite(summary["test_nll_iwae"])
    assert summary["test_nll_iwae"] <= -summary["test_elbo"] + 0.5  # the IWAE bound is the tighter one
    assert summary["test_kl"] > 0  # a Monte Carlo KL (no closed form for a flow)
    assert len(summary["latent"]["posterior_mean_variance"]) == 8  # active units from the base Gaussian's means
    run = runs.load_run(tmp_path)
    q = run.model.posteriors(run.params, run.dataset.test[:3])["z"]
    assert isinstance(q, TransformedDistribution) and q.bijections[0].num_steps == 2


@pytest.mark.slow
def test_a_flow_run_evaluates_samples_and_diagnoses_through_the_cli(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "jaxvae", *args], capture_output=True, text=True)

    wd = str(tmp_path / "run")
    r = cli("train", "--preset", "digits", "--workdir", wd, "--no-progress", "--set", "model.posterior=iaf",
            "model.flow_steps=2", "train.epochs=3", "eval.num_samples=20")
    assert r.returncode == 0, r.stderr
    assert cli("evaluate", "--workdir", wd, "--num-samples", "50").returncode == 0
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["nll_num_samples"] == 50
    for sampler in ("prior", "gmm"):
        assert cli("sample", "--workdir", wd, "--sampler", sampler).returncode == 0
    r = cli("diagnose", "--workdir", wd)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "report.html").is_file()


@pytest.mark.parametrize("overrides, match", [
    (["model.posterior=planar", "model.network=conv"], "built for model.network=mlp"),
    (["model.posterior=iaf", "model.prior=vamp"], "needs their density at any point"),
    (["model.posterior=glow"], "model.posterior='glow' is not valid"),
])
def test_flow_settings_are_validated(overrides, match):
    with pytest.raises(ConfigError, match=match):
        config.apply_overrides(config.get_preset("digits"), overrides)


def test_estimators_that_need_log_q_at_a_point_refuse_flows_clearly():
    from jaxvae import likelihoods, priors
    from jaxvae.model import VAE, split

    enc = flows.FlowEncoder((6,), 2, (8,), flow="planar", steps=1, rngs=nnx.Rngs(0))
    from jaxvae.nets import MLPDecoder

    vae = VAE(enc, MLPDecoder(2, (6,), (8,), rngs=nnx.Rngs(1)), likelihoods.Bernoulli(), priors.StandardNormal(2),
              (6,))
    model, params = split(vae)
    with pytest.raises(ConfigError, match="no closed-form log_prob"):
        estimators.elbo_stl(model, params, jnp.zeros((2, 6)), jax.random.key(0))
    loss, _ = estimators.miwae(model, params, jnp.zeros((2, 6)), jax.random.key(0), num_samples=2, outer=2)
    assert np.isfinite(loss)
