r"""Autoregressive decoders: a gated PixelCNN :math:`p(x \mid z) = \prod_i p(x_i \mid x_{<i}, z)`.

A decoder strong enough to model the data alone is what makes posterior collapse happen (Bowman et al. 2016;
Chen et al. 2017, "Variational Lossy Autoencoder"; Gulrajani et al. 2017, "PixelVAE"; Alemi et al. 2018): with a
PixelCNN decoder a plain VAE can reach a good ELBO with :math:`q(z|x) = p(z)`. This module gives jaxvae such a
decoder, through the same model protocol as every other model, so the trade-off tools (KL annealing, free bits,
controllers) and the latent-health monitor can be measured where they matter.

**The network** (:class:`GatedPixelCNN`): the gated PixelCNN of van den Oord et al. (2016, "Conditional Image
Generation with PixelCNN Decoders"), with a vertical stack (the rows above) and a horizontal stack (the pixels to
the left in the same row), so there is no blind spot. Causality comes from the kernel shapes and paddings, not
from masks: the vertical convolution is ``(c+1) x k`` over rows ``i-c..i`` (``c = k // 2``), its output enters the
horizontal stack shifted down one row (so it sees rows ``< i`` only); the horizontal convolution is ``1 x (c+1)``
over columns ``j-c..j`` (the first layer ``1 x c``, columns ``< j``, so output pixel ``i`` never sees input
``i``). Each layer gates ``tanh(a) * sigmoid(b)``; the horizontal stack is residual after the first layer; the
head is two 1x1 layers to the likelihood's raw parameters. Channels of one pixel are modelled as conditionally
independent given the pixels before it (raster order over pixels, all channels of a pixel together).

**Conditioning on z** (van den Oord et al. 2016, Section 2.3): spatial for ``model.network=conv`` (the
convolutional decoder maps ``z`` to a ``[H, W, F]`` feature map, added by a 1x1 layer into every gate of both
stacks), global for ``model.network=mlp`` (an MLP maps ``z`` to a vector added to every gate).

**Sampling** is ancestral, one pixel after the other (``H * W`` network passes). Each pass runs only on the band
of rows that the next pixel's receptive field reaches (``layers * c + 2`` rows, exact: the result equals full-image
passes, tested), for a 28x28 image and four 3x3 layers, 6 rows instead of 28.

The log-likelihood is exact (teacher forcing: one pass over the observed image), so the IWAE bound and every
objective work unchanged; images of a latent (samples, traversals, reconstructions) are the per-pixel
conditional means along one ancestral sample (:meth:`AutoregressiveVAE.decode_mean`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.errors import ConfigError
from jaxvae.models import convops, nets
from jaxvae.models import priors as priors_lib
from jaxvae.models.protocol import VAE, _single_group

Array = jax.Array

__all__ = ["AutoregressiveVAE", "GatedPixelCNN", "PixelCNNDecoder", "receptive_rows"]


def _conv_valid(x: Array, kernel: Array, impl: str) -> Array:
    """``'VALID'`` stride-1 convolution ``x [N, H, W, C] * kernel [kh, kw, C, O]``: XLA's, or one im2col matmul
    (:mod:`jaxvae.models.convops`' choice on CPU)."""
    if convops.resolve_impl(impl) == "xla":
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    kh, kw, c, o = kernel.shape
    n, hp, wp, _ = x.shape
    h, w = hp - kh + 1, wp - kw + 1
    if kh * kw == 1:
        return (x.reshape(-1, c) @ kernel.reshape(c, o)).reshape(n, h, w, o)
    views = [x[:, t:t + h, u:u + w, :] for t in range(kh) for u in range(kw)]
    return (jnp.concatenate(views, axis=-1).reshape(-1, kh * kw * c) @ kernel.reshape(kh * kw * c, o)).reshape(
        n, h, w, o)


def _shift_down(x: Array) -> Array:
    """``y[:, i] = x[:, i - 1]`` (zero in row 0)."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def _gate(a: Array) -> Array:
    f = a.shape[-1] // 2
    return jnp.tanh(a[..., :f]) * jax.nn.sigmoid(a[..., f:])


def receptive_rows(layers: int, kernel_size: int) -> int:
    """How many rows above pixel ``i`` its output can depend on: ``layers * (kernel_size // 2) + 1``."""
    return layers * (kernel_size // 2) + 1


class GatedPixelCNN(nnx.Module):
    """``x [N, H, W, C]`` and a conditioning ``cond`` (``[N, H, W, F]`` spatial or ``[N, F]`` global) to the raw
    likelihood parameters ``[N, H, W, C, P]``, output pixel ``(i, j)`` a function of the input pixels before it in
    raster order only (see the module docstring).

    Args:
      channels: input channels ``C`` of the image.
      num_outputs: ``P`` per channel (the likelihood's local outputs).
      features: width of both stacks.
      layers: gated layers (the receptive field grows by ``kernel_size // 2`` rows and columns per layer).
      kernel_size: odd, >= 3.
      cond_features: ``F`` of the conditioning (0: unconditional).
      conv_impl: ``auto``, ``xla`` or ``matmul`` (:mod:`jaxvae.models.convops`).
    """

    def __init__(self, channels: int, num_outputs: int, *, features: int = 32, layers: int = 4,
                 kernel_size: int = 3, cond_features: int = 0, conv_impl: str = "auto", rngs: nnx.Rngs):
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ConfigError(f"The PixelCNN's kernel size must be odd and >= 3; got {kernel_size}.")
        if layers < 1 or features < 1:
            raise ConfigError(f"The PixelCNN needs layers >= 1 and features >= 1; got {layers} and {features}.")
        c = kernel_size // 2
        self.c, self.layers, self.features, self.channels = c, layers, features, channels
        self.num_outputs = num_outputs
        self.conv_impl = nets._check_conv_impl(conv_impl)
        two = 2 * features
        ins = [channels] + [features] * (layers - 1)
        self.vconv = nnx.List([nnx.Conv(i, two, (c + 1, kernel_size), padding="VALID", rngs=rngs) for i in ins])
        self.hconv = nnx.List([nnx.Conv(i, two, (1, c if n == 0 else c + 1), padding="VALID", rngs=rngs)
                               for n, i in enumerate(ins)])
        self.v_to_h = nnx.List([nnx.Linear(two, two, rngs=rngs) for _ in ins])
        self.h_out = nnx.List([nnx.Linear(features, features, rngs=rngs) for _ in ins])
        self.cond = nnx.Linear(cond_features, layers * 2 * two, rngs=rngs) if cond_features else None
        self.head1 = nnx.Linear(features, features, rngs=rngs)
        self.head2 = nnx.Linear(features, channels * num_outputs, rngs=rngs)

    def __call__(self, x: Array, cond: Array | None = None) -> Array:
        batch, h, w, _ = x.shape
        c = self.c
        if self.cond is not None:
            if cond is None:
                raise ValueError("This PixelCNN is conditional: pass cond ([N, H, W, F] or [N, F]).")
            bias = self.cond(cond)
            bias = bias if bias.ndim == 4 else bias[:, None, None, :]  # global conditioning: every pixel
            biases = jnp.split(bias, 2 * self.layers, axis=-1)
        v = hs = x
        for n in range(self.layers):
            vk, hk = self.vconv[n], self.hconv[n]
            v_pre = _conv_valid(jnp.pad(v, ((0, 0), (c, 0), (c, c), (0, 0))), vk.kernel[...], self.conv_impl)
            v_pre = v_pre + vk.bias[...]
            h_pad = jnp.pad(hs, ((0, 0), (0, 0), (c, 0), (0, 0)))
            h_pre = _conv_valid(h_pad, hk.kernel[...], self.conv_impl)[:, :, :w] + hk.bias[...]
            h_pre = h_pre + self.v_to_h[n](_shift_down(v_pre))
            if self.cond is not None:
                v_pre = v_pre + biases[2 * n]
                h_pre = h_pre + biases[2 * n + 1]
            v = _gate(v_pre)
            g = self.h_out[n](_gate(h_pre))
            hs = g if n == 0 else hs + g
        out = self.head2(jax.nn.relu(self.head1(jax.nn.relu(hs))))
        return out.reshape(batch, h, w, self.channels, self.num_outputs)

    @property
    def band(self) -> int:
        """Rows one sampling pass needs: the pixel's row and the :func:`receptive_rows` above it."""
        return receptive_rows(self.layers, 2 * self.c + 1) + 1


class PixelCNNDecoder(nnx.Module):
    """``z [..., D]`` and the image ``x [..., H, W, C]`` (teacher forcing) to ``out [..., H, W, C, P]``.

    Args:
      latent_dim: ``D``.
      event_shape: ``(H, W, C)``.
      num_outputs, num_global_outputs: the likelihood's ``P`` and how many of them are global scalars.
      conditioning: ``spatial`` (a convolutional decoder makes a ``[H, W, cond_features]`` map of ``z``; needs H
        and W divisible by 4) or ``global`` (an MLP makes a ``cond_features`` vector).
      hidden: the conditioning network's widths (``global``: MLP hidden sizes; ``spatial``: the conv decoder's
        channels), conv_hidden: the conv decoder's dense width.
      features, layers, kernel_size, conv_impl: the :class:`GatedPixelCNN`.
    """

    def __init__(self, latent_dim: int, event_shape: Sequence[int], *, num_outputs: int,
                 num_global_outputs: int = 0, conditioning: str = "spatial", hidden: Sequence[int] = (64, 32),
                 conv_hidden: int = 256,
                 cond_features: int = 8, features: int = 32, layers: int = 4, kernel_size: int = 3,
                 activation: str = "relu", conv_impl: str = "auto", rngs: nnx.Rngs):
        if len(event_shape) != 3:
            raise ConfigError(f"The PixelCNN decoder models images (H, W, C); the data has event shape "
                              f"{tuple(event_shape)}. Use model.decoder=factorized for other data.")
        self.event_shape = tuple(int(s) for s in event_shape)
        h, w, ch = self.event_shape
        self.conditioning = conditioning
        if conditioning == "spatial":
            self.cond_net = nets.ConvDecoder(latent_dim, (h, w, 1), tuple(hidden), conv_hidden,
                                             num_outputs=cond_features, activation=activation, conv_impl=conv_impl,
                                             rngs=rngs)
        elif conditioning == "global":
            self.cond_net = nets.MLP([latent_dim, *hidden, cond_features], activation=activation, rngs=rngs)
        else:
            raise ConfigError(f"conditioning must be 'spatial' or 'global'; got {conditioning!r}.")
        self.activation = nets.get_activation(activation)
        self.num_local = num_outputs - num_global_outputs
        self.net = GatedPixelCNN(ch, self.num_local, features=features, layers=layers, kernel_size=kernel_size,
                                 cond_features=cond_features, conv_impl=conv_impl, rngs=rngs)
        self.global_outputs = nets._GlobalOutputs(num_global_outputs)

    def condition(self, z: Array) -> Array:
        """``z [N, D]`` to the conditioning of every gate: ``[N, H, W, F]`` (spatial) or ``[N, F]``."""
        if self.conditioning == "spatial":
            return self.activation(self.cond_net(z)[..., 0, :])  # [N, H, W, 1, F] -> [N, H, W, F]
        return self.activation(self.cond_net(z))

    def __call__(self, z: Array, x: Array) -> Array:
        batch_shape = z.shape[:-1]
        x = jnp.broadcast_to(x, (*batch_shape, *self.event_shape)).reshape(-1, *self.event_shape)
        out = self.net(x.astype(z.dtype), self.condition(z.reshape(-1, z.shape[-1])))
        return self.global_outputs(out.reshape(*batch_shape, *self.event_shape, self.num_local))

    def sample(self, z: Array, key: Array, likelihood: Any, *, band: bool = True) -> tuple[Array, Array]:
        """An ancestral sample ``x ~ p(x|z)``, ``[..., H, W, C]``, and the decoder outputs along it
        ``[..., H, W, C, P]`` (pixel ``(i, j)`` draws with ``fold_in(key, i * W + j)``).

        ``band=False`` runs every pass on the full image (the reference the band passes are tested against)."""
        batch_shape = z.shape[:-1]
        zf = z.reshape(-1, z.shape[-1])
        h, w, ch = self.event_shape
        cond = self.condition(zf)
        rows = min(self.net.band, h) if band else h
        spatial = cond.ndim == 4

        def pixel(idx: Array, canvas: Array) -> Array:
            i, j = idx // w, idx % w
            top = jnp.clip(i - (rows - 1), 0, h - rows)
            xb = jax.lax.dynamic_slice_in_dim(canvas, top, rows, axis=1)
            cb = jax.lax.dynamic_slice_in_dim(cond, top, rows, axis=1) if spatial else cond
            out = self.global_outputs(self.net(xb, cb))  # [N, rows, W, C, P]
            o = jax.lax.dynamic_index_in_dim(jax.lax.dynamic_index_in_dim(out, i - top, 1, False), j, 1, False)
            value = likelihood.sample(jax.random.fold_in(key, idx), o).astype(canvas.dtype)  # [N, C]
            return jax.lax.dynamic_update_slice(canvas, value[:, None, None, :], (0, i, j, 0))

        canvas = jax.lax.fori_loop(0, h * w, pixel, jnp.zeros((zf.shape[0], h, w, ch), zf.dtype))
        out = self.global_outputs(self.net(canvas, cond))
        return (canvas.reshape(*batch_shape, h, w, ch),
                out.reshape(*batch_shape, h, w, ch, out.shape[-1]))


class AutoregressiveVAE(VAE):
    """A single-group VAE whose decoder is autoregressive (:class:`PixelCNNDecoder`): ``decoder(z, x)``.

    The forward pass scores ``x`` exactly by teacher forcing; ``decode`` (raw parameters of a factorized
    ``p(x|z)``) does not exist for it, and the images of a latent come from :meth:`decode_mean` (an ancestral
    sample's conditional means). Everything else (priors, flow posteriors, IWAE, objectives) is
    :class:`~jaxvae.models.protocol.VAE`'s.
    """

    autoregressive = True

    @classmethod
    def pixelcnn(cls, event_shape: Sequence[int], latent_dim: int, likelihood: Any, *, network: str = "conv",
                 hidden: Sequence[int] = (512, 256), channels: Sequence[int] = (32, 64), conv_hidden: int = 256,
                 activation: str = "relu", conv_impl: str = "auto", prior: priors_lib.Prior | None = None,
                 posterior: str = "diagonal", flow_steps: int = 4, iaf_hidden: int = 0, householder: int = 0,
                 features: int = 32, layers: int = 4, kernel_size: int = 3, cond_features: int = 8,
                 rngs: nnx.Rngs) -> AutoregressiveVAE:
        """The encoder of ``VAE.mlp`` / ``VAE.conv`` (``network``) and a PixelCNN decoder conditioned on ``z``
        globally (mlp) or spatially (conv, through the mirrored conv decoder)."""
        if network == "conv":
            base = VAE.conv(event_shape, latent_dim, likelihood, channels=channels, hidden=conv_hidden,
                            activation=activation, conv_impl=conv_impl, prior=prior, rngs=rngs)
            cond_hidden, conditioning = tuple(reversed(channels)), "spatial"
        elif network == "mlp":
            base = VAE.mlp(event_shape, latent_dim, likelihood, hidden=hidden, activation=activation, prior=prior,
                           posterior=posterior, flow_steps=flow_steps, iaf_hidden=iaf_hidden,
                           householder=householder, rngs=rngs)
            cond_hidden, conditioning = tuple(reversed(hidden)), "global"
        else:
            raise ConfigError(f"model.decoder=pixelcnn works with model.network=conv or mlp; got {network!r}.")
        decoder = PixelCNNDecoder(latent_dim, event_shape, num_outputs=likelihood.num_outputs,
                                  num_global_outputs=likelihood.num_global_outputs, conditioning=conditioning,
                                  hidden=cond_hidden, conv_hidden=conv_hidden, cond_features=cond_features,
                                  features=features, layers=layers, kernel_size=kernel_size, activation=activation,
                                  conv_impl=conv_impl, rngs=rngs)
        return cls(base.encoder, decoder, likelihood, base.prior, event_shape)

    def decoder_outputs(self, z: Array, x: Array, key: Array | None = None) -> Array:
        del key
        return self.decoder(z, x)  # teacher forcing on x

    def decode(self, z: Mapping[str, Array] | Array) -> Array:
        raise NotImplementedError(
            "An autoregressive decoder's outputs depend on the image as well as on z, so decode(z) (the raw "
            "parameters of a factorized p(x|z)) does not exist: score images with log_likelihood(z, x) or the "
            "forward pass, and make images of a latent with decode_mean(z, key).")

    def decode_mean(self, z: Mapping[str, Array] | Array, key: Array | None) -> Array:
        """The per-pixel conditional means along one ancestral sample of ``p(x|z)`` drawn with ``key`` (default
        ``key(0)``), ``[..., *E]``. Reconstructions (:meth:`VAE.reconstruct`) are this at the posterior mean: an
        ancestral sample, not the teacher-forced prediction, which would look right even when ``z`` carries
        nothing."""
        key = jax.random.key(0) if key is None else key
        _, out = self.decoder.sample(_single_group(z, self.group), key, self.likelihood)
        return self.likelihood.mean(out)

