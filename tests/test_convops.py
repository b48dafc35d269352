"""The matmul convolutions of :mod:`jaxvae.models.convops` against XLA's own, values and gradients, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxvae.errors import ConfigError
from jaxvae.models import convops, nets

DN = ("NHWC", "HWIO", "NHWC")


def _data(shape, kshape, seed=0):
    kx, kk = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(kx, shape, jnp.float64), jax.random.normal(kk, kshape, jnp.float64))


def _check_value_and_grads(f_ref, f_new, x, k):
    ref = jax.jit(f_ref)(x, k)
    np.testing.assert_allclose(jax.jit(f_new)(x, k), ref, rtol=1e-12, atol=1e-12)
    # A random cotangent exercises every output position in the backward pass.
    ct = jax.random.normal(jax.random.key(9), ref.shape, jnp.float64)
    g_ref = jax.jit(jax.grad(lambda x, k: jnp.vdot(f_ref(x, k), ct), argnums=(0, 1)))(x, k)
    g_new = jax.jit(jax.grad(lambda x, k: jnp.vdot(f_new(x, k), ct), argnums=(0, 1)))(x, k)
    for a, b in zip(g_new, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("hw,kernel,stride,cin,cout", [
    ((28, 28), 3, 2, 1, 4), ((7, 7), 3, 2, 6, 3), ((9, 6), 3, 1, 6, 3), ((9, 6), 3, 1, 1, 4), ((8, 8), 4, 2, 6, 3),
    ((10, 7), 5, 3, 1, 4), ((6, 6), 1, 1, 6, 3), ((5, 8), 2, 1, 6, 3),
])
def test_conv_matches_lax_same_padding(hw, kernel, stride, cin, cout):
    with jax.enable_x64(True):
        x, k = _data((2, *hw, cin), (kernel, kernel, cin, cout))
        ref = lambda x, k: lax.conv_general_dilated(x, k, (stride, stride), "SAME", dimension_numbers=DN)
        _check_value_and_grads(ref, lambda x, k: convops.conv_im2col(x, k, (stride, stride)), x, k)
        _check_value_and_grads(ref, lambda x, k: convops.conv(x, k, (stride, stride)), x, k)
        if stride == 1:
            _check_value_and_grads(ref, convops.conv_col2im, x, k)


@pytest.mark.parametrize("hw,kernel,stride", [
    ((7, 7), 3, 2), ((14, 14), 3, 2), ((4, 5), 3, 1), ((4, 4), 4, 2), ((3, 5), 5, 2), ((4, 3), 2, 3),
    ((3, 3), 3, 3),
])
def test_conv_transpose_matches_lax_same_padding(hw, kernel, stride):
    with jax.enable_x64(True):
        x, k = _data((2, *hw, 5), (kernel, kernel, 5, 3), seed=1)
        ref = lambda x, k: lax.conv_transpose(x, k, (stride, stride), "SAME", dimension_numbers=DN)
        _check_value_and_grads(ref, lambda x, k: convops.conv_transpose_polyphase(x, k, (stride, stride)), x, k)


@pytest.mark.slow
def test_conv_networks_compute_the_same_function_with_either_implementation():
    """Same parameters, same outputs and gradients: the choice changes the program, never the model."""
    shape = (12, 8, 2)
    x = jax.random.uniform(jax.random.key(0), (3, *shape))
    z = jax.random.normal(jax.random.key(1), (2, 3, 4))
    out = {}
    for impl in ("xla", "matmul"):
        enc = nets.ConvEncoder(shape, 4, (8, 16), 32, conv_impl=impl, rngs=nnx.Rngs(0))
        dec = nets.ConvDecoder(4, shape, (16, 8), 32, num_outputs=2, conv_impl=impl, rngs=nnx.Rngs(1))

        @nnx.jit
        def value_and_grads(enc, dec):
            def loss(enc, dec):
                return jnp.sum(enc(x).loc ** 2) + jnp.sum(jnp.tanh(dec(z)))
            return nnx.value_and_grad(loss, argnums=(0, 1))(enc, dec)

        value, grads = value_and_grads(enc, dec)
        out[impl] = (value, [leaf for g in grads for leaf in jax.tree.leaves(nnx.to_pure_dict(g))])
    np.testing.assert_allclose(out["matmul"][0], out["xla"][0], rtol=1e-5)
    for a, b in zip(out["matmul"][1], out["xla"][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_auto_resolves_by_backend_and_bad_names_are_rejected():
    assert convops.resolve_impl("auto") == ("matmul" if jax.default_backend() == "cpu" else "xla")
    assert convops.resolve_impl("xla") == "xla"
    with pytest.raises(ConfigError, match="conv_impl"):
        nets.ConvDecoder(4, (8, 8, 1), conv_impl="cudnn", rngs=nnx.Rngs(0))


def test_config_reaches_the_networks_and_picks_the_loop():
    """``model.conv_impl`` travels from the config to both networks; on CPU only ``xla`` forces the host loop."""
    from types import SimpleNamespace

    from jaxvae import config
    from jaxvae.models import factory
    from jaxvae.training import loop

    for impl in ("auto", "xla", "matmul"):
        cfg = config.apply_overrides(config.get_preset("fashion-mnist"), [f"model.conv_impl={impl}"])
        vae = factory.model_builder(cfg, (28, 28, 1))(nnx.Rngs(0))
        assert vae.encoder.conv_impl == vae.decoder.conv_impl == impl
        small = SimpleNamespace(train=np.zeros((8, 28, 28, 1), np.float32))  # far below device_data_limit_mb
        expected = "host" if impl == "xla" and jax.default_backend() == "cpu" else "scan"
        assert loop.choose_loop(cfg, small) == expected
    with pytest.raises(ConfigError, match=r"at least two model\.channels"):
        config.apply_overrides(config.get_preset("fashion-mnist"), ["model.channels=32"])


def test_evaluation_options_fall_back_when_the_compiler_refuses_them(monkeypatch):
    from jaxvae.evaluation import likelihood as evaluate

    monkeypatch.setattr(evaluate, "_CPU_EVAL_OPTIONS", {"xla_cpu_no_such_option_for_jaxvae": ""})
    evaluate._cpu_options_supported.cache_clear()
    try:
        assert evaluate.eval_compiler_options() is None
    finally:
        evaluate._cpu_options_supported.cache_clear()


def test_int_and_none_strides_are_accepted():
    x, k = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 4))
    assert convops.conv(x, k, 2).shape == convops.conv(x, k, (2, 2)).shape == (1, 3, 3, 4)
    assert convops.conv_transpose_polyphase(x, k, None).shape == (1, 6, 6, 4)
