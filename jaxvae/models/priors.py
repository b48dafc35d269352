r"""Priors p(z) over the latent space, as Flax NNX modules that hold their parameters (if any).

A :class:`Prior` is a module whose call returns the prior as a :class:`~jaxvae.distributions.Distribution`
(``batch_shape == ()``, ``event_shape == (D,)``), so everything downstream (objectives, the KL registry,
diagnostics, samplers) works from one interface:

* :class:`StandardNormal` and :class:`LearnedGaussian` give a :class:`~jaxvae.distributions.DiagonalGaussian`
  (the KL to a diagonal Gaussian posterior is then analytic, per dimension);
* :class:`MixtureOfGaussians` and :class:`VampPrior` give a :class:`~jaxvae.distributions.Mixture` (KL by Monte
  Carlo).

A prior *defined through the encoder* (the VampPrior, whose components are the posteriors of learned
pseudo-inputs) receives the model's ``encode`` function in the call; the others ignore it. The model calls its
prior once per forward pass: ``p = self.prior(self.encode)``.

To add a prior, subclass :class:`Prior`, build its parameters in ``__init__(..., rngs)`` and return a
:class:`~jaxvae.distributions.Distribution` from ``__call__``; check it with :func:`jaxvae.testing.check_prior`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.distributions.base import DiagonalGaussian, Distribution, Mixture

Array = jax.Array
Encode = Callable[[Array], Distribution]


class Prior(nnx.Module, abc.ABC):
    """Base class of priors: ``prior(encode=None) -> Distribution`` over ``z [D]``.

    Attributes:
      latent_dim: D.
    """

    latent_dim: int

    @abc.abstractmethod
    def __call__(self, encode: Encode | None = None) -> Distribution:
        """The prior distribution. ``encode`` (``x -> q(z|x)``) is the model's encoder, for priors defined
        through it."""


class StandardNormal(Prior):
    r""":math:`p(z) = \mathcal{N}(0, I_D)`, the prior of Kingma & Welling (2014). No parameters."""

    def __init__(self, latent_dim: int):
        self.latent_dim = latent_dim

    def __call__(self, encode: Encode | None = None) -> DiagonalGaussian:
        del encode
        return DiagonalGaussian.standard(self.latent_dim)


class LearnedGaussian(Prior):
    r""":math:`p(z) = \mathcal{N}(\mu, \mathrm{diag}(\sigma^2))` with learned :math:`\mu` and :math:`\log\sigma`.

    Initialised at the standard normal.
    """

    def __init__(self, latent_dim: int, *, rngs: nnx.Rngs | None = None):
        del rngs
        self.latent_dim = latent_dim
        self.loc = nnx.Param(jnp.zeros((latent_dim,), jnp.float32))
        self.log_scale = nnx.Param(jnp.zeros((latent_dim,), jnp.float32))

    def __call__(self, encode: Encode | None = None) -> DiagonalGaussian:
        del encode
        return DiagonalGaussian(self.loc[...], self.log_scale[...])


class MixtureOfGaussians(Prior):
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

    def __call__(self, encode: Encode | None = None) -> Mixture:
        del encode
        return Mixture(jax.nn.log_softmax(self.logits[...]), DiagonalGaussian(self.loc[...], self.log_scale[...]))


class VampPrior(Prior):
    r"""The VampPrior (Tomczak & Welling, 2018): a uniform mixture of the posteriors of K learned pseudo-inputs.

    .. math:: p(z) = \frac1K \sum_{k=1}^K q(z \mid u_k)

    The pseudo-inputs :math:`u_k` have the data's event shape and are learned with the rest of the model. The
    call needs the model's encoder (``prior(encode)``; :class:`~jaxvae.models.protocol.VAE` passes it).

    Args:
      num_pseudo_inputs: K.
      event_shape: shape of one data example, e.g. ``(28, 28, 1)``.
      init_scale: pseudo-inputs start at ``init_mean + init_scale * N(0, 1)`` (data in [0, 1] is assumed centred
        at 0.5; pass ``init_mean`` for other data).
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

    def __call__(self, encode: Encode | None = None) -> Mixture:
        if encode is None:
            raise ValueError("VampPrior is defined through the encoder: call it as prior(encode) with the model's "
                             "encoder (jv.VAE does this).")
        components = encode(self.pseudo_inputs[...])  # batch [K]
        log_weights = jnp.full((self.num_pseudo_inputs,), -math.log(self.num_pseudo_inputs))
        return Mixture(log_weights, components)
