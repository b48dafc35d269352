"""Approximate posteriors q(z|x). The diagonal Gaussian lives in :mod:`jaxvae.distributions` (every posterior
and prior implements :class:`jaxvae.distributions.Distribution`); this module keeps its historical import path.

Reference: Kingma & Welling (2014), "Auto-Encoding Variational Bayes", Section 2.4 (reparameterization).

:class:`CommittedRate` wraps an encoder so that its posterior keeps a minimum KL to the prior (a remedy for
posterior collapse, ``model.committed_rate``).
"""

import math

import jax.numpy as jnp
from flax import nnx

from jaxvae.distributions.base import DiagonalGaussian, Distribution, gaussian_log_prob_per_dim
from jaxvae.errors import ConfigError

__all__ = ["CommittedRate", "DiagonalGaussian", "Distribution", "committed_rate_log_scale",
           "gaussian_log_prob_per_dim"]


def committed_rate_log_scale(rate: float) -> float:
    r"""The log standard deviation :math:`\log\sigma < 0` at which a Gaussian posterior's KL to
    :math:`\mathcal{N}(0, 1)` is at least ``rate`` nats per dimension whatever its mean:
    :math:`\tfrac12(\sigma^2 - 1 - \log\sigma^2) = \delta` (the KL at mean 0; any other mean adds
    :math:`\mu^2/2`). Solved by bisection in :math:`s = \sigma^2 \in (0, 1)`."""
    if rate <= 0:
        raise ValueError(f"The committed rate must be positive; got {rate}.")
    lo, hi = 0.0, 1.0  # f(s) = (s - 1 - log s) / 2 falls from inf to 0 on (0, 1)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= 0.0 or 0.5 * (mid - 1.0 - math.log(mid)) > rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * math.log(0.5 * (lo + hi))


class CommittedRate(nnx.Module):
    r"""A minimum-rate posterior in the spirit of the delta-VAE (Razavi et al. 2019, "Preventing Posterior
    Collapse with delta-VAEs"): the wrapped encoder's means with a fixed scale :math:`\sigma_\delta < 1`, so that
    :math:`\mathrm{KL}(q(z|x) \,\|\, \mathcal{N}(0, I)) \ge \delta` per dimension for every ``x`` by construction:
    the posterior cannot collapse onto the prior, however strong the decoder (``model.committed_rate``).

    The delta-VAE commits the rate through a mismatch between a correlated prior and the posterior's family; with
    jaxvae's factorized standard-normal prior the equivalent constraint is the posterior's fixed variance."""

    def __init__(self, encoder: nnx.Module, rate: float):
        self.encoder = encoder
        self.rate = float(rate)
        self.log_scale = committed_rate_log_scale(rate)  # a static float: not learned

    def __call__(self, x):
        q = self.encoder(x)
        if not isinstance(q, DiagonalGaussian):
            raise ConfigError(f"model.committed_rate fixes a diagonal Gaussian posterior's scale; the encoder "
                              f"returns {type(q).__name__}. Use model.posterior=diagonal.")
        return DiagonalGaussian(q.loc, jnp.full_like(q.loc, self.log_scale))
