r"""Weight initialization as a setting (``model.init``): the scheme a paper's own code used, so that a
reproduction starts where the paper did.

=========  ========================================================================================================
``flax``   Flax's defaults, unchanged: kernels LeCun normal, :math:`\mathcal{N}(0, 1/\mathrm{fan\_in})`
           (truncated), biases zero. The default; bitwise the models of earlier versions.
``torch``  PyTorch's defaults for ``nn.Linear`` / ``nn.Conv2d``: kernels and biases uniform in
           :math:`\pm 1/\sqrt{\mathrm{fan\_in}}` (``kaiming_uniform_(a=sqrt(5))``; pythae and most PyTorch VAE
           code use it).
``glorot`` Glorot & Bengio (2010) uniform kernels, :math:`\pm\sqrt{6/(\mathrm{fan\_in}+\mathrm{fan\_out})}`, zero
           biases: the IWAE paper's code (Burda et al. 2016).
=========  ========================================================================================================

The scheme is applied after the model is built, to every ``nnx.Linear``, ``nnx.Conv`` and ``nnx.ConvTranspose``
in it (visited in graph order, each drawing from ``rngs.params()``, so ``PureModel.init`` stays a pure function of
its key). Fans follow Flax's layout (kernel ``[..., in, out]``, receptive field included): for a transposed
convolution PyTorch would take ``out_channels * kh * kw`` as its fan-in instead.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.errors import ConfigError

__all__ = ["SCHEMES", "reinitialize"]

SCHEMES = ("flax", "torch", "glorot")
_LAYERS = (nnx.Linear, nnx.Conv, nnx.ConvTranspose)


def _torch(key: jax.Array, layer: nnx.Module) -> tuple[jax.Array, jax.Array | None]:
    shape, dtype = layer.kernel.shape, layer.kernel.dtype
    bound = 1.0 / math.sqrt(math.prod(shape[:-1]))
    k_kernel, k_bias = jax.random.split(key)
    kernel = jax.random.uniform(k_kernel, shape, dtype, -bound, bound)
    bias = None if layer.bias is None else jax.random.uniform(k_bias, layer.bias.shape, dtype, -bound, bound)
    return kernel, bias


def _glorot(key: jax.Array, layer: nnx.Module) -> tuple[jax.Array, jax.Array | None]:
    kernel = jax.nn.initializers.glorot_uniform()(key, layer.kernel.shape, layer.kernel.dtype)
    return kernel, None if layer.bias is None else jnp.zeros(layer.bias.shape, layer.bias.dtype)


def reinitialize(module: nnx.Module, scheme: str, rngs: nnx.Rngs) -> nnx.Module:
    """Redraws the kernels and biases of every dense and convolutional layer of ``module`` (in place) by
    ``scheme`` (see the module docstring); ``"flax"`` leaves the module untouched. Returns ``module``."""
    if scheme not in SCHEMES:
        raise ConfigError(f"model.init={scheme!r} is not valid; choose one of: {', '.join(SCHEMES)}.")
    if scheme == "flax":
        return module
    draw = _torch if scheme == "torch" else _glorot
    for _, node in nnx.iter_graph(module):
        if isinstance(node, _LAYERS):
            kernel, bias = draw(rngs.params(), node)
            node.kernel[...] = kernel
            if bias is not None:
                node.bias[...] = bias
    return module
