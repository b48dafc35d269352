"""Conditional VAE and M2 (jaxvae.models.conditional): the bounds against hand-written references and quadrature,
M2's unlabelled bound as the explicit sum over the labels, the labelled subset, CLI sampling by label, and bitwise
resume of both through the engine."""

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import logsumexp

import jaxvae as jv
from jaxvae import config, runs
from jaxvae.data.batches import Labeled, SemiSupervised, nbytes, num_examples
from jaxvae.errors import ConfigError
from jaxvae.evaluation import likelihood as evaluate
from jaxvae.models import conditional
from jaxvae.models.conditional import M2VAE, ConditionalVAE
from tests.helpers import straight_and_resumed


def _mlp(layers, x):
    """A hand-written forward pass of nets.MLP's parameters (relu between layers)."""
    for i, layer in enumerate(layers):
        x = x @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...], np.float64)
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def _tiny_cvae(latent_dim=2, seed=0):
    return ConditionalVAE((3,), latent_dim, jv.Bernoulli(), 3, hidden=(8,), rngs=nnx.Rngs(seed))


def _log_normal(z, loc, log_scale):
    return np.sum(-0.5 * ((z - loc) / np.exp(log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi), axis=-1)


def _bernoulli(x, logits):
    return np.sum(x * logits - np.logaddexp(0.0, logits), axis=-1)


def test_cvae_iwae_bound_equals_a_hand_written_reference():
    vae = _tiny_cvae()
    model, params = jv.split(vae)
    x = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], np.float32)
    y = np.array([0, 2, 1, 2], np.int32)
    key = jax.random.key(3)
    out = model.forward(params, Labeled(jnp.asarray(x), jnp.asarray(y)), key, 7)
    bound = np.asarray(jv.objectives.iwae_bound_from_log_weights(out.log_weights))
    # The reference: the MLPs by hand on [x, onehot(y)] and [z, onehot(y)], at the model's own samples z.
    onehot = np.eye(3)[y]
    raw = _mlp(vae.encoder.mlp.layers, np.concatenate([x, onehot], -1))
    loc, log_scale = raw[:, :2], raw[:, 2:]
    z = np.asarray(out.z["z"], np.float64)  # [K, B, D]
    logits = _mlp(vae.decoder.mlp.layers, np.concatenate([z, np.broadcast_to(onehot, (7, 4, 3))], -1))
    log_w = _bernoulli(x, logits) + _log_normal(z, 0.0, 0.0) - _log_normal(z, loc, log_scale)  # [K, B]
    ref = logsumexp(log_w, axis=0) - math.log(7)
    np.testing.assert_allclose(bound, ref, rtol=1e-5, atol=1e-4)
    # The streaming evaluator on conditioned data (one chunk: fold_in(key, 0)) is the same bound.
    fn = evaluate.make_iwae_fn(model, 7, 7)
    np.testing.assert_allclose(
        np.asarray(fn(params, Labeled(jnp.asarray(x), jnp.asarray(y)), key)),
        np.asarray(jv.objectives.iwae_bound_from_log_weights(
            model.forward(params, Labeled(jnp.asarray(x), jnp.asarray(y)), jax.random.fold_in(key, 0),
                          7).log_weights)), rtol=1e-6)


def test_cvae_iwae_estimates_log_p_x_given_y_by_quadrature():
    """One latent dimension: log p(x|y) = log of the integral of p(x|z,y) N(z) over z, on a fine grid. The IWAE
    estimate with many samples lies within a small gap of it; the label matters."""
    vae = _tiny_cvae(latent_dim=1, seed=4)
    model, params = jv.split(vae)
    x = np.array([[1, 0, 1], [0, 1, 1]], np.float32)
    exacts = []
    for label in (0, 2):
        y = np.full((2,), label, np.int32)
        exact = _quadrature_log_px_given_y(vae.decoder.mlp.layers, x, label, 3)
        est = jv.iwae_log_likelihood(model, params, Labeled(x, y), jax.random.key(0), num_samples=20000,
                                              batch_size=2)
        # A lower bound in expectation; one estimate (20,000 samples, an untrained proposal) lies within 0.02.
        np.testing.assert_allclose(est.log_px, exact, atol=0.02)
        exacts.append(exact)
    assert np.all(np.abs(exacts[0] - exacts[1]) > 0.1)  # the decoder reads the label


def _tiny_m2(alpha=0.5, seed=0):
    return M2VAE((4,), 2, jv.Bernoulli(), 3, alpha=alpha, hidden=(8,), rngs=nnx.Rngs(seed))


def test_m2_unlabelled_bound_is_the_explicit_sum_over_labels():
    """A training row's terms = U(x) + L(xl, yl) and its aux loss = alpha * (-log q(yl|xl)); U(x) is computed
    here by hand as sum_y q(y|x) ELBO(x, y) + H(q(y|x)), with every class's ELBO from the modules' own
    layers at the reparameterized samples z = loc + scale * eps (eps drawn as the model draws it)."""
    m2 = _tiny_m2()
    model, params = jv.split(m2)
    rng = np.random.default_rng(0)
    x = (rng.random((5, 4)) < 0.5).astype(np.float32)
    xl = (rng.random((5, 4)) < 0.5).astype(np.float32)
    yl = np.array([0, 1, 2, 1, 0], np.int32)
    key, K, C = jax.random.key(11), 3, 3
    out = model.forward(params, SemiSupervised(jnp.asarray(x), jnp.asarray(xl), jnp.asarray(yl)), key, K)

    def elbo_terms(xs, labels, eps):  # labels [..., B]; eps [K, ..., B, D]
        onehot = np.eye(C)[labels]
        raw = _mlp(m2.encoder.mlp.layers, np.concatenate([np.broadcast_to(xs, (*onehot.shape[:-1], 4)), onehot],
                                                         -1))
        loc, log_scale = raw[..., :2], raw[..., 2:]
        z = loc + np.exp(log_scale) * eps
        logits = _mlp(m2.decoder.mlp.layers, np.concatenate([z, np.broadcast_to(onehot, (*z.shape[:-1], C))], -1))
        return _bernoulli(xs, logits) + _log_normal(z, 0, 0) - math.log(C) - _log_normal(z, loc, log_scale)

    eps_u = np.asarray(jax.random.normal(key, (K, C, 5, 2)), np.float64)
    per_class = elbo_terms(x, np.broadcast_to(np.arange(C)[:, None], (C, 5)), eps_u)  # [K, C, B]
    log_qy = _mlp(m2.classifier.layers, x.astype(np.float64))
    log_qy = log_qy - logsumexp(log_qy, axis=-1, keepdims=True)  # [B, C]
    qy = np.exp(log_qy)
    unlabelled = np.einsum("bc,kcb->kb", qy, per_class) - np.sum(qy * log_qy, axis=-1)  # [K, B]
    eps_l = np.asarray(jax.random.normal(jax.random.fold_in(key, 3), (K, 5, 2)), np.float64)
    labelled = elbo_terms(xl, yl, eps_l)
    np.testing.assert_allclose(np.asarray(out.log_weights), unlabelled + labelled, rtol=1e-4, atol=1e-3)
    log_ql = _mlp(m2.classifier.layers, xl.astype(np.float64))
    log_ql = log_ql - logsumexp(log_ql, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(out.aux_loss), -0.5 * log_ql[np.arange(5), yl], rtol=1e-5, atol=1e-5)
    # The objective minimises the negative bound plus the mean aux loss, and reports the aux loss.
    loss, obj = jv.objectives.elbo(model, params, SemiSupervised(jnp.asarray(x), jnp.asarray(xl),
                                                                  jnp.asarray(yl)), key, num_samples=K)
    np.testing.assert_allclose(float(loss), -np.mean(unlabelled + labelled) + np.mean(np.asarray(out.aux_loss)),
                               rtol=1e-4)
    assert float(obj.metrics["aux_loss"]) == pytest.approx(float(np.mean(np.asarray(out.aux_loss))), rel=1e-6)


def _quadrature_log_px_given_y(decoder_layers, x, label, classes):
    """log p(x|y) for a 1-D latent: the integral of p(x|z,y) N(z; 0, 1) over z on a fine grid."""
    grid = np.linspace(-10, 10, 20001)[:, None]
    onehot = np.broadcast_to(np.eye(classes)[label], (len(grid), classes))
    logits = _mlp(decoder_layers, np.concatenate([grid, onehot], -1))
    log_prior = -0.5 * grid[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    log_joint = np.stack([_bernoulli(xi, logits) for xi in x]) + log_prior
    return logsumexp(log_joint, axis=1) + math.log(grid[1, 0] - grid[0, 0])


def test_m2_evaluation_bound_is_an_importance_sampler_of_labels_and_latents():
    """One latent dimension, so log p(x, y) = log p(y) + log p(x|y) is exact by quadrature. Unlabelled
    evaluation rows (y = -1) draw (y, z) from q(y|x) q(z|x, y): the IWAE estimate approaches
    log p(x) = logsumexp_y log p(x, y); rows with an observed label estimate log p(x, y)."""
    m2 = M2VAE((4,), 1, jv.Bernoulli(), 3, hidden=(8,), rngs=nnx.Rngs(2))
    model, params = jv.split(m2)
    x = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], np.float32)
    key = jax.random.key(0)
    joint = np.stack([_quadrature_log_px_given_y(m2.decoder.mlp.layers, x, c, 3) - math.log(3) for c in range(3)])
    est = jv.iwae_log_likelihood(model, params, Labeled(x, np.full((2,), -1, np.int32)), key,
                                          num_samples=20000, batch_size=2)
    np.testing.assert_allclose(est.log_px, logsumexp(joint, axis=0), atol=0.03)
    est_joint = jv.iwae_log_likelihood(model, params, Labeled(x, np.full((2,), 1, np.int32)), key,
                                                num_samples=20000, batch_size=2)
    np.testing.assert_allclose(est_joint.log_px, joint[1], atol=0.03)


def test_labelled_subset_is_balanced_and_deterministic():
    labels = np.repeat(np.arange(10), 50)
    a = conditional.labelled_subset(labels, 10, seed=3)
    assert len(a) == 100 and np.all(np.bincount(labels[a]) == 10)
    np.testing.assert_array_equal(a, conditional.labelled_subset(labels, 10, seed=3))
    assert not np.array_equal(a, conditional.labelled_subset(labels, 10, seed=4))
    with pytest.raises(ConfigError, match="class 0 has only 50"):
        conditional.labelled_subset(labels, 51, seed=0)


def test_m2_dataset_pairs_every_row_with_a_labelled_example():
    cfg = config.apply_overrides(config.get_preset("digits"), ["model.conditional=m2", "data.labels_per_class=5"])
    ds = runs.load_run_dataset(cfg)
    train = ds.train
    assert isinstance(train, SemiSupervised) and num_examples(train) == ds.labels["train"].shape[0]
    # Rows i and i + 50 share the partner: the 50 labelled examples, 5 per class, in turn.
    assert np.all(np.bincount(train.yl[:50]) == 5)
    np.testing.assert_array_equal(train.xl[:50], train.xl[50:100])
    np.testing.assert_array_equal(train.yl[:50], train.yl[50:100])
    # Each partner is a training example with its true label.
    for i in range(50):
        j = np.flatnonzero((train.x == train.xl[i]).all(axis=(1, 2, 3)))
        assert train.yl[i] in ds.labels["train"][j]
    # Evaluation rows carry no label (the test error uses ds.labels).
    assert np.all(ds.valid.y == -1) and np.all(ds.test.y == -1)
    assert nbytes(train) == train.x.nbytes + train.xl.nbytes + train.yl.nbytes
    assert not hasattr(train, "shape") and not hasattr(train, "__len__")  # a batch, not an array masquerade


def test_config_errors_name_the_fix():
    base = config.get_preset("digits")
    for overrides, match in [
        (["model.conditional=cvae", "model.network=conv"], "MLP networks"),
        (["model.conditional=m2", "objective.name=free_bits"], "objective.name=elbo or iwae"),
        (["data.labels_per_class=10"], "model.conditional=m2"),
        (["model.conditional=cvae", "model.prior=mixture"], "model.prior=standard_normal"),
        (["model.conditional=bogus"], "model.conditional"),
        (["model.conditional=cvae", "train.aggressive.enabled=true"], "Turn one off"),
    ]:
        with pytest.raises(ConfigError, match=match):
            config.validate(config.apply_overrides(base, overrides))
    with pytest.raises(ConfigError, match=r"model\.condition_classes=10"):
        runs.load_run_dataset(config.apply_overrides(base, ["model.conditional=cvae",
                                                            "model.condition_classes=5"]))


STEPS = ["train.steps=40", "train.checkpoint_every=20", "train.log_every=10", "monitor.every=20",
         "eval.num_samples=4", "eval.max_examples=20", "eval.num_images=8", "model.hidden=32",
         "model.latent_dim=4"]


@pytest.mark.parametrize("kind", ["cvae", pytest.param("m2", marks=pytest.mark.slow)])
def test_conditional_runs_resume_bitwise(kind, tmp_path):
    extra = ["data.labels_per_class=5"] if kind == "m2" else []
    cfg = config.apply_overrides(config.get_preset("digits"), [f"model.conditional={kind}", *extra, *STEPS])
    straight, resumed = straight_and_resumed(cfg, tmp_path)
    assert resumed["params_sha256"] == straight["params_sha256"]
    assert math.isfinite(straight["test_nll_iwae"])
    if kind == "m2":
        assert 0.0 <= straight["test_error"] <= 1.0
        # `jaxvae evaluate` reports the same classifier error on the test split.
        done = subprocess.run([sys.executable, "-m", "jaxvae", "evaluate", "--workdir", str(tmp_path / "straight"),
                               "--num-samples", "4"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        result = json.loads((tmp_path / "straight" / "eval.json").read_text())
        assert result["classification_error"] == pytest.approx(straight["test_error"])
        assert "classification error" in done.stdout
    else:
        assert "test_error" not in straight


def test_cli_samples_by_label(tmp_path):
    """`jaxvae sample --label 3` decodes the prior's latents under class 3: exactly what the Python API gives for
    those latents and that label, and not what another label gives."""
    work = tmp_path / "run"
    cfg = config.apply_overrides(config.get_preset("digits"), ["model.conditional=cvae", *STEPS])
    runs.fit(cfg, work, progress=False, log=lambda _: None)
    cli = [sys.executable, "-m", "jaxvae"]
    done = subprocess.run([*cli, "sample", "--workdir", str(work), "--label", "3", "--num", "16"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    x3 = np.load(work / "samples-prior-t1-label3-seed0.npy")
    run = jv.load_run(work)
    z = jv.evaluation.samplers.prior_samples(run.model, run.params, jax.random.key(0), 16)
    decode = jax.jit(run.model.decode_mean)
    np.testing.assert_allclose(x3, decode(run.params, conditional.latents_with_label(z, 3)), rtol=1e-5, atol=1e-6)
    x5 = np.asarray(decode(run.params, conditional.latents_with_label(z, 5)))
    assert x3.shape == (16, 8, 8, 1) and np.abs(x3 - x5).mean() > 1e-3  # the decoder reads the label
    bad = subprocess.run([*cli, "sample", "--workdir", str(work), "--label", "10"], capture_output=True, text=True)
    assert bad.returncode == 2 and "classes are 0..9" in bad.stderr
    assert (work / "samples.png").exists() and (work / "reconstructions.png").exists()


@pytest.mark.slow
def test_encode_writes_a_labelled_feature_dataset_that_m2_trains_on(tmp_path):
    """M1+M2 from the command line: `jaxvae encode` writes the posterior means of every split with the labels;
    M2 with a Gaussian likelihood trains on that file."""
    m1 = tmp_path / "m1"
    cfg = config.apply_overrides(config.get_preset("digits"), STEPS)
    runs.fit(cfg, m1, progress=False, log=lambda _: None)
    out = tmp_path / "features.npz"
    done = subprocess.run([sys.executable, "-m", "jaxvae", "encode", "--workdir", str(m1), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    feats = np.load(out)
    run = jv.load_run(m1)
    for split in ("train", "valid", "test"):
        np.testing.assert_allclose(feats[split], jv.evaluation.diagnostics.encode_dataset(
            run.model, run.params, run.dataset.split(split)).loc, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(feats[f"{split}_labels"], run.dataset.labels[split])
    m12 = config.apply_overrides(config.get_preset("digits"), [
        f"data.name={out}", "model.likelihood=gaussian", "model.likelihood_scale=learned", "model.conditional=m2",
        "data.labels_per_class=5", *STEPS])
    summary = runs.fit(m12, tmp_path / "m12", progress=False, log=lambda _: None)
    assert 0.0 <= summary["test_error"] <= 1.0 and math.isfinite(summary["test_nll_iwae"])
    bad = subprocess.run([sys.executable, "-m", "jaxvae", "encode", "--workdir", str(m1), "--out",
                          str(tmp_path / "f.npy")], capture_output=True, text=True)
    assert bad.returncode == 2 and "must end in .npz" in bad.stderr


@pytest.mark.slow
@pytest.mark.shipped_level  # execution-bound: 2.7x longer at -O0
@pytest.mark.parametrize("loop", ["scan", "host"])
def test_m2_trains_on_eight_devices_like_on_one(loop, tmp_path):
    """Conditioned batches on a simulated 8-device mesh: each leaf is split over `data` (labels included); the run
    ends at the one-device run's test ELBO and classification error."""
    import os

    out = {}
    for n in (1, 8):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        done = subprocess.run([sys.executable, "-m", "jaxvae", "train", "--preset", "digits", "--workdir",
                               str(tmp_path / str(n)), "--no-progress", "--set", "model.conditional=m2",
                               "--set", "data.labels_per_class=5", "--set", f"train.loop={loop}",
                               *[a for s in STEPS for a in ("--set", s)]], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"{n} cpu device(s), mesh data={n}" in done.stdout
        out[n] = json.loads((tmp_path / str(n) / "summary.json").read_text())
    assert out[8]["test_elbo"] == pytest.approx(out[1]["test_elbo"], abs=1e-3)
    assert out[8]["test_error"] == out[1]["test_error"]


def test_collapse_warning_of_a_conditional_model_says_what_z_holds():
    from jaxvae.evaluation import monitor

    out = {"mean_variance": np.zeros(4), "kl_per_dim": np.zeros(4), "kl": 0.0, "mi": 0.0}
    for kind, noted in (("none", False), ("m2", True)):
        cfg = config.apply_overrides(config.Config(), [f"model.conditional={kind}"])
        _, text = monitor.CollapseMonitor(cfg, 4).record(100, out)
        assert text.startswith("WARNING posterior collapse at step 100")
        assert ("model.conditional=m2): its decoder reads the label" in text) == noted
