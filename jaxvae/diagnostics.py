r"""Latent-space health: posterior statistics over a dataset, active units, mutual information.

All functions are pure; the dataset is streamed through the encoder in batches.

* **Active units** (Burda, Grosse & Salakhutdinov 2016): dimension :math:`d` is active when
  :math:`\mathrm{Cov}_x\left(\mathbb{E}_{q(z|x)}[z_d]\right) > \delta` (default :math:`\delta = 0.01`).
* **Mutual information** :math:`I_q(x; z)` under the encoder's joint :math:`q(x, z) = p_\mathrm{data}(x) q(z|x)`
  (Hoffman & Johnson 2016; the minibatch estimator of He et al. 2019):

  .. math:: I(x; z) = \mathbb{E}_x \mathbb{E}_{q(z|x)} [\log q(z|x)] - \mathbb{E}_{q(z)} [\log q(z)],
            \quad q(z) \approx \frac1N \sum_{n} q(z \mid x_n).

  It is bounded above by :math:`\log N`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.model import Params, PureVAE
from jaxvae.posteriors import DiagonalGaussian

Array = jax.Array


def encode_dataset(model: PureVAE, params: Params, data: np.ndarray, *,
                   batch_size: int = 500) -> DiagonalGaussian:
    """The posterior parameters of every example, ``loc``/``log_scale`` ``[N, D]`` (host numpy)."""
    encode = jax.jit(model.encode)
    n = data.shape[0]
    pad = (-n) % batch_size
    padded = np.concatenate([data, np.repeat(data[-1:], pad, axis=0)]) if pad else data
    parts = [encode(params, padded[i:i + batch_size]) for i in range(0, padded.shape[0], batch_size)]
    loc = np.concatenate([np.asarray(p.loc) for p in parts])[:n]
    log_scale = np.concatenate([np.asarray(p.log_scale) for p in parts])[:n]
    return DiagonalGaussian(loc, log_scale)


def active_units(posterior_means: Array | np.ndarray, threshold: float = 0.01) -> tuple[int, np.ndarray]:
    """Number of dimensions whose posterior mean varies across the data by more than ``threshold``.

    Args:
      posterior_means: :math:`\\mathbb{E}_q[z]` for each example, ``[N, D]``.

    Returns:
      ``(count, variances [D])``.
    """
    variances = np.var(np.asarray(posterior_means, np.float64), axis=0)
    return int(np.sum(variances > threshold)), variances


@jax.jit
def mutual_information(q: DiagonalGaussian, key: Array) -> Array:
    """The minibatch estimate of :math:`I_q(x; z)` (nats) from posteriors ``q`` ``[N, D]`` (He et al. 2019).

    Uses one sample per example and the N posteriors as the aggregate posterior; cost :math:`O(N^2 D)`.
    """
    q = DiagonalGaussian(jnp.asarray(q.loc), jnp.asarray(q.log_scale))
    n = q.loc.shape[0]
    neg_entropy = -jnp.mean(q.entropy())  # E_x E_q log q(z|x), exact for a Gaussian
    z = q.sample(key)  # [N, D], z_n ~ q(z | x_n)
    # log q(z_n | x_m) for all pairs: [N, M]
    log_density = DiagonalGaussian(q.loc[None], q.log_scale[None]).log_prob(z[:, None, :])
    log_qz = jax.nn.logsumexp(log_density, axis=1) - math.log(n)
    return neg_entropy - jnp.mean(log_qz)


def latent_summary(model: PureVAE, params: Params, data: np.ndarray, key: Array, *,
                   max_examples: int = 2000, active_threshold: float = 0.01) -> dict[str, float | int | list]:
    """Active units, their variances, and the mutual information on (a random subset of) ``data``."""
    if data.shape[0] > max_examples:
        idx = np.sort(np.random.default_rng(0).choice(data.shape[0], max_examples, replace=False))
        data = data[idx]
    q = encode_dataset(model, params, data)
    count, variances = active_units(q.loc, active_threshold)
    return {
        "active_units": count,
        "active_threshold": active_threshold,
        "posterior_mean_variance": [float(v) for v in variances],
        "mutual_information": float(mutual_information(q, key)),
        "mutual_information_upper_bound": math.log(data.shape[0]),
    }
