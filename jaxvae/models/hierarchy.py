r"""Hierarchical VAEs: several stochastic layers ``z1`` (next to the data) ... ``zL`` (top), through the model
protocol (:class:`jaxvae.models.protocol.Model`), so the objectives, IWAE evaluation, monitor, diagnostics,
checkpoints and sweeps work on them unchanged.

* :class:`BottomUpVAE`: the IWAE paper's stacked model (Burda, Grosse & Salakhutdinov 2016, Sec. 5): inference
  bottom-up :math:`q(z_1|x)\,q(z_2|z_1)\cdots q(z_L|z_{L-1})`, generative top-down
  :math:`p(z_L)\,p(z_{L-1}|z_L)\cdots p(x|z_1)`; every conditional a diagonal Gaussian from an MLP. The KL of the
  top layer is closed-form given its parent's sample; the lower layers' are Monte Carlo (their prior depends on
  the layer above, which is sampled from them).
* :class:`LadderVAE`: the Ladder VAE (Sønderby et al. 2016): a deterministic bottom-up pass gives each layer a
  Gaussian "likelihood" term :math:`\mathcal N(\hat\mu_l, \hat\sigma_l^2)`; inference then runs top-down with the
  generative model, merging that term with the layer's prior :math:`p(z_l|z_{l+1})` by precision weighting
  (:func:`precision_weighted`). Every layer's KL is closed-form given the sample of the layer above.

Latent groups are named ``z1`` ... ``zL``; :class:`~jaxvae.models.protocol.ModelOutput` carries their per-layer
log-densities, so per-layer KL (``kl_per_group``) and active units are reported for both.

Example::

    model = jv.hierarchy.BottomUpVAE((28, 28), (100, 50), jv.Bernoulli(), hidden=(200, 100),
                                     activation="tanh", rngs=nnx.Rngs(0))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.distributions import kl as kl_lib
from jaxvae.distributions.base import DiagonalGaussian
from jaxvae.errors import ConfigError
from jaxvae.models import nets
from jaxvae.models.protocol import Latents, Model, ModelOutput

Array = jax.Array


def precision_weighted(a: DiagonalGaussian, b: DiagonalGaussian) -> DiagonalGaussian:
    r"""The normalized product of two diagonal Gaussians (the Ladder VAE's merge of the bottom-up term and the
    prior):

    .. math:: \sigma^{-2} = \sigma_a^{-2} + \sigma_b^{-2}, \qquad
              \mu = \sigma^2 (\mu_a \sigma_a^{-2} + \mu_b \sigma_b^{-2}),

    computed in log-scale form (``log sigma = -logaddexp(-2 log sigma_a, -2 log sigma_b) / 2``; the weight of
    ``a`` is ``sigmoid(2 (log sigma_b - log sigma_a))``) so that neither precision over- nor underflows."""
    log_scale = -0.5 * jnp.logaddexp(-2.0 * a.log_scale, -2.0 * b.log_scale)
    w_a = jax.nn.sigmoid(2.0 * (b.log_scale - a.log_scale))
    return DiagonalGaussian(w_a * a.loc + (1.0 - w_a) * b.loc, log_scale)


def _check_dims(latent_dims: Sequence[int], hidden: Sequence[int] | None
                ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    dims = tuple(int(d) for d in latent_dims)
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"A hierarchy needs one positive latent size per stochastic layer, bottom (next to the "
                          f"data) first, e.g. model.latent_dims=100,50; got {latent_dims!r}.")
    widths = tuple(int(h) for h in hidden) if hidden else tuple(2 * d for d in dims)
    if len(widths) != len(dims) or any(h <= 0 for h in widths):
        raise ConfigError(f"model.layer_hidden gives one positive width per stochastic layer ({len(dims)} here, "
                          f"for model.latent_dims={','.join(map(str, dims))}); got {hidden!r}. Leave it empty for "
                          "twice each layer's latent size (the IWAE paper's 200, 100 for 100, 50).")
    return dims, widths


def _first(d: DiagonalGaussian) -> DiagonalGaussian:
    """A ``[K, B, D]`` conditional distribution at the first of its K parent samples, ``[B, D]``."""
    return jax.tree.map(lambda a: a[0], d)


def _marginal(d: DiagonalGaussian) -> DiagonalGaussian:
    r"""The moment-matched Gaussian of a ``[K, B, D]`` conditional over its K parent samples, ``[B, D]``:
    mean :math:`\bar\mu = \frac1K\sum_k \mu_k`, variance :math:`\frac1K\sum_k \sigma_k^2 + \mathrm{Var}_k \mu_k`
    (the law of total variance): an estimate of the marginal posterior :math:`q(z_l | x)`."""
    loc = jnp.mean(d.loc, axis=0)
    var = jnp.mean(jnp.exp(2.0 * d.log_scale), axis=0) + jnp.var(d.loc, axis=0)
    return DiagonalGaussian(loc, 0.5 * jnp.log(var))


# Parent samples behind the posterior of a conditional layer in `posteriors()` (what active units, the MI estimate
# and the ex-post samplers see): the mean's Monte Carlo noise is 1/64 of the conditional means' spread.
POSTERIOR_SAMPLES = 64


def _names(n: int) -> list[str]:
    return [f"z{i + 1}" for i in range(n)]


class _HierarchyBase(Model):
    """What both hierarchies share: the group names, the generative top-down path and its sampling."""

    latent_dims: tuple[int, ...]
    generative: nnx.List  # generative[l]: z_{l+2} -> p(z_{l+1} | z_{l+2}), l = 0 .. L-2 (0-based groups)
    decoder: nets.MLPDecoder

    def _set_sizes(self, event_shape: Sequence[int], latent_dims: Sequence[int], likelihood: Any,
                   hidden: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        dims, widths = _check_dims(latent_dims, hidden)
        self.event_shape = tuple(event_shape)
        self.likelihood = likelihood
        self.latent_dims = dims
        self.latent_dim = sum(dims)
        return dims, widths

    def _build_generative(self, widths: tuple[int, ...], depth: int, activation: str,
                          log_scale_clamp: float | None, rngs: nnx.Rngs) -> None:
        """The generative path: ``p(z_l | z_{l+1})`` for every layer below the top, and ``p(x | z_1)``."""
        dims = self.latent_dims
        self.generative = nnx.List([
            nets.MLPEncoder((dims[i + 1],), dims[i], (widths[i + 1],) * depth, activation=activation,
                            log_scale_clamp=log_scale_clamp, rngs=rngs)
            for i in range(len(dims) - 1)])
        self.decoder = nets.MLPDecoder(dims[0], self.event_shape, (widths[0],) * depth,
                                       num_outputs=self.likelihood.num_outputs,
                                       num_global_outputs=self.likelihood.num_global_outputs,
                                       activation=activation, rngs=rngs)

    @property
    def groups(self) -> list[str]:
        return _names(len(self.latent_dims))

    def _top_prior(self) -> DiagonalGaussian:
        return DiagonalGaussian.standard(self.latent_dims[-1])

    def prior_sample(self, key: Array, n: int) -> Latents:
        return self.prior_sample_tempered(key, n)

    def prior_sample_tempered(self, key: Array, n: int, temperature: float | Sequence[float] = 1.0) -> Latents:
        """Ancestral samples ``{z_l: [n, D_l]}`` from the top down, each layer's scale multiplied by its
        temperature (one number for all layers, or one per layer bottom first)."""
        layers = len(self.latent_dims)
        temps = [temperature] * layers if isinstance(temperature, (int, float)) else list(temperature)
        if len(temps) != len(self.latent_dims):
            raise ValueError(f"{len(temps)} temperatures for {len(self.latent_dims)} layers.")
        keys = jax.random.split(key, len(self.latent_dims))
        top = self._top_prior()
        z = [None] * len(self.latent_dims)
        z[-1] = _temper(top, temps[-1]).sample(keys[-1], n)
        for layer in range(len(self.latent_dims) - 2, -1, -1):
            z[layer] = _temper(self.generative[layer](z[layer + 1]), temps[layer]).sample(keys[layer])
        return dict(zip(self.groups, z))

    def decode(self, z: Mapping[str, Array]) -> Array:
        return self.decoder(z["z1"])

    def _log_px(self, x: Array, z1: Array) -> tuple[Array, Array]:
        out = self.decoder(z1)  # [K, B, *E, P]
        return self.likelihood.log_prob(out, x, event_ndim=len(self.event_shape)), out

    def reconstruct(self, x: Array, key: Array) -> Array:
        out = self.forward(x, key, 1)
        return self.likelihood.mean(out.decoder_out[0])

    def posteriors(self, x: Array, key: Array) -> dict[str, DiagonalGaussian]:
        """Per layer an estimate of the marginal posterior :math:`q(z_l|x)`: a conditional layer's Gaussian
        moment-matched over :data:`POSTERIOR_SAMPLES` samples of its parents (at one sample, the spread of the
        parent samples alone would make a collapsed layer's means vary over x and its units look active)."""
        return dict(self.forward(x, key, POSTERIOR_SAMPLES).posteriors)


def _temper(d: DiagonalGaussian, t: float) -> DiagonalGaussian:
    """``d`` with its scale times ``t`` (``t = 0``: a point mass at the mean, for sampling only)."""
    if t < 0:
        raise ValueError(f"A sampling temperature must be >= 0; got {t}.")
    return d if t == 1.0 else DiagonalGaussian(d.loc, d.log_scale + (math.log(t) if t > 0 else -jnp.inf))


class BottomUpVAE(_HierarchyBase):
    r"""L stochastic layers with bottom-up inference (IWAE, Burda et al. 2016, Sec. 5).

    Layer ``l`` (1-based, ``z1`` next to the data) has ``latent_dims[l-1]`` units; its encoder
    :math:`q(z_l|z_{l-1})` (``z_0 = x``) and the generative conditional of the layer below,
    :math:`p(z_{l-1}|z_l)` (for ``l = 1`` the decoder :math:`p(x|z_1)`), are MLPs with ``depth`` hidden layers
    of width ``hidden[l-1]``. The IWAE paper's two-layer model 784-(200,200)-100-(100,100)-50 is
    ``latent_dims=(100, 50), hidden=(200, 100), depth=2, activation="tanh"``.

    Args:
      event_shape: the shape of one example.
      latent_dims: units per stochastic layer, bottom first.
      likelihood: the decoder's :class:`~jaxvae.distributions.likelihoods.Likelihood`.
      hidden: width per stochastic layer (default: twice its latent size).
      depth: hidden layers per conditional.
      log_scale_clamp: NVAE's soft clamp ``c tanh(log_scale / c)`` on every Gaussian's log-scale (``None``:
        off; NVAE uses 5).
    """

    def __init__(self, event_shape: Sequence[int], latent_dims: Sequence[int], likelihood: Any, *,
                 hidden: Sequence[int] | None = None, depth: int = 2, activation: str = "tanh",
                 log_scale_clamp: float | None = None, rngs: nnx.Rngs):
        dims, widths = self._set_sizes(event_shape, latent_dims, likelihood, hidden)
        below = [tuple(self.event_shape)] + [(d,) for d in dims[:-1]]
        self.inference = nnx.List([
            nets.MLPEncoder(below[i], dims[i], (widths[i],) * depth, activation=activation,
                            log_scale_clamp=log_scale_clamp, rngs=rngs)
            for i in range(len(dims))])
        self._build_generative(widths, depth, activation, log_scale_clamp, rngs)

    def forward(self, x: Array, key: Array, num_samples: int = 1) -> ModelOutput:
        n = len(self.latent_dims)
        keys = jax.random.split(key, n)
        qs, zs, log_q = [], [], []
        q = self.inference[0](x)  # [B, D1]
        z, lq = q.sample_and_log_prob(keys[0], num_samples)  # [K, B, D1], [K, B]
        qs.append(q), zs.append(z), log_q.append(lq)
        for layer in range(1, n):
            q = self.inference[layer](zs[-1])  # [K, B, D_l]: one draw per sample of the layer below
            z, lq = q.sample_and_log_prob(keys[layer])
            qs.append(q), zs.append(z), log_q.append(lq)
        top = self._top_prior()
        ps = [self.generative[layer](zs[layer + 1]) for layer in range(n - 1)] + [top]
        log_p = [p.log_prob(z) for p, z in zip(ps, zs)]
        log_px, out = self._log_px(x, zs[0])
        names = self.groups
        # Closed form only for the top layer (its prior is fixed); below, the prior depends on the layer above,
        # which is sampled from this layer's sample, so those KLs are Monte Carlo (log_q_groups - log_p_groups).
        kl_top = kl_lib.kl_diagonal_gaussians_per_dim(qs[-1], top)
        kl_terms: dict[str, Array | None] = {g: None for g in names[:-1]}
        kl_terms[names[-1]] = kl_top if n == 1 else jnp.mean(kl_top, axis=0)
        posteriors = {g: (q if i == 0 else _marginal(q)) for i, (g, q) in enumerate(zip(names, qs))}
        priors = {g: (p if i == n - 1 else _first(p)) for i, (g, p) in enumerate(zip(names, ps))}
        return ModelOutput(log_px, sum(log_q), sum(log_p), dict(zip(names, zs)), kl_terms, posteriors, priors,
                           out, log_q_groups=dict(zip(names, log_q)), log_p_groups=dict(zip(names, log_p)))


class LadderVAE(_HierarchyBase):
    r"""The Ladder VAE (Sønderby, Raiko, Maaløe, Sønderby & Winther 2016).

    A deterministic bottom-up pass :math:`d_l = \mathrm{MLP}_l(d_{l-1})` (``d_0 = x``) gives each layer a
    Gaussian term :math:`\mathcal N(\hat\mu_l, \hat\sigma_l^2)`. Inference runs top-down:
    :math:`q(z_L|x) = \mathcal N(\hat\mu_L, \hat\sigma_L^2)`, and for :math:`l < L` the posterior is the
    precision-weighted product of the bottom-up term and the generative prior :math:`p(z_l|z_{l+1})`
    (:func:`precision_weighted`), so the encoder and decoder share the top-down path. Sizes as in
    :class:`BottomUpVAE`. (The paper's batch normalization and KL warm-up are not part of the model: warm-up is
    ``objective.beta_schedule``.)
    """

    def __init__(self, event_shape: Sequence[int], latent_dims: Sequence[int], likelihood: Any, *,
                 hidden: Sequence[int] | None = None, depth: int = 2, activation: str = "tanh",
                 log_scale_clamp: float | None = None, rngs: nnx.Rngs):
        dims, widths = self._set_sizes(event_shape, latent_dims, likelihood, hidden)
        self.activation = nets.get_activation(activation)
        self.depth = depth
        self.log_scale_clamp = log_scale_clamp or None
        features = [math.prod(self.event_shape)]  # the width of d_0 = x, d_1, ... (depth 0: linear heads on x)
        for width in widths:
            features.append(width if depth else features[-1])
        self.deterministic = nnx.List([
            nets.MLP([features[i], *(widths[i],) * depth], activation=activation, rngs=rngs)
            for i in range(len(dims))])
        self.heads = nnx.List([nnx.Linear(features[i + 1], 2 * dims[i], rngs=rngs) for i in range(len(dims))])
        self._build_generative(widths, depth, activation, log_scale_clamp, rngs)

    def bottom_up(self, x: Array) -> list[DiagonalGaussian]:
        """The deterministic pass: per layer the Gaussian term :math:`\\mathcal N(\\hat\\mu_l, \\hat\\sigma_l^2)`,
        ``[B, D_l]``."""
        h = x.reshape(x.shape[0], -1)
        terms = []
        for mlp, head in zip(self.deterministic, self.heads):
            h = self.activation(mlp(h)) if self.depth else h
            terms.append(DiagonalGaussian.from_raw(head(h), log_scale_clamp=self.log_scale_clamp))
        return terms

    def forward(self, x: Array, key: Array, num_samples: int = 1) -> ModelOutput:
        n = len(self.latent_dims)
        keys = jax.random.split(key, n)
        up = self.bottom_up(x)
        top = self._top_prior()
        qs: list[Any] = [None] * n
        ps: list[Any] = [None] * n
        zs: list[Any] = [None] * n
        log_q: list[Any] = [None] * n
        kls: list[Any] = [None] * n
        qs[-1], ps[-1] = up[-1], top
        zs[-1], log_q[-1] = up[-1].sample_and_log_prob(keys[-1], num_samples)  # [K, B, D_L]
        kls[-1] = kl_lib.kl_diagonal_gaussians_per_dim(up[-1], top)  # [B, D_L]
        for layer in range(n - 2, -1, -1):
            p = self.generative[layer](zs[layer + 1])  # [K, B, D_l]
            q = precision_weighted(up[layer], p)  # the bottom-up term broadcasts over the K samples
            zs[layer], log_q[layer] = q.sample_and_log_prob(keys[layer])
            qs[layer], ps[layer] = q, p
            kls[layer] = jnp.mean(kl_lib.kl_diagonal_gaussians_per_dim(q, p), axis=0)  # given z_{l+1}, mean over K
        log_p = [p.log_prob(z) for p, z in zip(ps, zs)]
        log_px, out = self._log_px(x, zs[0])
        names = self.groups
        posteriors = {g: (q if i == n - 1 else _marginal(q)) for i, (g, q) in enumerate(zip(names, qs))}
        priors = {g: (p if i == n - 1 else _first(p)) for i, (g, p) in enumerate(zip(names, ps))}
        return ModelOutput(log_px, sum(log_q), sum(log_p), dict(zip(names, zs)), dict(zip(names, kls)), posteriors,
                           priors, out, log_q_groups=dict(zip(names, log_q)), log_p_groups=dict(zip(names, log_p)))
