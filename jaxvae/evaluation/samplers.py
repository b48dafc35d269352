r"""Sampling from a trained VAE: tempered prior samples, ex-post Gaussian-mixture density estimation, VampPrior
samples, latent interpolation and latent traversals.

All functions are pure and take explicit PRNG keys; the model is a :class:`~jaxvae.models.protocol.PureModel`
(hashable, so it is a static argument of the jitted internals) and ``params`` its parameter dict.

* **Reduced temperature** (Kingma & Dhariwal 2018, "Glow", Section 5): sample with the prior's standard
  deviation scaled by :math:`T \le 1`, trading diversity for sample quality. See :func:`prior_samples`.
* **Ex-post density estimation** (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders",
  Section 4): fit a Gaussian mixture to the posterior means of the training set by EM and sample the decoder from
  it instead of from the prior, which closes the gap between the prior and the aggregate posterior. See
  :func:`fit_gmm`, :func:`gmm_log_prob`, :func:`gmm_sample` and :func:`em_step`::

      q = jv.diagnostics.encode_dataset(model, params, train_x)          # posterior means q.loc [N, D]
      fit = fit_gmm(jax.random.key(0), q.loc, num_components=10)
      x = model.decode_mean(params, gmm_sample(fit.gmm, jax.random.key(1), 64))

* **VampPrior samples** (Tomczak & Welling 2018): :func:`vamp_samples`.
* **Interpolation**: :func:`lerp`, :func:`slerp` (Shoemake 1985; White 2016, "Sampling Generative Networks")
  and :func:`interpolate` between the posterior means of two examples.
* **Traversals** (Higgins et al. 2017, "beta-VAE"): :func:`traversal_latents` and :func:`traversals` vary one
  latent coordinate at a time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from jaxvae.distributions.base import DiagonalGaussian, Mixture
from jaxvae.errors import ConfigError
from jaxvae.models import conditional
from jaxvae.models import priors as priors_lib
from jaxvae.models.protocol import VAE, Params, PureModel

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)
_KMEANS_ITERS = 10  # Lloyd iterations after k-means++ seeding
_PARALLEL_EPS = 1e-6  # slerp falls back to lerp when sin(angle) is below this

__all__ = [
    "GMMFit",
    "GaussianMixture",
    "em_step",
    "fit_gmm",
    "gmm_log_prob",
    "gmm_sample",
    "interpolate",
    "lerp",
    "prior_moments",
    "prior_samples",
    "slerp",
    "traversal_latents",
    "traversals",
    "vamp_samples",
]


# ----------------------------------------------------------------------------------------------------------------
# Prior structure


def _prior_parts(model: PureModel, params: Params) -> DiagonalGaussian | Mixture:
    """The model's prior distribution when it is one whose tempering and moments are known (a diagonal Gaussian,
    or a mixture of diagonal Gaussians), else a clear error."""
    p = model.prior_distribution(params)
    if isinstance(p, DiagonalGaussian) or (isinstance(p, Mixture) and isinstance(p.components, DiagonalGaussian)):
        return p
    what = "no single unconditional prior (a hierarchy?)" if p is None else f"the prior {type(p).__name__}"
    raise ConfigError(f"This sampler needs a diagonal Gaussian or Gaussian-mixture prior; the model has {what}. "
                      "Supported: StandardNormal, LearnedGaussian, MixtureOfGaussians, VampPrior. Sample the "
                      "model as it is with temperature=1.0 (model.prior_sample).")


@functools.partial(jax.jit, static_argnums=(0,))
def _prior_moments(model: PureModel, params: Params) -> tuple[Array, Array]:
    p = _prior_parts(model, params)
    if isinstance(p, DiagonalGaussian):
        return p.loc, p.scale
    return p.mean(), jnp.sqrt(p.variance())


def prior_moments(model: PureModel, params: Params) -> tuple[Array, Array]:
    r"""The prior's per-dimension mean and standard deviation, two ``[D]`` arrays.

    For a diagonal Gaussian prior these are its :math:`\mu` and :math:`\sigma`; for a mixture
    :math:`\sum_k \pi_k \mathcal{N}(\mu_k, \mathrm{diag}\,\sigma_k^2)` (MixtureOfGaussians, VampPrior) the
    marginal moments (:meth:`jaxvae.distributions.Mixture.variance`)

    .. math:: m = \sum_k \pi_k \mu_k, \qquad s^2 = \sum_k \pi_k (\sigma_k^2 + \mu_k^2) - m^2.
    """
    return _prior_moments(model.evaluation(), params)


# ----------------------------------------------------------------------------------------------------------------
# Tempered prior samples


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _model_tempered_samples(model: PureModel, params: Params, key: Array, n: int, temperature: float) -> Array:
    return model.prior_sample_tempered(params, key, n, temperature)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _prior_samples(model: PureModel, params: Params, key: Array, n: int, temperature: Array) -> Array:
    p = _prior_parts(model, params)
    if isinstance(p, DiagonalGaussian):
        eps = jax.random.normal(key, (n, p.loc.shape[-1]), p.loc.dtype)
        return p.loc + temperature * p.scale * eps
    k_key, z_key = jax.random.split(key)
    idx = jax.random.categorical(k_key, p.log_weights, shape=(n,))  # [n]
    loc, scale = p.components.loc[idx], p.components.scale[idx]  # [n, D]
    eps = jax.random.normal(z_key, loc.shape, loc.dtype)
    return loc + temperature * scale * eps


def prior_samples(model: PureModel, params: Params, key: Array, n: int, *, temperature: float = 1.0) -> Array:
    r"""``n`` latents from the prior at a temperature, ``[n, D]``.

    Reduced-temperature sampling (Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1
    Convolutions", Section 5) scales the prior's standard deviation by :math:`T`:

    * diagonal Gaussian prior :math:`\mathcal{N}(\mu, \mathrm{diag}\,\sigma^2)` (StandardNormal, LearnedGaussian):

      .. math:: z = \mu + T \, \sigma \odot \epsilon, \qquad \epsilon \sim \mathcal{N}(0, I_D),

      i.e. exact samples of :math:`p_T(z) \propto p(z)^{1/T^2}`;
    * mixture prior :math:`\sum_k \pi_k \mathcal{N}(\mu_k, \mathrm{diag}\,\sigma_k^2)` (MixtureOfGaussians with
      its ``logits``, ``loc``, ``log_scale``; VampPrior with components ``encoder(pseudo_inputs)`` and uniform
      weights): draw :math:`k \sim \mathrm{Cat}(\pi)` then :math:`z = \mu_k + T \sigma_k \odot \epsilon`. The
      mixing weights are kept (this is the usual component-wise tempering, not :math:`p^{1/T^2}`);
    * any other model (a hierarchy): its own :meth:`~jaxvae.models.protocol.Model.prior_sample_tempered` (ancestral
      sampling, each conditional's scale times :math:`T`; ``temperature`` must then be a Python number).

    ``temperature=0`` returns the prior mean (for a mixture: the chosen component's mean) exactly; ``1`` is plain
    prior sampling. ``temperature`` may be a traced scalar (it is not a static argument).

    Args:
      model, params: the VAE.
      key: PRNG key.
      n: number of samples (static).
      temperature: :math:`T \ge 0`.

    Returns:
      ``z`` of shape ``[n, D]``.
    """
    model = model.evaluation()
    t = jnp.asarray(temperature)  # weakly typed: the prior's dtype (a float32 T would round float64 samples)
    try:
        return _prior_samples(model, params, key, n, t)
    except ConfigError:  # no single known prior (raised while tracing): the model's own (ancestral) sampling
        if not isinstance(temperature, int | float):
            raise
        return _model_tempered_samples(model, params, key, n, float(temperature))


def vamp_samples(model: PureModel, params: Params, key: Array, n: int) -> Array:
    r"""``n`` latents from the model's VampPrior (Tomczak & Welling 2018), ``[n, D]``.

    .. math:: k \sim \mathcal{U}\{1, \dots, K\}, \qquad z \sim q(z \mid u_k)

    with :math:`u_k` the learned pseudo-inputs. Raises :class:`~jaxvae.errors.ConfigError` when the model's prior
    is not a :class:`~jaxvae.models.priors.VampPrior`.
    """
    model = model.evaluation()
    module = model.merge(params)
    prior = module.prior if isinstance(module, VAE) else None
    if not isinstance(prior, priors_lib.VampPrior):
        raise ConfigError(f"vamp_samples needs a model whose prior is a VampPrior, but its prior is "
                          f"{type(prior).__name__}; build the VAE with prior=VampPrior(...) (config: "
                          "model.prior=vamp) or use prior_samples for other priors.")
    return _vamp_samples(model, params, key, n)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _vamp_samples(model: PureModel, params: Params, key: Array, n: int) -> Array:
    return model.prior_sample(params, key, n)


# ----------------------------------------------------------------------------------------------------------------
# Gaussian mixtures and EM


class GaussianMixture(NamedTuple):
    r"""A Gaussian mixture :math:`p(z) = \sum_{k=1}^K w_k \, \mathcal{N}(z; \mu_k, \Sigma_k)`, a pytree.

    The covariance type is carried by the SHAPE of ``covariances`` (static under ``jax.jit``), so the tuple holds
    arrays only and maps, flattens and jits like any pytree:

    * ``"full"``: ``covariances`` is ``[K, D, D]`` (symmetric positive definite);
    * ``"diag"``: ``covariances`` is ``[K, D]``, the variances :math:`\Sigma_k = \mathrm{diag}(\sigma_k^2)`.

    Attributes:
      weights: mixing weights :math:`w_k`, ``[K]``, summing to one.
      means: :math:`\mu_k`, ``[K, D]``.
      covariances: ``[K, D, D]`` or ``[K, D]`` as above.
    """

    weights: Array
    means: Array
    covariances: Array

    @property
    def covariance_type(self) -> str:
        """``"full"`` or ``"diag"``, read from the shape of ``covariances``."""
        return "full" if jnp.ndim(self.covariances) == 3 else "diag"

    @property
    def num_components(self) -> int:
        """K."""
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """D, the dimension of the data space."""
        return self.means.shape[-1]


class GMMFit(NamedTuple):
    """The result of :func:`fit_gmm`, a pytree.

    Attributes:
      gmm: the fitted :class:`GaussianMixture`.
      log_likelihood: mean log-likelihood per sample of the data under ``gmm``,
        :math:`\\frac1N \\sum_n \\log p(z_n)` (scalar; what ``sklearn.mixture.GaussianMixture.score`` returns).
      num_iters: number of EM steps taken (int32 scalar).
      converged: whether the change of the mean log-likelihood fell below ``tol`` before ``num_iters`` steps.
      history: ``[num_iters]`` mean log-likelihood BEFORE each EM step (``history[0]`` is that of the
        initialisation); entries after the last step are NaN. EM makes it non-decreasing.
    """

    gmm: GaussianMixture
    log_likelihood: Array
    num_iters: Array
    converged: Array
    history: Array


def _component_log_prob(gmm: GaussianMixture, z: Array) -> Array:
    r""":math:`\log \mathcal{N}(z_n; \mu_k, \Sigma_k)`, ``[N, K]`` for ``z [N, D]``.

    Full covariances use the Cholesky factor :math:`\Sigma_k = L_k L_k^\top`:
    :math:`-\tfrac12 (D \log 2\pi + 2 \sum_d \log L_{k,dd} + \lVert L_k^{-1}(z - \mu_k) \rVert^2)`.
    """
    d = z.shape[-1]
    diff = z[None, :, :] - gmm.means[:, None, :]  # [K, N, D]
    if gmm.covariance_type == "full":
        chol = jnp.linalg.cholesky(gmm.covariances)  # [K, D, D], lower
        y = jax.vmap(lambda c, r: solve_triangular(c, r.T, lower=True))(chol, diff)  # [K, D, N]
        maha = jnp.sum(jnp.square(y), axis=1)  # [K, N]
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)  # [K]
    else:
        var = gmm.covariances  # [K, D]
        maha = jnp.sum(jnp.square(diff) / var[:, None, :], axis=-1)  # [K, N]
        log_det = jnp.sum(jnp.log(var), axis=-1)
    return (-0.5 * (d * _LOG_2PI + log_det[:, None] + maha)).T  # [N, K]


def _weighted_log_prob(gmm: GaussianMixture, z: Array) -> Array:
    return _component_log_prob(gmm, z) + jnp.log(gmm.weights)  # [N, K]


@jax.jit
def gmm_log_prob(gmm: GaussianMixture, z: Array) -> Array:
    r"""Log density of the mixture, ``[...]`` for ``z [..., D]``.

    .. math:: \log p(z) = \operatorname{logsumexp}_k \left( \log w_k + \log \mathcal{N}(z; \mu_k, \Sigma_k) \right)

    Full covariances go through their Cholesky factors (no explicit inverse or determinant).
    """
    flat = z.reshape(-1, z.shape[-1])
    return jax.nn.logsumexp(_weighted_log_prob(gmm, flat), axis=-1).reshape(z.shape[:-1])


@functools.partial(jax.jit, static_argnums=(2,))
def gmm_sample(gmm: GaussianMixture, key: Array, n: int) -> Array:
    r"""``n`` samples ``[n, D]``: :math:`k \sim \mathrm{Cat}(w)`, :math:`z = \mu_k + L_k \epsilon` with
    :math:`L_k L_k^\top = \Sigma_k` (:math:`L_k = \mathrm{diag}\,\sigma_k` for diagonal covariances) and
    :math:`\epsilon \sim \mathcal{N}(0, I_D)`."""
    k_key, z_key = jax.random.split(key)
    idx = jax.random.categorical(k_key, jnp.log(gmm.weights), shape=(n,))  # [n]
    eps = jax.random.normal(z_key, (n, gmm.dim), gmm.means.dtype)
    if gmm.covariance_type == "full":
        chol = jnp.linalg.cholesky(gmm.covariances)  # [K, D, D]
        noise = jnp.einsum("nde,ne->nd", chol[idx], eps)
    else:
        noise = jnp.sqrt(gmm.covariances)[idx] * eps
    return gmm.means[idx] + noise


def _e_step(gmm: GaussianMixture, z: Array) -> tuple[Array, Array]:
    """``(mean log-likelihood, log responsibilities [N, K])``."""
    weighted = _weighted_log_prob(gmm, z)  # [N, K]
    log_norm = jax.nn.logsumexp(weighted, axis=-1, keepdims=True)  # [N, 1]
    return jnp.mean(log_norm), weighted - log_norm


def _m_step(z: Array, resp: Array, full: bool, reg_covar: Array) -> GaussianMixture:
    r"""Maximum-likelihood mixture for responsibilities ``resp [N, K]`` (as scikit-learn, incl. its
    :math:`10\epsilon` guard on :math:`N_k` and ``reg_covar`` on the covariance diagonal)."""
    nk = jnp.sum(resp, axis=0) + 10.0 * jnp.finfo(z.dtype).eps  # [K]
    means = (resp.T @ z) / nk[:, None]  # [K, D]
    diff = z[None, :, :] - means[:, None, :]  # [K, N, D]
    if full:
        cov = jnp.einsum("nk,knd,kne->kde", resp, diff, diff) / nk[:, None, None]
        cov = cov + reg_covar * jnp.eye(z.shape[-1], dtype=z.dtype)
    else:
        cov = jnp.einsum("nk,knd->kd", resp, jnp.square(diff)) / nk[:, None] + reg_covar
    return GaussianMixture(nk / jnp.sum(nk), means, cov)


@jax.jit
def em_step(gmm: GaussianMixture, z: Array, reg_covar: float | Array = 1e-6) -> tuple[GaussianMixture, Array]:
    r"""One EM step (Dempster, Laird & Rubin 1977) for a Gaussian mixture on data ``z [N, D]``.

    E-step, in log space:

    .. math:: \log r_{nk} = \log w_k + \log \mathcal{N}(z_n; \mu_k, \Sigma_k)
              - \operatorname{logsumexp}_j \left(\log w_j + \log \mathcal{N}(z_n; \mu_j, \Sigma_j)\right)

    M-step, with :math:`N_k = \sum_n r_{nk}`:

    .. math:: w_k = \frac{N_k}{N}, \quad \mu_k = \frac{1}{N_k} \sum_n r_{nk} z_n, \quad
              \Sigma_k = \frac{1}{N_k} \sum_n r_{nk} (z_n - \mu_k)(z_n - \mu_k)^\top + \lambda I

    (only the diagonal for ``"diag"``), :math:`\lambda` = ``reg_covar``. The covariance type is that of ``gmm``.

    Returns:
      ``(new_gmm, mean_log_likelihood)`` where the log-likelihood :math:`\frac1N \sum_n \log p(z_n)` is that of
      the INPUT ``gmm`` (computed by the E-step). EM never decreases it.
    """
    ll, log_resp = _e_step(gmm, z)
    new = _m_step(z, jnp.exp(log_resp), gmm.covariance_type == "full", jnp.asarray(reg_covar, z.dtype))
    return new, ll


def _hard_init(z: Array, centers: Array, full: bool, reg_covar: Array) -> GaussianMixture:
    """Assigns every point to its nearest center and fits the mixture to that hard clustering."""
    d2 = jnp.sum(jnp.square(z[:, None, :] - centers[None, :, :]), axis=-1)  # [N, K]
    resp = jax.nn.one_hot(jnp.argmin(d2, axis=-1), centers.shape[0], dtype=z.dtype)
    return _m_step(z, resp, full, reg_covar)


def _kmeans_pp(key: Array, z: Array, k: int) -> Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) followed by Lloyd iterations; returns ``[k, D]``."""
    n = z.shape[0]
    first_key, key = jax.random.split(key)
    first = z[jax.random.randint(first_key, (), 0, n)]
    centers = jnp.zeros((k, z.shape[-1]), z.dtype).at[0].set(first)
    min_d2 = jnp.sum(jnp.square(z - first), axis=-1)  # [N]

    def seed(i, carry):
        centers, min_d2 = carry
        # D^2 sampling: P(x) proportional to the squared distance to the nearest chosen center.
        j = jax.random.categorical(jax.random.fold_in(key, i), jnp.log(min_d2))
        c = z[j]
        return centers.at[i].set(c), jnp.minimum(min_d2, jnp.sum(jnp.square(z - c), axis=-1))

    centers, _ = jax.lax.fori_loop(1, k, seed, (centers, min_d2))

    def lloyd(_, centers):
        d2 = jnp.sum(jnp.square(z[:, None, :] - centers[None, :, :]), axis=-1)
        onehot = jax.nn.one_hot(jnp.argmin(d2, axis=-1), k, dtype=z.dtype)  # [N, K]
        counts = jnp.sum(onehot, axis=0)[:, None]
        sums = onehot.T @ z
        return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), centers)  # empty cluster: keep center

    return jax.lax.fori_loop(0, _KMEANS_ITERS, lloyd, centers)


@functools.partial(jax.jit, static_argnames=("num_components", "full", "num_iters", "init"))
def _fit_gmm(key: Array, z: Array, init_params: GaussianMixture | None, tol: Array, reg_covar: Array, *,
             num_components: int, full: bool, num_iters: int, init: str) -> GMMFit:
    if init_params is not None:
        gmm = jax.tree.map(lambda a: jnp.asarray(a, z.dtype), init_params)
    elif init == "kmeans++":
        gmm = _hard_init(z, _kmeans_pp(key, z, num_components), full, reg_covar)
    else:  # random: distinct data points as initial means
        idx = jax.random.choice(key, z.shape[0], (num_components,), replace=False)
        gmm = _hard_init(z, z[idx], full, reg_covar)

    history = jnp.full((num_iters,), jnp.nan, z.dtype)
    neg_inf = jnp.asarray(-jnp.inf, z.dtype)

    def cond(state):
        i, _, _, _, converged = state
        return (i < num_iters) & ~converged

    def body(state):
        i, gmm, prev_ll, history, _ = state
        new, ll = em_step(gmm, z, reg_covar)
        return i + 1, new, ll, history.at[i].set(ll), jnp.abs(ll - prev_ll) < tol

    state = (jnp.asarray(0, jnp.int32), gmm, neg_inf, history, jnp.asarray(False))
    steps, gmm, _, history, converged = jax.lax.while_loop(cond, body, state)
    return GMMFit(gmm, jnp.mean(gmm_log_prob(gmm, z)), steps, converged, history)


def fit_gmm(
    key: Array,
    z: Array,
    num_components: int = 10,
    *,
    covariance: str = "full",
    num_iters: int = 100,
    tol: float = 1e-4,
    reg_covar: float = 1e-6,
    init: str = "kmeans++",
    init_params: GaussianMixture | None = None,
) -> GMMFit:
    r"""Fits a Gaussian mixture to ``z [N, D]`` by EM, in JAX (one jitted ``lax.while_loop``).

    This is the ex-post density estimator of Ghosh et al. (2020), "From Variational to Deterministic
    Autoencoders", Section 4: fit :math:`q_\phi(z)` to the posterior means of the training set, then decode
    samples of it. The algorithm follows ``sklearn.mixture.GaussianMixture`` (same E/M steps, same
    ``reg_covar`` on the covariance diagonal, same stopping rule): iterate :func:`em_step` until the change of
    the mean log-likelihood :math:`\frac1N \sum_n \log p(z_n)` between two steps is below ``tol`` or
    ``num_iters`` steps were taken. Responsibilities are computed in log space (logsumexp) and full covariances
    through Cholesky factors. Deterministic for a given ``key``.

    Args:
      key: PRNG key for the initialisation (unused with ``init_params``).
      z: data ``[N, D]``, e.g. posterior means.
      num_components: K.
      covariance: ``"full"`` (``[K, D, D]``) or ``"diag"`` (``[K, D]``).
      num_iters: maximum number of EM steps.
      tol: convergence threshold on the change of the mean log-likelihood.
      reg_covar: :math:`\lambda \ge 0` added to every covariance diagonal (keeps them positive definite).
      init: ``"kmeans++"`` (k-means++ seeding, then a few Lloyd iterations; every point is assigned to its
        nearest center and the mixture fitted to that hard clustering, like scikit-learn's default
        ``init_params="kmeans"``) or ``"random"`` (K distinct data points as centers, then the same hard
        assignment).
      init_params: a starting :class:`GaussianMixture` (overrides ``init``); its K and covariance type must
        match ``num_components`` and ``covariance``.

    Returns:
      A :class:`GMMFit` with the mixture, the final mean log-likelihood (under the returned mixture), the
      number of steps, the convergence flag and the log-likelihood history.
    """
    if covariance not in ("full", "diag"):
        raise ConfigError(f"covariance={covariance!r} is not valid; use 'full' or 'diag'.")
    if init not in ("kmeans++", "random"):
        raise ConfigError(f"init={init!r} is not valid; use 'kmeans++' or 'random'.")
    if jnp.ndim(z) != 2:
        raise ConfigError(f"fit_gmm needs data z of shape [N, D]; got shape {jnp.shape(z)}.")
    if not 1 <= num_components <= z.shape[0]:
        raise ConfigError(f"num_components={num_components} must be in [1, N={z.shape[0]}].")
    if num_iters < 1:
        raise ConfigError(f"num_iters must be >= 1; got {num_iters}.")
    if init_params is not None and (init_params.covariance_type != covariance
                                    or init_params.means.shape != (num_components, z.shape[1])):
        raise ConfigError(f"init_params is a {init_params.covariance_type} mixture with means "
                          f"{init_params.means.shape}, but fit_gmm was asked for covariance={covariance!r} and "
                          f"means {(num_components, z.shape[1])}.")
    z = jnp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.floating):
        z = z.astype(jnp.float32)
    return _fit_gmm(key, z, init_params, jnp.asarray(tol, z.dtype), jnp.asarray(reg_covar, z.dtype),
                    num_components=num_components, full=covariance == "full", num_iters=num_iters, init=init)


# ----------------------------------------------------------------------------------------------------------------
# Interpolation


def _check_vectors(z0: Array, z1: Array) -> None:
    if z0.ndim != 1 or z0.shape != z1.shape:
        raise ConfigError(f"Interpolation needs two latent vectors of the same shape [D]; got {z0.shape} and "
                          f"{z1.shape}.")


def _interp_weights(num: int, dtype) -> Array:
    return jnp.linspace(0.0, 1.0, num, dtype=dtype)[:, None]  # [num, 1]


@functools.partial(jax.jit, static_argnums=(2,))
def lerp(z0: Array, z1: Array, num: int) -> Array:
    r"""Linear interpolation :math:`z(t) = (1 - t) z_0 + t z_1` at ``num`` evenly spaced :math:`t \in [0, 1]`.

    ``z0``, ``z1``: ``[D]``; returns ``[num, D]`` with rows 0 and ``num - 1`` exactly ``z0`` and ``z1``.
    """
    z0, z1 = jnp.asarray(z0), jnp.asarray(z1)
    _check_vectors(z0, z1)
    t = _interp_weights(num, jnp.result_type(z0, z1, jnp.float32))
    return (1.0 - t) * z0 + t * z1


@functools.partial(jax.jit, static_argnums=(2,))
def slerp(z0: Array, z1: Array, num: int) -> Array:
    r"""Spherical linear interpolation (Shoemake 1985; White 2016, "Sampling Generative Networks").

    .. math:: z(t) = \frac{\sin((1 - t)\Omega)}{\sin \Omega} z_0 + \frac{\sin(t \Omega)}{\sin \Omega} z_1,
              \qquad \cos \Omega = \frac{z_0 \cdot z_1}{\lVert z_0 \rVert \lVert z_1 \rVert}

    at ``num`` evenly spaced :math:`t \in [0, 1]`. It moves at constant angular speed along the great circle
    (scaled arc) between the two vectors, so for unit-norm inputs every point has unit norm; with a Gaussian
    prior it avoids the low-norm "hole" that :func:`lerp` passes through in high dimensions. When
    :math:`\sin \Omega` is tiny (nearly parallel or antiparallel vectors, or a zero vector) it falls back to
    :func:`lerp`. ``z0``, ``z1``: ``[D]``; returns ``[num, D]`` with exact endpoints.
    """
    z0, z1 = jnp.asarray(z0), jnp.asarray(z1)
    dtype = jnp.result_type(z0, z1, jnp.float32)
    z0, z1 = z0.astype(dtype), z1.astype(dtype)
    _check_vectors(z0, z1)
    n0, n1 = jnp.linalg.norm(z0), jnp.linalg.norm(z1)
    tiny = jnp.finfo(dtype).tiny
    u0, u1 = z0 / jnp.maximum(n0, tiny), z1 / jnp.maximum(n1, tiny)
    # Omega = 2 atan2(|u0 - u1|, |u0 + u1|): accurate at all angles, unlike arccos(u0 . u1) near 0 and pi.
    omega = 2.0 * jnp.arctan2(jnp.linalg.norm(u0 - u1), jnp.linalg.norm(u0 + u1))
    sin = jnp.sin(omega)
    degenerate = (sin < _PARALLEL_EPS) | (n0 * n1 <= tiny)
    safe_sin = jnp.where(degenerate, 1.0, sin)
    t = _interp_weights(num, dtype)
    spherical = (jnp.sin((1.0 - t) * omega) / safe_sin) * z0 + (jnp.sin(t * omega) / safe_sin) * z1
    out = jnp.where(degenerate, lerp(z0, z1, num), spherical)
    out = out.at[0].set(z0)
    return out.at[-1].set(z1) if num > 1 else out


_INTERPOLATORS = {"slerp": slerp, "lerp": lerp}


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _interpolate(model: PureModel, params: Params, x0: Array, x1: Array, num: int, method: str) -> Array:
    xs = jax.tree.map(lambda a, b: jnp.stack([a, b]), x0, x1)  # a conditioned pair keeps its labels
    loc = model.encode(params, xs).loc  # [2, D] (flat: all latent groups)
    path = _INTERPOLATORS[method](loc[0], loc[1], num)
    return model.decode_mean(params, conditional.given(model, params, path, xs[:1]))  # x0's condition


def interpolate(model: PureModel, params: Params, x0: Array, x1: Array, num: int, *,
                method: str = "slerp") -> Array:
    r"""Decoded interpolation between two examples, ``[num, *E]``.

    Encodes ``x0`` and ``x1`` (each one example ``[*E]``), interpolates between their posterior means
    :math:`\mu_\phi(x_0)` and :math:`\mu_\phi(x_1)` with :func:`slerp` (``method="slerp"``) or :func:`lerp`
    (``"lerp"``), and returns the likelihood means of the decoded latents. Row 0 is the reconstruction of
    ``x0`` and row ``num - 1`` that of ``x1``.
    """
    if method not in _INTERPOLATORS:
        raise ConfigError(f"method={method!r} is not valid; use 'slerp' or 'lerp'.")
    return _interpolate(model.evaluation(), params, jax.tree.map(jnp.asarray, x0), jax.tree.map(jnp.asarray, x1),
                        num, method)


# ----------------------------------------------------------------------------------------------------------------
# Traversals


@functools.partial(jax.jit, static_argnames=("dims", "num"))
def _traversal_latents(z: Array, dims: tuple[int, ...], num: int, span: Array, loc: Array, scale: Array) -> Array:
    d = z.shape[-1]
    dims_arr = jnp.asarray(dims, jnp.int32)  # [M]
    loc = jnp.broadcast_to(loc.astype(z.dtype), (d,))
    scale = jnp.broadcast_to(scale.astype(z.dtype), (d,))
    values = jnp.linspace(-span, span, num).astype(z.dtype)  # [num]
    new = loc[dims_arr][:, None] + values[None, :] * scale[dims_arr][:, None]  # [M, num]
    mask = jax.nn.one_hot(dims_arr, d, dtype=bool)[:, None, :]  # [M, 1, D]
    return jnp.where(mask, new[:, :, None], z)


def traversal_latents(z: Array, dims: Sequence[int], num: int = 9, span: float = 3.0, *,
                      loc: Array | float = 0.0, scale: Array | float = 1.0) -> Array:
    r"""Latent traversals around ``z [D]``: ``[len(dims), num, D]``.

    Row ``(i, j)`` equals ``z`` except coordinate ``d = dims[i]``, which is set to

    .. math:: z_d = m_d + v_j \, s_d, \qquad v = \mathrm{linspace}(-\mathrm{span}, \mathrm{span}, \mathrm{num}),

    with ``loc`` :math:`m` and ``scale`` :math:`s` (scalars or ``[D]``; the prior's mean and standard deviation,
    so ``span`` is in prior standard deviations; the defaults give absolute values, right for a standard normal
    prior).
    """
    z = jnp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.floating):
        z = z.astype(jnp.float32)
    return _traversal_latents(z, tuple(int(d) for d in dims), num, jnp.asarray(span, z.dtype),
                              jnp.asarray(loc), jnp.asarray(scale))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _traversals(model: PureModel, params: Params, x: Array, dims: tuple[int, ...], num: int, span: Array,
                loc: Array, scale: Array) -> Array:
    x = jax.tree.map(lambda a: a[None], x)
    z = model.encode(params, x).loc[0]  # [D]
    lat = _traversal_latents(z, dims, num, span, loc, scale)  # [M, num, D]
    return model.decode_mean(params, conditional.given(model, params, lat, x))  # [M, num, *E]


def traversals(model: PureModel, params: Params, x: Array, *, dims: Sequence[int] | None = None, num: int = 9,
               span: float = 3.0) -> Array:
    r"""Decoded latent traversals of one example ``x [*E]``: ``[len(dims), num, *E]``.

    Starting from the posterior mean :math:`\mu_\phi(x)`, each latent coordinate ``d`` in ``dims`` (default:
    all) in turn is swept over ``linspace(-span, span, num)`` prior standard deviations around the prior mean
    (see :func:`traversal_latents` and :func:`prior_moments`; absolute values for a standard normal prior), the
    others held fixed, and the likelihood means of the decoded latents are returned (Higgins et al. 2017,
    "beta-VAE", Figure 7). A model without a single unconditional prior (a hierarchy) is traversed in absolute
    units around 0.
    """
    model = model.evaluation()
    dims = tuple(range(model.latent_dim)) if dims is None else tuple(int(d) for d in dims)
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad or not dims:
        raise ConfigError(f"dims={dims} must be a non-empty list of latent indices in [0, {model.latent_dim}).")
    try:
        loc, scale = prior_moments(model, params)
    except ConfigError:  # no single prior (a hierarchy): steps in absolute units around 0
        loc, scale = jnp.zeros(model.latent_dim), jnp.ones(model.latent_dim)
    return _traversals(model, params, jax.tree.map(jnp.asarray, x), dims, num, jnp.asarray(span), loc, scale)
