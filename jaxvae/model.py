"""The VAE: encoder + decoder + likelihood + prior, and its pure-function view.

Two layers, following the Flax NNX performance guide:

* :class:`VAE` is an ``nnx.Module`` that owns the encoder, decoder and prior (built in ``__init__`` with
  ``rngs``); use it interactively like any NNX module.
* :class:`PureVAE` holds the ``GraphDef`` from ONE ``nnx.split`` and exposes pure functions of
  ``params`` (a nested ``dict`` of arrays, the output of ``nnx.to_pure_dict``). They merge the module inside
  the traced function, so they work under plain ``jax.jit``, ``jax.grad`` and ``jax.vmap``. This is what the
  objectives, training and evaluation code use.

Example::

    vae = jv.VAE.mlp(event_shape=(784,), latent_dim=16, likelihood=jv.likelihoods.Bernoulli(),
                     rngs=nnx.Rngs(0))
    model, params = jv.split(vae)
    q = jax.jit(model.encode)(params, x)          # DiagonalGaussian, [B, D]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae import kl as kl_lib
from jaxvae import nets
from jaxvae import priors as priors_lib
from jaxvae.posteriors import DiagonalGaussian

Array = jax.Array
Params = dict[str, Any]


class VAE(nnx.Module):
    """A VAE as an NNX module.

    Args:
      encoder: module ``x [..., *E] -> DiagonalGaussian [..., D]``.
      decoder: module ``z [..., D] -> out [..., *E, P]`` with ``P = likelihood.num_outputs``.
      likelihood: a :class:`jaxvae.likelihoods.Likelihood` (static, not learned; learned global scalars
        live in the decoder).
      prior: a prior module from :mod:`jaxvae.priors`.
      event_shape: shape of one example.
    """

    def __init__(self, encoder: nnx.Module, decoder: nnx.Module, likelihood: Any, prior: nnx.Module,
                 event_shape: Sequence[int]):
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior
        self.event_shape = tuple(event_shape)
        self.latent_dim = prior.latent_dim

    @classmethod
    def mlp(cls, event_shape: Sequence[int], latent_dim: int, likelihood: Any, *,
            hidden: Sequence[int] = (512, 256), activation: str = "relu", prior: nnx.Module | None = None,
            rngs: nnx.Rngs) -> VAE:
        """MLP encoder ``prod(E) -> hidden -> 2D`` and the mirrored decoder; standard normal prior by default."""
        encoder = nets.MLPEncoder(event_shape, latent_dim, hidden, activation=activation, rngs=rngs)
        decoder = nets.MLPDecoder(
            latent_dim, event_shape, tuple(reversed(hidden)), num_outputs=likelihood.num_outputs,
            num_global_outputs=likelihood.num_global_outputs, activation=activation, rngs=rngs)
        return cls(encoder, decoder, likelihood, prior or priors_lib.StandardNormal(latent_dim), event_shape)

    @classmethod
    def conv(cls, event_shape: Sequence[int], latent_dim: int, likelihood: Any, *,
             channels: Sequence[int] = (32, 64), hidden: int = 256, activation: str = "relu",
             conv_impl: str = "auto", prior: nnx.Module | None = None, rngs: nnx.Rngs) -> VAE:
        """Convolutional encoder/decoder for ``(H, W, C)`` images with H, W divisible by 4.

        ``conv_impl``: ``auto`` (matmul-based convolutions on CPU, native ones on GPU/TPU), ``xla`` or ``matmul``;
        see :mod:`jaxvae.convops`. It changes the program, not the parameters."""
        encoder = nets.ConvEncoder(event_shape, latent_dim, channels, hidden, activation=activation,
                                   conv_impl=conv_impl, rngs=rngs)
        decoder = nets.ConvDecoder(
            latent_dim, event_shape, tuple(reversed(channels)), hidden, num_outputs=likelihood.num_outputs,
            num_global_outputs=likelihood.num_global_outputs, activation=activation, conv_impl=conv_impl,
            rngs=rngs)
        return cls(encoder, decoder, likelihood, prior or priors_lib.StandardNormal(latent_dim), event_shape)

    def encode(self, x: Array) -> DiagonalGaussian:
        return self.encoder(x)

    def decode(self, z: Array) -> Array:
        return self.decoder(z)

    def prior_log_prob(self, z: Array) -> Array:
        return self.prior.log_prob(z, encoder=self.encoder)

    def prior_sample(self, key: Array, n: int) -> Array:
        return self.prior.sample(key, n, encoder=self.encoder)

    def kl_per_dim(self, q: DiagonalGaussian) -> Array | None:
        """Analytic per-dimension KL to the prior ``[..., D]`` when the prior is a diagonal Gaussian, else None."""
        p = self.prior.as_diagonal_gaussian()
        return None if p is None else kl_lib.kl_diagonal_gaussians_per_dim(q, p)


class Forward(NamedTuple):
    """One stochastic pass through the model for a batch, ``K`` posterior samples per example.

    Attributes:
      q: the posterior, ``[B, D]``.
      z: posterior samples, ``[K, B, D]``.
      decoder_out: raw likelihood parameters, ``[K, B, *E, P]``.
      log_px_z: :math:`\\log p(x \\mid z_k)`, ``[K, B]``.
      log_qz_x: :math:`\\log q(z_k \\mid x)`, ``[K, B]``.
      log_pz: :math:`\\log p(z_k)`, ``[K, B]``.
      kl_per_dim: analytic KL per dimension ``[B, D]`` when the prior allows it, else ``None``.
    """

    q: DiagonalGaussian
    z: Array
    decoder_out: Array
    log_px_z: Array
    log_qz_x: Array
    log_pz: Array
    kl_per_dim: Array | None


@dataclasses.dataclass(frozen=True)
class PureVAE:
    """Pure functions of ``params`` for one VAE architecture (hashable; safe to close over in ``jax.jit``).

    Build it with :func:`split` from a module, or with :meth:`from_builder` from a function
    ``rngs -> VAE`` (then :meth:`init` creates fresh parameters from a key, e.g. inside ``jax.jit`` with
    ``out_shardings``).
    """

    graphdef: nnx.GraphDef
    likelihood: Any
    event_shape: tuple[int, ...]
    latent_dim: int
    builder: Callable[[nnx.Rngs], VAE] | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def from_builder(cls, builder: Callable[[nnx.Rngs], VAE]) -> PureVAE:
        """Traces ``builder`` abstractly (no FLOPs, no memory) to get the graph definition."""
        abstract = nnx.eval_shape(lambda: builder(nnx.Rngs(0)))
        graphdef, _ = nnx.split(abstract)
        return cls(graphdef, abstract.likelihood, abstract.event_shape, abstract.latent_dim, builder)

    def init(self, key: Array) -> Params:
        """Fresh parameters from ``key`` (a pure function of the key; jit it to control placement)."""
        if self.builder is None:
            raise ValueError("PureVAE.init needs a builder: create the PureVAE with PureVAE.from_builder.")
        _, state = nnx.split(self.builder(nnx.Rngs(params=key)))
        return nnx.to_pure_dict(state)

    def abstract_params(self) -> Params:
        """Shapes and dtypes of the parameters (``jax.ShapeDtypeStruct`` leaves), computed without FLOPs."""
        return jax.eval_shape(self.init, jax.random.key(0))

    def merge(self, params: Params) -> VAE:
        """The NNX module for ``params`` (inside a traced function this is free)."""
        return nnx.merge(self.graphdef, params)

    def encode(self, params: Params, x: Array) -> DiagonalGaussian:
        """``x [..., *E] -> q(z|x) [..., D]``."""
        return self.merge(params).encode(x)

    def decode(self, params: Params, z: Array) -> Array:
        """``z [..., D] -> out [..., *E, P]`` (raw likelihood parameters)."""
        return self.merge(params).decode(z)

    def decode_mean(self, params: Params, z: Array) -> Array:
        """The likelihood's mean for latents ``z [..., D]``, ``[..., *E]``: what reconstruction images show."""
        return self.likelihood.mean(self.decode(params, z))

    def reconstruct(self, params: Params, x: Array) -> Array:
        """Decoder mean at the posterior mean, ``[B, *E]``."""
        vae = self.merge(params)
        return self.likelihood.mean(vae.decode(vae.encode(x).loc))

    def prior_log_prob(self, params: Params, z: Array) -> Array:
        return self.merge(params).prior_log_prob(z)

    def prior_sample(self, params: Params, key: Array, n: int) -> Array:
        """``n`` latents from the prior, ``[n, D]``."""
        return self.merge(params).prior_sample(key, n)

    def forward(self, params: Params, x: Array, key: Array, num_samples: int = 1) -> Forward:
        """Encode ``x [B, *E]``, draw ``num_samples`` reparameterized ``z``, decode and score them."""
        vae = self.merge(params)
        q = vae.encode(x)  # [B, D]
        z = q.sample(key, num_samples)  # [K, B, D]
        out = vae.decode(z)  # [K, B, *E, P]
        event_ndim = len(self.event_shape)
        log_px_z = self.likelihood.log_prob(out, x, event_ndim=event_ndim)  # [K, B]
        return Forward(q, z, out, log_px_z, q.log_prob(z), vae.prior_log_prob(z), vae.kl_per_dim(q))


def split(vae: VAE) -> tuple[PureVAE, Params]:
    """Splits a VAE module ONCE into its pure view and its parameters (a nested dict of arrays)."""
    graphdef, state = nnx.split(vae)
    model = PureVAE(graphdef, vae.likelihood, vae.event_shape, vae.latent_dim)
    return model, nnx.to_pure_dict(state)


def count_params(params: Params) -> int:
    """Total number of scalars in ``params``."""
    return sum(int(jnp.size(p)) for p in jax.tree.leaves(params))
