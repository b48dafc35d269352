r"""Latent-space health: posterior statistics over a dataset, active units, mutual information, the aggregate
posterior (its moments, its density, holes under the prior, outliers) and one JSON-friendly report.

All functions are pure; the dataset is streamed through the encoder in batches, and every pairwise
computation over the N posteriors is streamed in chunks of N (and blocks of query points), so N = 10,000
never builds an N x N (let alone N x N x D) array in one piece. Inputs are the encoder outputs
``q = DiagonalGaussian(loc [N, D], log_scale [N, D])`` (see :func:`encode_dataset`).

* **Active units** (Burda, Grosse & Salakhutdinov 2016): dimension :math:`d` is active when
  :math:`\mathrm{Cov}_x\left(\mathbb{E}_{q(z|x)}[z_d]\right) > \delta` (default :math:`\delta = 0.01`).
* **Mutual information** :math:`I_q(x; z)` under the encoder's joint :math:`q(x, z) = p_\mathrm{data}(x) q(z|x)`
  (Hoffman & Johnson 2016; the minibatch estimator of He et al. 2019):

  .. math:: I(x; z) = \mathbb{E}_x \mathbb{E}_{q(z|x)} [\log q(z|x)] - \mathbb{E}_{q(z)} [\log q(z)],
            \quad q(z) \approx \frac1N \sum_{n} q(z \mid x_n).

  It is bounded above by :math:`\log N`.
* **The aggregate posterior** :math:`q(z) = \frac1N \sum_n q(z \mid x_n)` (Makhzani et al. 2016; Hoffman &
  Johnson 2016): its exact first two moments (:func:`aggregate_posterior_moments`), its log density computed
  with a streaming logsumexp (:func:`aggregate_log_density`), the prior's *holes* (prior mass where q(z) is
  thin: Rezende & Viola 2018, "Taming VAEs"; Aneja et al. 2021, "NCP-VAE") (:func:`prior_holes`), its MMD to
  the prior (Zhao, Song & Ermon 2019) (:func:`aggregate_prior_mmd`) and per-example outlier scores
  (:func:`outlier_scores`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.data import pad_to_multiple, random_subset
from jaxvae.data.batches import num_examples, take
from jaxvae.distributions import kl as kl_lib
from jaxvae.distributions.base import DiagonalGaussian, gaussian_log_prob_per_dim
from jaxvae.models.protocol import Params, PureModel
from jaxvae.objectives.discrepancy import mmd

Array = jax.Array
PriorLike = DiagonalGaussian | Callable[[Array, int], Array] | Array | np.ndarray | None

# Elements of one [block, chunk, D] pairwise intermediate (16 MiB in float32).
_PAIR_BUDGET = 1 << 22
_QUANTILES = (1, 5, 25, 50, 75, 95, 99)


def encode_dataset(model: PureModel, params: Params, data: np.ndarray, *,
                   batch_size: int = 500, key: Array | None = None) -> DiagonalGaussian:
    """The flat posterior parameters of every example, ``loc``/``log_scale`` ``[N, D]`` (host numpy).

    ``D`` is the total over the model's latent groups (see :meth:`jaxvae.models.protocol.PureModel.encode`);
    ``key`` is used by models whose upper groups are conditioned on a sample of the lower ones (each batch folds in
    its index). Posteriors that are not diagonal Gaussians raise a clear error.
    """
    key = jax.random.key(0) if key is None else key
    encode = jax.jit(model.evaluation().encode)
    padded, n = pad_to_multiple(data, batch_size)
    parts = [encode(params, take(padded, slice(i, i + batch_size)), jax.random.fold_in(key, i // batch_size))
             for i in range(0, num_examples(padded), batch_size)]
    loc = np.concatenate([np.asarray(p.loc) for p in parts])[:n]
    log_scale = np.concatenate([np.asarray(p.log_scale) for p in parts])[:n]
    return DiagonalGaussian(loc, log_scale)


def group_slices(model: PureModel) -> dict[str, slice]:
    """Where each latent group lies in the flat latent vector, ``{name: slice}``."""
    out, start = {}, 0
    for name, d in model.groups:
        out[name] = slice(start, start + d)
        start += d
    return out


def active_units(posterior_means: Array | np.ndarray, threshold: float = 0.01) -> tuple[int, np.ndarray]:
    """Number of dimensions whose posterior mean varies across the data by more than ``threshold``.

    Args:
      posterior_means: :math:`\\mathbb{E}_q[z]` for each example, ``[N, D]``.

    Returns:
      ``(count, variances [D])``.
    """
    variances = np.var(np.asarray(posterior_means, np.float64), axis=0)
    return int(np.sum(variances > threshold)), variances


# ------------------------------------------------------------------------------------- aggregate density


@functools.partial(jax.jit, static_argnames=("chunk", "block"))
def _aggregate_log_density(z: Array, loc: Array, log_scale: Array, exclude: Array, chunk: int,
                           block: int) -> Array:
    """The streaming core of :func:`aggregate_log_density` (static ``chunk`` over N, ``block`` over M)."""
    m, d = z.shape
    n = loc.shape[0]
    lp_dtype = jnp.result_type(z.dtype, loc.dtype)
    n_pad, m_pad = (-n) % chunk, (-m) % block
    # Padded components get harmless parameters (0, 0) and are masked to -inf below.
    loc = jnp.pad(loc, ((0, n_pad), (0, 0))).reshape(-1, chunk, d)
    log_scale = jnp.pad(log_scale, ((0, n_pad), (0, 0))).reshape(-1, chunk, d)
    index = jnp.arange(n + n_pad).reshape(-1, chunk)
    z_blocks = jnp.pad(z, ((0, m_pad), (0, 0))).reshape(-1, block, d)
    ex_blocks = jnp.pad(exclude, (0, m_pad), constant_values=-1).reshape(-1, block)

    def one_block(args: tuple[Array, Array]) -> Array:
        zb, exb = args  # [block, D], [block]

        def step(acc: Array, comp: tuple[Array, Array, Array]) -> tuple[Array, None]:
            cl, cs, ci = comp  # [chunk, D], [chunk, D], [chunk]
            lp = jnp.sum(gaussian_log_prob_per_dim(zb[:, None, :], cl[None], cs[None]), axis=-1)  # [block, chunk]
            keep = (ci[None, :] < n) & (ci[None, :] != exb[:, None])
            lp = jnp.where(keep, lp, -jnp.inf)
            return jnp.logaddexp(acc, jax.nn.logsumexp(lp, axis=1)), None

        init = jnp.full((block,), -jnp.inf, dtype=lp_dtype)
        acc, _ = jax.lax.scan(step, init, (loc, log_scale, index))
        return acc

    log_sum = jax.lax.map(one_block, (z_blocks, ex_blocks)).reshape(-1)[:m]
    count = n - ((exclude >= 0) & (exclude < n)).astype(lp_dtype)
    return log_sum - jnp.log(count)


def aggregate_log_density(z: Array | np.ndarray, q: DiagonalGaussian, *, chunk: int = 1024,
                          exclude: Array | np.ndarray | None = None) -> Array:
    r"""Log density of the aggregate posterior at ``z``: :math:`\log \frac1N \sum_n q(z_m \mid x_n)`.

    .. math::
        \log q(z_m) = \operatorname{logsumexp}_n
                      \Big[\sum_d \log \mathcal{N}(z_{m,d}; \mu_{n,d}, \sigma_{n,d}^2)\Big] - \log N

    computed in log space (no underflow for far-away points) with a streaming logsumexp: the N components are
    scanned in chunks of ``chunk`` (N padded to a multiple of it, padding masked with :math:`-\infty`) and the
    running value is combined with ``logaddexp``; the M query points are processed in blocks so that one
    ``[block, chunk, D]`` intermediate stays around 16 MiB. Cost :math:`O(M N D)`, memory :math:`O(M + N)`.

    The aggregate posterior is the mixture the decoder actually sees during training (Hoffman & Johnson 2016,
    "ELBO surgery"); a low value marks a region that no example's posterior covers.

    Args:
      z: query points ``[M, D]``.
      q: the posteriors ``[N, D]``.
      chunk: components per scan step (the result does not depend on it, up to float rounding).
      exclude: optional ``[M]`` int: the component ``exclude[m]`` is left out of the mixture for ``z_m`` and the
        normalizer becomes :math:`N - 1` (the *leave-one-out* mixture, for scoring a data point's own latent);
        ``-1`` leaves nothing out.

    Returns:
      ``[M]`` log densities (nats).
    """
    z = jnp.asarray(z)
    loc, log_scale = jnp.asarray(q.loc), jnp.asarray(q.log_scale)
    if z.ndim != 2 or loc.ndim != 2 or z.shape[1] != loc.shape[1]:
        raise ValueError(f"aggregate_log_density needs z [M, D] and q [N, D], got {z.shape} and {loc.shape}.")
    m, d = z.shape
    n = loc.shape[0]
    if n == 0:
        raise ValueError("aggregate_log_density needs at least one posterior.")
    chunk = max(1, min(int(chunk), n))
    block = max(1, min(m, _PAIR_BUDGET // (chunk * max(d, 1))))
    ex = jnp.full((m,), -1, jnp.int32) if exclude is None else jnp.asarray(exclude, jnp.int32).reshape(m)
    return _aggregate_log_density(z, loc, log_scale, ex, chunk=chunk, block=block)


@functools.partial(jax.jit, static_argnames=("chunk",))
def mutual_information(q: DiagonalGaussian, key: Array, *, chunk: int = 1024) -> Array:
    r"""The minibatch estimate of :math:`I_q(x; z)` (nats) from posteriors ``q`` ``[N, D]`` (He et al. 2019).

    .. math:: \hat I = \frac1N \sum_n \Big[\log q(z_n \mid x_n) - \log \frac1N \sum_m q(z_n \mid x_m)\Big],
              \quad z_n \sim q(z \mid x_n)

    Uses one sample per example and the N posteriors as the aggregate posterior (own component included, as in
    He et al.); cost :math:`O(N^2 D)`, streamed in chunks through :func:`aggregate_log_density`. Both terms are
    evaluated at the same samples (He et al. use the closed-form entropy for the first), so their Monte Carlo
    noise cancels: a collapsed encoder (the same posterior for every x) gives exactly 0 rather than a spread of
    about :math:`\pm\sqrt{D / 2N}` nats. Bounded by :math:`\log N`, so it is biased low when the true MI
    approaches :math:`\log N`.
    """
    q = DiagonalGaussian(jnp.asarray(q.loc), jnp.asarray(q.log_scale))
    z = q.sample(key)  # [N, D], z_n ~ q(z | x_n)
    log_qzx = jnp.sum(q.log_prob_per_dim(z), axis=-1)  # log q(z_n | x_n)
    log_qz = aggregate_log_density(z, q, chunk=chunk)
    return jnp.mean(log_qzx - log_qz)


# ------------------------------------------------------------------------------------------- KL, moments


def kl_per_dimension(q: DiagonalGaussian, prior: DiagonalGaussian | None = None) -> np.ndarray:
    r"""Data-averaged analytic KL per latent dimension, ``[D]`` (host numpy, nats).

    .. math:: \overline{\mathrm{KL}}_d = \frac1N \sum_n \mathrm{KL}\big(q(z_d \mid x_n) \,\|\, p(z_d)\big)

    against :math:`\mathcal{N}(0, 1)` when ``prior`` is None (Kingma & Welling 2014, Appendix B), else against
    the diagonal Gaussian ``prior`` ``[D]``. A dimension with :math:`\overline{\mathrm{KL}}_d \approx 0` is
    collapsed (posterior = prior for every x; Bowman et al. 2016), and its sum over d is the ELBO's KL term.
    """
    q = DiagonalGaussian(jnp.asarray(q.loc), jnp.asarray(q.log_scale))
    if prior is None:
        per = kl_lib.kl_standard_normal_per_dim(q)
    else:
        per = kl_lib.kl_diagonal_gaussians_per_dim(q, DiagonalGaussian(jnp.asarray(prior.loc),
                                                                       jnp.asarray(prior.log_scale)))
    return np.asarray(jnp.mean(per.reshape(-1, per.shape[-1]), axis=0), np.float64)


def _gaussian_kl(mean: np.ndarray, cov: np.ndarray, p_loc: np.ndarray, p_var: np.ndarray) -> float:
    """KL(N(mean, cov) || N(p_loc, diag p_var)) in float64."""
    d = mean.shape[0]
    _, logdet = np.linalg.slogdet(cov)
    diff = p_loc - mean
    return float(0.5 * (np.sum(np.diag(cov) / p_var) + np.sum(diff**2 / p_var) - d
                        + np.sum(np.log(p_var)) - logdet))


def aggregate_posterior_moments(q: DiagonalGaussian, prior: DiagonalGaussian | None = None) -> dict[str, Any]:
    r"""Exact mean and covariance of the aggregate posterior :math:`q(z) = \frac1N \sum_n q(z \mid x_n)`.

    By the law of total expectation and covariance over the uniform mixture (population moments, divisor N):

    .. math::
        m = \frac1N \sum_n \mu_n, \qquad
        S = \underbrace{\frac1N \sum_n (\mu_n - m)(\mu_n - m)^\top}_{\mathrm{Cov}_n(\mu_n)}
            + \underbrace{\mathrm{diag}\Big(\frac1N \sum_n \sigma_n^2\Big)}_{\mathbb{E}_n[\mathrm{Cov}(z|x_n)]}

    and the KL of the moment-matched Gaussian to the prior, in closed form,

    .. math:: \mathrm{KL}\big(\mathcal{N}(m, S) \,\|\, \mathcal{N}(0, I)\big)
              = \tfrac12 \left(\operatorname{tr} S + m^\top m - D - \log\det S\right),

    which is 0 exactly when the aggregate posterior has the prior's first two moments (a necessary condition
    for q(z) = p(z); Hoffman & Johnson 2016; Rosca et al. 2018). Also the Gaussian total correlation
    :math:`\tfrac12(\sum_d \log S_{dd} - \log\det S)` (0 iff S is diagonal). Computed in float64 on the host.

    Args:
      q: the posteriors, ``[N, D]``.
      prior: optional diagonal Gaussian prior ``[D]``; adds ``kl_moment_matched_to_prior``.

    Returns:
      A dict with the keys ``mean`` ``[D]``, ``covariance`` ``[D, D]``, ``variance`` ``[D]`` (numpy arrays),
      ``kl_moment_matched_to_standard_normal`` and ``gaussian_total_correlation`` (floats), and, when ``prior``
      is given, ``kl_moment_matched_to_prior``.
    """
    loc = np.asarray(q.loc, np.float64).reshape(-1, np.shape(q.loc)[-1])
    var = np.exp(2.0 * np.asarray(q.log_scale, np.float64)).reshape(loc.shape)
    n, d = loc.shape
    mean = loc.mean(axis=0)
    centered = loc - mean
    cov = centered.T @ centered / n + np.diag(var.mean(axis=0))
    _, logdet = np.linalg.slogdet(cov)
    out: dict[str, Any] = {
        "mean": mean,
        "covariance": cov,
        "variance": np.diag(cov).copy(),
        "kl_moment_matched_to_standard_normal": _gaussian_kl(mean, cov, np.zeros(d), np.ones(d)),
        "gaussian_total_correlation": float(0.5 * (np.sum(np.log(np.diag(cov))) - logdet)),
    }
    if prior is not None:
        p_loc = np.broadcast_to(np.asarray(prior.loc, np.float64), (d,))
        p_var = np.broadcast_to(np.exp(2.0 * np.asarray(prior.log_scale, np.float64)), (d,))
        out["kl_moment_matched_to_prior"] = _gaussian_kl(mean, cov, p_loc, p_var)
    return out


# ------------------------------------------------------------------------------------ holes, MMD, outliers


def _prior_samples(key: Array, prior: PriorLike, num_samples: int, latent_dim: int) -> Array:
    """``[S, D]`` prior draws from: None (N(0, I)), a DiagonalGaussian, a ``(key, n) -> [n, D]`` callable, or
    an array of ready-made samples."""
    if prior is None:
        return jax.random.normal(key, (num_samples, latent_dim))
    if isinstance(prior, DiagonalGaussian):
        p = DiagonalGaussian(jnp.asarray(prior.loc), jnp.asarray(prior.log_scale))
        return p.sample(key, num_samples).reshape(num_samples, latent_dim)
    if callable(prior):
        return jnp.asarray(prior(key, num_samples))
    samples = jnp.asarray(prior)
    if samples.ndim != 2 or samples.shape[1] != latent_dim:
        raise ValueError(f"Prior samples must be [S, {latent_dim}], got {samples.shape}.")
    return samples


@jax.jit
def _sample(q: DiagonalGaussian, key: Array) -> Array:
    return q.sample(key)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    values = np.percentile(np.asarray(x, np.float64), _QUANTILES)
    return {f"p{p}": float(v) for p, v in zip(_QUANTILES, values)}


def prior_holes(key: Array, q: DiagonalGaussian, prior: PriorLike = None, *, num_samples: int = 5000,
                percentile: float = 1.0, exclude_self: bool = True, chunk: int = 1024) -> dict[str, Any]:
    r"""The share of the prior that falls in *holes* of the aggregate posterior.

    A hole is a region the prior samples from but no example's posterior covers, so the decoder has never been
    trained there and prior samples decode badly (Rezende & Viola 2018; Aneja et al. 2021). With
    :math:`\log q(z)` the aggregate log density (:func:`aggregate_log_density`):

    .. math::
        \tau = \mathrm{percentile}_{p}\big\{\log q_{-n}(z_n)\big\}_{n=1}^N, \quad z_n \sim q(z \mid x_n),
        \qquad
        \mathrm{hole\_fraction} = \frac1S \sum_{s=1}^S \mathbf{1}\big[\log q(\tilde z_s) < \tau\big],
        \quad \tilde z_s \sim p(z)

    where :math:`q_{-n} = \frac1{N-1}\sum_{m \ne n} q(z \mid x_m)` is the leave-one-out mixture
    (``exclude_self=True``; otherwise the full mixture, in which a data latent always sits on its own component
    and looks dense). So τ is the density that all but ``percentile`` % of the data's own latents reach, and the
    hole fraction is the share of prior samples that are less typical than that. When q(z) = p(z) the
    two sets of densities have the same distribution and the hole fraction is about ``percentile / 100``;
    for an aggregate posterior concentrated away from the prior's mass it approaches 1.

    Args:
      key: PRNG key (data-latent and prior draws).
      q: the posteriors ``[N, D]`` (N >= 2 with ``exclude_self``).
      prior: None for :math:`\mathcal{N}(0, I)`, a ``DiagonalGaussian`` prior ``[D]``, a sampler
        ``(key, n) -> [n, D]`` (e.g. ``lambda k, n: model.prior_sample(params, k, n)``), or ready-made prior
        samples ``[S, D]`` (then ``num_samples`` is ignored).
      num_samples: S.
      percentile: p in [0, 100].
      exclude_self: leave each data latent's own component out of its density.
      chunk: see :func:`aggregate_log_density`.

    Returns:
      ``{"hole_fraction", "threshold", "percentile", "exclude_self", "num_prior_samples", "num_data",
      "prior_log_density_quantiles": {"p1", ..., "p99"}, "data_log_density_quantiles": {...}}``, plain floats.
    """
    q = DiagonalGaussian(jnp.asarray(q.loc), jnp.asarray(q.log_scale))
    n, d = q.loc.shape
    if exclude_self and n < 2:
        raise ValueError("prior_holes with exclude_self needs at least 2 posteriors.")
    key_data, key_prior = jax.random.split(key)
    z_data = _sample(q, key_data)
    exclude = jnp.arange(n) if exclude_self else None
    data_lp = np.asarray(aggregate_log_density(z_data, q, chunk=chunk, exclude=exclude))
    z_prior = _prior_samples(key_prior, prior, num_samples, d)
    prior_lp = np.asarray(aggregate_log_density(z_prior, q, chunk=chunk))
    threshold = float(np.percentile(data_lp.astype(np.float64), percentile))
    return {
        "hole_fraction": float(np.mean(prior_lp < threshold)),
        "threshold": threshold,
        "percentile": float(percentile),
        "exclude_self": bool(exclude_self),
        "num_prior_samples": int(z_prior.shape[0]),
        "num_data": int(n),
        "prior_log_density_quantiles": _quantiles(prior_lp),
        "data_log_density_quantiles": _quantiles(data_lp),
    }


def aggregate_prior_mmd(key: Array, q: DiagonalGaussian, prior_samples: Array | np.ndarray, *,
                        num_samples: int = 2000, kernel: str = "imq", scale: float = 1.0) -> float:
    r"""Unbiased :math:`\widehat{\mathrm{MMD}}^2(q(z), p(z))` between the aggregate posterior and the prior.

    Aggregate-posterior samples are ancestral: :math:`n_i \sim \mathrm{Uniform}\{1..N\}` (without replacement
    when :math:`N \ge` ``num_samples``), :math:`z_i \sim q(z \mid x_{n_i})`; they are compared with (at most
    ``num_samples`` of) ``prior_samples`` ``[S, D]`` by :func:`jaxvae.objectives.discrepancy.mmd` (Gretton et al.
    2012; the InfoVAE / WAE divergence of Zhao et al. 2019 and Tolstikhin et al. 2018). About 0 (it can be slightly
    negative) when q(z) = p(z). Cost :math:`O(\text{num\_samples}^2 D)`.
    """
    if isinstance(scale, (int, float)) and not scale > 0:
        raise ValueError(f"MMD kernel scale must be > 0, got {scale!r}.")
    prior_samples = jnp.asarray(prior_samples)[:num_samples]
    return float(_aggregate_prior_mmd(key, DiagonalGaussian(jnp.asarray(q.loc), jnp.asarray(q.log_scale)),
                                      prior_samples, scale, num_samples=num_samples, kernel=kernel))


@functools.partial(jax.jit, static_argnames=("num_samples", "kernel"))
def _aggregate_prior_mmd(key: Array, q: DiagonalGaussian, prior_samples: Array, scale: float | Array, *,
                         num_samples: int, kernel: str) -> Array:
    n = q.loc.shape[0]
    key_idx, key_z = jax.random.split(key)
    idx = jax.random.choice(key_idx, n, (num_samples,), replace=n < num_samples)
    z = DiagonalGaussian(q.loc[idx], q.log_scale[idx]).sample(key_z)
    return mmd(z, prior_samples, kernel=kernel, scale=scale)


def outlier_scores(q_eval: DiagonalGaussian, q_ref: DiagonalGaussian, key: Array | None = None, *,
                   exclude_self: bool, chunk: int = 1024) -> Array:
    r"""Per-example outlier score: the negative log density of its latent under the reference aggregate posterior.

    .. math:: s_i = -\log \frac{1}{|R_i|} \sum_{n \in R_i} q(z_i \mid x^\mathrm{ref}_n),
              \qquad z_i = \mu_i \ \text{(default) or}\ z_i \sim q(z \mid x^\mathrm{eval}_i)\ \text{(with key)}

    with :math:`R_i` all reference examples, or all but :math:`i` when ``exclude_self`` (the leave-one-out
    mixture: required when the evaluated set *is* the reference set, else every example sits on its own
    component). High scores mark examples encoded where few others are: latent-space outliers (a kernel density
    estimate with the posteriors as kernels). Ranking only; not calibrated probabilities.

    Args:
      q_eval: posteriors ``[N_eval, D]`` of the examples to score.
      q_ref: posteriors ``[N_ref, D]`` that define the aggregate posterior (e.g. the training set).
      key: None to score the posterior means; a key to score one posterior sample each.
      exclude_self: leave example i's own component out (needs ``N_eval == N_ref``, the same examples in order).
      chunk: see :func:`aggregate_log_density`.

    Returns:
      ``[N_eval]`` scores (nats; higher = more anomalous).
    """
    loc = jnp.asarray(q_eval.loc)
    n_eval, n_ref = loc.shape[0], np.shape(q_ref.loc)[0]
    if exclude_self and n_eval != n_ref:
        raise ValueError(f"exclude_self needs the evaluated set to be the reference set, got {n_eval} and "
                         f"{n_ref} examples.")
    z = loc if key is None else _sample(DiagonalGaussian(loc, jnp.asarray(q_eval.log_scale)), key)
    exclude = jnp.arange(n_eval) if exclude_self else None
    return -aggregate_log_density(z, q_ref, chunk=chunk, exclude=exclude)


def top_k_outliers(scores: Array | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest scores and their indices, most anomalous first: ``(indices [k], scores [k])``.

    Ties keep the lower index first; ``k`` is clipped to the number of scores.
    """
    scores = np.asarray(scores)
    k = max(0, min(int(k), scores.shape[0]))
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


# ------------------------------------------------------------------------------------------------ summaries


def model_kl_per_group(model: PureModel, params: Params, data: np.ndarray, key: Array, *,
                       batch_size: int = 500) -> dict[str, float]:
    """The data-averaged KL of each latent group, ``{group: nats}``, from the model's own forward pass (its
    analytic ``kl_terms``; a group without one gets the Monte Carlo estimate of the whole KL under ``"total"``)."""
    model = model.evaluation()

    @jax.jit
    def batch_kl(params, x, key):
        out = model.forward(params, x, key)
        per_group = out.kl_per_group()
        if per_group is None:
            return {"total": jnp.mean(out.log_qz_x - out.log_pz, axis=0)}
        return per_group

    padded, n = pad_to_multiple(data, batch_size)
    parts = [batch_kl(params, take(padded, slice(i, i + batch_size)), jax.random.fold_in(key, i // batch_size))
             for i in range(0, num_examples(padded), batch_size)]
    return {g: float(np.concatenate([np.asarray(p[g]) for p in parts])[:n].mean()) for g in parts[0]}


def latent_summary(model: PureModel, params: Params, data: np.ndarray, key: Array, *,
                   max_examples: int = 2000, active_threshold: float = 0.01) -> dict[str, Any]:
    """Active units, their variances, and the mutual information on (a random subset of) ``data``; for models
    with several latent groups also ``active_units_per_group`` (``{group: count}``)."""
    model = model.evaluation()
    data = take(data, random_subset(num_examples(data), max_examples, seed=0))
    q = encode_dataset(model, params, data)
    count, variances = active_units(q.loc, active_threshold)
    out: dict[str, Any] = {
        "active_units": count,
        "active_threshold": active_threshold,
        "posterior_mean_variance": [float(v) for v in variances],
        "mutual_information": float(mutual_information(q, key)),
        "mutual_information_upper_bound": math.log(num_examples(data)),
    }
    if len(model.groups) > 1:
        out["active_units_per_group"] = {g: int(np.sum(variances[s] > active_threshold))
                                         for g, s in group_slices(model).items()}
    return out


def _floats(x: Any) -> list[float]:
    return [float(v) for v in np.asarray(x, np.float64).reshape(-1)]


def _outlier_entry(scores: Array, indices: np.ndarray, k: int) -> dict[str, Any]:
    top, top_scores = top_k_outliers(scores, k)
    s = np.asarray(scores, np.float64)
    return {"indices": [int(i) for i in indices[top]], "scores": _floats(top_scores),
            "median_score": float(np.median(s)), "num_examples": int(s.shape[0])}


@functools.partial(jax.jit, static_argnums=(0, 3))
def _model_prior_sample(model: PureModel, params: Params, key: Array, n: int) -> Array:
    return model.prior_sample(params, key, n)


def latent_report(model: PureModel, params: Params, train_data: np.ndarray, test_data: np.ndarray | None,
                  key: Array, *, max_examples: int = 2000, top_k: int = 16, active_threshold: float = 0.01,
                  num_prior_samples: int = 5000, hole_percentile: float = 1.0, mmd_samples: int = 2000,
                  kernel: str = "imq", chunk: int = 1024) -> dict[str, Any]:
    """Everything about the latent space in one JSON-friendly dict (plain ints, floats, lists, dicts).

    ``train_data`` and ``test_data`` are subsampled to ``max_examples`` (fixed seeds) and encoded. The prior is
    the model's: its :meth:`~jaxvae.models.protocol.PureModel.prior_distribution` where that is a diagonal
    Gaussian, for the analytic KL; samples always come from ``model.prior_sample`` (so mixture priors, VampPriors
    and hierarchies work). Latents are the flat view (groups concatenated); with several groups,
    ``kl_per_group`` and ``active_units_per_group`` give the per-group totals.

    Keys:

    * ``num_train``, ``num_test``, ``latent_dim``, ``prior_is_diagonal_gaussian``;
    * ``kl_per_dim`` [D] and ``kl_reference`` (``"prior"``, or ``"standard_normal"`` for a non-Gaussian prior),
      ``kl_total`` (:func:`kl_per_dimension`);
    * ``active_units``, ``active_threshold``, ``inactive_dims``, ``posterior_mean_variance`` [D]
      (:func:`active_units`);
    * ``mutual_information``, ``mutual_information_upper_bound`` (:func:`mutual_information`, log N);
    * ``aggregate_posterior``: ``mean`` [D], ``covariance`` [D][D], ``variance`` [D],
      ``kl_moment_matched_to_standard_normal``, ``gaussian_total_correlation`` and, for a diagonal Gaussian
      prior, ``kl_moment_matched_to_prior`` (:func:`aggregate_posterior_moments`);
    * ``mmd_to_prior``, ``mmd_kernel`` (:func:`aggregate_prior_mmd`);
    * ``prior_holes``: the dict of :func:`prior_holes` (leave-one-out threshold);
    * ``outliers``: ``{"train": ..., "test": ...}``, each ``{"indices", "scores", "median_score",
      "num_examples"}`` with indices into the original arrays, most anomalous first. Train examples are
      scored against the train aggregate posterior leave-one-out; test examples against the train aggregate
      posterior (``"test"`` is None without test data). Scores are :func:`outlier_scores` at posterior means.
    """
    model = model.evaluation()
    key_mi, key_holes, key_prior, key_mmd = jax.random.split(key, 4)
    train_idx = random_subset(num_examples(train_data), max_examples, seed=0)
    q_train = encode_dataset(model, params, train_data[train_idx])
    n, d = q_train.loc.shape

    prior = model.prior_distribution(params)
    prior_gauss = None
    if isinstance(prior, DiagonalGaussian):
        prior_gauss = DiagonalGaussian(np.asarray(prior.loc), np.asarray(prior.log_scale))
    prior_samples = _model_prior_sample(model, params, key_prior, max(num_prior_samples, 2))

    kl_dims = kl_per_dimension(q_train, prior_gauss)
    count, variances = active_units(q_train.loc, active_threshold)
    moments = aggregate_posterior_moments(q_train, prior_gauss)
    report: dict[str, Any] = {
        "num_train": int(n),
        "num_test": 0,
        "latent_dim": int(d),
        "prior_is_diagonal_gaussian": prior_gauss is not None,
        "kl_per_dim": _floats(kl_dims),
        "kl_reference": "prior" if prior_gauss is not None else "standard_normal",
        "kl_total": float(np.sum(kl_dims)),
        "active_units": count,
        "active_threshold": float(active_threshold),
        "inactive_dims": [int(i) for i in np.flatnonzero(variances <= active_threshold)],
        "posterior_mean_variance": _floats(variances),
        "mutual_information": float(mutual_information(q_train, key_mi, chunk=chunk)),
        "mutual_information_upper_bound": math.log(n),
        "aggregate_posterior": {
            k: (v.tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in moments.items()},
        "mmd_to_prior": (aggregate_prior_mmd(key_mmd, q_train, prior_samples, num_samples=mmd_samples,
                                             kernel=kernel) if n >= 2 else float("nan")),
        "mmd_kernel": kernel,
        "prior_holes": (prior_holes(key_holes, q_train, prior_samples, percentile=hole_percentile,
                                    chunk=chunk) if n >= 2 else None),
    }
    if len(model.groups) > 1:
        report["kl_per_group"] = model_kl_per_group(model, params, train_data[train_idx], key_mi)
        # The model's own KL (each layer against its conditional prior); kl_per_dim stays the N(0, I) proxy.
        report["kl_total"] = float(sum(report["kl_per_group"].values()))
        report["kl_reference"] = "model: kl_total and kl_per_group; kl_per_dim against N(0, I), a proxy"
        report["active_units_per_group"] = {g: int(np.sum(variances[s] > active_threshold))
                                            for g, s in group_slices(model).items()}
    outliers: dict[str, Any] = {"train": None, "test": None}
    if n >= 2:
        outliers["train"] = _outlier_entry(outlier_scores(q_train, q_train, exclude_self=True, chunk=chunk),
                                           train_idx, top_k)
    if test_data is not None and num_examples(test_data) > 0:
        test_idx = random_subset(num_examples(test_data), max_examples, seed=1)
        q_test = encode_dataset(model, params, test_data[test_idx])
        report["num_test"] = int(test_idx.shape[0])
        outliers["test"] = _outlier_entry(outlier_scores(q_test, q_train, exclude_self=False, chunk=chunk),
                                          test_idx, top_k)
    report["outliers"] = outliers
    return report
