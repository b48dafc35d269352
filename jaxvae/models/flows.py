r"""Normalizing-flow posteriors: planar, radial, Sylvester (Householder) and inverse autoregressive flows on top
of the diagonal Gaussian, through the distribution interface
(:class:`~jaxvae.distributions.TransformedDistribution`).

Each step is a :class:`~jaxvae.distributions.Bijection` pytree with ``forward_and_log_det``:

* :class:`Planar` (Rezende & Mohamed 2015, eq. 10): :math:`f(z) = z + \hat u\, \tanh(w^\top z + b)`,
  :math:`\log|\det| = \log(1 + \hat u^\top \psi(z))`, :math:`\psi = \tanh'(w^\top z + b)\, w`, with
  :math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \|w\|^2`, :math:`m(a) = -1 + \mathrm{softplus}(a)`
  (their Appendix A), so that :math:`w^\top \hat u = m(w^\top u) > -1` exactly and :math:`f` is invertible;
  the determinant :math:`1 + \tanh'(a)\, m = \tanh^2(a) + \tanh'(a)\, \mathrm{softplus}(w^\top u)` is a sum of
  non-negative terms, computed without cancellation.
* :class:`Radial` (Rezende & Mohamed 2015, eq. 14): :math:`f(z) = z + \beta h(\alpha, r)(z - z_0)`,
  :math:`r = \|z - z_0\|`, :math:`h = 1/(\alpha + r)`, :math:`\log|\det| = (D - 1)\log(1 + \beta h) + \log(1 +
  \beta h + \beta h' r)`, with :math:`\alpha = \mathrm{softplus}(\tilde\alpha)`,
  :math:`\beta = -\alpha + \mathrm{softplus}(\tilde\beta) \ge -\alpha`.
* :class:`Sylvester` (van den Berg et al. 2018, Householder-SNF): :math:`f(z) = z + Q R\,
  \tanh(\tilde R Q^\top z + b)` with :math:`Q` a product of Householder reflections, :math:`R, \tilde R` upper
  triangular with :math:`\tanh`-bounded diagonals (so :math:`R_{ii}\tilde R_{ii} > -1`);
  :math:`\log|\det| = \sum_i \log(1 + R_{ii} \tilde R_{ii} \tanh'(\cdot)_i)`, positive by construction.
* :class:`IAF` (Kingma et al. 2016, eqs. 10-14): a MADE network of :math:`(z, h)` with the encoder's context
  :math:`h` gives :math:`m, s`; :math:`\sigma = \mathrm{sigmoid}(s)`, :math:`f(z) = \sigma \odot z + (1 - \sigma)
  \odot m`, :math:`\log|\det| = \sum_d \log \sigma_d` (the Jacobian is triangular). Successive steps alternate
  the autoregressive order.

Planar, radial and Sylvester parameters are amortized (per example, from the encoder, as in both papers); IAF's
MADE weights are global and its context vector is per example. :class:`FlowEncoder` is the MLP encoder with the
flow's heads; select it with ``model.posterior`` and ``model.flow_steps``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.distributions.base import Bijection, DiagonalGaussian, TransformedDistribution
from jaxvae.errors import ConfigError
from jaxvae.models import nets

Array = jax.Array

__all__ = ["FLOWS", "IAF", "FlowEncoder", "Planar", "Radial", "Scan", "Sylvester", "made_masks"]

FLOWS = ("planar", "radial", "sylvester", "iaf")


def _sech2(a: Array) -> Array:
    r""":math:`\tanh'(a) = 1 - \tanh^2(a) = \mathrm{sech}^2(a) = 4 e^{-2|a|} / (1 + e^{-2|a|})^2`, accurate to
    rounding in relative terms for every ``a`` (``1 - tanh(a)**2`` loses all digits once ``tanh(a)`` rounds to
    1)."""
    e = jnp.exp(-2.0 * jnp.abs(a))
    return 4.0 * e / jnp.square(1.0 + e)


def _log_positive(x: Array) -> Array:
    """``log x`` of a quantity that is positive by construction; the floor at the dtype's smallest normal number
    only catches underflow to exactly 0 (a determinant below ~1e-38 in float32), which would give ``-inf``."""
    return jnp.log(jnp.maximum(x, jnp.finfo(jnp.result_type(x)).tiny))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Planar(Bijection):
    r"""Planar step; ``u, w [B, D]``, ``b [B]`` (raw; ``u`` is made invertible inside).

    With :math:`m = -1 + \mathrm{softplus}(w^\top u)`, :math:`\hat u = u + (m - w^\top u)\, w / \|w\|^2`
    satisfies :math:`w^\top \hat u = m > -1` for every ``w != 0`` (for ``w = 0``, :math:`\hat u = u` and the
    step is a translation with log-determinant 0), and

    .. math:: \log\det\frac{\partial f}{\partial z} = \log(1 + \tanh'(a)\, m)
              = \log\big(\tanh^2(a) + \tanh'(a)\, \mathrm{softplus}(w^\top u)\big), \quad a = w^\top z + b,

    two non-negative terms (no cancellation near the boundary :math:`w^\top u \to -\infty`, :math:`a \to 0`).
    """

    u: Array
    w: Array
    b: Array

    def _w_norm2_and_wu(self) -> tuple[Array, Array]:
        return jnp.sum(jnp.square(self.w), axis=-1), jnp.sum(self.w * self.u, axis=-1)  # [B], [B]

    def u_hat(self) -> Array:
        r""":math:`\hat u`, ``[B, D]``."""
        w2, wu = self._w_norm2_and_wu()
        m = -1.0 + jax.nn.softplus(wu)
        # Only w = 0 (or |w|^2 underflowing to 0) needs the guard: there the correction term vanishes anyway.
        scale = (m - wu) / jnp.where(w2 > 0, w2, 1.0)
        return self.u + jnp.where(w2 > 0, scale, 0.0)[..., None] * self.w

    def forward_and_log_det(self, z: Array) -> tuple[Array, Array]:
        w2, wu = self._w_norm2_and_wu()
        a = jnp.sum(self.w * z, axis=-1) + self.b  # [..., B]
        f = z + self.u_hat() * jnp.tanh(a)[..., None]
        t = _sech2(a)
        # 1 + t m(w^T u) with w^T u_hat = m(w^T u) exactly; for w = 0, u_hat = u and the step is a translation.
        det = jnp.where(w2 > 0, jnp.square(jnp.tanh(a)) + t * jax.nn.softplus(wu), 1.0 + t * wu)
        return f, _log_positive(det)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Radial(Bijection):
    """Radial step; ``z0 [B, D]``, ``alpha, beta [B]`` (raw, constrained inside)."""

    z0: Array
    alpha: Array
    beta: Array

    def forward_and_log_det(self, z: Array) -> tuple[Array, Array]:
        d = z.shape[-1]
        alpha = jax.nn.softplus(self.alpha)
        beta = -alpha + jax.nn.softplus(self.beta)
        diff = z - self.z0
        r = jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1) + 1e-12)  # [..., B]
        h = 1.0 / (alpha + r)
        bh = beta * h
        f = z + (bh)[..., None] * diff
        log_det = (d - 1) * jnp.log1p(bh) + jnp.log1p(bh - beta * h * h * r)  # h' = -h^2
        return f, log_det


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sylvester(Bijection):
    """Householder-Sylvester step; ``r1, r2 [B, D, D]`` (raw: the upper triangles are used, diagonals through
    tanh), ``b [B, D]``, ``v [B, H, D]`` (Householder vectors, ``Q = H_1 ... H_H``)."""

    r1: Array
    r2: Array
    b: Array
    v: Array

    def _q(self) -> Array:
        d = self.v.shape[-1]
        # Unit vectors exactly (Q orthogonal, so det Q^T J Q = det J): `|v|^2 + eps` would bend Q by eps/|v|^2
        # and the true log-determinant away from the one reported. Only v = 0 is guarded (then H_i = I).
        norm2 = jnp.sum(jnp.square(self.v), axis=-1, keepdims=True)
        v = self.v / jnp.sqrt(jnp.where(norm2 > 0, norm2, 1.0))  # [B, H, D]
        q = jnp.broadcast_to(jnp.eye(d, dtype=v.dtype), (*v.shape[:-2], d, d))
        for i in range(v.shape[-2]):
            vi = v[..., i, :]  # [B, D]
            q = q - 2.0 * jnp.einsum("...ij,...j,...k->...ik", q, vi, vi)  # Q H_i
        return q  # [B, D, D]

    def _triangles(self) -> tuple[Array, Array, Array, Array]:
        d = self.r1.shape[-1]
        upper = jnp.triu(jnp.ones((d, d), bool), 1)
        diag1, diag2 = (jnp.tanh(jnp.diagonal(r, axis1=-2, axis2=-1)) for r in (self.r1, self.r2))
        r1 = jnp.where(upper, self.r1, 0.0) + diag1[..., None] * jnp.eye(d, dtype=self.r1.dtype)
        r2 = jnp.where(upper, self.r2, 0.0) + diag2[..., None] * jnp.eye(d, dtype=self.r2.dtype)
        return r1, r2, diag1, diag2

    def forward_and_log_det(self, z: Array) -> tuple[Array, Array]:
        q = self._q()
        r1, r2, _, _ = self._triangles()
        qz = jnp.einsum("...bji,...bj->...bi", q, z)  # Q^T z
        a = jnp.einsum("...bij,...bj->...bi", r2, qz) + self.b  # R~ Q^T z + b
        f = z + jnp.einsum("...bij,...bj->...bi", q, jnp.einsum("...bij,...bj->...bi", r1, jnp.tanh(a)))
        log_det = jnp.sum(self._log_det_terms(a), axis=-1)
        return f, log_det

    def _log_det_terms(self, a: Array) -> Array:
        r""":math:`\log(1 + p_i \tanh'(a_i))`, :math:`p_i = \tanh(x_i)\tanh(y_i) \in (-1, 1)` for the raw
        diagonals :math:`x, y` of ``r1, r2``, ``[..., B, D]``: positive by construction, and computed so that it
        stays so in floating point. For :math:`p \ge 0` it is ``log1p``; for :math:`p < 0`, :math:`1 + p\tanh' =
        (1 - |p|) + |p| \tanh^2(a)` with :math:`1 - |\tanh x \tanh y| = 2(e_x + e_y) / ((1 + e_x)(1 + e_y))`,
        :math:`e = e^{-2|\cdot|}`: sums of non-negative terms (``1 + p tanh'`` itself is 0 in float32 once
        both ``tanh`` round to 1)."""
        x, y = (jnp.diagonal(r, axis1=-2, axis2=-1) for r in (self.r1, self.r2))  # [B, D]
        p = jnp.tanh(x) * jnp.tanh(y)
        ex, ey = jnp.exp(-2.0 * jnp.abs(x)), jnp.exp(-2.0 * jnp.abs(y))
        one_minus_abs_p = 2.0 * (ex + ey) / ((1.0 + ex) * (1.0 + ey))
        negative = one_minus_abs_p + jnp.abs(p) * jnp.square(jnp.tanh(a))
        return jnp.where(p >= 0, jnp.log1p(jnp.maximum(p, 0.0) * _sech2(a)), _log_positive(negative))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Scan(Bijection):
    """``K`` steps of one kind with their parameters stacked on a leading axis (``steps``' leaves ``[K, ...]``),
    applied in order by ``jax.lax.scan``: one compiled step however large ``K`` (a planar flow of 80 steps
    compiles like one of 1)."""

    steps: Bijection

    @property
    def num_steps(self) -> int:
        return jax.tree.leaves(self.steps)[0].shape[0]

    def forward_and_log_det(self, z: Array) -> tuple[Array, Array]:
        def body(carry, f):
            zz, total = carry
            zz, ld = f.forward_and_log_det(zz)
            return (zz, total + ld), None

        (z, log_det), _ = jax.lax.scan(body, (z, jnp.zeros(z.shape[:-1], z.dtype)), self.steps)
        return z, log_det


def made_masks(dim: int, hidden: int, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MADE masks (Germain et al. 2015): ``(input->hidden [D, H], hidden->output [H, D])`` such that output ``d``
    depends only on the inputs before it in the order (``reverse``: the order ``D-1, ..., 0``)."""
    degrees_in = np.arange(1, dim + 1)
    if reverse:
        degrees_in = degrees_in[::-1]
    degrees_hidden = (np.arange(hidden) % max(dim - 1, 1)) + 1  # in 1..D-1
    m1 = (degrees_hidden[None, :] >= degrees_in[:, None]).astype(np.float32)
    m2 = (degrees_in[None, :] > degrees_hidden[:, None]).astype(np.float32)
    return m1, m2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IAF(Bijection):
    """One IAF step: a one-hidden-layer MADE of ``z`` plus the context ``h [B, C]``; weights are global."""

    w1: Array  # [D, H] (masked)
    wc: Array  # [C, H]
    b1: Array  # [H]
    wm: Array  # [H, D] (masked)
    ws: Array  # [H, D] (masked)
    bm: Array  # [D]
    bs: Array  # [D]
    h: Array  # [B, C]
    mask1: Array  # [D, H]
    mask2: Array  # [H, D]

    def forward_and_log_det(self, z: Array) -> tuple[Array, Array]:
        hidden = jax.nn.elu(z @ (self.w1 * self.mask1) + self.h @ self.wc + self.b1)  # [..., B, H]
        m = hidden @ (self.wm * self.mask2) + self.bm
        s = hidden @ (self.ws * self.mask2) + self.bs
        sigma = jax.nn.sigmoid(s)
        return sigma * z + (1.0 - sigma) * m, jnp.sum(jax.nn.log_sigmoid(s), axis=-1)


class _MADE(nnx.Module):
    """The weights of one IAF step's MADE (one hidden layer of ``width`` units; the context feeds it unmasked)."""

    def __init__(self, d: int, width: int, *, rngs: nnx.Rngs):
        lecun, small = nnx.initializers.lecun_normal(), nnx.initializers.normal(_FLOW_HEAD_SCALE)
        f32 = jnp.float32  # like nnx.Linear's parameters, also under jax_enable_x64
        self.w1 = nnx.Param(lecun(rngs.params(), (d, width), f32))
        self.wc = nnx.Param(lecun(rngs.params(), (width, width), f32))
        self.b1 = nnx.Param(jnp.zeros((width,), f32))
        self.wm = nnx.Param(small(rngs.params(), (width, d), f32))
        self.ws = nnx.Param(small(rngs.params(), (width, d), f32))
        self.bm = nnx.Param(jnp.zeros((d,), f32))
        self.bs = nnx.Param(jnp.full((d,), _FORGET_BIAS, f32))

    def bijection(self, context: Array, *, reverse: bool) -> IAF:
        d, width = self.w1.shape
        m1, m2 = made_masks(d, width, reverse=reverse)
        return IAF(self.w1[...], self.wc[...], self.b1[...], self.wm[...], self.ws[...], self.bm[...],
                   self.bs[...], context, jnp.asarray(m1), jnp.asarray(m2))


_FORGET_BIAS = 1.0  # IAF: sigma starts near sigmoid(1), so each step starts close to the identity
_FLOW_HEAD_SCALE = 0.01  # amortized flow parameters start small (near-identity flows, non-zero gradients)


def _params_per_step(flow: str, d: int, householder: int) -> int:
    return {"planar": 2 * d + 1, "radial": d + 2, "sylvester": 2 * d * d + d + householder * d}[flow]


class FlowEncoder(nnx.Module):
    """The MLP encoder ``prod(E) -> hidden... -> q(z|x)`` with a normalizing flow on the diagonal Gaussian.

    Args:
      event_shape: shape of one example.
      latent_dim: ``D``.
      hidden: the MLP widths.
      flow: ``planar``, ``radial``, ``sylvester`` or ``iaf``.
      steps: ``K``, the number of flow steps.
      activation: the MLP's activation.
      iaf_hidden: IAF: width of each MADE's hidden layer (and of the context vector).
      householder: Sylvester: Householder reflections per step (``Q``'s).
      log_scale_clamp: as for :class:`jaxvae.models.nets.MLPEncoder`.
    """

    def __init__(self, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (512, 256), *,
                 flow: str, steps: int, activation: str = "relu", iaf_hidden: int = 0, householder: int = 0,
                 log_scale_clamp: float | None = None, rngs: nnx.Rngs):
        if flow not in FLOWS:
            raise ConfigError(f"model.posterior={flow!r} is not a flow; choose one of: {', '.join(FLOWS)}.")
        if steps < 1:
            raise ConfigError(f"model.flow_steps must be >= 1 for model.posterior={flow}; got {steps}.")
        if not hidden:
            raise ConfigError("A flow posterior needs at least one hidden layer (model.hidden).")
        self.event_shape = tuple(event_shape)
        self.latent_dim, self.flow, self.steps = latent_dim, flow, steps
        self.householder = householder or min(latent_dim, 8)
        self.log_scale_clamp = log_scale_clamp or None
        self.activation = nets.get_activation(activation)
        self.trunk = nets.MLP([math.prod(self.event_shape), *hidden], activation=activation, rngs=rngs)
        self.gaussian = nnx.Linear(hidden[-1], 2 * latent_dim, rngs=rngs)
        small = nnx.initializers.normal(_FLOW_HEAD_SCALE)
        if flow == "iaf":
            width = iaf_hidden or 2 * latent_dim
            self.context = nnx.Linear(hidden[-1], width, rngs=rngs)
            self.made = nnx.List([_MADE(latent_dim, width, rngs=rngs) for _ in range(steps)])
        else:
            size = steps * _params_per_step(flow, latent_dim, self.householder)
            self.flow_head = nnx.Linear(hidden[-1], size, kernel_init=small, rngs=rngs)

    def _bijections(self, h: Array) -> tuple[Bijection, ...]:
        """The flow as one :class:`Scan` over its ``K`` steps (parameters stacked ``[K, ...]``)."""
        d, n = self.latent_dim, h.shape[0]
        if self.flow == "iaf":
            ctx = self.context(h)
            steps = [made.bijection(ctx, reverse=bool(k % 2)) for k, made in enumerate(self.made)]
            return (Scan(jax.tree.map(lambda *leaves: jnp.stack(leaves), *steps)),)
        raw = jnp.moveaxis(self.flow_head(h).reshape(n, self.steps, -1), 1, 0)  # [K, B, P]
        if self.flow == "planar":
            return (Scan(Planar(raw[..., :d], raw[..., d:2 * d], raw[..., 2 * d])),)
        if self.flow == "radial":
            return (Scan(Radial(raw[..., :d], raw[..., d], raw[..., d + 1])),)
        k = self.steps
        r1 = raw[..., :d * d].reshape(k, n, d, d)
        r2 = raw[..., d * d:2 * d * d].reshape(k, n, d, d)
        b = raw[..., 2 * d * d:2 * d * d + d]
        v = raw[..., 2 * d * d + d:].reshape(k, n, self.householder, d)
        # Householder vectors: the raw head plus fixed unit directions, so that none is zero at the start.
        offsets = jnp.stack([_householder_offset(self.householder, d, i) for i in range(k)])[:, None]
        return (Scan(Sylvester(r1, r2, b, v + offsets.astype(v.dtype))),)

    def __call__(self, x: Array) -> TransformedDistribution:
        x, batch_shape = nets._flatten_batch(x, len(self.event_shape))
        if len(batch_shape) != 1:
            raise ValueError(f"FlowEncoder encodes a batch [B, *E]; got leading shape {batch_shape}.")
        h = self.activation(self.trunk(x.reshape(x.shape[0], -1)))
        base = DiagonalGaussian.from_raw(self.gaussian(h), log_scale_clamp=self.log_scale_clamp)
        return TransformedDistribution(base, self._bijections(h))


def _householder_offset(householder: int, d: int, step: int) -> Array:
    """Fixed, distinct unit-scale directions (a deterministic function of the shapes) added to the raw Householder
    vectors."""
    rows = np.random.default_rng(1000 + step).normal(size=(householder, d)).astype(np.float32)
    return jnp.asarray(rows / np.linalg.norm(rows, axis=-1, keepdims=True))
