"""Approximate posteriors q(z|x). The diagonal Gaussian lives in :mod:`jaxvae.distributions` (every posterior
and prior implements :class:`jaxvae.distributions.Distribution`); this module keeps its historical import path.

Reference: Kingma & Welling (2014), "Auto-Encoding Variational Bayes", Section 2.4 (reparameterization).
"""

from jaxvae.distributions import DiagonalGaussian, Distribution, gaussian_log_prob_per_dim

__all__ = ["DiagonalGaussian", "Distribution", "gaussian_log_prob_per_dim"]
