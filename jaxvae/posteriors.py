"""The approximate posterior q(z|x): a diagonal Gaussian with reparameterized sampling.

Shapes: ``loc`` and ``log_scale`` are ``[..., D]`` (usually ``[B, D]``); a draw of ``k`` samples is
``[k, ..., D]``; log densities sum over the last axis and are ``[...]`` (or ``[k, ...]``).

Reference: Kingma & Welling (2014), "Auto-Encoding Variational Bayes", Section 2.4 (reparameterization).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob_per_dim(z: Array, loc: Array, log_scale: Array) -> Array:
    r"""Elementwise log density of :math:`\mathcal{N}(z; \mu, \sigma^2)` with :math:`\sigma = e^{s}`.

    .. math:: \log \mathcal{N}(z; \mu, \sigma^2) = -\tfrac12 \log 2\pi - s - \tfrac12 ((z - \mu) / \sigma)^2

    All arguments broadcast against each other; the result has their broadcast shape.
    """
    return -_HALF_LOG_2PI - log_scale - 0.5 * jnp.square((z - loc) * jnp.exp(-log_scale))


class DiagonalGaussian(NamedTuple):
    r"""A diagonal Gaussian :math:`q(z) = \prod_d \mathcal{N}(z_d; \mu_d, \sigma_d^2)`, a pytree.

    Attributes:
      loc: the means :math:`\mu`, ``[..., D]``.
      log_scale: :math:`\log \sigma`, ``[..., D]`` (the log standard deviation, i.e. half the log variance).
    """

    loc: Array
    log_scale: Array

    @classmethod
    def from_raw(cls, raw: Array) -> DiagonalGaussian:
        """Splits an encoder output ``[..., 2D]`` into ``loc = raw[..., :D]``, ``log_scale = raw[..., D:]``."""
        loc, log_scale = jnp.split(raw, 2, axis=-1)
        return cls(loc, log_scale)

    @property
    def scale(self) -> Array:
        """The standard deviations :math:`\\sigma`, ``[..., D]``."""
        return jnp.exp(self.log_scale)

    @property
    def variance(self) -> Array:
        return jnp.exp(2.0 * self.log_scale)

    @property
    def latent_dim(self) -> int:
        return self.loc.shape[-1]

    def sample(self, key: Array, num_samples: int | None = None) -> Array:
        r"""Reparameterized draw :math:`z = \mu + \sigma \odot \epsilon`, :math:`\epsilon \sim \mathcal{N}(0, I)`.

        Args:
          key: a PRNG key.
          num_samples: ``None`` for one draw of shape ``[..., D]``; an int ``k`` for ``[k, ..., D]``.

        Gradients flow to ``loc`` and ``log_scale`` (the reparameterization trick).
        """
        shape = self.loc.shape if num_samples is None else (num_samples, *self.loc.shape)
        eps = jax.random.normal(key, shape, dtype=self.loc.dtype)
        return self.loc + self.scale * eps

    def log_prob_per_dim(self, z: Array) -> Array:
        """Per-dimension log density, ``[..., D]`` (``z`` may carry extra leading sample axes)."""
        return gaussian_log_prob_per_dim(z, self.loc, self.log_scale)

    def log_prob(self, z: Array) -> Array:
        r""":math:`\log q(z) = \sum_d \log \mathcal{N}(z_d; \mu_d, \sigma_d^2)`, ``[...]`` for ``z [..., D]``."""
        return jnp.sum(self.log_prob_per_dim(z), axis=-1)

    def entropy_per_dim(self) -> Array:
        r"""Per-dimension differential entropy :math:`\tfrac12 \log(2\pi e) + \log\sigma_d`, ``[..., D]``."""
        return _HALF_LOG_2PI + 0.5 + self.log_scale

    def entropy(self) -> Array:
        """Differential entropy in nats, ``[...]``."""
        return jnp.sum(self.entropy_per_dim(), axis=-1)
