r"""The IWAE family of bounds and their low-variance gradient estimators, as objectives (pure functions).

With :math:`K` importance samples :math:`z_k \sim q(z|x)` and log weights
:math:`\log w_k = \log p(x, z_k) - \log q(z_k|x)`, the IWAE bound is
:math:`\mathcal{L}_K = \log \frac1K \sum_k w_k` (:func:`jaxvae.objectives.iwae`). Rainforth et al. (2018,
"Tighter variational bounds are not necessarily better") show that the tighter the bound, the *worse* the
signal-to-noise ratio of its gradient for the inference network (it falls as :math:`O(1/\sqrt{K})`), and
propose bounds that trade tightness for a better inference-network gradient; Roeder et al. (2017) and Tucker et
al. (2019) remove the score-function term that carries that noise:

=============  =======================================================================================
``miwae``      :math:`\frac1M \sum_{m=1}^M \mathcal{L}_K^{(m)}` over :math:`M` independent groups of
               :math:`K` samples (Rainforth et al. 2018); ``M = 1`` is IWAE, ``K = 1`` the ELBO with ``M``
               samples.
``ciwae``      :math:`\beta\, \frac1K \sum_k \log w_k + (1 - \beta)\, \mathcal{L}_K`: a convex combination of the
               ELBO and IWAE on the same samples (Rainforth et al. 2018); ``beta=1`` is the ELBO, ``0`` IWAE.
``piwae``      the generative network follows IWAE over all :math:`MK` samples, the inference network
               MIWAE(M, K) on the same samples (Rainforth et al. 2018, "partially importance weighted").
``iwae_dreg``  IWAE with the doubly reparameterized gradient of Tucker, Lawson, Gu & Maddison (2019): the
               inference network's gradient is
               :math:`\sum_k \tilde w_k^2 \, (\partial \log w_k / \partial z_k) (\partial z_k / \partial \phi)`
               with :math:`\tilde w_k = w_k / \sum_j w_j` and :math:`\log q` evaluated with its parameters held
               fixed; the generative network's is IWAE's. Unbiased for the same bound, with far less variance.
``elbo_stl``   the ELBO with the "sticking the landing" gradient (Roeder, Wu & Duvenaud 2017): the Monte Carlo
               ELBO with :math:`\log q` evaluated at stopped parameters, which drops the score-function term
               (zero in expectation) and so has zero variance when :math:`q` is the exact posterior.
=============  =======================================================================================

``miwae`` and ``ciwae`` work for any model (they read only :class:`~jaxvae.models.protocol.ModelOutput`).
``piwae``, ``iwae_dreg`` and ``elbo_stl`` re-score the same samples with some parameters held fixed, which needs
the model's pieces rather than one pass: one latent group, its posterior's ``log_prob`` (a diagonal Gaussian, or
any distribution with a closed-form density) and an unconditional prior (:meth:`PureModel.prior_distribution`);
they rebuild the pass from :meth:`PureModel.posteriors`, :meth:`PureModel.decode` and the likelihood, so the values
equal the plain pass's on the same key. Their *values* are the bounds' (``loss`` is the negative bound); only
the gradients differ.

Cost, relative to one pass with ``K`` samples: ``miwae`` is a pass with ``M * K`` samples; ``iwae_dreg`` adds
one forward-only decoder pass (for the weights, which scale the path gradient); ``piwae`` runs the decoder twice
with gradients (once per network).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxvae.distributions.base import Distribution, analytic_kl_per_dim
from jaxvae.errors import ConfigError
from jaxvae.models.protocol import Params, PureModel
from jaxvae.objectives.losses import ObjectiveOutput, _output, elbo_terms, iwae_bound_from_log_weights

Array = jax.Array
sg = jax.lax.stop_gradient

__all__ = ["ciwae", "elbo_stl", "iwae_dreg", "miwae", "miwae_bound_from_log_weights", "piwae"]


def miwae_bound_from_log_weights(log_w: Array, outer: int) -> Array:
    r"""MIWAE(M, K) from log weights ``[M * K, B]`` (group ``m`` holds rows ``m K .. (m + 1) K - 1``), ``[B]``:
    :math:`\frac1M \sum_m \log \frac1K \sum_k w_{mk}`."""
    mk, b = log_w.shape
    if mk % outer:
        raise ValueError(f"{mk} samples do not split into {outer} groups.")
    k = mk // outer
    per_group = jax.nn.logsumexp(log_w.reshape(outer, k, b), axis=1) - math.log(k)  # [M, B]
    return jnp.mean(per_group, axis=0)


def _check_outer(outer: int) -> None:
    if int(outer) < 1:
        raise ConfigError(f"The number of outer sample groups M must be >= 1, got {outer}.")


def miwae(model: PureModel, params: Params, x: Array, key: Array, *, num_samples: int = 5,
          outer: int = 1) -> tuple[Array, ObjectiveOutput]:
    r"""The multiply importance weighted bound MIWAE(M, K) (Rainforth et al. 2018, eq. 6), loss = its negative.

    ``num_samples`` is :math:`K` (inside each log-mean-exp), ``outer`` :math:`M`; one pass draws
    :math:`M K` samples. ``metrics["miwae"]`` is the batch-mean bound and ``metrics["iwae"]`` the IWAE bound of
    all :math:`M K` samples (tighter). ``outer=1`` equals :func:`jaxvae.objectives.iwae` exactly.
    """
    _check_outer(outer)
    fwd = model.forward(params, x, key, outer * num_samples)
    bound = miwae_bound_from_log_weights(fwd.log_weights, outer)  # [B]
    recon, kl, kl_per_dim = elbo_terms(fwd, analytic_kl=False)
    return -jnp.mean(bound), _output(recon, kl, kl_per_dim, fwd, miwae=jnp.mean(bound),
                                     iwae=jnp.mean(iwae_bound_from_log_weights(fwd.log_weights)))


def ciwae(model: PureModel, params: Params, x: Array, key: Array, *, num_samples: int = 5,
          beta: float | Array = 0.5) -> tuple[Array, ObjectiveOutput]:
    r"""CIWAE(beta) (Rainforth et al. 2018, eq. 7): :math:`\beta\,\mathrm{ELBO}_K + (1-\beta)\,\mathcal{L}_K` with
    :math:`\mathrm{ELBO}_K = \frac1K \sum_k \log w_k` on the same ``K`` samples; loss = its negative.
    ``beta=1`` is the (Monte Carlo) ELBO with ``K`` samples, ``beta=0`` IWAE."""
    fwd = model.forward(params, x, key, num_samples)
    log_w = fwd.log_weights  # [K, B]
    iw = iwae_bound_from_log_weights(log_w)  # [B]
    bound = beta * jnp.mean(log_w, axis=0) + (1.0 - beta) * iw  # [B]
    recon, kl, kl_per_dim = elbo_terms(fwd, analytic_kl=False)
    return -jnp.mean(bound), _output(recon, kl, kl_per_dim, fwd, ciwae=jnp.mean(bound), iwae=jnp.mean(iw),
                                     ciwae_beta=beta)


# ------------------------------------------------------------------ estimators that re-score with fixed parameters


def _pieces(model: PureModel, params: Params, x: Array, what: str) -> tuple[Distribution, Any]:
    """The single group's posterior ``q(z|x) [B]`` and a function ``(params, z) -> (log p(x|z),
    log p(z))``, each ``[K, B]``; a clear error for models these estimators do not cover."""
    alternative = ("Use objective.name=iwae, miwae or ciwae (they work for every model), or elbo for the "
                   "standard gradient.")
    if len(model.groups) != 1:
        raise ConfigError(f"{what} re-scores one latent group with its parameters held fixed; this model has "
                          f"{len(model.groups)} groups ({', '.join(g for g, _ in model.groups)}). {alternative}")
    (group, _), = model.groups
    if model.prior_distribution(params) is None:
        raise ConfigError(f"{what} needs the model's unconditional prior (PureModel.prior_distribution); this "
                          f"model returns None. {alternative}")
    q = model.posteriors(params, x)[group]

    def log_joint(p_params: Params, z: Array) -> tuple[Array, Array]:
        prior = model.prior_distribution(p_params)
        return model.log_likelihood(p_params, {group: z}, x), prior.log_prob(z)  # [K, B] each

    return q, log_joint


def _log_prob_fixed(q: Distribution, z: Array, what: str) -> Array:
    """``log q(z)`` with the distribution's parameters held fixed (gradients reach ``z`` only), ``[K, B]``."""
    try:
        return jax.tree.map(sg, q).log_prob(z)
    except NotImplementedError as err:
        raise ConfigError(f"{what} evaluates log q(z|x) at given z with the posterior's parameters held fixed; "
                          f"{type(q).__name__} has no closed-form log_prob ({err}). Use objective.name=iwae or "
                          "elbo.") from err


def _terms(log_px_z: Array, log_qz_x: Array, log_pz: Array, q: Distribution, prior: Any) -> tuple:
    recon = -jnp.mean(log_px_z, axis=0)  # [B]
    kl = jnp.mean(log_qz_x - log_pz, axis=0)  # [B]
    return recon, kl, analytic_kl_per_dim(q, prior)


def _with_value(surrogate: Array, value: Array) -> Array:
    """A scalar whose value is ``value`` and whose gradient is ``surrogate``'s."""
    return surrogate - sg(surrogate) + sg(value)


def elbo_stl(model: PureModel, params: Params, x: Array, key: Array, *, beta: float | Array = 1.0,
             num_samples: int = 1) -> tuple[Array, ObjectiveOutput]:
    r"""The (beta-weighted) negative Monte Carlo ELBO with the sticking-the-landing gradient (Roeder, Wu &
    Duvenaud 2017, "Sticking the landing: simple, lower-variance gradient estimators for variational inference"):

    .. math:: \mathcal{L} = \frac1{BK} \sum_{b,k} -\log p(x_b|z_{bk})
              + \beta \big(\log q_{\bar\phi}(z_{bk}|x_b) - \log p(z_{bk})\big),
              \qquad z_{bk} = \mu_\phi + \sigma_\phi \epsilon_{bk},

    with :math:`\bar\phi` the stopped posterior parameters. Its value is the ordinary Monte Carlo ELBO; its
    gradient is unbiased and vanishes when :math:`q` equals the true posterior (with ``beta=1``).
    """
    what = "The sticking-the-landing gradient (objective.name=elbo_stl)"
    q, log_joint = _pieces(model, params, x, what)
    z = q.sample(key, num_samples)  # [K, B, D]
    log_px_z, log_pz = log_joint(params, z)
    log_qz_x = _log_prob_fixed(q, z, what)  # [K, B], value = log q(z|x)
    recon, kl, kl_per_dim = _terms(log_px_z, log_qz_x, log_pz, q, model.prior_distribution(params))
    loss = jnp.mean(recon + beta * kl)
    return loss, _output(recon, kl, kl_per_dim, beta=beta)


def iwae_dreg(model: PureModel, params: Params, x: Array, key: Array, *,
              num_samples: int = 5) -> tuple[Array, ObjectiveOutput]:
    r"""The IWAE bound with the doubly reparameterized gradient (Tucker, Lawson, Gu & Maddison 2019, "Doubly
    reparameterized gradient estimators for Monte Carlo objectives", eq. 5); loss = the negative bound.

    Gradients (``z_k`` reparameterized, :math:`\tilde w_k` the normalised weights):

    .. math::
        \nabla_\theta = \sum_k \tilde w_k \nabla_\theta \log w_k, \qquad
        \nabla_\phi = \sum_k \tilde w_k^2 \, \frac{\partial \log w_k}{\partial z_k}
                      \frac{\partial z_k}{\partial \phi}\Big|_{\log q \text{ at fixed } \phi}

    Implemented as one surrogate: the path gradient through ``z_k`` is scaled by :math:`\tilde w_k` (computed by
    a forward-only pass on the same samples) and the whole term weighted by :math:`\tilde w_k` again, so the
    generative parameters (which do not act through ``z``) get IWAE's weights and the inference parameters their
    square. With ``num_samples=1`` it is :func:`elbo_stl`.
    """
    what = "The doubly reparameterized IWAE gradient (objective.name=iwae_dreg)"
    q, log_joint = _pieces(model, params, x, what)
    z = q.sample(key, num_samples)  # [K, B, D]
    log_px_z, log_pz = log_joint(sg(params), sg(z))  # forward only: the weights
    log_qz_x = _log_prob_fixed(q, z, what)
    log_w = log_px_z + log_pz - sg(log_qz_x)  # [K, B]
    w = sg(jax.nn.softmax(log_w, axis=0))  # [K, B]
    z_scaled = sg(z) + w[..., None] * (z - sg(z))  # value z; gradient through it times w
    lp_x, lp_z = log_joint(params, z_scaled)
    surrogate = jnp.sum(w * (lp_x + lp_z - _log_prob_fixed(q, z_scaled, what)), axis=0)  # [B]
    bound = iwae_bound_from_log_weights(log_w)  # [B]
    loss = _with_value(-jnp.mean(surrogate), -jnp.mean(bound))
    recon, kl, kl_per_dim = _terms(log_px_z, log_qz_x, log_pz, q, model.prior_distribution(params))
    return loss, _output(recon, kl, kl_per_dim, iwae=jnp.mean(bound))


def piwae(model: PureModel, params: Params, x: Array, key: Array, *, num_samples: int = 5,
          outer: int = 1) -> tuple[Array, ObjectiveOutput]:
    r"""The partially importance weighted autoencoder PIWAE(M, K) (Rainforth et al. 2018, Sec. 4): on one set of
    :math:`M K` samples, the generative network ascends IWAE over all of them and the inference network
    MIWAE(M, K) (groups of ``num_samples`` = K).

    Implemented as two surrogates on the same samples: :math:`\sum_j \tilde a_j \log p_\theta(x, \bar z_j)` with
    IWAE's normalised weights (``z`` held fixed, so only :math:`\theta` moves) plus
    :math:`\sum_j \tilde b_j [\log p_{\bar\theta}(x, z_j) - \log q_\phi(z_j|x)]` with MIWAE's
    (:math:`\tilde b_{mk} = w_{mk} / (M \sum_{k'} w_{mk'})`, generative parameters held fixed); the decoder runs
    twice. The value of ``loss`` is the negative IWAE bound (what :math:`\theta` ascends);
    ``metrics["miwae"]`` is the inference network's bound.
    """
    _check_outer(outer)
    what = "PIWAE (objective.name=piwae)"
    q, log_joint = _pieces(model, params, x, what)
    mk = outer * num_samples
    z = q.sample(key, mk)  # [M K, B, D]
    b = z.shape[1]
    log_qz_x = q.log_prob(z)  # [MK, B], full gradient (score and path) for the inference network
    lp_x_theta, lp_z_theta = log_joint(params, sg(z))  # theta's pass
    lp_x_phi, lp_z_phi = log_joint(sg(params), z)  # phi's pass (through z only)
    log_w = sg(lp_x_theta + lp_z_theta - log_qz_x)  # [MK, B]
    a = jax.nn.softmax(log_w, axis=0)  # IWAE_MK weights
    grouped = log_w.reshape(outer, num_samples, b)
    bw = (jax.nn.softmax(grouped, axis=1) / outer).reshape(mk, b)  # MIWAE(M, K) weights
    surrogate = jnp.sum(a * (lp_x_theta + lp_z_theta), axis=0) + jnp.sum(bw * (lp_x_phi + lp_z_phi - log_qz_x),
                                                                          axis=0)  # [B]
    iw = iwae_bound_from_log_weights(log_w)
    mi = miwae_bound_from_log_weights(log_w, outer)
    loss = _with_value(-jnp.mean(surrogate), -jnp.mean(iw))
    recon, kl, kl_per_dim = _terms(lp_x_theta, log_qz_x, lp_z_theta, q, model.prior_distribution(params))
    return loss, _output(recon, kl, kl_per_dim, iwae=jnp.mean(iw), miwae=jnp.mean(mi))

