"""KL divergences between the posterior and the prior, analytic and Monte Carlo, per latent dimension.

The closed forms are registered with :func:`jaxvae.distributions.register_kl`, so
:func:`jaxvae.distributions.kl_divergence` finds them for any pair of registered types.

All results are in nats. Per-dimension functions return ``[..., D]``; sum over the last axis for the total.

References: Kingma & Welling (2014), Appendix B (the closed form against a standard normal);
Hershey & Olsen (2007) for the Gaussian-to-Gaussian form.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxvae.distributions.base import DiagonalGaussian, Distribution, register_kl

Array = jax.Array


def kl_standard_normal_per_dim(q: DiagonalGaussian) -> Array:
    r"""Analytic :math:`\mathrm{KL}(q_d \,\|\, \mathcal{N}(0, 1))` for each dimension, ``[..., D]``.

    .. math:: \mathrm{KL}_d = \tfrac12 \left(\mu_d^2 + \sigma_d^2 - 1\right) - \log \sigma_d

    Written with ``expm1`` so that it stays accurate (and non-negative) for a collapsed dimension where
    :math:`\mu \approx 0` and :math:`\sigma \approx 1`.

    >>> import jax.numpy as jnp
    >>> from jaxvae.distributions import DiagonalGaussian
    >>> q = DiagonalGaussian(loc=jnp.array([0.0, 1.0]), log_scale=jnp.zeros(2))  # N(0, 1) and N(1, 1)
    >>> kl_standard_normal_per_dim(q).tolist()
    [0.0, 0.5]
    """
    s = q.log_scale
    return 0.5 * jnp.square(q.loc) + 0.5 * jnp.expm1(2.0 * s) - s


@register_kl(DiagonalGaussian, DiagonalGaussian)
def kl_diagonal_gaussians_per_dim(q: DiagonalGaussian, p: DiagonalGaussian) -> Array:
    r"""Analytic :math:`\mathrm{KL}(q_d \,\|\, p_d)` between diagonal Gaussians, per dimension, ``[..., D]``.

    .. math::
        \mathrm{KL}_d = \log\frac{\sigma_{p,d}}{\sigma_{q,d}}
          + \frac{\sigma_{q,d}^2 + (\mu_{q,d} - \mu_{p,d})^2}{2 \sigma_{p,d}^2} - \frac12

    ``p`` broadcasts against ``q`` (a prior of shape ``[D]`` against a posterior ``[B, D]``).
    """
    log_ratio = q.log_scale - p.log_scale  # log(sigma_q / sigma_p)
    mean_term = 0.5 * jnp.square((q.loc - p.loc) * jnp.exp(-p.log_scale))
    return 0.5 * jnp.expm1(2.0 * log_ratio) - log_ratio + mean_term


def kl_monte_carlo(
    q: Distribution,
    prior_log_prob: Callable[[Array], Array],
    key: Array,
    num_samples: int = 1,
) -> Array:
    r"""Monte Carlo KL against any prior: :math:`\frac1K \sum_k \log q(z_k) - \log p(z_k)`, :math:`z_k \sim q`.

    Unbiased, but can be negative for a single example and few samples.

    Args:
      q: the posterior, ``[..., D]``.
      prior_log_prob: ``z [K, ..., D] -> log p(z) [K, ...]``.
      key: PRNG key.
      num_samples: K.

    Returns:
      The estimate, ``[...]``.
    """
    z, log_q = q.sample_and_log_prob(key, num_samples)  # [K, ..., D], [K, ...]
    return jnp.mean(log_q - prior_log_prob(z), axis=0)
