r"""One distribution interface for posteriors and priors (after distrax's ``Distribution``).

A :class:`Distribution` is an immutable pytree of arrays (it passes through ``jax.jit``, ``jax.vmap`` and
``jax.lax.scan``) with *batch* dimensions first and *event* dimensions last: a posterior of a batch of
``B`` examples over ``D`` latents has ``batch_shape == (B,)`` and ``event_shape == (D,)``.

==========================================  =====================================================================
``sample(key, n=None)``                     ``[*batch, *event]`` for ``n=None``, else ``[n, *batch, *event]``
``log_prob(z)``                             ``[..., *batch]`` for ``z [..., *batch, *event]``
``sample_and_log_prob(key, n=None)``        both at once; a flow returns :math:`\log q` with its log-determinant
``mean()``, ``mode()``, ``variance()``      ``[*batch, *event]`` where closed-form (else ``NotImplementedError``)
``entropy()``                               ``[*batch]`` where closed-form
==========================================  =====================================================================

KL divergences are registered per pair of types with :func:`register_kl`; :func:`kl_divergence` uses the
registered closed form and otherwise a Monte Carlo estimate (which needs a key). Implementations here:

* :class:`DiagonalGaussian` :math:`\prod_d \mathcal{N}(z_d; \mu_d, \sigma_d^2)`, the posterior of the
  single-layer VAE and the form of the standard-normal and learned-Gaussian priors;
* :class:`Mixture` :math:`\sum_k \pi_k\, c_k(z)` of a batch of ``K`` components of any type (the
  mixture-of-Gaussians prior and the VampPrior).

References: Kingma & Welling (2014), Section 2.4 (reparameterization); the distrax API (DeepMind, 2021).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Distribution(abc.ABC):
    """The interface every posterior and prior distribution implements (see the module docstring)."""

    @property
    @abc.abstractmethod
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one draw, e.g. ``(D,)``."""

    @property
    @abc.abstractmethod
    def batch_shape(self) -> tuple[int, ...]:
        """Shape of the independent distributions held, e.g. ``(B,)``; ``()`` for one."""

    @abc.abstractmethod
    def sample(self, key: Array, num_samples: int | None = None) -> Array:
        """A draw ``[*batch, *event]`` (``num_samples=None``) or ``num_samples`` draws ``[n, *batch, *event]``;
        reparameterized where the distribution allows it (gradients flow to its parameters)."""

    @abc.abstractmethod
    def log_prob(self, z: Array) -> Array:
        """The log density, summed over the event dimensions: ``[..., *batch]`` for ``z [..., *batch, *event]``."""

    def sample_and_log_prob(self, key: Array, num_samples: int | None = None) -> tuple[Array, Array]:
        """``(z, log_prob(z))`` in one call. Flows override it: their density comes with the sample (the
        log-determinant of the transformation), not from inverting it."""
        z = self.sample(key, num_samples)
        return z, self.log_prob(z)

    def mean(self) -> Array:
        """:math:`\\mathbb{E}[z]`, ``[*batch, *event]``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form mean.")

    def mode(self) -> Array:
        """The most likely point, ``[*batch, *event]``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form mode.")

    def variance(self) -> Array:
        """Per-coordinate variance, ``[*batch, *event]``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form variance.")

    def entropy(self) -> Array:
        """Differential entropy in nats, ``[*batch]``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form entropy.")


def gaussian_log_prob_per_dim(z: Array, loc: Array, log_scale: Array) -> Array:
    r"""Elementwise log density of :math:`\mathcal{N}(z; \mu, \sigma^2)` with :math:`\sigma = e^{s}`.

    .. math:: \log \mathcal{N}(z; \mu, \sigma^2) = -\tfrac12 \log 2\pi - s - \tfrac12 ((z - \mu) / \sigma)^2

    All arguments broadcast against each other; the result has their broadcast shape.
    """
    return -_HALF_LOG_2PI - log_scale - 0.5 * jnp.square((z - loc) * jnp.exp(-log_scale))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DiagonalGaussian(Distribution):
    r"""A diagonal Gaussian :math:`q(z) = \prod_d \mathcal{N}(z_d; \mu_d, \sigma_d^2)`, a pytree.

    Attributes:
      loc: the means :math:`\mu`, ``[*batch, D]``.
      log_scale: :math:`\log \sigma`, ``[*batch, D]`` (the log standard deviation, i.e. half the log variance).
    """

    loc: Array
    log_scale: Array

    @classmethod
    def from_raw(cls, raw: Array, *, log_scale_clamp: float | None = None) -> DiagonalGaussian:
        """Splits an encoder output ``[..., 2D]`` into ``loc = raw[..., :D]``, ``log_scale = raw[..., D:]``.

        ``log_scale_clamp`` ``c``: the soft clamp of NVAE (Vahdat & Kautz 2020), ``log_scale = c tanh(raw / c)``,
        which keeps the scales in ``[e^-c, e^c]`` with a gradient everywhere (NVAE uses ``c = 5``).
        """
        loc, log_scale = jnp.split(raw, 2, axis=-1)
        if log_scale_clamp:
            log_scale = log_scale_clamp * jnp.tanh(log_scale / log_scale_clamp)
        return cls(loc, log_scale)

    @classmethod
    def standard(cls, latent_dim: int, dtype=None) -> DiagonalGaussian:
        r""":math:`\mathcal{N}(0, I_D)`, ``batch_shape == ()``.

        ``dtype=None`` (default): weakly typed zeros (like a Python ``0.0``), so the distribution takes the dtype
        of what it meets: ``log_prob`` of float64 latents is float64 (exact), of float32 latents float32, and the
        KL to a posterior has the posterior's dtype; :meth:`sample` draws in JAX's default float dtype."""
        zeros = jnp.full((latent_dim,), 0.0) if dtype is None else jnp.zeros((latent_dim,), dtype)
        return cls(zeros, zeros)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.loc)[-1:])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.log_scale))[:-1])

    @property
    def scale(self) -> Array:
        """The standard deviations :math:`\\sigma`, ``[*batch, D]``."""
        return jnp.exp(self.log_scale)

    @property
    def latent_dim(self) -> int:
        return jnp.shape(self.loc)[-1]

    def sample(self, key: Array, num_samples: int | None = None) -> Array:
        r"""Reparameterized draw :math:`z = \mu + \sigma \odot \epsilon`, :math:`\epsilon \sim \mathcal{N}(0, 1)`
        elementwise."""
        shape = jnp.shape(self.loc) if num_samples is None else (num_samples, *jnp.shape(self.loc))
        eps = jax.random.normal(key, shape, dtype=jnp.result_type(self.loc))
        return self.loc + self.scale * eps

    def log_prob_per_dim(self, z: Array) -> Array:
        """Per-dimension log density, ``[..., D]`` (``z`` may carry extra leading sample axes)."""
        return gaussian_log_prob_per_dim(z, self.loc, self.log_scale)

    def log_prob(self, z: Array) -> Array:
        r""":math:`\log q(z) = \sum_d \log \mathcal{N}(z_d; \mu_d, \sigma_d^2)`, ``[...]`` for ``z [..., D]``."""
        return jnp.sum(self.log_prob_per_dim(z), axis=-1)

    def mean(self) -> Array:
        return self.loc

    def mode(self) -> Array:
        return self.loc

    def variance(self) -> Array:
        return jnp.exp(2.0 * self.log_scale)

    def entropy_per_dim(self) -> Array:
        r"""Per-dimension differential entropy :math:`\tfrac12 \log(2\pi e) + \log\sigma_d`, ``[..., D]``."""
        return _HALF_LOG_2PI + 0.5 + self.log_scale

    def entropy(self) -> Array:
        return jnp.sum(self.entropy_per_dim(), axis=-1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Mixture(Distribution):
    r"""A finite mixture :math:`p(z) = \sum_{k=1}^K \pi_k\, c_k(z)`, ``batch_shape == ()``.

    Attributes:
      log_weights: :math:`\log \pi_k`, ``[K]`` (normalised).
      components: a :class:`Distribution` with ``batch_shape == (K,)`` whose ``log_prob`` broadcasts
        (``z [..., 1, *event] -> [..., K]``), e.g. a :class:`DiagonalGaussian` with ``loc [K, D]``.
    """

    log_weights: Array
    components: Distribution

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.components.event_shape

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def num_components(self) -> int:
        return jnp.shape(self.log_weights)[0]

    def log_prob(self, z: Array) -> Array:
        r""":math:`\log \sum_k \pi_k c_k(z)`, stable in log space; ``[...]`` for ``z [..., *event]``."""
        expand = z[(..., None) + (slice(None),) * len(self.event_shape)]
        return jax.nn.logsumexp(self.components.log_prob(expand) + self.log_weights, axis=-1)

    def sample(self, key: Array, num_samples: int | None = None) -> Array:
        """Ancestral: a component index :math:`k \\sim \\pi`, then a draw of :math:`c_k`."""
        k_key, z_key = jax.random.split(key)
        shape = (1,) if num_samples is None else (num_samples,)
        idx = jax.random.categorical(k_key, self.log_weights, shape=shape)  # [n]
        chosen = jax.tree.map(lambda a: a[idx], self.components)  # batch [n]
        z = chosen.sample(z_key)
        return z[0] if num_samples is None else z

    def mean(self) -> Array:
        w = jnp.exp(self.log_weights)[:, None]
        return jnp.sum(w * self.components.mean(), axis=0)

    def variance(self) -> Array:
        r"""Marginal variance :math:`\sum_k \pi_k (\sigma_k^2 + \mu_k^2) - m^2` per coordinate."""
        w = jnp.exp(self.log_weights)[:, None]
        means = self.components.mean()
        mean = jnp.sum(w * means, axis=0)
        second = jnp.sum(w * (self.components.variance() + jnp.square(means)), axis=0)
        return jnp.maximum(second - jnp.square(mean), 0.0)


class Bijection(abc.ABC):
    r"""One invertible step :math:`z \mapsto f(z)` of a normalizing flow, a pytree (its parameters may be per
    example, ``[B, ...]``, and broadcast over leading sample axes)."""

    @abc.abstractmethod
    def forward_and_log_det(self, z: Array) -> tuple[Array, Array]:
        """``(f(z) [..., B, D], log |det df/dz| [..., B])``."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TransformedDistribution(Distribution):
    r"""A normalizing flow (Rezende & Mohamed 2015): :math:`z_K = f_K \circ \dots \circ f_1(z_0)`,
    :math:`z_0 \sim` ``base``, with the density by change of variables

    .. math:: \log q_K(z_K) = \log q_0(z_0) - \sum_{k=1}^K \log \left|\det \frac{\partial f_k}{\partial
              z_{k-1}}\right|.

    The density is known only along a sample (:meth:`sample_and_log_prob`); :meth:`log_prob` of a given point
    would need the inverse, which these flows do not have in closed form, and raises. Analyses that need Gaussian
    statistics (posterior means for active units, the ex-post mixture, outlier scores) use ``base``'s.

    Attributes:
      base: the diagonal Gaussian :math:`q_0`, ``batch [B]``, ``event [D]``.
      bijections: the steps :math:`f_1, \dots, f_K` (a tuple of :class:`Bijection` pytrees).
    """

    base: DiagonalGaussian
    bijections: tuple

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.base.event_shape

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.base.batch_shape

    def transform(self, z0: Array) -> tuple[Array, Array]:
        """``(z_K, sum_k log|det|)`` for base points ``z0 [..., B, D]``."""
        log_det = jnp.zeros(z0.shape[:-1], z0.dtype)
        z = z0
        for f in self.bijections:
            z, ld = f.forward_and_log_det(z)
            log_det = log_det + ld
        return z, log_det

    def sample_and_log_prob(self, key: Array, num_samples: int | None = None) -> tuple[Array, Array]:
        z0 = self.base.sample(key, num_samples)
        z, log_det = self.transform(z0)
        return z, self.base.log_prob(z0) - log_det

    def sample(self, key: Array, num_samples: int | None = None) -> Array:
        return self.sample_and_log_prob(key, num_samples)[0]

    def log_prob(self, z: Array) -> Array:
        raise NotImplementedError(
            "a normalizing-flow posterior has its density only along its own samples (sample_and_log_prob); "
            "log_prob at a given point needs the flow's inverse, which planar, radial, Sylvester and IAF flows do "
            "not have in closed form")


# ------------------------------------------------------------------------------------------------ KL registry

KLFn = Callable[[Distribution, Distribution], Array]
_KL_REGISTRY: dict[tuple[type, type], KLFn] = {}


def register_kl(type_q: type, type_p: type) -> Callable[[KLFn], KLFn]:
    """Decorator registering the closed-form per-coordinate KL ``fn(q, p) -> [*batch, *event]`` for a pair of
    types (the registry is filled at import time, never inside traced code)::

        @register_kl(MyPosterior, DiagonalGaussian)
        def _kl(q, p): ...
    """

    def decorate(fn: KLFn) -> KLFn:
        _KL_REGISTRY[(type_q, type_p)] = fn
        return fn

    return decorate


def _lookup(q: Distribution, p: Distribution) -> KLFn | None:
    for tq in type(q).__mro__:
        for tp in type(p).__mro__:
            if (tq, tp) in _KL_REGISTRY:
                return _KL_REGISTRY[(tq, tp)]
    return None


def has_analytic_kl(q: Distribution, p: Distribution) -> bool:
    """Whether a closed-form KL is registered for the types of ``q`` and ``p``."""
    return _lookup(q, p) is not None


def analytic_kl_per_dim(q: Distribution, p: Distribution) -> Array | None:
    """The registered closed-form KL per event coordinate ``[*batch, *event]``, or ``None`` when the pair has
    none (e.g. a mixture prior)."""
    fn = _lookup(q, p)
    return None if fn is None else fn(q, p)


def kl_divergence(q: Distribution, p: Distribution, *, key: Array | None = None,
                  num_samples: int = 1) -> Array:
    r""":math:`\mathrm{KL}(q \,\|\, p)`, ``[*batch]``: closed form where registered, else the Monte Carlo
    estimate :math:`\frac1K \sum_k \log q(z_k) - \log p(z_k)`, :math:`z_k \sim q` (needs ``key``; unbiased, can
    be negative for few samples)."""
    per_dim = analytic_kl_per_dim(q, p)
    if per_dim is not None:
        return jnp.sum(per_dim, axis=tuple(range(-len(q.event_shape), 0)))
    if key is None:
        raise ValueError(f"No closed-form KL is registered for ({type(q).__name__}, {type(p).__name__}); pass "
                         "key= (and num_samples=) for the Monte Carlo estimate.")
    z, log_q = q.sample_and_log_prob(key, num_samples)
    return jnp.mean(log_q - p.log_prob(z), axis=0)
