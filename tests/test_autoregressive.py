"""The PixelCNN decoder: its causality checked with jax.jacrev (output pixel i independent of input pixels >= i in
raster order, and no blind spot), p(x|z) normalized over every binary image of a tiny event, band sampling equal
to full-image passes, the model protocol (jaxvae.testing.check_model), and the decoder through config, training,
IWAE evaluation, sampling and diagnosis."""

import itertools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvae import config, runs, testing
from jaxvae.distributions import likelihoods
from jaxvae.errors import ConfigError
from jaxvae.models.autoregressive import AutoregressiveVAE, GatedPixelCNN, PixelCNNDecoder, receptive_rows
from jaxvae.models.protocol import split


def _dependence(net, xs, cond):
    """[H, W, H', W']: whether output pixel (i, j) depends on input pixel (i', j') (any channel, any output) at
    any of the images ``xs`` (several, so that a ReLU that happens to be off at one input hides nothing)."""
    jac = jax.vmap(jax.jacrev(lambda v: net(v[None], cond)[0]))(xs)  # [N, H, W, C, P, H, W, C]
    return np.asarray(jnp.any(jac != 0, axis=(0, 3, 4, 7)))


@pytest.mark.parametrize("conv_impl", ["matmul", "xla"])
@pytest.mark.parametrize("layers, kernel_size", [(1, 3), pytest.param(3, 3, marks=pytest.mark.slow), (2, 5)])
def test_each_output_pixel_depends_only_on_the_pixels_before_it(conv_impl, layers, kernel_size):
    h, w, c = 6, 7, 2
    net = GatedPixelCNN(c, 3, features=8, layers=layers, kernel_size=kernel_size, cond_features=3,
                        conv_impl=conv_impl, rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(1), (4, h, w, c))
    dep = _dependence(net, xs, jax.random.normal(jax.random.key(2), (1, 3)))
    order = np.arange(h * w).reshape(h, w)
    for i, j in itertools.product(range(h), range(w)):
        later = order >= order[i, j]
        assert not dep[i, j][later].any(), f"output pixel {(i, j)} depends on itself or a later pixel"
    r = kernel_size // 2
    # The horizontal stack reaches r pixels to the left per layer ...
    assert dep[3, 4, 3, 4 - min(r * layers, 4)] and dep[3, 4, 3, 3]
    # ... and the shifted vertical stack the row above, also to the right: no blind spot.
    assert dep[3, 3, 2, 3 + r] and dep[3, 3, 2, 3 - r]
    # The vertical receptive field: receptive_rows(layers, kernel_size) = r * layers + 1 rows above, no more.
    top = 5 - receptive_rows(layers, kernel_size)
    assert dep[5, 3, max(top, 0), 3]
    if top > 0:
        assert not dep[5, :, :top].any()


@pytest.mark.slow  # moved to the slow tier to keep `make test` well under 10 minutes on 2 cores
def test_p_x_given_z_sums_to_one_over_every_binary_image():
    """An autoregressive decoder is a normalized distribution: the exact log-likelihood of all 2^8 binary 2x4
    images sums (in probability) to 1, for several z."""
    dec = PixelCNNDecoder(3, (2, 4, 1), num_outputs=1, conditioning="global", hidden=(8,), cond_features=4,
                          features=6, layers=2, rngs=nnx.Rngs(0))
    images = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=8))).reshape(-1, 2, 4, 1)  # [256, ...]
    z = jax.random.normal(jax.random.key(0), (3, 1, 3))  # [3, 1, D]
    lik = likelihoods.Bernoulli()
    log_p = lik.log_prob(dec(jnp.broadcast_to(z, (3, 256, 3)), images), images, event_ndim=3)  # [3, 256]
    np.testing.assert_allclose(jnp.exp(jax.scipy.special.logsumexp(log_p, axis=1)), 1.0, rtol=1e-5)
    assert float(jnp.std(log_p)) > 0.1  # not the uniform distribution


@pytest.mark.parametrize("conditioning, shape", [("global", (9, 5, 1)),
                                                  pytest.param("spatial", (12, 8, 2), marks=pytest.mark.slow)])
def test_band_sampling_equals_full_image_passes(conditioning, shape):
    dec = PixelCNNDecoder(4, shape, num_outputs=1, conditioning=conditioning, hidden=(8, 4), conv_hidden=16,
                          cond_features=3, features=6, layers=2, rngs=nnx.Rngs(0))
    assert dec.net.band < shape[0]  # the band is smaller than the image: the clipped windows are exercised
    z = jax.random.normal(jax.random.key(0), (2, 3, 4))
    lik = likelihoods.Bernoulli()
    x_band, out_band = jax.jit(lambda z, k: dec.sample(z, k, lik))(z, jax.random.key(5))
    x_full, out_full = jax.jit(lambda z, k: dec.sample(z, k, lik, band=False))(z, jax.random.key(5))
    assert x_band.shape == (2, 3, *shape) and out_band.shape == (2, 3, *shape, 1)
    np.testing.assert_array_equal(x_band, x_full)
    np.testing.assert_allclose(out_band, out_full, rtol=1e-5, atol=1e-5)
    # The outputs along the sample are the teacher-forced outputs on the sample.
    np.testing.assert_allclose(out_band, dec(z, x_band), rtol=1e-5, atol=1e-5)
    assert 0.05 < float(jnp.mean(x_band)) < 0.95


@pytest.mark.slow
@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_the_pixelcnn_vae_satisfies_the_model_protocol(network):
    vae = AutoregressiveVAE.pixelcnn((8, 8, 1), 3, likelihoods.Bernoulli(), network=network, hidden=(16,),
                                     channels=(4, 8), conv_hidden=16, features=6, layers=2, rngs=nnx.Rngs(0))
    x = jax.random.bernoulli(jax.random.key(0), 0.3, (5, 8, 8, 1)).astype(jnp.float32)
    testing.check_model(vae, x)
    model, params = split(vae)
    with pytest.raises(NotImplementedError, match="decode_mean"):
        model.decode(params, jnp.zeros((2, 3)))
    # Reconstructions are ancestral samples at the posterior mean: different keys give different images.
    a, b = (model.reconstruct(params, x, jax.random.key(k)) for k in (1, 2))
    assert a.shape == x.shape and not np.allclose(a, b)


def test_pixelcnn_settings_are_validated():
    base = config.get_preset("digits")
    with pytest.raises(ConfigError, match=r"model\.pixelcnn\.kernel_size must be odd"):
        config.apply_overrides(base, ["model.decoder=pixelcnn", "model.pixelcnn.kernel_size=4"])
    with pytest.raises(ConfigError, match=r"model\.decoder=pixelcnn is built on model\.network=conv"):
        config.apply_overrides(base, ["model.decoder=pixelcnn", "model.network=hierarchical",
                                      "model.latent_dims=4,2"])
    with pytest.raises(ConfigError, match=r"model\.decoder='wavenet' is not valid"):
        config.apply_overrides(base, ["model.decoder=wavenet"])


# Extended tier (`make test-extended`; 272 s on 2 cores): CI's slow tier trains, resumes and evaluates the PixelCNN
# decoder in tests/test_remedies_resume.py and checks its contract and sampling above.
@pytest.mark.slow
@pytest.mark.extended
def test_a_pixelcnn_run_trains_evaluates_samples_and_diagnoses_through_the_cli(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "jaxvae", *args], capture_output=True, text=True)

    wd = tmp_path / "run"
    r = cli("train", "--preset", "digits", "--workdir", str(wd), "--no-progress", "--set",
            "model.decoder=pixelcnn", "model.network=conv", "model.channels=8,16", "model.conv_hidden=32",
            "model.pixelcnn.features=8",
            "model.pixelcnn.layers=2", "train.steps=40", "eval.num_samples=20", "eval.max_examples=40")
    assert r.returncode == 0, r.stderr
    summary = json.loads((wd / "summary.json").read_text())
    assert np.isfinite(summary["test_nll_iwae"]) and summary["test_nll_iwae"] <= -summary["test_elbo"] + 0.5
    assert (wd / "samples.png").is_file() and (wd / "reconstructions.png").is_file()
    assert cli("evaluate", "--workdir", str(wd), "--num-samples", "10", "--max-examples", "20").returncode == 0
    assert json.loads((wd / "eval.json").read_text())["nll_num_samples"] == 10
    r = cli("sample", "--workdir", str(wd), "--num", "8")
    assert r.returncode == 0, r.stderr
    r = cli("diagnose", "--workdir", str(wd))
    assert r.returncode == 0, r.stderr
    assert (wd / "report.html").is_file()
    run = runs.load_run(wd)
    assert isinstance(run.model.merge(run.params), AutoregressiveVAE)


def test_every_collapse_lab_run_is_a_valid_config():
    from benchmarks import collapse

    lab = collapse.image_runs(800)
    assert sum("pixelcnn" in " ".join(sets) for sets in lab.values()) == len(lab) - 1  # one factorized control
    for sets in lab.values():
        cfg = config.validate(config.apply_overrides(config.get_preset("binarized-mnist"),
                                                     [*collapse.TASKS["image"]["base"], *sets]))
        assert cfg.model.network == "conv" and cfg.model.latent_dim == 20 and cfg.monitor.min_kl == 0.5
    text = collapse.text_runs(4000)
    assert any("train.aggressive.enabled=true" in sets for sets in text.values())
    for sets in text.values():
        cfg = config.validate(config.apply_overrides(config.get_preset("words"),
                                                     [*collapse.TASKS["text"]["base"], *sets]))
        assert cfg.model.decoder == "gru" and cfg.model.latent_dim == 32
