r"""Training objectives as pure functions: ELBO, beta-ELBO, IWAE, free bits, capacity.

**One reduction convention for everything.** Per-example terms are in nats and summed over the event dimensions
(every pixel) and over the latent dimensions; the scalar loss is their mean over the batch. Nothing is averaged
over pixels, so the numbers are comparable with the literature (e.g. "-ELBO = 100.9 nats" on binarized MNIST).
Use :func:`jaxvae.likelihoods.bits_per_dim` to convert to bits per dimension.

Each objective returns ``(loss, ObjectiveOutput)``; ``loss`` is the scalar that is minimised and the output holds
the per-example terms (``[B]``), always including the true ELBO, so that a modified objective (beta, free bits,
capacity) can never be mistaken for the ELBO in logs:

.. math::
    \mathrm{recon}(x) = -\mathbb{E}_{q(z|x)} \log p(x|z), \qquad
    \mathrm{kl}(x) = \mathrm{KL}(q(z|x) \,\|\, p(z)), \qquad
    \mathrm{elbo}(x) = -\mathrm{recon}(x) - \mathrm{kl}(x) \le \log p(x).

The KL is analytic when the prior is a diagonal Gaussian (standard normal, learned Gaussian) and
``analytic_kl=True``; otherwise it is the Monte Carlo estimate on the same samples as the reconstruction term.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxvae.model import Forward, Params, PureVAE

Array = jax.Array


class ObjectiveOutput(NamedTuple):
    """Per-example terms of an objective (nats), plus scalar metrics specific to it.

    Attributes:
      elbo: the evidence lower bound, ``[B]``.
      recon: reconstruction loss :math:`-\\mathbb{E}_q \\log p(x|z)`, ``[B]``.
      kl: :math:`\\mathrm{KL}(q(z|x) \\| p(z))`, ``[B]``.
      kl_per_dim: analytic KL per latent dimension ``[B, D]``, or ``None`` for priors without one.
      metrics: scalar diagnostics of the objective (e.g. ``{"beta": ..., "iwae": ...}``).
    """

    elbo: Array
    recon: Array
    kl: Array
    kl_per_dim: Array | None
    metrics: dict[str, Array]


def _terms(fwd: Forward, analytic_kl: bool) -> tuple[Array, Array, Array | None]:
    """``(recon [B], kl [B], kl_per_dim [B, D] | None)`` from a forward pass."""
    recon = -jnp.mean(fwd.log_px_z, axis=0)  # [B]
    if analytic_kl and fwd.kl_per_dim is not None:
        kl = jnp.sum(fwd.kl_per_dim, axis=-1)  # [B]
    else:
        kl = jnp.mean(fwd.log_qz_x - fwd.log_pz, axis=0)  # [B]
    return recon, kl, fwd.kl_per_dim


def _output(recon: Array, kl: Array, kl_per_dim: Array | None, **metrics: Any) -> ObjectiveOutput:
    return ObjectiveOutput(-(recon + kl), recon, kl, kl_per_dim,
                           {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()})


def elbo(model: PureVAE, params: Params, x: Array, key: Array, *, beta: float | Array = 1.0,
         num_samples: int = 1, analytic_kl: bool = True) -> tuple[Array, ObjectiveOutput]:
    r"""The (beta-weighted) negative ELBO (Kingma & Welling 2014; Higgins et al. 2017 for :math:`\beta \ne 1`).

    .. math:: \mathcal{L} = \frac1B \sum_b \mathrm{recon}(x_b) + \beta \, \mathrm{kl}(x_b)

    Args:
      model: the pure VAE.
      params: its parameters.
      x: a batch, ``[B, *E]``.
      key: PRNG key for the reparameterized samples.
      beta: KL weight (a float, or a traced scalar from a schedule).
      num_samples: posterior samples averaged in the reconstruction term.
      analytic_kl: closed-form KL where the prior allows it.
    """
    recon, kl, kl_per_dim = _terms(model.forward(params, x, key, num_samples), analytic_kl)
    loss = jnp.mean(recon + beta * kl)
    return loss, _output(recon, kl, kl_per_dim, beta=beta)


def iwae_bound_from_log_weights(log_w: Array) -> Array:
    r"""The importance-weighted bound from log weights ``[K, B]``, ``[B]`` (stable log-sum-exp).

    .. math:: \mathcal{L}_K = \log \frac1K \sum_{k=1}^K w_k, \qquad
              w_k = \frac{p(x, z_k)}{q(z_k|x)}, \; z_k \sim q(z|x)
    """
    return jax.nn.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])


def iwae(model: PureVAE, params: Params, x: Array, key: Array, *,
         num_samples: int = 5) -> tuple[Array, ObjectiveOutput]:
    r"""The importance-weighted autoencoder bound (Burda, Grosse & Salakhutdinov 2016), loss = its negative.

    :math:`\mathcal{L}_1 = \mathrm{ELBO} \le \mathcal{L}_K \le \mathcal{L}_{K+1} \le \log p(x)` in expectation.
    The returned ``elbo``/``recon``/``kl`` are Monte Carlo estimates on the same ``K`` samples, and
    ``metrics["iwae"]`` is the batch-mean bound. With ``num_samples=1`` the loss equals the negative
    single-sample (Monte Carlo KL) ELBO exactly.
    """
    fwd = model.forward(params, x, key, num_samples)
    log_w = fwd.log_px_z + fwd.log_pz - fwd.log_qz_x  # [K, B]
    bound = iwae_bound_from_log_weights(log_w)  # [B]
    recon, kl, kl_per_dim = _terms(fwd, analytic_kl=False)
    loss = -jnp.mean(bound)
    return loss, _output(recon, kl, kl_per_dim, iwae=jnp.mean(bound))


def free_bits_kl(kl_per_dim: Array, free_bits: float | Array, group_size: int = 1) -> Array:
    r"""The free-bits KL penalty of Kingma et al. (2016, IAF paper, eq. 15), batch-averaged form.

    Dimensions are split into groups of ``group_size`` consecutive dimensions; each group's KL, averaged over
    the batch, is clamped from below at :math:`\lambda` (``free_bits``, nats per group):

    .. math:: \tilde{\mathrm{KL}} = \sum_{g} \max\left(\lambda, \; \frac1B \sum_b \mathrm{KL}_{b,g}\right)

    A group below :math:`\lambda` gets no gradient from the KL term, so the encoder is free to use it.

    Args:
      kl_per_dim: ``[B, D]``.
      free_bits: :math:`\lambda`.
      group_size: dimensions per group; must divide ``D``.

    Returns:
      The scalar penalty (already a batch mean).
    """
    d = kl_per_dim.shape[-1]
    if d % group_size:
        raise ValueError(f"free bits group_size={group_size} must divide the latent dimension {d}.")
    kl_groups = jnp.mean(kl_per_dim, axis=0).reshape(d // group_size, group_size).sum(-1)  # [G]
    return jnp.sum(jnp.maximum(free_bits, kl_groups))


def free_bits(model: PureVAE, params: Params, x: Array, key: Array, *, threshold: float | Array,
              beta: float | Array = 1.0, group_size: int = 1,
              num_samples: int = 1) -> tuple[Array, ObjectiveOutput]:
    r"""ELBO with free bits: :math:`\mathcal{L} = \frac1B\sum_b \mathrm{recon}(x_b) + \beta\,\tilde{\mathrm{KL}}`.

    ``threshold`` is :math:`\lambda` in nats per group of ``group_size`` dimensions; see :func:`free_bits_kl`.
    Needs a per-dimension KL (a diagonal Gaussian prior).
    """
    recon, kl, kl_per_dim = _terms(model.forward(params, x, key, num_samples), analytic_kl=True)
    if kl_per_dim is None:
        raise ValueError("free bits need a per-dimension KL; use a standard normal or learned Gaussian prior.")
    penalty = free_bits_kl(kl_per_dim, threshold, group_size)
    loss = jnp.mean(recon) + beta * penalty
    return loss, _output(recon, kl, kl_per_dim, beta=beta, free_bits_kl=penalty)


def capacity(model: PureVAE, params: Params, x: Array, key: Array, *, capacity: float | Array,
             gamma: float | Array = 1000.0, num_samples: int = 1,
             analytic_kl: bool = True) -> tuple[Array, ObjectiveOutput]:
    r"""Controlled-capacity objective of Burgess et al. (2018), "Understanding disentangling in beta-VAE".

    .. math::
        \mathcal{L} = \frac1B \sum_b \mathrm{recon}(x_b)
                      + \gamma \left| \frac1B \sum_b \mathrm{kl}(x_b) - C \right|

    :math:`C` (nats) is usually increased linearly during training (:func:`jaxvae.schedules.capacity_schedule`).
    """
    recon, kl, kl_per_dim = _terms(model.forward(params, x, key, num_samples), analytic_kl)
    loss = jnp.mean(recon) + gamma * jnp.abs(jnp.mean(kl) - capacity)
    return loss, _output(recon, kl, kl_per_dim, capacity=capacity, gamma=gamma)
