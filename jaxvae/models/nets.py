"""Encoder and decoder networks as Flax NNX modules.

Encoders map data ``x [..., *E]`` to a :class:`~jaxvae.models.posteriors.DiagonalGaussian` over ``z [..., D]``.
Decoders map ``z [..., D]`` to the raw likelihood parameters ``out [..., *E, P]``, where ``P`` is the
likelihood's ``num_outputs`` (see :mod:`jaxvae.distributions.likelihoods`). Any number of leading batch axes is
supported (``[B]``, or ``[K, B]`` for K importance samples): they are flattened around the network and restored.

``E`` is the event shape of one example: ``(784,)`` for flat data, ``(H, W, C)`` for images (channels last).
MLPs accept any event shape; the convolutional networks need ``H`` and ``W`` divisible by 4 (28x28, 32x32, ...).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.errors import ConfigError
from jaxvae.models import convops
from jaxvae.models.posteriors import DiagonalGaussian

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "softplus": jax.nn.softplus,
}


def get_activation(name: str) -> Callable[[Array], Array]:
    """Looks up an activation by name (``relu``, ``gelu``, ``silu``, ``tanh``, ``elu``, ...)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}."
        ) from None


def _flatten_batch(x: Array, event_ndim: int) -> tuple[Array, tuple[int, ...]]:
    """``[..., *E] -> [N, *E]`` and the leading shape to restore."""
    batch_shape = x.shape[: x.ndim - event_ndim]
    return x.reshape((-1, *x.shape[x.ndim - event_ndim :])), batch_shape


def _check_image_shape(event_shape: Sequence[int], what: str) -> tuple[int, int, int]:
    if len(event_shape) != 3 or event_shape[0] % 4 or event_shape[1] % 4:
        raise ConfigError(
            f"The convolutional {what} needs images of shape (H, W, C) with H and W divisible by 4 "
            f"(e.g. (28, 28, 1) or (32, 32, 3)); got event shape {tuple(event_shape)}. "
            "Use the MLP networks (model.network=mlp) for other shapes."
        )
    return tuple(event_shape)  # type: ignore[return-value]


def _check_conv_impl(conv_impl: str) -> str:
    if conv_impl not in convops.IMPLS:
        raise ConfigError(f"Unknown conv_impl {conv_impl!r}; choose one of {convops.IMPLS} (auto: matmul on CPU, "
                          "the native XLA convolutions on GPU/TPU).")
    return conv_impl


def _apply_conv(layer: nnx.Conv, x: Array, conv_impl: str) -> Array:
    """``layer(x)``, computed by :mod:`jaxvae.models.convops` matmuls when ``conv_impl`` resolves to ``matmul``.

    The matmul path reproduces the layers these networks build (``'SAME'`` padding, no dilation, one feature
    group, a bias); other layer settings need ``conv_impl=xla``."""
    if convops.resolve_impl(conv_impl) == "xla":
        return layer(x)
    return convops.conv(x, layer.kernel[...], layer.strides) + layer.bias[...]


def _apply_conv_transpose(layer: nnx.ConvTranspose, x: Array, conv_impl: str) -> Array:
    if convops.resolve_impl(conv_impl) == "xla":
        return layer(x)
    return convops.conv_transpose_polyphase(x, layer.kernel[...], layer.strides) + layer.bias[...]


class _GlobalOutputs(nnx.Module):
    """Appends ``num`` learned scalars, broadcast over all elements, to per-element decoder outputs.

    Used by likelihoods with a parameter shared by every pixel (e.g. the learned global sigma of a Gaussian).
    """

    def __init__(self, num: int):
        self.num = num
        self.value = nnx.Param(jnp.zeros((num,), jnp.float32)) if num else None

    def __call__(self, out: Array) -> Array:
        if not self.num:
            return out
        shared = jnp.broadcast_to(self.value[...], (*out.shape[:-1], self.num)).astype(out.dtype)
        return jnp.concatenate([out, shared], axis=-1)


class MLP(nnx.Module):
    """A stack of dense layers with an activation after every layer but the last."""

    def __init__(self, sizes: Sequence[int], *, activation: str = "relu", rngs: nnx.Rngs):
        self.activation = get_activation(activation)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])

    def __call__(self, x: Array) -> Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x


class MLPEncoder(nnx.Module):
    """Flattens ``x [..., *E]``, applies an MLP ``prod(E) -> hidden... -> 2D``, returns q(z|x)."""

    def __init__(
        self,
        event_shape: Sequence[int],
        latent_dim: int,
        hidden: Sequence[int] = (512, 256),
        *,
        activation: str = "relu",
        log_scale_clamp: float | None = None,
        rngs: nnx.Rngs,
    ):
        self.event_shape = tuple(event_shape)
        self.log_scale_clamp = log_scale_clamp or None  # see DiagonalGaussian.from_raw
        self.mlp = MLP([math.prod(self.event_shape), *hidden, 2 * latent_dim], activation=activation, rngs=rngs)

    def __call__(self, x: Array) -> DiagonalGaussian:
        x, batch_shape = _flatten_batch(x, len(self.event_shape))
        raw = self.mlp(x.reshape(x.shape[0], -1))
        return DiagonalGaussian.from_raw(raw.reshape(*batch_shape, -1), log_scale_clamp=self.log_scale_clamp)


class MLPDecoder(nnx.Module):
    """An MLP ``D -> hidden... -> prod(E) * (P - G)``, reshaped to ``[..., *E, P]`` (G global outputs)."""

    def __init__(
        self,
        latent_dim: int,
        event_shape: Sequence[int],
        hidden: Sequence[int] = (256, 512),
        *,
        num_outputs: int = 1,
        num_global_outputs: int = 0,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        self.event_shape = tuple(event_shape)
        self.num_local = num_outputs - num_global_outputs
        out_size = math.prod(self.event_shape) * self.num_local
        self.mlp = MLP([latent_dim, *hidden, out_size], activation=activation, rngs=rngs)
        self.global_outputs = _GlobalOutputs(num_global_outputs)

    def __call__(self, z: Array) -> Array:
        z, batch_shape = _flatten_batch(z, 1)
        out = self.mlp(z).reshape(*batch_shape, *self.event_shape, self.num_local)
        return self.global_outputs(out)


class ConvEncoder(nnx.Module):
    """Two (or more) stride-2 convolutions ``(H, W, C) -> (H/4, W/4, c)``, then dense to ``2D``.

    The layout of the Flax and Keras VAE examples: 3x3 kernels, ``channels=(32, 64)``, ReLU. ``conv_impl`` picks
    how the convolutions run (see :mod:`jaxvae.models.convops`); the parameters are the same for every choice.
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        latent_dim: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        *,
        activation: str = "relu",
        conv_impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        h, w, c = _check_image_shape(event_shape, "encoder")
        self.event_shape = (h, w, c)
        self.conv_impl = _check_conv_impl(conv_impl)
        self.activation = get_activation(activation)
        strides = [2, 2] + [1] * (len(channels) - 2)
        ins = [c, *channels[:-1]]
        self.convs = nnx.List(
            [nnx.Conv(i, o, (3, 3), strides=s, rngs=rngs) for i, o, s in zip(ins, channels, strides)]
        )
        flat = (h // 4) * (w // 4) * channels[-1]
        self.dense = nnx.Linear(flat, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, 2 * latent_dim, rngs=rngs)

    def __call__(self, x: Array) -> DiagonalGaussian:
        x, batch_shape = _flatten_batch(x, 3)
        for conv in self.convs:
            x = self.activation(_apply_conv(conv, x, self.conv_impl))
        x = self.activation(self.dense(x.reshape(x.shape[0], -1)))
        return DiagonalGaussian.from_raw(self.head(x).reshape(*batch_shape, -1))


class ConvDecoder(nnx.Module):
    """Dense to ``(H/4, W/4, c)``, two stride-2 transposed convolutions, a 3x3 conv to ``C * (P - G)``."""

    def __init__(
        self,
        latent_dim: int,
        event_shape: Sequence[int],
        channels: Sequence[int] = (64, 32),
        hidden: int = 256,
        *,
        num_outputs: int = 1,
        num_global_outputs: int = 0,
        activation: str = "relu",
        conv_impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        h, w, c = _check_image_shape(event_shape, "decoder")
        self.event_shape = (h, w, c)
        self.conv_impl = _check_conv_impl(conv_impl)
        self.num_local = num_outputs - num_global_outputs
        self.activation = get_activation(activation)
        self.base_shape = (h // 4, w // 4, channels[0])
        self.dense = nnx.Linear(latent_dim, hidden, rngs=rngs)
        self.project = nnx.Linear(hidden, math.prod(self.base_shape), rngs=rngs)
        strides = [2, 2] + [1] * (len(channels) - 2)
        outs = [*channels[1:], channels[-1]]
        self.deconvs = nnx.List(
            [nnx.ConvTranspose(i, o, (3, 3), strides=s, rngs=rngs) for i, o, s in zip(channels, outs, strides)]
        )
        self.head = nnx.Conv(outs[-1], c * self.num_local, (3, 3), rngs=rngs)
        self.global_outputs = _GlobalOutputs(num_global_outputs)

    def __call__(self, z: Array) -> Array:
        z, batch_shape = _flatten_batch(z, 1)
        x = self.activation(self.dense(z))
        x = self.activation(self.project(x)).reshape(-1, *self.base_shape)
        for deconv in self.deconvs:
            x = self.activation(_apply_conv_transpose(deconv, x, self.conv_impl))
        out = _apply_conv(self.head, x, self.conv_impl).reshape(*batch_shape, *self.event_shape, self.num_local)
        return self.global_outputs(out)
