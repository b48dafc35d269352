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

from jaxvae import config, runs
from jaxvae.distributions import DiagonalGaussian, TransformedDistribution
from jaxvae.errors import ConfigError
from jaxvae.models import flows
from jaxvae.objectives import estimators

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
        # (float32 rounding of a batched against an unbatched program: a few ulps, absolute near a zero log-det)
        np.testing.assert_allclose(f.forward_and_log_det(zk)[1][1], f.forward_and_log_det(z * 0.5)[1], rtol=1e-5,
                                   atol=1e-6)


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


def _jacobians(f, z):
    """[B, D, D] Jacobians of example b's output with respect to its own input (traceable, for use inside jit): the
    bijection's per-example leaves ``[B, ...]`` and ``z [B, D]`` vmapped together (each a batch of one inside)."""
    def one(fb, zb):
        return jax.jacfwd(lambda v: fb.forward_and_log_det(v[None])[0][0])(zb)

    return jax.vmap(one)(jax.tree.map(lambda a: a[:, None], f), z)


def _log_det_and_jacobians(f, z):
    """``(log_det [B], jacobians [B, D, D])`` as numpy arrays (converted where the dtype was made: under x64, jax
    arithmetic on a float64 array would otherwise round it to float32)."""
    log_det, jac = jax.jit(lambda f, z: (f.forward_and_log_det(z)[1], _jacobians(f, z)))(f, z)
    return np.asarray(log_det), np.asarray(jac)


def _reference_error(jac):
    """A bound on the rounding error of float64 ``slogdet`` of Jacobians ``[B, D, D]`` near singularity: 100 ulps
    times their condition numbers (1e-10 to 1e-8 nats here; the bugs below were 1e-5 to 1e-3 nats)."""
    return 100 * np.finfo(np.float64).eps * np.linalg.cond(np.asarray(jac))


def _planar_at_the_boundary(w_norm, wu, z, a):
    """Raw planar parameters (numpy) with ``|w| = w_norm``, ``w^T u = wu`` and ``w^T z + b = a`` at ``z [B, D]``
    (one value of each per example, ``[B]``): u anti-aligned with w plus a component orthogonal to it."""
    d = z.shape[-1]
    direction = np.ones(d) / np.sqrt(d)
    ortho = np.zeros(d)
    ortho[:2] = np.array([1.0, -1.0]) / np.sqrt(2.0)  # orthogonal to `direction`
    w = w_norm[:, None] * direction
    u = (wu / w_norm)[:, None] * direction + 0.3 * ortho
    return u, w, a - np.sum(w * z, axis=-1)


def test_planar_log_det_is_the_log_det_of_the_autodiff_jacobian_up_to_the_invertibility_boundary():
    """Issue 36 (4): |w| = 1e-3 with w^T u = -10 gave w^T u_hat = -1.089 (the `+ 1e-8` beside |w|^2 in u_hat):
    det df/dz = -0.089 near a = 0, a folded map reported with a finite log-determinant; and `log(|.| + 1e-8)`
    biased every log-determinant by about 1e-8/det (2.2e-4 nats at det = 4.5e-5, w^T u = -10, a = 0)."""
    w_norm = np.array([1e-3, 1e-3, 1.0, 1.0, 2.0, 0.5, 1e-4])
    wu = np.array([-10.0, -10.0, -10.0, -10.0, -4.0, 3.0, -12.0])
    a = np.array([0.0, 0.3, 0.0, -0.05, 1e-3, 0.0, 0.0])
    z = np.random.default_rng(0).normal(size=(7, 3))
    with jax.enable_x64(True):
        f = flows.Planar(*(jnp.asarray(v, jnp.float64) for v in _planar_at_the_boundary(w_norm, wu, z, a)))
        wu_hat = np.sum(np.asarray(f.w) * np.asarray(jax.jit(flows.Planar.u_hat)(f)), axis=-1)
        log_det, jac = _log_det_and_jacobians(f, jnp.asarray(z, jnp.float64))
    # The constraint is exact: w^T u_hat = m(w^T u) = -1 + softplus(w^T u) > -1.
    np.testing.assert_allclose(wu_hat, -1.0 + np.logaddexp(0.0, wu), rtol=1e-12, atol=1e-12)
    assert np.all(wu_hat > -1.0)
    sign, logabs = np.linalg.slogdet(np.asarray(jac))
    np.testing.assert_array_equal(sign, 1.0)  # orientation-preserving: the map does not fold
    np.testing.assert_array_less(np.abs(log_det - logabs), _reference_error(jac))
    # Closed form: log(tanh^2 a + sech^2 a softplus(w^T u)) (with w^T u_hat = m exactly).
    np.testing.assert_allclose(log_det, np.log(np.tanh(a) ** 2 + np.logaddexp(0.0, wu) / np.cosh(a) ** 2),
                               rtol=1e-13, atol=1e-13)

    # float32, adversarial raw parameters (w^T u = -40, |w| = 2e-3): w^T u_hat >= -1 up to the rounding of u_hat's
    # cancelling terms (eps |u| |w|; the old code gave -1.097), a finite log-determinant and gradient; w = 0 (the
    # second example) is a translation with log-determinant 0.
    @jax.jit
    def float32_case(u, w, b):
        log_det_of = lambda uu: flows.Planar(uu, w, b).forward_and_log_det(jnp.zeros_like(u))[1]
        return flows.Planar(u, w, b).u_hat(), log_det_of(u), jax.grad(lambda uu: jnp.sum(log_det_of(uu)))(u)

    u32, w32 = np.full((2, 4), -1e4, np.float32), np.full((2, 4), 1e-3, np.float32)
    w32[1] = 0.0
    u_hat32, log_det32, grad = float32_case(u32, w32, np.zeros(2, np.float32))
    wu_hat32 = np.sum(w32[0].astype(np.float64) * np.asarray(u_hat32[0], np.float64))
    assert wu_hat32 >= -1.0 - 4 * np.finfo(np.float32).eps * 2e4 * 2e-3, wu_hat32
    assert np.all(np.isfinite(log_det32)) and np.all(np.isfinite(grad)) and log_det32[1] == 0.0


def _sylvester(diag1, diag2, seed, d=3, h=2):
    """Raw Sylvester parameters of one example (numpy), with the raw diagonals of r1, r2 set to diag1, diag2."""
    rng = np.random.default_rng(seed)
    r1, r2 = 0.5 * rng.normal(size=(1, d, d)), 0.5 * rng.normal(size=(1, d, d))
    r1[0][np.diag_indices(d)], r2[0][np.diag_indices(d)] = diag1, diag2
    return r1, r2, np.zeros((1, d)), rng.normal(size=(1, h, d))


def test_sylvester_log_det_is_exact_up_to_the_boundary_and_finite_when_tanh_saturates():
    """Issue 36 (4): log(|1 + d1 d2 tanh'| + 1e-8) biased each step by about 1e-8/det, and in float32 a raw
    diagonal pair (12, -12) gave tanh = +-1 exactly: 1 + d1 d2 tanh'(0) = 0 and a log-determinant of log(1e-8)
    = -18.4 for the true log sech^2(12) = -22.6 per dimension."""
    raw = _sylvester([6.0, -5.0, 0.7], [-6.0, 4.5, -0.2], seed=0)  # products near -1, and moderate
    z = np.stack([np.zeros(3), 0.1 * np.random.default_rng(1).normal(size=3)])  # a = 0 (b = 0), and near it
    with jax.enable_x64(True):
        f = flows.Sylvester(*(jnp.asarray(np.concatenate([v, v]), jnp.float64) for v in raw))  # one step, 2 points
        log_det, jac = _log_det_and_jacobians(f, jnp.asarray(z, jnp.float64))
    sign, logabs = np.linalg.slogdet(np.asarray(jac))
    np.testing.assert_array_equal(sign, 1.0)
    np.testing.assert_array_less(np.abs(log_det - logabs), _reference_error(jac))
    # float32 with saturated tanh: the log-determinant at a = 0 is sum log(1 - tanh x tanh y) in float64.
    x, y = np.array([12.0, -9.5, 0.3]), np.array([-12.0, 10.0, 0.4])
    f32 = flows.Sylvester(*(jnp.asarray(v, jnp.float32) for v in _sylvester(x, y, seed=3)))
    log_det32 = jax.jit(flows.Sylvester.forward_and_log_det)(f32, jnp.zeros((1, 3)))[1]
    ex, ey = np.exp(-2 * abs(x)), np.exp(-2 * abs(y))
    exact = np.sum(np.where(x * y < 0, np.log(2 * (ex + ey) / ((1 + ex) * (1 + ey))),
                            np.log1p(np.tanh(x) * np.tanh(y))))
    np.testing.assert_allclose(log_det32, [exact], rtol=1e-6)


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
    from jaxvae.distributions import likelihoods
    from jaxvae.models import priors
    from jaxvae.models.protocol import VAE, split

    enc = flows.FlowEncoder((6,), 2, (8,), flow="planar", steps=1, rngs=nnx.Rngs(0))
    from jaxvae.models.nets import MLPDecoder

    vae = VAE(enc, MLPDecoder(2, (6,), (8,), rngs=nnx.Rngs(1)), likelihoods.Bernoulli(), priors.StandardNormal(2),
              (6,))
    model, params = split(vae)
    with pytest.raises(ConfigError, match="no closed-form log_prob"):
        estimators.elbo_stl(model, params, jnp.zeros((2, 6)), jax.random.key(0))
    loss, _ = estimators.miwae(model, params, jnp.zeros((2, 6)), jax.random.key(0), num_samples=2, outer=2)
    assert np.isfinite(loss)
