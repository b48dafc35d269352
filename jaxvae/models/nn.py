"""Layers for your own models: drop-in replacements of Flax NNX layers that run fast where XLA's own do not.

:class:`Conv` and :class:`ConvTranspose` are :class:`flax.nnx.Conv` and :class:`flax.nnx.ConvTranspose` with the
same constructor, parameters (``kernel [kh, kw, C, O]``, ``bias [O]``) and results up to float rounding; on a CPU
(``impl="auto"``) their 2-D ``'SAME'`` convolutions run as the matrix multiplications of
:mod:`jaxvae.models.convops`, which jaxvae's own convolutional networks use (``model.conv_impl``), several times
faster there than XLA:CPU's native strided and transposed convolutions (``benchmarks/RESULTS.md``). On GPU and TPU,
and for settings the matmul path does not cover (other padding, dilation, feature groups, masks, not 2-D), they are
the Flax layers.

Use them in a model builder (``model.network=MODULE:FUNCTION``, docs/models.md "Bring your own model") when your
encoder or decoder convolves images and trains on a CPU::

    from jaxvae import nn as jnn
    self.up = jnn.ConvTranspose(32, 16, (3, 3), strides=(2, 2), rngs=rngs)   # was nnx.ConvTranspose(...)

Checkpoints are interchangeable with the Flax layers' (the same parameter tree).
"""

from __future__ import annotations

import math
from typing import Any

import jax
from flax import nnx

from jaxvae.models import convops

Array = jax.Array

__all__ = ["Conv", "ConvTranspose"]


def _matmul_ready(layer: Any, x: Array, dilations: tuple[str, ...]) -> bool:
    """Whether ``layer`` on ``x`` is what the matmul path computes: a 2-D, ``'SAME'``, undilated, ungrouped,
    unmasked convolution, on a backend where ``impl`` resolves to ``matmul``."""
    if convops.resolve_impl(layer.impl) != "matmul" or len(layer.kernel_size) != 2 or x.ndim < 4:
        return False
    if not (isinstance(layer.padding, str) and layer.padding.upper() == "SAME") or layer.mask is not None:
        return False
    if getattr(layer, "feature_group_count", 1) != 1:
        return False
    return all(getattr(layer, d) in (None, 1, (1, 1)) for d in dilations)


def _batched(fn, x: Array) -> Array:
    """``fn`` on ``[N, H, W, C]`` for inputs with any number of leading batch axes."""
    batch = x.shape[:-3]
    y = fn(x.reshape(math.prod(batch), *x.shape[-3:]))
    return y.reshape(*batch, *y.shape[1:])


class Conv(nnx.Conv):
    """:class:`flax.nnx.Conv` with ``impl`` (``"auto"``: matmuls on CPU, XLA's convolution elsewhere; ``"xla"``;
    ``"matmul"``); everything else as Flax's."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int | tuple[int, ...],
                 strides: int | tuple[int, ...] | None = 1, *, impl: str = "auto", **kwargs: Any):
        convops.resolve_impl(impl)  # an unknown name fails here, not at the first call
        super().__init__(in_features, out_features, kernel_size, strides, **kwargs)
        self.impl = impl

    def __call__(self, x: Array) -> Array:
        if not _matmul_ready(self, x, ("input_dilation", "kernel_dilation")):
            return super().__call__(x)
        x, kernel = nnx.nn.dtypes.promote_dtype((x, self.kernel[...]), dtype=self.dtype)
        y = _batched(lambda v: convops.conv(v, kernel, self.strides), x)
        return y + self.bias[...].astype(y.dtype) if self.bias is not None else y


class ConvTranspose(nnx.ConvTranspose):
    """:class:`flax.nnx.ConvTranspose` with ``impl`` (see :class:`Conv`); the matmul path is the polyphase form of
    :func:`jaxvae.models.convops.conv_transpose_polyphase` (no zero-dilated input is built)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int | tuple[int, ...],
                 strides: int | tuple[int, ...] | None = None, *, impl: str = "auto", **kwargs: Any):
        convops.resolve_impl(impl)
        super().__init__(in_features, out_features, kernel_size, strides, **kwargs)
        self.impl = impl

    def __call__(self, x: Array) -> Array:
        if self.transpose_kernel or not _matmul_ready(self, x, ("kernel_dilation",)):
            return super().__call__(x)
        x, kernel = nnx.nn.dtypes.promote_dtype((x, self.kernel[...]), dtype=self.dtype)
        y = _batched(lambda v: convops.conv_transpose_polyphase(v, kernel, self.strides), x)
        return y + self.bias[...].astype(y.dtype) if self.bias is not None else y
