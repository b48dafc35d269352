"""Convolutions written as matrix multiplications, for backends whose native convolutions are slow.

XLA:CPU's native convolutions are slow for a VAE decoder, above all its strided transposed convolutions
(input-dilated convolutions); the same layers written as matrix multiplications are several times faster on a CPU
(the per-layer profile and the training throughput are in ``benchmarks/RESULTS.md``). The functions here compute
exactly what :func:`jax.lax.conv_general_dilated` / :func:`jax.lax.conv_transpose` compute with ``'SAME'``
padding, NHWC inputs and HWIO kernels (the layout of :class:`flax.nnx.Conv` and :class:`flax.nnx.ConvTranspose`),
so the parameters, checkpoints and results are the same up to float rounding; only the program differs:

- :func:`conv_im2col`: gathers the ``kh * kw`` shifted (and strided) views of the input side by side and does one
  matmul with the kernel reshaped to ``[kh * kw * C, O]``.
- :func:`conv_col2im` (stride 1): multiplies first, ``[C] -> [kh * kw * O]`` per pixel, then adds the shifted
  views of the product. Cheaper than im2col when ``O < C``, e.g. a decoder's last layer to one channel.
- :func:`conv_transpose_polyphase`: a stride-``s`` transposed convolution is ``s * s`` ordinary convolutions of
  the undilated input, one per output phase, each with a subset of the kernel taps. They run as one matmul of the
  shifted input views against a block matrix of the taps (zeros where a phase does not use a tap), followed by a
  depth-to-space interleave. No zero-dilated input is ever built.

All three are differentiable by plain JAX autodiff: their gradients are matmuls, pads and slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

IMPLS = ("auto", "xla", "matmul")


def resolve_impl(impl: str) -> str:
    """``auto`` means ``matmul`` on CPU and the native (``xla``) convolutions on GPU/TPU, where cuDNN and the TPU
    compiler handle strided and transposed convolutions well. Decided at trace time from
    :func:`jax.default_backend`, not from the devices a program is later placed on: on a GPU host, code jitted
    for CPU devices gets the native convolutions (same values, slower); pass ``xla`` or ``matmul`` explicitly
    there."""
    if impl not in IMPLS:
        raise ValueError(f"Unknown convolution implementation {impl!r}; choose one of {IMPLS}.")
    if impl == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "xla"
    return impl


def _pair(strides: int | Sequence[int] | None) -> tuple[int, int]:
    """``None`` -> ``(1, 1)``, ``s`` -> ``(s, s)``, ``(a, b)`` -> ``(a, b)`` (the conventions of ``nnx.Conv``)."""
    if strides is None:
        return (1, 1)
    if isinstance(strides, int):
        return (strides, strides)
    sy, sx = strides
    return (int(sy), int(sx))


def _same_padding(size: int, k: int, s: int) -> tuple[int, int, int]:
    """Output size and (low, high) padding of a ``'SAME'`` convolution, as :func:`jax.lax.padtype_to_pads`."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _shifted(x: Array, offsets_y: Sequence[int], offsets_x: Sequence[int], out_h: int, out_w: int,
             stride: tuple[int, int] = (1, 1)) -> list[Array]:
    """Views ``v[n, i, j] = x[n, s_y * i + dy, s_x * j + dx]`` (zero outside ``x``) for every ``(dy, dx)`` pair."""
    lo_y, lo_x = max(0, -min(offsets_y)), max(0, -min(offsets_x))
    hi_y = max(0, stride[0] * (out_h - 1) + max(offsets_y) + 1 - x.shape[1])
    hi_x = max(0, stride[1] * (out_w - 1) + max(offsets_x) + 1 - x.shape[2])
    xp = jnp.pad(x, ((0, 0), (lo_y, hi_y), (lo_x, hi_x), (0, 0)))
    return [
        xp[:, lo_y + dy: lo_y + dy + stride[0] * (out_h - 1) + 1: stride[0],
           lo_x + dx: lo_x + dx + stride[1] * (out_w - 1) + 1: stride[1], :]
        for dy in offsets_y for dx in offsets_x
    ]


def conv_im2col(x: Array, kernel: Array, strides: int | Sequence[int] | None = 1) -> Array:
    """``'SAME'`` convolution ``x [N, H, W, C] * kernel [kh, kw, C, O] -> [N, ceil(H/s), ceil(W/s), O]``."""
    strides = _pair(strides)
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    oh, py, _ = _same_padding(h, kh, strides[0])
    ow, px, _ = _same_padding(w, kw, strides[1])
    views = _shifted(x, [t - py for t in range(kh)], [t - px for t in range(kw)], oh, ow, strides)
    patches = jnp.concatenate(views, axis=-1).reshape(-1, kh * kw * c)
    return (patches @ kernel.reshape(kh * kw * c, o)).reshape(n, oh, ow, o)


def conv_col2im(x: Array, kernel: Array) -> Array:
    """Stride-1 ``'SAME'`` convolution computed as ``x @ kernel`` per pixel, then a sum of shifted products."""
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    _, py, _ = _same_padding(h, kh, 1)
    _, px, _ = _same_padding(w, kw, 1)
    u = (x.reshape(-1, c) @ kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * o)).reshape(n, h, w, kh * kw, o)
    # up[:, i + ty, j + tx] = u[:, i + ty - py, j + tx - px] (zero outside): one pad, then a slice per tap.
    up = jnp.pad(u, ((0, 0), (py, kh - 1 - py), (px, kw - 1 - px), (0, 0), (0, 0)))
    return sum(up[:, ty:ty + h, tx:tx + w, ty * kw + tx] for ty in range(kh) for tx in range(kw))


def conv(x: Array, kernel: Array, strides: int | Sequence[int] | None = 1) -> Array:
    """``'SAME'`` convolution as matmuls: col2im for stride 1 with fewer output than input channels, else
    im2col."""
    if _pair(strides) == (1, 1) and kernel.shape[-1] < kernel.shape[-2]:
        return conv_col2im(x, kernel)
    return conv_im2col(x, kernel, strides)


def _transpose_taps(k: int, s: int) -> list[list[tuple[int, int]]]:
    """Per output phase ``r`` of one axis, the ``(tap, input offset)`` pairs of a ``'SAME'`` transposed conv.

    :func:`jax.lax.conv_transpose` pads the ``s``-dilated input by ``pad_a`` and correlates with the (unflipped)
    kernel, so ``y[s*m + r] = sum_t x[m + (r + t - pad_a) / s] * w[t]`` over the taps where the division is exact.
    """
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else -(-pad_len // 2)
    return [[(t, (r + t - pad_a) // s) for t in range(k) if (r + t - pad_a) % s == 0] for r in range(s)]


def conv_transpose_polyphase(x: Array, kernel: Array, strides: int | Sequence[int] | None = 1) -> Array:
    """``lax.conv_transpose(x, kernel, strides, 'SAME')`` for NHWC/HWIO: ``[N, H, W, C] -> [N, sH, sW, O]``."""
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    sy, sx = _pair(strides)
    taps_y, taps_x = _transpose_taps(kh, sy), _transpose_taps(kw, sx)
    offsets_y = sorted({d for phase in taps_y for _, d in phase})
    offsets_x = sorted({d for phase in taps_x for _, d in phase})
    patches = jnp.concatenate(_shifted(x, offsets_y, offsets_x, h, w), axis=-1).reshape(-1, len(offsets_y)
                                                                                        * len(offsets_x) * c)
    # The block matrix [(dy, dx, C), (ry, rx, O)]: kernel[ty, tx] where phase (ry, rx) reads offset (dy, dx).
    tap_of = {}
    for ry, phase_y in enumerate(taps_y):
        for rx, phase_x in enumerate(taps_x):
            for ty, dy in phase_y:
                for tx, dx in phase_x:
                    tap_of[(dy, dx, ry, rx)] = (ty, tx)
    zeros = jnp.zeros((c, o), kernel.dtype)
    rows = [
        jnp.concatenate([kernel[tap_of[(dy, dx, ry, rx)]] if (dy, dx, ry, rx) in tap_of else zeros
                         for ry in range(sy) for rx in range(sx)], axis=1)
        for dy in offsets_y for dx in offsets_x
    ]
    out = patches @ jnp.concatenate(rows, axis=0)  # [N*H*W, sy*sx*O]
    out = out.reshape(n, h, w, sy, sx, o).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(n, h * sy, w * sx, o)
