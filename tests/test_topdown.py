"""The top-down residual hierarchy (jaxvae.models.topdown) against a reference written with XLA's own convolutions
and numpy densities, its contract and sampling, and NVAE's spectral regularization (jaxvae.objectives.regularizers)
against singular values from an SVD."""

import json
import math
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvae as jv
from jaxvae import testing as jvt
from jaxvae.errors import ConfigError
from jaxvae.models import topdown
from jaxvae.objectives import regularizers


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _conv(layer, x, stride=1):
    """``nnx.Conv`` recomputed with ``lax.conv_general_dilated`` ('SAME'), in float32 like the model."""
    y = jax.lax.conv_general_dilated(jnp.asarray(x, jnp.float32), layer.kernel[...], (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return np.asarray(y + layer.bias[...], np.float64)


def _conv_t(layer, x):
    y = jax.lax.conv_transpose(jnp.asarray(x, jnp.float32), layer.kernel[...], (2, 2), "SAME",
                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return np.asarray(y + layer.bias[...], np.float64)


def _cell(cell, h):
    return h + _conv(cell.conv_b, _silu(_conv(cell.conv_a, _silu(h))))


def _split(raw, clamp):
    loc, ls = np.split(raw, 2, axis=-1)
    ls = clamp * np.tanh(ls / clamp)
    return loc.reshape(len(raw), -1), ls.reshape(len(raw), -1)


def _log_normal(z, loc, ls):
    return np.sum(-0.5 * ((z - loc) * np.exp(-ls)) ** 2 - ls - 0.5 * math.log(2 * math.pi), -1)


def _kl(q_loc, q_ls, p_loc, p_ls):
    return np.sum(p_ls - q_ls + (np.exp(2 * q_ls) + (q_loc - p_loc) ** 2) / (2 * np.exp(2 * p_ls)) - 0.5, -1)


@pytest.fixture(scope="module")
def batch():
    x = jv.data.load_dataset("digits").test[:4]
    return (np.asarray(x) > 0.5).astype(np.float32)  # [4, 8, 8, 1] binary


@pytest.mark.slow  # moved to the slow tier to keep `make test` well under 10 minutes on 2 cores
def test_top_down_log_densities_and_kls_equal_a_reference(batch):
    """Two groups (z2 at 2x2 on top, z1 at 4x4), given the model's own samples: every log-density, each group's
    KL and the decoder's Bernoulli log-likelihood, recomputed from the parameters with lax convolutions (the
    model runs its matmul convolutions on CPU) and float64 numpy densities."""
    clamp = 3.0
    model = topdown.TopDownVAE((8, 8, 1), (1, 2), jv.Bernoulli(), groups_per_scale=(1, 1), channels=4, cells=1,
                               log_scale_clamp=clamp, rngs=nnx.Rngs(1))
    pure, params = jv.split(model)
    out = jax.jit(pure.forward, static_argnums=3)(params, jnp.asarray(batch), jax.random.key(2), 1)
    x = batch.astype(np.float64)
    z1, z2 = (np.asarray(out.z[g][0], np.float64) for g in ("z1", "z2"))
    e_fine = _cell(model.enc_fine[0], _conv(model.stem, x, 2))
    e_coarse = _cell(model.enc_coarse[0], _conv(model.down, _silu(e_fine), 2))
    h = np.broadcast_to(np.asarray(model.h_top[...], np.float64), (4, 2, 2, 4))
    # The top group: prior N(0, I), posterior from the state and the coarse features.
    q2 = _split(_conv(model.post_heads[1], _silu(np.concatenate([h, e_coarse], -1))), clamp)
    zeros = np.zeros_like(z2)
    h = _cell(model.dec_cells[1][0], h + _conv(model.z_proj[1], z2.reshape(4, 2, 2, 2)))
    h = _conv_t(model.up, _silu(h))  # to the fine scale
    # z1: its prior from the state, its posterior relative to the prior (NVAE's residual normal).
    p1 = _split(_conv(model.prior_heads[0], _silu(h)), clamp)
    d1 = _split(_conv(model.post_heads[0], _silu(np.concatenate([h, e_fine], -1))), clamp)
    q1 = (p1[0] + d1[0], p1[1] + d1[1])
    h = _cell(model.dec_cells[0][0], h + _conv(model.z_proj[0], z1.reshape(4, 4, 4, 1)))
    logits = _conv(model.head, _silu(_conv_t(model.up_out, _silu(h)))).reshape(4, -1)
    log_px = np.sum(x.reshape(4, -1) * logits - np.logaddexp(0.0, logits), -1)

    tol = dict(rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(out.log_px_z[0], log_px, **tol)
    np.testing.assert_allclose(out.log_q_groups["z2"][0], _log_normal(z2, *q2), **tol)
    np.testing.assert_allclose(out.log_p_groups["z2"][0], _log_normal(z2, zeros, zeros), **tol)
    np.testing.assert_allclose(out.log_q_groups["z1"][0], _log_normal(z1, *q1), **tol)
    np.testing.assert_allclose(out.log_p_groups["z1"][0], _log_normal(z1, *p1), **tol)
    np.testing.assert_allclose(out.log_qz_x[0], _log_normal(z1, *q1) + _log_normal(z2, *q2), **tol)
    kl = out.kl_per_group()
    np.testing.assert_allclose(kl["z2"], _kl(*q2, zeros, zeros), **tol)
    np.testing.assert_allclose(kl["z1"], _kl(*q1, *p1), **tol)
    assert model.latent_dims == (16, 8) and out.z["z1"].shape == (1, 4, 16)


@pytest.mark.slow  # ~50 s of compilation (jit, vmap, grad, eager): the reference test above is the default tier's
def test_top_down_passes_the_model_contract_and_samples_ancestrally(batch):
    model = topdown.TopDownVAE((8, 8, 1), (1, 1), jv.Bernoulli(), channels=4, conv_impl="xla", rngs=nnx.Rngs(0))
    jvt.check_model(model, jnp.asarray(batch), kl_samples=2000)
    three = topdown.TopDownVAE((8, 8, 1), (2, 1, 1), jv.Bernoulli(), groups_per_scale=(1, 2), channels=4,
                               rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(three)
    sample = jax.jit(lambda s, k: nnx.merge(graphdef, s).prior_sample_tempered(k, 6, temperature=(1.0, 1.0, 0.0)))
    z = sample(state, jax.random.key(0))
    assert {g: v.shape for g, v in z.items()} == {"z1": (6, 32), "z2": (6, 4), "z3": (6, 4)}
    np.testing.assert_allclose(z["z3"], 0.0)  # temperature 0 on the top group: its prior mean
    # decode() of the latents that forward() drew reproduces forward's decoder output.
    both = jax.jit(lambda s, x, k: (lambda m: (m.forward(x, k, 3), m))(nnx.merge(graphdef, s))[0])
    out = both(state, jnp.asarray(batch), jax.random.key(1))
    decode = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z))
    np.testing.assert_allclose(decode(state, out.z), out.decoder_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(latent_channels=(2, 2), groups_per_scale=(2, 1)), "summing to the 2 groups"),
    (dict(latent_channels=(2, 2), groups_per_scale=(2, 0)), "at least one at the coarse scale"),
    (dict(latent_channels=(0, 2)), "one positive number of latent channels"),
])
def test_top_down_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        topdown.TopDownVAE((8, 8, 1), likelihood=jv.Bernoulli(), rngs=nnx.Rngs(0), **kwargs)


def test_top_down_config_errors_name_the_key():
    from jaxvae import config
    from jaxvae.models import factory

    with pytest.raises(ConfigError, match=r"model\.groups_per_scale gives the latent groups"):
        config.apply_overrides(config.get_preset("binarized-mnist-topdown"), ["model.groups_per_scale=3,3"])
    with pytest.raises(ConfigError, match=r"model\.groups_per_scale sets the scales of model\.inference=top_down"):
        config.apply_overrides(config.get_preset("mnist-2layer"), ["model.groups_per_scale=1,1"])
    flat = config.get_preset("binarized-mnist-topdown")
    with pytest.raises(ConfigError, match="needs images"):
        factory.build_model(flat, (784,))


# ----------------------------------------------------------------------------- spectral regularization

def _sigma(w):
    return jnp.linalg.svd(jnp.reshape(w, (-1, w.shape[-1])), compute_uv=False)[0]


@pytest.mark.slow  # moved to the slow tier to keep `make test` well under 10 minutes on 2 cores
def test_spectral_regularization_adds_the_gradient_of_the_largest_singular_values():
    params = {"conv": {"kernel": jax.random.normal(jax.random.key(0), (3, 3, 4, 5)), "bias": jnp.ones(5)},
              "dense": {"kernel": jax.random.normal(jax.random.key(1), (7, 6)), "bias": jnp.ones(6)}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
    reg = regularizers.spectral_regularization(0.5, power_iterations=5, init_iterations=200)
    state = reg.init(params)
    norms = regularizers.spectral_norms(params, state)
    for name in ("conv", "dense"):
        np.testing.assert_allclose(norms[name]["kernel"], _sigma(params[name]["kernel"]), rtol=1e-4)
        assert norms[name]["bias"] is None
    updates, state = reg.update(grads, state, params)
    assert int(state.count) == 1
    for name in ("conv", "dense"):
        expected = 0.25 + 0.5 * jax.grad(_sigma)(params[name]["kernel"])  # d sigma_max / dW from the SVD
        np.testing.assert_allclose(updates[name]["kernel"], expected, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(updates[name]["bias"], grads[name]["bias"])  # biases untouched
    # Persistent vectors: with the weights moving, one iteration per step keeps tracking sigma_max.
    moved = jax.tree.map(lambda p: 1.1 * p, params)
    _, state = reg.update(grads, state, moved)
    np.testing.assert_allclose(regularizers.spectral_norms(moved, state)["dense"]["kernel"],
                               _sigma(moved["dense"]["kernel"]), rtol=1e-4)


def test_spectral_weight_anneals_geometrically_like_nvae():
    schedule = regularizers.spectral_weight_schedule(1e-2, init_weight=10.0, warmup_steps=100)
    np.testing.assert_allclose([schedule(0), schedule(50), schedule(100), schedule(1000)],
                               [10.0, math.sqrt(10.0 * 1e-2), 1e-2, 1e-2], rtol=1e-5)
    np.testing.assert_allclose(regularizers.spectral_weight_schedule(0.3)(7), 0.3)


def test_spectral_regularization_in_training_lowers_the_largest_singular_values():
    """Minimizing sigma_max alone (zero loss gradient) through the configured optimizer shrinks it."""
    from jaxvae import config
    from jaxvae.training import optimizers

    cfg = config.apply_overrides(config.Config(), ["optimizer.spectral_reg.weight=1",
                                                   "optimizer.learning_rate=0.05"])
    opt = optimizers.build_optimizer(cfg, 100)
    params = {"kernel": jax.random.normal(jax.random.key(0), (6, 5))}
    state = opt.init(params)
    start = float(_sigma(params["kernel"]))
    for _ in range(20):
        updates, state = opt.update(jax.tree.map(jnp.zeros_like, params), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    assert float(_sigma(params["kernel"])) < 0.7 * start


# --------------------------------------------------------------------------------------------- the CLI

@pytest.mark.slow
def test_top_down_runs_end_to_end_from_the_cli(tmp_path):
    """train (every stabilizer on) and evaluate a small top-down model; resume is bitwise. (Its ancestral samples
    are checked by the contract test above, per-layer diagnosis by tests/test_hierarchy.py.)"""
    run = tmp_path / "run"
    sets = ["model.network=hierarchical", "model.inference=top_down", "model.latent_dims=2,2,1",
            "model.groups_per_scale=2,1", "model.residual_channels=8", "model.activation=silu",
            "model.log_scale_clamp=5", "objective.beta_schedule=linear", "objective.warmup_steps=20",
            "objective.kl_balance=true", "optimizer.name=adamax", "optimizer.skip_threshold=1000",
            "optimizer.ema_decay=0.9", "optimizer.spectral_reg.weight=0.01",
            "optimizer.spectral_reg.init_weight=1", "optimizer.spectral_reg.warmup_steps=20",
            "train.steps=40", "train.log_every=10",
            "train.checkpoint_every=20", "monitor.every=20", "monitor.batch_size=64", "eval.num_samples=4",
            "eval.max_examples=20", "eval.num_images=8"]
    cli = [sys.executable, "-m", "jaxvae.cli"]

    def jaxvae(*args):
        done = subprocess.run([*cli, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    jaxvae("train", "--preset", "digits", "--workdir", str(run), "--set", *sets)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["kl_groups"]) == {"z1", "z2", "z3"}
    assert set(summary["latent"]["active_units_per_group"]) == {"z1", "z2", "z3"}
    # Resume from step 20 (a copy of the run without its last checkpoint and results) reproduces the parameters
    # bitwise.
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "40")
    (resumed / "summary.json").unlink()
    jaxvae("train", "--preset", "digits", "--workdir", str(resumed), "--set", *sets)
    assert json.loads((resumed / "summary.json").read_text())["params_sha256"] == summary["params_sha256"]
    out = jaxvae("evaluate", "--workdir", str(run), "--num-samples", "8")
    assert re.search(r"  NLL \(IWAE, k=8\)  +-?[0-9.]+ ± ", out), out  # was "k=8     )"
