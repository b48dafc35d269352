r"""Training objectives as pure functions: ELBO, beta-ELBO, IWAE, free bits, capacity, beta-TCVAE, InfoVAE.

**One reduction convention for everything.** Per-example terms are in nats and summed over the event dimensions
(every pixel) and over the latent dimensions; the scalar loss is their mean over the batch. Nothing is averaged
over pixels, so the numbers are comparable with the literature (e.g. "-ELBO = 100.9 nats" on binarized MNIST).
Use :func:`jaxvae.distributions.likelihoods.bits_per_dim` to convert to bits per dimension.

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
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxvae.distributions.base import DiagonalGaussian, gaussian_log_prob_per_dim
from jaxvae.errors import ConfigError
from jaxvae.models.protocol import ModelOutput, Params, PureModel, flatten_latents
from jaxvae.objectives.discrepancy import check_kernel, mmd

Array = jax.Array

__all__ = ["KLDecomposition", "Objective", "ObjectiveOutput", "beta_tcvae", "capacity", "elbo", "elbo_terms",
           "free_bits", "free_bits_kl", "free_bits_per_group", "info_vae", "iwae", "iwae_bound_from_log_weights",
           "kl_balancing_coefficients", "kl_decomposition", "mmd"]


class ObjectiveOutput(NamedTuple):
    """Per-example terms of an objective (nats), plus scalar metrics specific to it.

    Attributes:
      elbo: the evidence lower bound, ``[B]``.
      recon: reconstruction loss :math:`-\\mathbb{E}_q \\log p(x|z)`, ``[B]``.
      kl: :math:`\\mathrm{KL}(q(z|x) \\| p(z))`, ``[B]``.
      kl_per_dim: analytic KL per latent dimension ``[B, D]``, or ``None`` for priors without one.
      metrics: scalar diagnostics of the objective (e.g. ``{"beta": ..., "iwae": ...}``).
      state: the model's non-gradient variables after the objective's forward pass (:attr:`ModelOutput.state
        <jaxvae.models.protocol.ModelOutput>`), which the training step keeps when it applies the update; ``None``:
        unchanged.

    The loss of a player that is not a bound (a critic, :mod:`jaxvae.training`) leaves ``elbo``, ``recon``, ``kl``
    and ``kl_per_dim`` ``None`` and reports its terms in ``metrics``.
    """

    elbo: Array | None
    recon: Array | None
    kl: Array | None
    kl_per_dim: Array | None
    metrics: dict[str, Array]
    state: Any = None


class Objective(NamedTuple):
    """A training objective as pure functions (optax style); its state lives in the TrainState.

    * ``init(params) -> state``: objective / KL-controller state (``{}`` for stateless objectives).
    * ``hyper(step) -> {name: scalar}``: the scheduled weights at ``step`` (beta, capacity, free bits, ...).
      Kept apart from ``loss`` so that a sweep can stack the values of many models (``[N]`` each) and ``vmap``
      one loss over them: models in a sweep may differ in anything that only changes these numbers.
    * ``loss(params, state, x, key, step, hyper) -> (loss, ObjectiveOutput)``.
    * ``update(state, output, step, hyper) -> state``: the controller update after each step.
    """

    init: Callable[[Params], Any]
    hyper: Callable[[Array], dict[str, Array]]
    loss: Callable[..., tuple[Array, ObjectiveOutput]]
    update: Callable[..., Any]


def elbo_terms(fwd: ModelOutput, analytic_kl: bool = True) -> tuple[Array, Array, Array | None]:
    """``(recon [B], kl [B], kl_per_dim [B, D] | None)`` from a forward pass (all latent groups); the ELBO is
    ``-(recon + kl)``. The KL is analytic where every group has a closed form and ``analytic_kl``, else the Monte
    Carlo estimate on the pass's samples."""
    recon = -jnp.mean(fwd.log_px_z, axis=0)  # [B]
    kl_per_dim = fwd.kl_per_dim()  # [B, D] or None
    if analytic_kl and kl_per_dim is not None:
        kl = jnp.sum(kl_per_dim, axis=-1)  # [B]
    else:
        kl = jnp.mean(fwd.log_qz_x - fwd.log_pz, axis=0)  # [B]
    return recon, kl, kl_per_dim


def _group_metrics(fwd: ModelOutput) -> dict[str, Array]:
    """Batch-mean analytic KL of each latent group, ``{"kl_<group>": []}``, for models with several groups."""
    per_group = fwd.kl_per_group()
    if per_group is None or len(per_group) < 2:
        return {}
    return {f"kl_{g}": jnp.mean(v) for g, v in per_group.items()}


def _output(recon: Array, kl: Array, kl_per_dim: Array | None, fwd: ModelOutput | None = None,
            **metrics: Any) -> ObjectiveOutput:
    if fwd is not None:
        metrics = {**_group_metrics(fwd), **metrics}
    return ObjectiveOutput(-(recon + kl), recon, kl, kl_per_dim,
                           {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()},
                           None if fwd is None else fwd.state)


def _with_aux(loss: Array, fwd: ModelOutput, out: ObjectiveOutput) -> tuple[Array, ObjectiveOutput]:
    """``loss`` plus the batch mean of the model's own ``aux_loss`` (M2's classifier term), reported as the
    ``aux_loss`` metric; models without one are unchanged."""
    if fwd.aux_loss is None:
        return loss, out
    aux = jnp.mean(fwd.aux_loss)
    return loss + aux, out._replace(metrics={**out.metrics, "aux_loss": aux.astype(jnp.float32)})


def _single_diagonal_group(fwd: ModelOutput, what: str, alternative: str) -> tuple[str, DiagonalGaussian]:
    """The one latent group of ``fwd`` with its diagonal Gaussian posterior, or a clear error."""
    if len(fwd.z) != 1:
        raise ConfigError(f"{what} is defined for one latent group; this model has {len(fwd.z)} "
                          f"({', '.join(fwd.z)}). {alternative}")
    (group, q), = fwd.posteriors.items()
    if not isinstance(q, DiagonalGaussian):
        raise ConfigError(f"{what} needs a diagonal Gaussian posterior; the model's is {type(q).__name__}. "
                          f"{alternative}")
    return group, q


def kl_balancing_coefficients(kl_groups: dict[str, Array], sizes: dict[str, int]) -> dict[str, Array]:
    r"""NVAE's KL balancing coefficients (Vahdat & Kautz 2020, Sec. 3.2 / their ``kl_balancer``):

    .. math:: c_g \propto \frac{|\overline{\mathrm{KL}}_g| + 0.01}{\alpha_g}, \qquad \frac1G \sum_g c_g = 1,

    with :math:`\overline{\mathrm{KL}}_g` the batch-mean KL of group :math:`g` and :math:`\alpha_g` its share of
    the latent units. Groups that carry more KL per unit get larger weights, so during the KL warm-up the
    optimizer pushes down the KL of the busy groups and leaves the nearly collapsed ones alone. Returned under
    ``stop_gradient``."""
    total = sum(sizes.values())
    raw = {g: (jnp.abs(jnp.mean(v)) + 0.01) / (sizes[g] / total) for g, v in kl_groups.items()}
    mean = sum(raw.values()) / len(raw)
    return {g: jax.lax.stop_gradient(v / mean) for g, v in raw.items()}


def elbo(model: PureModel, params: Params, x: Array, key: Array, *, beta: float | Array = 1.0,
         num_samples: int = 1, analytic_kl: bool = True, kl_balance: bool = False
         ) -> tuple[Array, ObjectiveOutput]:
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
      kl_balance: NVAE's KL balancing across latent groups while ``beta < 1`` (the warm-up): the gradient of
        each group's KL is scaled by :func:`kl_balancing_coefficients`, through
        ``KL + sum_g (c_g - 1) (KL_g - stop_gradient(KL_g))``: the loss value (and the reported KL) is the true
        one and only the gradient is rebalanced (NVAE's balancer rescales the value too). A model with one group
        is unaffected.
    """
    fwd = model.forward(params, x, key, num_samples)
    recon, kl, kl_per_dim = elbo_terms(fwd, analytic_kl)
    metrics: dict[str, Any] = {}
    kl_loss = kl
    if kl_balance and len(fwd.z) > 1:
        groups = fwd.kl_per_group()
        if groups is None:
            raise ConfigError("KL balancing needs a KL per latent group (closed form, or the model's "
                              "log_q_groups/log_p_groups); this model gives neither. Turn objective.kl_balance "
                              "off.")
        sizes = {g: fwd.z[g].shape[-1] for g in fwd.z}
        warming = jnp.asarray(beta) < 1.0
        coeffs = {g: jnp.where(warming, c, 1.0) for g, c in kl_balancing_coefficients(groups, sizes).items()}
        # Value: the KL of the bound; gradient: each group's KL gradient times its coefficient.
        kl_loss = kl + sum((coeffs[g] - 1.0) * (v - jax.lax.stop_gradient(v)) for g, v in groups.items())
        metrics.update({f"kl_balance_{g}": c for g, c in coeffs.items()})
    loss = jnp.mean(recon + beta * kl_loss)
    return _with_aux(loss, fwd, _output(recon, kl, kl_per_dim, fwd, beta=beta, **metrics))


def iwae_bound_from_log_weights(log_w: Array) -> Array:
    r"""The importance-weighted bound from log weights ``[K, B]``, ``[B]`` (stable log-sum-exp).

    .. math:: \mathcal{L}_K = \log \frac1K \sum_{k=1}^K w_k, \qquad
              w_k = \frac{p(x, z_k)}{q(z_k|x)}, \; z_k \sim q(z|x)

    >>> import jax.numpy as jnp
    >>> w = jnp.array([[0.5], [2.0], [1.5]])  # K = 3 weights of one example
    >>> round(float(iwae_bound_from_log_weights(jnp.log(w))[0]), 4)  # log of their mean, 4/3
    0.2877
    """
    return jax.nn.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])


def iwae(model: PureModel, params: Params, x: Array, key: Array, *,
         num_samples: int = 5) -> tuple[Array, ObjectiveOutput]:
    r"""The importance-weighted autoencoder bound (Burda, Grosse & Salakhutdinov 2016), loss = its negative.

    :math:`\mathcal{L}_1 = \mathrm{ELBO} \le \mathcal{L}_K \le \mathcal{L}_{K+1} \le \log p(x)` in expectation.
    The returned ``elbo``/``recon``/``kl`` are Monte Carlo estimates on the same ``K`` samples, and
    ``metrics["iwae"]`` is the batch-mean bound. With ``num_samples=1`` the loss equals the negative
    single-sample (Monte Carlo KL) ELBO exactly.
    """
    fwd = model.forward(params, x, key, num_samples)
    bound = iwae_bound_from_log_weights(fwd.log_weights)  # [B]
    recon, kl, kl_per_dim = elbo_terms(fwd, analytic_kl=False)
    loss = -jnp.mean(bound)
    return _with_aux(loss, fwd, _output(recon, kl, kl_per_dim, fwd, iwae=jnp.mean(bound)))


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


def free_bits(model: PureModel, params: Params, x: Array, key: Array, *, threshold: float | Array,
              beta: float | Array = 1.0, group_size: int = 1,
              num_samples: int = 1) -> tuple[Array, ObjectiveOutput]:
    r"""ELBO with free bits: :math:`\mathcal{L} = \frac1B\sum_b \mathrm{recon}(x_b) + \beta\,\tilde{\mathrm{KL}}`.

    ``threshold`` is :math:`\lambda` in nats per group of ``group_size`` dimensions; see :func:`free_bits_kl`.
    Needs a per-dimension KL (a diagonal Gaussian prior).
    """
    fwd = model.forward(params, x, key, num_samples)
    recon, kl, kl_per_dim = elbo_terms(fwd, analytic_kl=True)
    if kl_per_dim is None:
        raise ConfigError("free bits need a per-dimension analytic KL in every latent group (a diagonal Gaussian "
                          "posterior and prior: model.prior=standard_normal or learned_gaussian); for other "
                          "priors use objective.name=elbo with KL annealing or objective.name=capacity.")
    penalty = free_bits_kl(kl_per_dim, threshold, group_size)
    loss = jnp.mean(recon) + beta * penalty
    return _with_aux(loss, fwd, _output(recon, kl, kl_per_dim, fwd, beta=beta, free_bits_kl=penalty))


def free_bits_per_group(model: PureModel, params: Params, x: Array, key: Array, *, threshold: float | Array,
                        beta: float | Array = 1.0, num_samples: int = 1) -> tuple[Array, ObjectiveOutput]:
    r"""Free bits per latent group (layer), as deep hierarchies use them (Kingma et al. 2016; NVAE):

    .. math:: \mathcal{L} = \frac1B\sum_b \mathrm{recon}(x_b) + \beta \sum_g \max\big(\lambda,
              \tfrac1B \textstyle\sum_b \mathrm{KL}_g(x_b)\big)

    with each group's KL from the model (closed form, or the Monte Carlo estimate of its own log-densities), so a
    layer whose batch-mean KL is below :math:`\lambda` nats gets no gradient to shrink it further.
    """
    fwd = model.forward(params, x, key, num_samples)
    recon, kl, kl_per_dim = elbo_terms(fwd, analytic_kl=True)
    groups = fwd.kl_per_group()
    if groups is None:
        raise ConfigError("free bits per group need a KL per latent group (closed form, or the model's "
                          "log_q_groups/log_p_groups); this model gives neither.")
    penalty = sum(jnp.maximum(threshold, jnp.mean(v)) for v in groups.values())
    loss = jnp.mean(recon) + beta * penalty
    return _with_aux(loss, fwd, _output(recon, kl, kl_per_dim, fwd, beta=beta, free_bits_kl=penalty))


def capacity(model: PureModel, params: Params, x: Array, key: Array, *, capacity: float | Array,
             gamma: float | Array = 1000.0, num_samples: int = 1,
             analytic_kl: bool = True) -> tuple[Array, ObjectiveOutput]:
    r"""Controlled-capacity objective of Burgess et al. (2018), "Understanding disentangling in beta-VAE".

    .. math::
        \mathcal{L} = \frac1B \sum_b \mathrm{recon}(x_b)
                      + \gamma \left| \frac1B \sum_b \mathrm{kl}(x_b) - C \right|

    :math:`C` (nats) is usually increased linearly during training
    (:func:`jaxvae.objectives.schedules.capacity_schedule`).
    """
    fwd = model.forward(params, x, key, num_samples)
    recon, kl, kl_per_dim = elbo_terms(fwd, analytic_kl)
    loss = jnp.mean(recon) + gamma * jnp.abs(jnp.mean(kl) - capacity)
    return _with_aux(loss, fwd, _output(recon, kl, kl_per_dim, fwd, capacity=capacity, gamma=gamma))


# ------------------------------------------------------------------------------------------------ beta-TCVAE


class KLDecomposition(NamedTuple):
    r"""The three terms of the KL decomposition of Chen et al. (2018), per example, ``[B]`` (nats).

    Attributes:
      mi: index-code mutual information term :math:`\log q(z|x) - \log q(z)`.
      tc: total correlation term :math:`\log q(z) - \log \prod_d q(z_d)`.
      dimwise_kl: dimension-wise KL term :math:`\log \prod_d q(z_d) - \log p(z)`.
    """

    mi: Array
    tc: Array
    dimwise_kl: Array


_KL_ESTIMATORS = ("mws", "mss")


def _log_batch_weights(batch_size: int, dataset_size: int, estimator: str, dtype: Any) -> Array:
    """Log importance weights ``[M, M]`` (row i: sample z_i, column j: the posterior q(.|x_j))."""
    n, m = dataset_size, batch_size
    if estimator == "mws":
        return jnp.full((m, m), -math.log(n * m), dtype)
    if m == 1:
        return jnp.full((1, 1), -math.log(n), dtype)
    off_diagonal = math.log(n - 1) - math.log(n) - math.log(m - 1)
    return jnp.where(jnp.eye(m, dtype=bool), -math.log(n), off_diagonal).astype(dtype)


def kl_decomposition(q: DiagonalGaussian, z: Array, prior: DiagonalGaussian, *, dataset_size: int,
                     estimator: str = "mws") -> KLDecomposition:
    r"""Minibatch estimates of the "ELBO TC-decomposition" of Chen, Li, Grosse & Duvenaud (2018).

    .. math::
        \mathbb{E}_{p(x)} \mathrm{KL}(q(z|x) \,\|\, p(z)) = \underbrace{I_q(x; z)}_{\text{mi}}
          + \underbrace{\mathrm{KL}\big(q(z) \,\|\, \textstyle\prod_d q(z_d)\big)}_{\text{tc}}
          + \underbrace{\textstyle\sum_d \mathrm{KL}(q(z_d) \,\|\, p(z_d))}_{\text{dimwise\_kl}}

    with the aggregate posterior :math:`q(z) = \frac1N \sum_n q(z|x_n)` over a dataset of :math:`N` examples.
    For :math:`z_i \sim q(z|x_i)` the per-example terms are :math:`\log q(z_i|x_i) - \log q(z_i)`,
    :math:`\log q(z_i) - \sum_d \log q(z_{id})` and :math:`\sum_d \log q(z_{id}) - \log p(z_i)`; the
    aggregate densities are estimated from the minibatch of :math:`M` posteriors as weighted mixtures

    .. math::
        \log q(z_i) \approx \log \sum_{j=1}^M w_{ij} \, q(z_i | x_j), \qquad
        \log q(z_{id}) \approx \log \sum_{j=1}^M w_{ij} \, q(z_{id} | x_j).

    * ``estimator="mws"``: minibatch weighted sampling, the estimator the paper trains with,
      :math:`w_{ij} = 1/(NM)`. The weights do not sum to one, so the individual terms are biased: each
      :math:`\log q` estimate is low by between :math:`\log M` (non-overlapping posteriors) and :math:`\log N`
      (posteriors that all overlap), which makes ``tc`` too large by roughly :math:`(D-1)` times that (exactly
      :math:`(D-1)\log M` more than ``"mss"`` when :math:`N = M`: ~7 nats for :math:`D = 2`, :math:`M = 1000`).
      Use it to *train* as in the paper; to *measure* the total correlation use ``"mss"``.
    * ``estimator="mss"``: a symmetric form of the paper's minibatch stratified sampling, :math:`w_{ii} = 1/N`
      and :math:`w_{ij} = (N - 1) / (N (M - 1))` for :math:`j \ne i`. The weights sum to one and the mixture is
      unbiased for :math:`q(z_i)` when the other batch members are a uniform sample of the rest of the dataset;
      with :math:`N = M` it is exactly the batch's aggregate posterior.

    Whatever the weights, the three terms telescope: ``mi + tc + dimwise_kl`` equals the Monte Carlo KL
    :math:`\log q(z|x) - \log p(z)` on the same samples (up to float rounding).

    Args:
      q: the posteriors of the batch, ``[M, D]``.
      z: samples :math:`z \sim q`, ``[K, M, D]``.
      prior: a factorized prior, a :class:`DiagonalGaussian` broadcasting against ``[D]``.
      dataset_size: :math:`N \ge M`, the number of training examples.
      estimator: ``"mws"`` or ``"mss"``.

    Returns:
      The per-example terms, each ``[M]`` (averaged over the ``K`` samples).
    """
    if estimator not in _KL_ESTIMATORS:
        raise ValueError(f"Unknown KL decomposition estimator {estimator!r}; choose one of {_KL_ESTIMATORS}.")
    batch_size = q.loc.shape[0]
    if int(dataset_size) < batch_size:
        raise ValueError(f"dataset_size={dataset_size} must be at least the batch size {batch_size}: the batch is "
                         "drawn from the dataset.")
    log_q_ij = gaussian_log_prob_per_dim(z[:, :, None, :], q.loc, q.log_scale)  # [K, M(i), M(j), D]
    log_w = _log_batch_weights(batch_size, int(dataset_size), estimator, log_q_ij.dtype)  # [M, M]
    log_qz = jax.nn.logsumexp(jnp.sum(log_q_ij, axis=-1) + log_w, axis=-1)  # [K, M]
    log_qz_prod = jnp.sum(jax.nn.logsumexp(log_q_ij + log_w[..., None], axis=-2), axis=-1)  # [K, M]
    log_qz_x = q.log_prob(z)  # [K, M]
    log_pz = prior.log_prob(z)  # [K, M]
    return KLDecomposition(mi=jnp.mean(log_qz_x - log_qz, axis=0), tc=jnp.mean(log_qz - log_qz_prod, axis=0),
                           dimwise_kl=jnp.mean(log_qz_prod - log_pz, axis=0))


def beta_tcvae(model: PureModel, params: Params, x: Array, key: Array, *, dataset_size: int,
               alpha: float | Array = 1.0, beta: float | Array = 6.0, gamma: float | Array = 1.0,
               num_samples: int = 1, estimator: str = "mws") -> tuple[Array, ObjectiveOutput]:
    r"""beta-TCVAE (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of Disentanglement in VAEs").

    The KL term of the ELBO is split into mutual information, total correlation and dimension-wise KL
    (:func:`kl_decomposition`) and the three are weighted separately:

    .. math::
        \mathcal{L} = \frac1B \sum_b \mathrm{recon}(x_b) + \alpha \, \mathrm{mi}_b + \beta \, \mathrm{tc}_b
                      + \gamma \, \mathrm{dimwise\_kl}_b

    With :math:`\alpha = \beta = \gamma = 1` this is exactly the negative ELBO with the Monte Carlo KL on the
    same samples. The paper's setting is :math:`\alpha = \gamma = 1`, :math:`\beta = 6`. Needs a factorized
    (diagonal Gaussian) prior, so that :math:`p(z) = \prod_d p(z_d)`.

    Returns the true per-example ELBO terms (analytic KL) and the batch means ``metrics["mi"]``,
    ``metrics["tc"]``, ``metrics["dimwise_kl"]`` (see :func:`kl_decomposition` for the bias of ``"mws"``).

    Args:
      model, params, x, key: as in :func:`elbo`; ``x`` is ``[B, *E]``.
      dataset_size: :math:`N`, the number of training examples (at least ``B``).
      alpha, beta, gamma: weights of mi, tc and dimwise_kl.
      num_samples: posterior samples per example.
      estimator: ``"mws"`` (minibatch weighted sampling, the paper's) or ``"mss"``.
    """
    fwd = model.forward(params, x, key, num_samples)
    alternative = "Use objective.name=elbo (with beta) or capacity for this model."
    group, q = _single_diagonal_group(fwd, "beta-TCVAE's total-correlation decomposition", alternative)
    prior = fwd.priors[group]
    if not isinstance(prior, DiagonalGaussian) or prior.batch_shape:
        raise ConfigError("beta_tcvae needs a factorized prior p(z) = prod_d p(z_d) for the dimension-wise KL; "
                          f"the model's prior is {type(prior).__name__}. Use a standard normal or learned "
                          f"Gaussian prior (model.prior=standard_normal or learned_gaussian). {alternative}")
    terms = kl_decomposition(q, fwd.z[group], prior, dataset_size=dataset_size, estimator=estimator)
    recon, kl, kl_per_dim = elbo_terms(fwd, analytic_kl=True)
    loss = jnp.mean(recon + alpha * terms.mi + beta * terms.tc + gamma * terms.dimwise_kl)
    out = _output(recon, kl, kl_per_dim, fwd, mi=jnp.mean(terms.mi), tc=jnp.mean(terms.tc),
                  dimwise_kl=jnp.mean(terms.dimwise_kl), alpha=alpha, beta=beta, gamma=gamma)
    return _with_aux(loss, fwd, out)


# ------------------------------------------------------------------------------------------------- InfoVAE


def info_vae(model: PureModel, params: Params, x: Array, key: Array, *, alpha: float | Array = 0.0,
             lambda_: float | Array = 1000.0, kernel: str = "imq", kernel_scale: float | Array | None = None,
             num_samples: int = 1) -> tuple[Array, ObjectiveOutput]:
    r"""The InfoVAE / MMD-VAE objective (Zhao, Song & Ermon 2019, "InfoVAE", with the MMD divergence).

    .. math::
        \mathcal{L} = \frac1B \sum_b \left[\mathrm{recon}(x_b) + (1 - \alpha)\, \mathrm{kl}(x_b)\right]
                      + (\alpha + \lambda - 1)\, \widehat{\mathrm{MMD}}^2\big(q(z), p(z)\big)

    :math:`\alpha = 0, \lambda = 1` is the negative ELBO; the default :math:`\alpha = 0, \lambda = 1000` is the
    paper's MMD-VAE. The MMD (:func:`mmd`) compares the ``K * B`` posterior samples ``[K * B, D]`` with as many
    prior samples drawn by ``model.prior_sample`` (posterior and prior draws use two keys split from ``key``).
    ``kernel_scale=None`` means :math:`s = 1` (matched to a standard normal prior).

    Returns the true per-example ELBO terms (analytic KL where the prior allows it) and the metrics ``"mmd"``,
    ``"alpha"`` and ``"lambda"``.
    """
    check_kernel(kernel)
    scale = 1.0 if kernel_scale is None else kernel_scale
    key_q, key_p = jax.random.split(key)
    fwd = model.forward(params, x, key_q, num_samples)
    recon, kl, kl_per_dim = elbo_terms(fwd, analytic_kl=True)
    z_flat = flatten_latents(fwd.z, model.groups)  # [K, B, D] (all groups)
    z_q = z_flat.reshape(-1, z_flat.shape[-1])  # [K * B, D]
    z_p = model.prior_sample(params, key_p, z_q.shape[0])  # [K * B, D]
    divergence = mmd(z_q, z_p, kernel=kernel, scale=scale)
    loss = jnp.mean(recon) + (1.0 - alpha) * jnp.mean(kl) + (alpha + lambda_ - 1.0) * divergence
    out = _output(recon, kl, kl_per_dim, fwd, mmd=divergence, alpha=alpha, **{"lambda": lambda_})
    return _with_aux(loss, fwd, out)
