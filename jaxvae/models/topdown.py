r"""A top-down residual hierarchy for images in the style of NVAE (Vahdat & Kautz 2020) and VDVAE (Child 2021),
small enough that an MNIST epoch takes minutes on two CPU cores.

The model has two resolutions, ``H/4 x W/4`` (the top, coarse scale) and ``H/2 x W/2`` (the fine scale), and
several latent groups per resolution; each group is a feature map of ``c_g`` latent channels, flattened
(row-major ``h, w, c``) to ``D_g = h_s w_s c_g`` units. Groups are named ``z1`` (the finest, next to the data)
... ``zL`` (the top), as in :mod:`jaxvae.models.hierarchy`.

**Bidirectional encoder.** A deterministic bottom-up pass (a stride-2 stem, residual cells, a stride-2 conv,
residual cells) gives one feature map per resolution, :math:`e_s`.

**Top-down path**, shared by inference and generation. A learned constant state :math:`h` at the top resolution;
for each group from the top down:

.. math::
    p(z_l \mid z_{>l}) &= \mathcal N(\mu_p(h), \sigma_p(h)^2), \\
    q(z_l \mid x, z_{>l}) &= \mathcal N\big(\mu_p + \Delta\mu(h, e_s),\
        (\sigma_p \cdot \Delta\sigma(h, e_s))^2\big), \\
    h &\leftarrow \mathrm{cells}\big(h + W z_l\big),

the residual parameterization of the posterior relative to the prior (NVAE, Sec. 3.2), with the top group's prior
:math:`\mathcal N(0, I)`; between the resolutions a stride-2 transposed convolution, and after the fine scale
another one to full resolution and a 3x3 conv to the likelihood's parameters. Every group's KL is closed-form
given the samples of the groups above it (mean over the K samples).

A residual cell is ``h + conv3x3(act(conv3x3(act(h))))`` with the second conv's initial weights scaled by
``1/sqrt(number of cells)`` (VDVAE's scaled residual initialization), so the residual stream's variance stays
near 1 at initialization for any depth. There is no batch normalization (state outside the parameters); the
other stabilizers are training options (``objective.kl_balance``, ``optimizer.skip_threshold``,
``optimizer.spectral_reg``, ``optimizer.ema_decay``) and ``log_scale_clamp`` here.

Example::

    model = jv.topdown.TopDownVAE((28, 28, 1), (4, 4, 4, 4), jv.Bernoulli(), groups_per_scale=(2, 2),
                                  channels=32, rngs=nnx.Rngs(0))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.config import topdown_groups
from jaxvae.distributions import kl as kl_lib
from jaxvae.distributions.base import DiagonalGaussian
from jaxvae.errors import ConfigError
from jaxvae.models import nets
from jaxvae.models.hierarchy import _first, _marginal, _names, _temper
from jaxvae.models.protocol import Latents, Model, ModelOutput

Array = jax.Array


def _conv(features_in: int, features_out: int, kernel: int, rngs: nnx.Rngs, *, strides: int = 1,
          init_scale: float = 1.0) -> nnx.Conv:
    init = nnx.initializers.variance_scaling(init_scale, "fan_in", "truncated_normal")
    return nnx.Conv(features_in, features_out, (kernel, kernel), strides=strides, kernel_init=init, rngs=rngs)


class ResidualCell(nnx.Module):
    """``h + conv3x3(act(conv3x3(act(h))))``, the second conv's initial weights scaled by ``residual_scale``
    (VDVAE: ``1/sqrt(number of cells)``)."""

    def __init__(self, channels: int, *, activation: str, residual_scale: float, conv_impl: str, rngs: nnx.Rngs):
        self.activation = nets.get_activation(activation)
        self.conv_impl = conv_impl
        self.conv_a = _conv(channels, channels, 3, rngs)
        self.conv_b = _conv(channels, channels, 3, rngs, init_scale=residual_scale ** 2)

    def __call__(self, h: Array) -> Array:
        r = nets._apply_conv(self.conv_a, self.activation(h), self.conv_impl)
        return h + nets._apply_conv(self.conv_b, self.activation(r), self.conv_impl)


class TopDownVAE(Model):
    r"""The top-down residual hierarchy described in the module docstring.

    Args:
      event_shape: ``(H, W, C)`` with ``H`` and ``W`` divisible by 4 (28x28, 32x32, ...).
      latent_channels: latent channels per group, bottom (finest) group first.
      likelihood: the decoder's :class:`~jaxvae.distributions.likelihoods.Likelihood`.
      groups_per_scale: ``(fine, coarse)`` numbers of groups (default: half each, the extra one coarse).
      channels: width of the residual stream (encoder and decoder).
      cells: residual cells per group in the decoder and per scale in the encoder.
      activation: NVAE uses Swish (``silu``), VDVAE GELU.
      log_scale_clamp: NVAE's soft clamp ``c tanh(x / c)`` on the raw log-scales of priors and posteriors
        (``None``: off; NVAE uses 5).
      conv_impl: see :mod:`jaxvae.models.convops`.
    """

    # Parent samples behind a conditional group's posterior in `posteriors()` (a conv forward pass per sample).
    posterior_samples = 16

    def __init__(self, event_shape: Sequence[int], latent_channels: Sequence[int], likelihood: Any, *,
                 groups_per_scale: Sequence[int] | None = None, channels: int = 32, cells: int = 1,
                 activation: str = "silu", log_scale_clamp: float | None = None, conv_impl: str = "auto",
                 rngs: nnx.Rngs):
        height, width, c_in = nets._check_image_shape(event_shape, "top-down hierarchy")
        if channels <= 0 or cells < 0:
            raise ConfigError(f"The top-down hierarchy needs channels > 0 and cells >= 0; got "
                              f"channels={channels}, cells={cells}.")
        chans, split = topdown_groups(latent_channels, groups_per_scale)
        self.event_shape = (height, width, c_in)
        self.likelihood = likelihood
        self.latent_channels = chans
        self.groups_per_scale = split
        self.conv_impl = nets._check_conv_impl(conv_impl)
        self.activation = nets.get_activation(activation)
        self.log_scale_clamp = log_scale_clamp or None
        # Group l (0-based, bottom first) lives at the fine scale for l < split[0], else at the coarse one.
        self.scale_shapes = ((height // 2, width // 2), (height // 4, width // 4))
        self.group_scale = tuple(0 if g < split[0] else 1 for g in range(len(chans)))
        self.latent_dims = tuple(math.prod(self.scale_shapes[s]) * c for s, c in zip(self.group_scale, chans))
        self.latent_dim = sum(self.latent_dims)
        scale = 1.0 / math.sqrt(max(1, cells * (len(chans) + 2)))
        cell = dict(activation=activation, residual_scale=scale, conv_impl=self.conv_impl, rngs=rngs)
        # Bottom-up: stem to H/2, cells, stride-2 conv to H/4, cells.
        self.stem = _conv(c_in, channels, 3, rngs, strides=2)
        self.enc_fine = nnx.List([ResidualCell(channels, **cell) for _ in range(cells)])
        self.down = _conv(channels, channels, 3, rngs, strides=2)
        self.enc_coarse = nnx.List([ResidualCell(channels, **cell) for _ in range(cells)])
        # Top-down: the constant state, per group a prior head, a posterior head, the latent's projection and
        # cells; the upsampling between scales and to full resolution; the likelihood head.
        self.h_top = nnx.Param(jnp.zeros((*self.scale_shapes[1], channels), jnp.float32))
        self.prior_heads = nnx.List([_conv(channels, 2 * c, 3, rngs) for c in chans])
        self.post_heads = nnx.List([_conv(2 * channels, 2 * c, 3, rngs, init_scale=0.1) for c in chans])
        self.z_proj = nnx.List([_conv(c, channels, 1, rngs, init_scale=0.1) for c in chans])
        self.dec_cells = nnx.List([nnx.List([ResidualCell(channels, **cell) for _ in range(cells)])
                                   for _ in chans])
        self.up = nnx.ConvTranspose(channels, channels, (3, 3), strides=2, rngs=rngs)
        self.up_out = nnx.ConvTranspose(channels, channels, (3, 3), strides=2, rngs=rngs)
        self.num_local = likelihood.num_outputs - likelihood.num_global_outputs
        self.head = _conv(channels, c_in * self.num_local, 3, rngs)
        self.global_outputs = nets._GlobalOutputs(likelihood.num_global_outputs)

    @property
    def groups(self) -> list[str]:
        return _names(len(self.latent_channels))

    # -- pieces ---------------------------------------------------------------------------------------------------

    def _c(self, layer: nnx.Module, x: Array) -> Array:
        return nets._apply_conv(layer, x, self.conv_impl)

    def _up(self, layer: nnx.ConvTranspose, x: Array) -> Array:
        return nets._apply_conv_transpose(layer, x, self.conv_impl)

    def bottom_up(self, x: Array) -> tuple[Array, Array]:
        """The deterministic encoder: features at the fine and the coarse scale, ``[B, H/2, W/2, C]`` and
        ``[B, H/4, W/4, C]``."""
        e = self._c(self.stem, x)
        for cell in self.enc_fine:
            e = cell(e)
        fine = e
        e = self._c(self.down, self.activation(e))
        for cell in self.enc_coarse:
            e = cell(e)
        return fine, e

    def _gaussian(self, raw: Array) -> DiagonalGaussian:
        """A conv head's ``[N, h, w, 2c]`` output as a Gaussian over the flat ``[N, D_g]`` latent."""
        loc, log_scale = jnp.split(raw, 2, axis=-1)
        if self.log_scale_clamp:
            log_scale = self.log_scale_clamp * jnp.tanh(log_scale / self.log_scale_clamp)
        n = raw.shape[0]
        return DiagonalGaussian(loc.reshape(n, -1), log_scale.reshape(n, -1))

    def _prior(self, h: Array, group: int) -> DiagonalGaussian:
        if group == len(self.latent_channels) - 1:  # the top group: N(0, I)
            zeros = jnp.zeros((h.shape[0], self.latent_dims[group]), h.dtype)
            return DiagonalGaussian(zeros, zeros)
        return self._gaussian(self._c(self.prior_heads[group], self.activation(h)))

    def _absorb(self, h: Array, z_flat: Array, group: int) -> Array:
        """``h <- cells(h + W z)``: the state after group ``group``'s latent ``[N, D_g]``."""
        s = self.scale_shapes[self.group_scale[group]]
        z = z_flat.reshape(z_flat.shape[0], *s, self.latent_channels[group])
        h = h + self._c(self.z_proj[group], z)
        for cell in self.dec_cells[group]:
            h = cell(h)
        return h

    def _rescale(self, h: Array, group: int) -> Array:
        """After the lowest coarse group (when fine groups follow), upsamples the state to the fine scale."""
        fine = self.groups_per_scale[0]
        if fine and group == fine:
            return self._up(self.up, self.activation(h))
        return h

    def _output(self, h: Array) -> Array:
        if self.groups_per_scale[0] == 0:  # no fine group: the state is still at the coarse scale
            h = self._up(self.up, self.activation(h))
        h = self._up(self.up_out, self.activation(h))
        out = self._c(self.head, self.activation(h))
        return self.global_outputs(out.reshape(*out.shape[:-1], self.event_shape[-1], self.num_local))

    def _initial_state(self, n: int) -> Array:
        return jnp.broadcast_to(self.h_top[...], (n, *self.h_top.shape))

    # -- the protocol ---------------------------------------------------------------------------------------------

    def forward(self, x: Array, key: Array, num_samples: int = 1) -> ModelOutput:
        n_groups = len(self.latent_channels)
        batch = x.shape[0]
        n = num_samples * batch  # the top-down path runs on K * B states, sample-major
        keys = jax.random.split(key, n_groups)
        features = [jnp.broadcast_to(f, (num_samples, *f.shape)).reshape(n, *f.shape[1:])
                    for f in self.bottom_up(x)]
        h = self._initial_state(n)
        qs: list[Any] = [None] * n_groups
        ps: list[Any] = [None] * n_groups
        zs: list[Any] = [None] * n_groups
        log_q: list[Any] = [None] * n_groups
        log_p: list[Any] = [None] * n_groups
        kls: list[Any] = [None] * n_groups

        def kb(a: Array) -> Array:  # [K * B, ...] -> [K, B, ...]
            return a.reshape(num_samples, batch, *a.shape[1:])

        for g in range(n_groups - 1, -1, -1):
            p = self._prior(h, g)
            e = features[self.group_scale[g]]
            delta = self._gaussian(self._c(self.post_heads[g], self.activation(jnp.concatenate([h, e], -1))))
            q = DiagonalGaussian(p.loc + delta.loc, p.log_scale + delta.log_scale)  # NVAE's residual normal
            z = q.sample(keys[g])  # [K * B, D_g]
            p, q = jax.tree.map(kb, p), jax.tree.map(kb, q)
            zs[g] = kb(z)
            log_q[g], log_p[g] = q.log_prob(zs[g]), p.log_prob(zs[g])  # [K, B]
            kls[g] = jnp.mean(kl_lib.kl_diagonal_gaussians_per_dim(q, p), axis=0)  # [B, D_g]
            qs[g], ps[g] = q, p
            h = self._rescale(self._absorb(h, z, g), g)
        out = kb(self._output(h))  # [K, B, *E, P]
        log_px = self.likelihood.log_prob(out, x, event_ndim=3)
        names = self.groups
        top = n_groups - 1
        posteriors = {g: (_first(q) if i == top else _marginal(q)) for i, (g, q) in enumerate(zip(names, qs))}
        priors = {g: _first(p) for g, p in zip(names, ps)}
        return ModelOutput(log_px, sum(log_q), sum(log_p), dict(zip(names, zs)), dict(zip(names, kls)), posteriors,
                           priors, out, log_q_groups=dict(zip(names, log_q)), log_p_groups=dict(zip(names, log_p)))

    def prior_sample(self, key: Array, n: int) -> Latents:
        return self.prior_sample_tempered(key, n)

    def prior_sample_tempered(self, key: Array, n: int, temperature: float | Sequence[float] = 1.0) -> Latents:
        """Ancestral samples ``{z_l: [n, D_l]}`` from the top down, each group's prior scale times its temperature
        (one number for all groups, or one per group bottom first)."""
        n_groups = len(self.latent_channels)
        temps = [temperature] * n_groups if isinstance(temperature, (int, float)) else list(temperature)
        if len(temps) != n_groups:
            raise ValueError(f"{len(temps)} temperatures for {n_groups} latent groups.")
        keys = jax.random.split(key, n_groups)
        h = self._initial_state(n)
        z: dict[str, Array] = {}
        for g in range(n_groups - 1, -1, -1):
            z[f"z{g + 1}"] = zg = _temper(self._prior(h, g), temps[g]).sample(keys[g])
            h = self._rescale(self._absorb(h, zg, g), g)
        return {name: z[name] for name in self.groups}

    def decode(self, z: Mapping[str, Array]) -> Array:
        """The decoder run on given latents of every group ``{z_l: [..., D_l]}``."""
        lead = z["z1"].shape[:-1]
        flat = {k: v.reshape(-1, v.shape[-1]) for k, v in z.items()}
        h = self._initial_state(flat["z1"].shape[0])
        for g in range(len(self.latent_channels) - 1, -1, -1):
            h = self._rescale(self._absorb(h, flat[f"z{g + 1}"], g), g)
        out = self._output(h)
        return out.reshape(*lead, *out.shape[1:])

    def posteriors(self, x: Array, key: Array) -> dict[str, DiagonalGaussian]:
        """Per group an estimate of :math:`q(z_l|x)`: the top group's exactly, a lower group's moment-matched over
        :attr:`posterior_samples` samples of the groups above it."""
        return dict(self.forward(x, key, self.posterior_samples).posteriors)
