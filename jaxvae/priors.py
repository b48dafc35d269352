"""Priors p(z) over the latent space, as Flax NNX modules (learnable ones hold ``nnx.Param``).

Every prior has ``log_prob(z, *, encoder=None) -> [...]`` for ``z`` ``[..., D]`` and
``sample(key, n, *, encoder=None) -> [n, D]``. Only :class:`VampPrior` uses ``encoder`` (its mixture components
are the encoder's posteriors of learned pseudo-inputs); the others ignore it. ``as_diagonal_gaussian()``
returns the prior as a :class:`~jaxvae.posteriors.DiagonalGaussian` when it is one, so the KL can be computed in
closed form, and ``None`` otherwise (the KL is then estimated by Monte Carlo).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.posteriors import DiagonalGaussian, gaussian_log_prob_per_dim

Array = jax.Array
Encoder = Callable[[Array], DiagonalGaussian]


class StandardNormal(nnx.Module):
    r""":math:`p(z) = \mathcal{N}(0, I_D)`, the prior of Kingma & Welling (2014). No parameters."""

    def __init__(self, latent_dim: int):
        self.latent_dim = latent_dim

    def as_diagonal_gaussian(self) -> DiagonalGaussian:
        zeros = jnp.zeros((self.latent_dim,), jnp.float32)
        return DiagonalGaussian(zeros, zeros)

    def log_prob(self, z: Array, *, encoder: Encoder | None = None) -> Array:
        del encoder
        return jnp.sum(gaussian_log_prob_per_dim(z, 0.0, 0.0), axis=-1)

    def sample(self, key: Array, n: int, *, encoder: Encoder | None = None) -> Array:
        del encoder
        return jax.random.normal(key, (n, self.latent_dim))


class LearnedGaussian(nnx.Module):
    r""":math:`p(z) = \mathcal{N}(\mu, \mathrm{diag}(\sigma^2))` with learned :math:`\mu` and :math:`\log\sigma`.

    Initialised at the standard normal.
    """

    def __init__(self, latent_dim: int, *, rngs: nnx.Rngs | None = None):
        del rngs
        self.latent_dim = latent_dim
        self.loc = nnx.Param(jnp.zeros((latent_dim,), jnp.float32))
        self.log_scale = nnx.Param(jnp.zeros((latent_dim,), jnp.float32))

    def as_diagonal_gaussian(self) -> DiagonalGaussian:
        return DiagonalGaussian(self.loc[...], self.log_scale[...])

    def log_prob(self, z: Array, *, encoder: Encoder | None = None) -> Array:
        del encoder
        return self.as_diagonal_gaussian().log_prob(z)

    def sample(self, key: Array, n: int, *, encoder: Encoder | None = None) -> Array:
        del encoder
        return self.as_diagonal_gaussian().sample(key, n)


def _mixture_log_prob(z: Array, log_weights: Array, components: DiagonalGaussian) -> Array:
    r""":math:`\log \sum_k \pi_k \, \mathcal{N}(z; \mu_k, \sigma_k^2)`, stable in log space.

    ``z`` is ``[..., D]``, ``log_weights`` ``[K]`` (normalised), ``components`` ``[K, D]``; returns ``[...]``.
    """
    log_comp = components.log_prob(z[..., None, :])  # [..., K]
    return jax.nn.logsumexp(log_comp + log_weights, axis=-1)


def _mixture_sample(key: Array, n: int, log_weights: Array, components: DiagonalGaussian) -> Array:
    k_key, z_key = jax.random.split(key)
    idx = jax.random.categorical(k_key, log_weights, shape=(n,))  # [n]
    chosen = DiagonalGaussian(components.loc[idx], components.log_scale[idx])  # [n, D]
    return chosen.sample(z_key)


class MixtureOfGaussians(nnx.Module):
    r"""A learnable mixture :math:`p(z) = \sum_{k=1}^K \pi_k \mathcal{N}(z; \mu_k, \mathrm{diag}(\sigma_k^2))`.

    Weights are a softmax of learned logits (initialised uniform), means are initialised from
    :math:`\mathcal{N}(0, I)` so the components start apart, scales at 1. See e.g. Dilokthanakul et al. (2016),
    "Deep Unsupervised Clustering with Gaussian Mixture Variational Autoencoders".
    """

    def __init__(self, latent_dim: int, num_components: int = 10, *, rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.logits = nnx.Param(jnp.zeros((num_components,), jnp.float32))
        self.loc = nnx.Param(jax.random.normal(rngs.params(), (num_components, latent_dim)))
        self.log_scale = nnx.Param(jnp.zeros((num_components, latent_dim), jnp.float32))

    def as_diagonal_gaussian(self) -> None:
        return None

    def _parts(self) -> tuple[Array, DiagonalGaussian]:
        return jax.nn.log_softmax(self.logits[...]), DiagonalGaussian(self.loc[...], self.log_scale[...])

    def log_prob(self, z: Array, *, encoder: Encoder | None = None) -> Array:
        del encoder
        return _mixture_log_prob(z, *self._parts())

    def sample(self, key: Array, n: int, *, encoder: Encoder | None = None) -> Array:
        del encoder
        return _mixture_sample(key, n, *self._parts())


class VampPrior(nnx.Module):
    r"""The VampPrior (Tomczak & Welling, 2018): a uniform mixture of the posteriors of K learned pseudo-inputs.

    .. math:: p(z) = \frac1K \sum_{k=1}^K q(z \mid u_k)

    The pseudo-inputs :math:`u_k` have the data's event shape and are learned with the rest of the model.
    ``log_prob`` and ``sample`` need the encoder (``encoder=vae.encoder``); the :class:`~jaxvae.model.VAE`
    passes it.

    Args:
      num_pseudo_inputs: K.
      event_shape: shape of one data example, e.g. ``(28, 28, 1)``.
      init_scale: pseudo-inputs start at ``0.5 + init_scale * N(0, 1)`` (data in [0, 1] is assumed centred
        there; pass ``init_mean`` for other data).
    """

    def __init__(
        self,
        latent_dim: int,
        num_pseudo_inputs: int,
        event_shape: tuple[int, ...],
        *,
        init_mean: float = 0.5,
        init_scale: float = 0.05,
        rngs: nnx.Rngs,
    ):
        self.latent_dim = latent_dim
        self.num_pseudo_inputs = num_pseudo_inputs
        noise = jax.random.normal(rngs.params(), (num_pseudo_inputs, *event_shape))
        self.pseudo_inputs = nnx.Param(init_mean + init_scale * noise)

    def as_diagonal_gaussian(self) -> None:
        return None

    def _parts(self, encoder: Encoder | None) -> tuple[Array, DiagonalGaussian]:
        if encoder is None:
            raise ValueError("VampPrior needs the encoder: call log_prob/sample with encoder=vae.encoder.")
        components = encoder(self.pseudo_inputs[...])  # [K, D]
        log_weights = jnp.full((self.num_pseudo_inputs,), -math.log(self.num_pseudo_inputs))
        return log_weights, components

    def log_prob(self, z: Array, *, encoder: Encoder | None = None) -> Array:
        return _mixture_log_prob(z, *self._parts(encoder))

    def sample(self, key: Array, n: int, *, encoder: Encoder | None = None) -> Array:
        return _mixture_sample(key, n, *self._parts(encoder))
