"""model.init: each scheme's kernels and biases against the closed-form support and variance of its uniform law, on
dense and convolutional layers; flax leaves the model bitwise as before; the draw is a pure function of the key."""

import math

import jax
import numpy as np
import pytest

from jaxvae import config
from jaxvae.errors import ConfigError
from jaxvae.models.factory import build_model


def _layers(params, prefix=()):
    """(path, kernel, bias) of every dense/conv layer in a pure params dict."""
    if isinstance(params, dict):
        if "kernel" in params:
            yield prefix, np.asarray(params["kernel"]), (None if params.get("bias") is None
                                                         else np.asarray(params["bias"]))
        for k, v in params.items():
            if k not in ("kernel", "bias"):
                yield from _layers(v, (*prefix, k))


def _params(network, init, key=0):
    sets = [f"model.network={network}", f"model.init={init}", "model.hidden=300,200", "model.latent_dim=20"]
    cfg = config.apply_overrides(config.get_preset("mnist"), sets)
    return build_model(cfg, (28, 28, 1)).init(jax.random.key(key))


@pytest.mark.parametrize("network", ["mlp", pytest.param("conv", marks=pytest.mark.slow)])
def test_torch_and_glorot_draw_uniform_weights_with_the_right_bounds_and_variance(network):
    for init in ("torch", "glorot"):
        layers = list(_layers(_params(network, init)))
        assert len(layers) >= 4
        for path, kernel, bias in layers:
            fan_in = math.prod(kernel.shape[:-1])
            fan_out = kernel.shape[-1] * math.prod(kernel.shape[:-2])
            bound = 1 / math.sqrt(fan_in) if init == "torch" else math.sqrt(6 / (fan_in + fan_out))
            assert np.abs(kernel).max() <= bound * (1 + 1e-6), path
            if kernel.size >= 2000:  # variance of U(-b, b) is b^2 / 3; 6 standard errors
                var, n = kernel.var(), kernel.size
                assert abs(var - bound**2 / 3) < 6 * bound**2 * math.sqrt(4 / 45 / n), (path, var, bound**2 / 3)
            if bias is not None:
                if init == "glorot":
                    assert not bias.any(), path
                else:
                    assert np.abs(bias).max() <= bound * (1 + 1e-6) and np.abs(bias).max() > 0.1 * bound, path


def test_flax_init_is_the_default_bitwise_and_every_init_is_a_function_of_the_key():
    flax_params = build_model(config.apply_overrides(config.get_preset("mnist"), [
        "model.hidden=300,200", "model.latent_dim=20", "model.init=flax"]), (28, 28, 1)).init(jax.random.key(0))
    plain = build_model(config.apply_overrides(config.get_preset("mnist"), [
        "model.hidden=300,200", "model.latent_dim=20"]), (28, 28, 1)).init(jax.random.key(0))
    for a, b in zip(jax.tree.leaves(flax_params), jax.tree.leaves(plain), strict=True):
        np.testing.assert_array_equal(a, b)
    t0, t0b, t1 = _params("mlp", "torch", 0), _params("mlp", "torch", 0), _params("mlp", "torch", 1)
    for a, b, c in zip(jax.tree.leaves(t0), jax.tree.leaves(t0b), jax.tree.leaves(t1), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.size == 1 or not np.array_equal(a, c)


def test_unknown_and_unsupported_inits_are_refused():
    with pytest.raises(ConfigError, match=r"model\.init='kaiming' is not valid"):
        config.apply_overrides(config.get_preset("mnist"), ["model.init=kaiming"])
    with pytest.raises(ConfigError, match="top-down"):
        config.apply_overrides(config.get_preset("binarized-mnist-topdown"), ["model.init=torch"])
