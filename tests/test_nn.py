"""jaxvae.models.nn: drop-in Conv and ConvTranspose equal Flax's layers (values, gradients, parameter trees), with
the matmul path where it applies and Flax's own convolution elsewhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvae as jv
from jaxvae.models import nn as jnn


def _pair(flax_cls, ours_cls, *args, **kwargs):
    return flax_cls(*args, rngs=nnx.Rngs(0), **kwargs), ours_cls(*args, rngs=nnx.Rngs(0), impl="matmul", **kwargs)


def _value_and_grad(layer, x):
    graphdef, params = nnx.split(layer)
    loss = lambda p, x: jnp.sum(jnp.sin(nnx.merge(graphdef, p)(x)))
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)


@pytest.mark.parametrize("flax_cls, ours_cls, args, kwargs, shape", [
    (nnx.Conv, jnn.Conv, (3, 5, (3, 3)), dict(strides=1), (2, 9, 8, 3)),
    (nnx.Conv, jnn.Conv, (3, 5, (3, 3)), dict(strides=2), (2, 9, 8, 3)),
    (nnx.Conv, jnn.Conv, (6, 2, (5, 3)), dict(strides=(1, 2)), (3, 4, 7, 10, 6)),  # leading batch axes
    (nnx.Conv, jnn.Conv, (4, 1, 3), dict(use_bias=False, strides=None), (2, 6, 6, 4)),
    (nnx.ConvTranspose, jnn.ConvTranspose, (3, 5, (3, 3)), dict(strides=(2, 2)), (2, 7, 6, 3)),
    (nnx.ConvTranspose, jnn.ConvTranspose, (3, 2, (4, 4)), dict(strides=2), (1, 5, 5, 3)),
])
def test_equal_to_the_flax_layer_in_values_gradients_and_parameters(flax_cls, ours_cls, args, kwargs, shape):
    theirs, ours = _pair(flax_cls, ours_cls, *args, **kwargs)
    assert jax.tree.map(jnp.shape, nnx.state(theirs)) == jax.tree.map(jnp.shape, nnx.state(ours))
    x = jax.random.normal(jax.random.key(1), shape)
    (v1, (gp1, gx1)), (v2, (gp2, gx2)) = _value_and_grad(theirs, x), _value_and_grad(ours, x)
    np.testing.assert_allclose(v2, v1, rtol=1e-5)
    np.testing.assert_allclose(gx2, gx1, rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), gp2, gp1)


@pytest.mark.parametrize("flax_cls, ours_cls, kwargs", [
    (nnx.Conv, jnn.Conv, dict(padding="VALID")),
    (nnx.Conv, jnn.Conv, dict(kernel_dilation=2)),
    (nnx.Conv, jnn.Conv, dict(feature_group_count=2)),
    (nnx.ConvTranspose, jnn.ConvTranspose, dict(padding="VALID", strides=2)),
])
def test_settings_the_matmuls_do_not_cover_use_flax_itself(flax_cls, ours_cls, kwargs):
    theirs, ours = _pair(flax_cls, ours_cls, 4, 6, (3, 3), **kwargs)
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 4))
    np.testing.assert_array_equal(jax.jit(ours)(x), jax.jit(theirs)(x))  # the same program: bitwise


def test_float64_follows_the_input():
    with jax.enable_x64(True):
        layer = jnn.Conv(2, 3, (3, 3), impl="matmul", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        assert layer(jnp.ones((1, 4, 4, 2), jnp.float64)).dtype == jnp.float64


def test_an_unknown_implementation_is_refused_when_built():
    with pytest.raises(ValueError, match="Unknown convolution implementation 'fast'"):
        jnn.Conv(2, 3, (3, 3), impl="fast", rngs=nnx.Rngs(0))
    assert jv.models.nn.Conv is jnn.Conv
