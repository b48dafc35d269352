"""Network shapes for every supported layout, leading sample axes, global outputs, shape errors."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxvae.errors import ConfigError
from jaxvae.models import nets


@pytest.mark.parametrize("event_shape", [(784,), (8, 8, 1), (28, 20, 1)])
def test_mlp_shapes(event_shape):
    rngs = nnx.Rngs(0)
    enc = nets.MLPEncoder(event_shape, 5, (16,), rngs=rngs)
    dec = nets.MLPDecoder(5, event_shape, (16,), num_outputs=3, rngs=rngs)
    x = jnp.ones((4, *event_shape))
    q = enc(x)
    assert q.loc.shape == q.log_scale.shape == (4, 5)
    z = q.sample(jax.random.key(0), 7)  # [K, B, D]
    assert dec(z).shape == (7, 4, *event_shape, 3)


@pytest.mark.slow  # the default tier checks the conv network's shapes through the model contract
@pytest.mark.parametrize("event_shape", [(28, 28, 1), (32, 32, 3), (12, 8, 2)])
def test_conv_shapes(event_shape):
    rngs = nnx.Rngs(0)
    enc = nets.ConvEncoder(event_shape, 4, (8, 16), 32, rngs=rngs)
    dec = nets.ConvDecoder(4, event_shape, (16, 8), 32, num_outputs=2, rngs=rngs)
    q = enc(jnp.ones((3, *event_shape)))
    assert q.loc.shape == (3, 4)
    assert dec(jnp.zeros((5, 3, 4))).shape == (5, 3, *event_shape, 2)


def test_global_outputs_are_one_learned_scalar_broadcast():
    dec = nets.MLPDecoder(3, (10,), (8,), num_outputs=2, num_global_outputs=1, rngs=nnx.Rngs(0))
    dec.global_outputs.value[...] = jnp.array([0.25])
    out = dec(jnp.ones((4, 3)))
    assert out.shape == (4, 10, 2)
    assert jnp.all(out[..., 1] == 0.25)
    # The scalar is a parameter: the gradient reaches it.
    _, state = nnx.split(dec)
    assert "global_outputs" in nnx.to_pure_dict(state)


def test_conv_rejects_shapes_not_divisible_by_four():
    with pytest.raises(ConfigError, match="divisible by 4"):
        nets.ConvEncoder((30, 30, 1), 4, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="activation"):
        nets.MLPEncoder((4,), 2, activation="relu6x", rngs=nnx.Rngs(0))
