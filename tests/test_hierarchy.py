"""Hierarchical VAEs (jaxvae.models.hierarchy): log-densities against a hand-written numpy reference, the IWAE
estimate of a linear-Gaussian two-layer model with the exact posterior against its closed-form marginal likelihood,
the precision-weighted merge against the product of Gaussians, and training through the engine."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvae as jv
from jaxvae import testing as jvt
from jaxvae.models import hierarchy
from tests.helpers import straight_and_resumed

MODELS = {"bottom_up": hierarchy.BottomUpVAE, "ladder": hierarchy.LadderVAE}


def _np_mlp(mlp, h):
    """nets.MLP in float64 numpy: tanh after every layer but the last."""
    layers = list(mlp.layers)
    for i, layer in enumerate(layers):
        h = h @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...], np.float64)
        if i < len(layers) - 1:
            h = np.tanh(h)
    return h


def _gauss(raw):
    d = raw.shape[-1] // 2
    return raw[..., :d], raw[..., d:]


def _log_normal(z, loc, log_scale):
    return np.sum(-0.5 * ((z - loc) * np.exp(-log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi), -1)


def _kl(q_loc, q_ls, p_loc, p_ls):
    return np.sum(p_ls - q_ls + (np.exp(2 * q_ls) + (q_loc - p_loc) ** 2) / (2 * np.exp(2 * p_ls)) - 0.5, -1)


def _bernoulli(x, logits):
    return np.sum(x * logits - np.logaddexp(0.0, logits), axis=-1)


@pytest.fixture(scope="module")
def batch():
    x = jv.data.load_dataset("digits").test[:5]
    return (np.asarray(x) > 0.5).astype(np.float32)  # [5, 8, 8, 1] binary


def test_bottom_up_log_densities_equal_a_hand_written_reference(batch):
    model = hierarchy.BottomUpVAE((8, 8, 1), (4, 3), jv.Bernoulli(), hidden=(12, 6), rngs=nnx.Rngs(0))
    out = model.forward(jnp.asarray(batch), jax.random.key(1), 3)
    x = batch.reshape(5, -1).astype(np.float64)
    z1, z2 = (np.asarray(out.z[g], np.float64) for g in ("z1", "z2"))  # [3, 5, 4], [3, 5, 3]
    q1 = _gauss(_np_mlp(model.inference[0].mlp, x))
    q2 = _gauss(_np_mlp(model.inference[1].mlp, z1))
    p1 = _gauss(_np_mlp(model.generative[0].mlp, z2))
    log_q1, log_q2 = _log_normal(z1, *q1), _log_normal(z2, *q2)
    log_p1, log_p2 = _log_normal(z1, *p1), _log_normal(z2, 0.0, 0.0)
    log_px = _bernoulli(x, _np_mlp(model.decoder.mlp, z1))
    tol = dict(rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out.log_qz_x, log_q1 + log_q2, **tol)
    np.testing.assert_allclose(out.log_pz, log_p1 + log_p2, **tol)
    np.testing.assert_allclose(out.log_px_z, log_px, **tol)
    np.testing.assert_allclose(out.log_q_groups["z1"], log_q1, **tol)
    np.testing.assert_allclose(out.log_p_groups["z2"], log_p2, **tol)
    # Per-layer KL: z2's is closed form given z1 (averaged over the 3 samples), z1's the Monte Carlo estimate.
    kl = out.kl_per_group()
    np.testing.assert_allclose(kl["z2"], _kl(*q2, 0.0, 0.0).mean(0), **tol)
    np.testing.assert_allclose(kl["z1"], (log_q1 - log_p1).mean(0), **tol)
    # jv.elbo on the same key is the mean log-weight (the KL is Monte Carlo: not every layer has a closed form).
    pure, params = jv.split(model)
    loss, _ = jv.elbo(pure, params, jnp.asarray(batch), jax.random.key(1), num_samples=3)
    np.testing.assert_allclose(-float(loss), np.mean(log_px + log_p1 + log_p2 - log_q1 - log_q2), rtol=1e-5)


def test_ladder_log_densities_and_kls_equal_a_hand_written_reference(batch):
    model = hierarchy.LadderVAE((8, 8, 1), (4, 3), jv.Bernoulli(), hidden=(12, 6), rngs=nnx.Rngs(0))
    out = model.forward(jnp.asarray(batch), jax.random.key(2), 3)
    x = batch.reshape(5, -1).astype(np.float64)
    z1, z2 = (np.asarray(out.z[g], np.float64) for g in ("z1", "z2"))
    d1 = np.tanh(_np_mlp(model.deterministic[0], x))
    d2 = np.tanh(_np_mlp(model.deterministic[1], d1))
    head = lambda i, d: _gauss(d @ np.asarray(model.heads[i].kernel[...], np.float64)
                               + np.asarray(model.heads[i].bias[...], np.float64))
    (m1, s1), q2 = head(0, d1), head(1, d2)
    p1 = _gauss(_np_mlp(model.generative[0].mlp, z2))  # [3, 5, 4]
    prec = np.exp(-2 * s1) + np.exp(-2 * p1[1])  # precision weighting, written out
    q1 = ((m1 * np.exp(-2 * s1) + p1[0] * np.exp(-2 * p1[1])) / prec, -0.5 * np.log(prec))
    log_q = _log_normal(z1, *q1) + _log_normal(z2, *q2)
    log_p = _log_normal(z1, *p1) + _log_normal(z2, 0.0, 0.0)
    tol = dict(rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out.log_qz_x, log_q, **tol)
    np.testing.assert_allclose(out.log_pz, log_p, **tol)
    np.testing.assert_allclose(out.log_px_z, _bernoulli(x, _np_mlp(model.decoder.mlp, z1)), **tol)
    kl = out.kl_per_group()  # every layer closed form given the layer above
    np.testing.assert_allclose(kl["z2"], _kl(*q2, 0.0, 0.0), **tol)
    np.testing.assert_allclose(kl["z1"], _kl(*q1, *p1).mean(0), **tol)
    assert out.kl_per_dim().shape == (5, 7)


def test_precision_weighting_is_the_normalized_product_of_the_gaussians():
    rng = np.random.default_rng(0)
    a = jv.DiagonalGaussian(jnp.asarray(rng.normal(size=3)), jnp.asarray(rng.normal(size=3)))
    b = jv.DiagonalGaussian(jnp.asarray(rng.normal(size=3)), jnp.asarray(rng.normal(size=3)))
    c = hierarchy.precision_weighted(a, b)
    z = jnp.asarray(rng.normal(size=(50, 3)) * 3)
    # log N(z; a) + log N(z; b) - log N(z; c) does not depend on z, per dimension.
    gap = a.log_prob_per_dim(z) + b.log_prob_per_dim(z) - c.log_prob_per_dim(z)
    np.testing.assert_allclose(gap, np.broadcast_to(gap[0], gap.shape), atol=1e-4)
    # ... and equals the normalizer log N(mu_a; mu_b, s_a^2 + s_b^2).
    var = np.exp(2 * np.asarray(a.log_scale)) + np.exp(2 * np.asarray(b.log_scale))
    norm = -0.5 * (np.asarray(a.loc) - np.asarray(b.loc)) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
    np.testing.assert_allclose(gap[0], norm, atol=1e-4)
    # Extreme scales stay finite: a nearly exact term dominates.
    sharp = jv.DiagonalGaussian(jnp.ones(3), jnp.full(3, -40.0))
    merged = hierarchy.precision_weighted(sharp, b)
    np.testing.assert_allclose(merged.loc, 1.0, atol=1e-6)
    assert np.all(np.isfinite(merged.log_scale))


# ------------------------------------------------------------------------- linear-Gaussian exact marginal

A, A0, S1 = 1.5, 0.3, 0.6  # z1 | z2 ~ N(A z2 + A0, S1^2), z2 ~ N(0, 1)
W, B, SX = np.array([0.8, -1.2, 0.5]), np.array([0.1, 0.0, -0.2]), 0.7  # x | z1 ~ N(W z1 + B, SX^2 I)


def _set_linear(linear, kernel, bias):
    linear.kernel[...] = jnp.asarray(np.asarray(kernel, np.float32).reshape(linear.kernel.shape))
    linear.bias[...] = jnp.asarray(np.asarray(bias, np.float32).reshape(linear.bias.shape))


def _linear_gaussian(inference):
    """The two-layer linear-Gaussian model (1-D latents) with its encoder set to the exact posterior."""
    lik = jv.Gaussian(sigma=SX)
    model = MODELS[inference]((3,), (1, 1), lik, hidden=(1, 1), depth=0, rngs=nnx.Rngs(0))
    _set_linear(model.generative[0].mlp.layers[0], [[A, 0.0]], [A0, math.log(S1)])
    _set_linear(model.decoder.mlp.layers[0], W[None], B)
    m1, v1 = A0, A**2 + S1**2  # the marginal of z1
    if inference == "bottom_up":
        # q(z1|x) = p(z1|x); q(z2|z1) = p(z2|z1) (z2 and x are independent given z1).
        var1 = 1.0 / (1.0 / v1 + W @ W / SX**2)
        _set_linear(model.inference[0].mlp.layers[0], np.stack([var1 * W / SX**2, np.zeros(3)], 1),
                    [var1 * (m1 / v1 - W @ B / SX**2), 0.5 * math.log(var1)])
        var2 = 1.0 / (1.0 + A**2 / S1**2)
        _set_linear(model.inference[1].mlp.layers[0], [[var2 * A / S1**2, 0.0]],
                    [-var2 * A * A0 / S1**2, 0.5 * math.log(var2)])
    else:
        # Top: q(z2|x) = p(z2|x), from x | z2 ~ N(W A z2 + W A0 + B, S1^2 W W^T + SX^2 I).
        g, h = A * W, W * A0 + B
        sigma_inv = np.linalg.inv(S1**2 * np.outer(W, W) + SX**2 * np.eye(3))
        var2 = 1.0 / (1.0 + g @ sigma_inv @ g)
        _set_linear(model.heads[1], np.stack([var2 * sigma_inv @ g, np.zeros(3)], 1),
                    [-var2 * g @ sigma_inv @ h, 0.5 * math.log(var2)])
        # Layer 1: the bottom-up term is p(x|z1) as a Gaussian in z1, N(W.(x - B) / |W|^2, SX^2 / |W|^2); merged
        # with p(z1|z2) it is the exact p(z1|z2, x).
        ww = W @ W
        _set_linear(model.heads[0], np.stack([W / ww, np.zeros(3)], 1),
                    [-W @ B / ww, 0.5 * math.log(SX**2 / ww)])
    return model


def _exact_log_px(x):
    mean = W * A0 + B
    cov = (A**2 + S1**2) * np.outer(W, W) + SX**2 * np.eye(3)
    diff = x - mean
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff) + logdet + 3 * math.log(2 * math.pi))


@pytest.mark.parametrize("inference", sorted(MODELS))
def test_iwae_with_the_exact_posterior_of_a_linear_gaussian_model_is_the_marginal_likelihood(inference):
    model = _linear_gaussian(inference)
    pure, params = jv.split(model)
    x = np.random.default_rng(3).normal(size=(7, 3)).astype(np.float32) * 2.0
    exact = _exact_log_px(x.astype(np.float64))
    # With q = the posterior every importance weight is p(x): the log-weights do not vary over samples ...
    out = pure.forward(params, jnp.asarray(x), jax.random.key(0), 16)
    np.testing.assert_allclose(out.log_weights, np.broadcast_to(exact, (16, 7)), atol=2e-4)
    # ... and the IWAE estimator (the evaluator's own code path) returns log p(x) exactly, for any k.
    est = jv.iwae_log_likelihood(pure, params, x, jax.random.key(1), num_samples=10, batch_size=4)
    np.testing.assert_allclose(est.log_px, exact, atol=2e-4)


# ----------------------------------------------------------------------------------------- the engine

@pytest.mark.parametrize("inference", [pytest.param(m, marks=pytest.mark.slow) if m == "ladder" else m
                                       for m in sorted(MODELS)])
def test_hierarchies_pass_the_model_contract(inference, batch):
    model = MODELS[inference]((8, 8, 1), (4, 2), jv.Bernoulli(), hidden=(16, 8), rngs=nnx.Rngs(0))
    jvt.check_model(model, jnp.asarray(batch), kl_samples=2000)
    z = model.prior_sample_tempered(jax.random.key(0), 6, temperature=(1.0, 0.0))
    assert z["z1"].shape == (6, 4) and z["z2"].shape == (6, 2)
    np.testing.assert_allclose(z["z2"], 0.0)  # temperature 0 on the top layer: its prior mean


def test_the_monitor_names_a_collapsed_layer():
    from jaxvae import config
    from jaxvae.evaluation import monitor

    health = monitor.CollapseMonitor(config.Config(), 6, (("z1", 4), ("z2", 2)))
    out = {"mean_variance": np.array([0.5, 0.3, 0.2, 0.4, 1e-4, 1e-5]), "kl_per_dim": np.full(6, 0.5),
           "kl": 4.0, "mi": 2.0, "kl_per_group": {"z1": 4.0, "z2": 0.001}}
    record, warning = health.record(100, out)
    assert record["active_units_per_group"] == {"z1": 4, "z2": 0} and record["kl_per_group"]["z2"] == 0.001
    assert "layer z2 has collapsed (0 of 2 units active, KL 0.001 nats)" in warning
    assert "Layer z2 carries no information" in warning
    assert health.record(200, out)[1] is None  # the same collapse is reported once
    healthy = {**out, "mean_variance": np.full(6, 0.5), "kl_per_group": {"z1": 3.0, "z2": 1.0}}
    record, warning = health.record(300, healthy)
    assert warning is None and not record["collapse"]


SMALL = ["model.network=hierarchical", "model.latent_dims=4,2", "model.layer_hidden=16,8", "train.steps=40",
         "train.log_every=10", "train.checkpoint_every=20", "monitor.every=20", "monitor.batch_size=64",
         "eval.num_samples=4", "eval.max_examples=20", "eval.num_images=8"]


# Every stabilizer at once (the Ladder run of the default tier): KL warm-up with KL balancing, update skipping
# (a threshold that a few steps may exceed), the soft clamp, Adamax, spectral regularization (annealed) and the
# parameters' EMA.
STABILIZERS = ["objective.beta_schedule=linear", "objective.warmup_steps=30", "objective.kl_balance=true",
               "optimizer.skip_threshold=1000", "model.log_scale_clamp=5", "optimizer.name=adamax",
               "optimizer.ema_decay=0.9", "optimizer.spectral_reg.weight=0.01",
               "optimizer.spectral_reg.init_weight=1", "optimizer.spectral_reg.warmup_steps=30"]


# Both in the slow tier: on a 2-core machine without AVX-512 the Ladder run with every stabilizer took 263 s. The
# bottom-up run is in the extended tier (`make test-extended`): the Ladder run covers the same resume and per-layer
# reports, and the fast tier checks the bottom-up densities against a reference.
@pytest.mark.parametrize("inference, extra", [
    pytest.param("ladder", STABILIZERS, marks=pytest.mark.slow),
    pytest.param("bottom_up", [], marks=(pytest.mark.slow, pytest.mark.extended))])
def test_hierarchies_train_resume_bitwise_and_report_per_layer(inference, extra, tmp_path):
    from jaxvae import config, runs
    from jaxvae.evaluation import samplers

    cfg = config.apply_overrides(config.get_preset("digits"), [*SMALL, f"model.inference={inference}", *extra])
    # An interrupted run (its last checkpoint and results gone) resumes from step 20 to the same parameters.
    straight, resumed = straight_and_resumed(cfg, tmp_path)
    assert set(straight["latent"]["active_units_per_group"]) == {"z1", "z2"}
    assert set(straight["kl_groups"]) == {"z1", "z2"}
    np.testing.assert_allclose(sum(straight["kl_groups"].values()), straight["test_kl"], rtol=1e-4, atol=1e-4)
    assert resumed["params_sha256"] == straight["params_sha256"]
    lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    monitor_records = [json.loads(line) for line in lines if '"monitor"' in line]
    assert monitor_records and set(monitor_records[-1]["kl_per_group"]) == {"z1", "z2"}
    run = runs.load_run(tmp_path / "straight")
    z = samplers.prior_samples(run.model, run.params, jax.random.key(0), 5, temperature=0.7)  # ancestral
    assert z.shape == (5, 6) and np.all(np.isfinite(z))
    assert (tmp_path / "straight" / "samples.png").stat().st_size > 100
    # diagnose: the model's own per-layer KL (not the N(0, I) proxy of the flat view), and the report's pictures.
    from jaxvae.runs.diagnose import run_diagnose

    report = run_diagnose(tmp_path / "straight", max_examples=200, log=lambda _: None)
    assert set(report["kl_per_group"]) == {"z1", "z2"} and set(report["active_units_per_group"]) == {"z1", "z2"}
    assert report["kl_total"] == pytest.approx(sum(report["kl_per_group"].values()))
    assert (tmp_path / "straight" / "report.html").stat().st_size > 1000


def test_the_soft_clamp_bounds_log_scales_smoothly():
    values = np.array([-15.0, -5.0, 0.0, 1.0, 15.0])
    raw = jnp.concatenate([jnp.zeros(5), jnp.asarray(values, jnp.float32)])
    q = jv.DiagonalGaussian.from_raw(raw, log_scale_clamp=5.0)
    np.testing.assert_allclose(q.log_scale, 5.0 * np.tanh(values / 5.0), rtol=1e-6)
    assert float(jnp.max(jnp.abs(q.log_scale))) < 5.0
    grad = jax.grad(lambda r: jnp.sum(jv.DiagonalGaussian.from_raw(r, log_scale_clamp=5.0).log_scale))(raw)
    assert np.all(np.asarray(grad[5:]) > 0)  # a gradient everywhere, unlike a hard clip
    np.testing.assert_allclose(jv.DiagonalGaussian.from_raw(raw).log_scale, raw[5:])  # off by default
    model = hierarchy.LadderVAE((4,), (3, 2), jv.Bernoulli(), hidden=(8, 4), log_scale_clamp=2.0,
                                rngs=nnx.Rngs(0))
    out = model.forward(jnp.ones((2, 4)) * 100.0, jax.random.key(0), 2)  # large inputs, large raw log-scales
    for q in (*out.posteriors.values(), *out.priors.values()):
        assert float(jnp.max(jnp.abs(q.log_scale))) <= 2.0 + 1e-6


@pytest.mark.slow
def test_kl_balancing_keeps_the_loss_and_rescales_each_layers_kl_gradient(batch):
    model = hierarchy.LadderVAE((8, 8, 1), (4, 2), jv.Bernoulli(), hidden=(16, 8), rngs=nnx.Rngs(0))
    pure, params = jv.split(model)
    x, key, beta = jnp.asarray(batch), jax.random.key(3), 0.3
    plain, _ = jv.elbo(pure, params, x, key, beta=beta)
    balanced, out = jv.elbo(pure, params, x, key, beta=beta, kl_balance=True)
    np.testing.assert_allclose(balanced, plain, rtol=1e-6)  # the value is the bound's
    groups = lambda p: pure.forward(p, x, key, 1).kl_per_group()
    kl_means = {g: float(jnp.mean(v)) for g, v in groups(params).items()}
    raw = {"z1": (abs(kl_means["z1"]) + 0.01) / (4 / 6), "z2": (abs(kl_means["z2"]) + 0.01) / (2 / 6)}
    c = {g: v / (sum(raw.values()) / 2) for g, v in raw.items()}  # NVAE's coefficients, mean 1
    for g in c:
        np.testing.assert_allclose(float(out.metrics[f"kl_balance_{g}"]), c[g], rtol=1e-5)
    grad = jax.grad(lambda p: jv.elbo(pure, p, x, key, beta=beta, kl_balance=True)[0])(params)
    g_rec = jax.grad(lambda p: jnp.mean(-jnp.mean(pure.forward(p, x, key, 1).log_px_z, axis=0)))(params)
    g_kl = {g: jax.grad(lambda p, g=g: jnp.mean(groups(p)[g]))(params) for g in c}
    expected = jax.tree.map(lambda r, a, b: r + beta * (c["z1"] * a + c["z2"] * b), g_rec, g_kl["z1"], g_kl["z2"])
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # After the warm-up (beta = 1) the balancer is off: the plain gradient.
    after = jax.grad(lambda p: jv.elbo(pure, p, x, key, beta=1.0, kl_balance=True)[0])(params)
    plain_grad = jax.grad(lambda p: jv.elbo(pure, p, x, key, beta=1.0)[0])(params)
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(plain_grad)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_a_collapsed_layer_is_reported_once_while_its_units_fluctuate():
    from jaxvae import config
    from jaxvae.evaluation import monitor

    health = monitor.CollapseMonitor(config.Config(), 6, (("z1", 4), ("z2", 2)))
    base = {"kl_per_dim": np.full(6, 0.5), "kl": 4.0, "mi": 2.0, "kl_per_group": {"z1": 4.0, "z2": 0.001}}
    first = health.record(100, {**base, "mean_variance": np.array([0.5, 0.3, 0.2, 1e-3, 1e-4, 1e-5])})[1]
    again = health.record(200, {**base, "mean_variance": np.array([0.5, 1e-3, 0.2, 0.4, 1e-4, 1e-5])})[1]
    assert first is not None and again is None  # z1's inactive unit moved; the collapsed layer is the same


def test_free_bits_per_layer_floor_each_layers_batch_mean_kl(batch):
    model = hierarchy.BottomUpVAE((8, 8, 1), (4, 2), jv.Bernoulli(), hidden=(16, 8), rngs=nnx.Rngs(0))
    pure, params = jv.split(model)
    x, key = jnp.asarray(batch), jax.random.key(4)
    fwd = pure.forward(params, x, key, 1)
    kl = {g: float(jnp.mean(v)) for g, v in fwd.kl_per_group().items()}  # z1 Monte Carlo, z2 closed form
    recon = float(jnp.mean(-fwd.log_px_z[0]))
    lam = (kl["z1"] + kl["z2"]) / 2  # between the two layers' KLs: one is floored, the other is not
    loss, out = jv.free_bits_per_group(pure, params, x, key, threshold=lam, beta=0.5)
    expected = recon + 0.5 * (max(lam, kl["z1"]) + max(lam, kl["z2"]))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(out.metrics["free_bits_kl"]) == pytest.approx(max(lam, kl["z1"]) + max(lam, kl["z2"]), rel=1e-5)
    from jaxvae import config

    cfg = config.apply_overrides(config.get_preset("digits"), [
        "model.network=hierarchical", "model.latent_dims=4,2", "objective.name=free_bits",
        "objective.free_bits.nats=0.5", "objective.free_bits.per_layer=true"])
    assert cfg.objective.free_bits.per_layer
