r"""Learned ex-post samplers: densities fitted to a trained model's latents after training, sampled in place of
the prior (beside the Gaussian mixture of :func:`jaxvae.evaluation.samplers.fit_gmm`).

A VAE's aggregate posterior :math:`q(z) = \frac1N \sum_n q(z \mid x_n)` rarely matches its prior; prior samples
that fall where :math:`q(z)` has no mass decode to poor images (the "holes" of
:mod:`jaxvae.evaluation.diagnostics`). Fitting a density to the training latents and sampling it instead fixes this
without retraining:

* :func:`fit_flow`: a RealNVP flow (Dinh, Sohl-Dickstein & Bengio 2017): affine coupling layers with alternating
  halves, scales bounded by ``tanh``, fitted by maximum likelihood on standardized latents. Exact density and
  one-pass sampling.
* :func:`fit_two_stage`: the two-stage VAE (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models"): a second VAE
  on the latents, with a Gaussian decoder whose single scale :math:`\gamma` is learned (and may shrink towards 0,
  which their analysis needs), sampled as :math:`u \sim \mathcal{N}(0, I)`, :math:`z = \mathrm{dec}(u)`. Its
  density is estimated by importance sampling (:func:`two_stage_log_prob`).

Both are pure JAX: parameters are pytrees, the training loop is one jitted ``lax.scan`` of Adam steps on
minibatches drawn with ``fold_in(key, step)``, so a fit is deterministic for a key.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxvae.errors import ConfigError

Array = jax.Array

__all__ = ["FlowFit", "TwoStageFit", "fit_flow", "fit_two_stage", "flow_log_prob", "flow_sample",
           "two_stage_log_prob", "two_stage_sample"]


# ------------------------------------------------------------------------------------------------ small MLPs


def _init_mlp(key: Array, sizes: tuple[int, ...], zero_last: bool = False) -> list[dict[str, Array]]:
    """LeCun-normal weights, zero biases; ``zero_last``: the last layer starts at 0 (an identity coupling)."""
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        key, sub = jax.random.split(key)
        w = jax.random.normal(sub, (a, b)) / math.sqrt(a)
        if zero_last and i == len(sizes) - 2:
            w = jnp.zeros((a, b))
        layers.append({"w": w, "b": jnp.zeros(b)})
    return layers


def _mlp(layers: list[dict[str, Array]], x: Array) -> Array:
    for layer in layers[:-1]:
        x = jax.nn.gelu(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def _standard_normal_log_prob(x: Array) -> Array:
    return -0.5 * jnp.sum(jnp.square(x) + math.log(2 * math.pi), axis=-1)


def _check(z: Array, name: str) -> Array:
    z = jnp.asarray(z)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ConfigError(f"{name} needs latents z of shape [N, D] with N >= 2; got shape {z.shape}.")
    return z.astype(jnp.float32) if not jnp.issubdtype(z.dtype, jnp.floating) else z


def _fit(loss_fn, params, z: Array, key: Array, steps: int, batch_size: int, learning_rate: float):
    """``steps`` Adam updates of ``loss_fn(params, batch, key) -> scalar`` on minibatches of ``z``; returns the
    final parameters and the loss of every step."""
    optimizer = optax.adam(learning_rate)
    batch = min(batch_size, z.shape[0])

    @jax.jit
    def run(params, z, key):
        def step(carry, i):
            params, opt_state = carry
            k_batch, k_loss = jax.random.split(jax.random.fold_in(key, i))
            rows = jax.random.choice(k_batch, z.shape[0], (batch,), replace=False)
            loss, grads = jax.value_and_grad(loss_fn)(params, z[rows], k_loss)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jnp.arange(steps))
        return params, losses

    return run(params, z, key)


# -------------------------------------------------------------------------------------------------- RealNVP


class FlowFit(NamedTuple):
    """A RealNVP flow fitted to latents (:func:`fit_flow`).

    Attributes:
      params: the coupling layers' MLPs (a pytree).
      shift, scale: the standardization ``(z - shift) / scale`` applied before the flow, ``[D]``.
      losses: the negative mean log-likelihood (nats per latent vector) at every training step, ``[steps]``.
    """

    params: list
    shift: Array
    scale: Array
    losses: Array


def _masks(dim: int, num_layers: int) -> Array:
    """Alternating binary masks ``[L, D]``: a layer keeps its masked half and transforms the other."""
    first = (jnp.arange(dim) % 2).astype(jnp.float32)
    return jnp.stack([first if i % 2 == 0 else 1.0 - first for i in range(num_layers)])


def _coupling(layer, mask: Array, x: Array, inverse: bool) -> tuple[Array, Array]:
    out = _mlp(layer, x * mask)
    log_s, t = jnp.split(out, 2, axis=-1)
    log_s = jnp.tanh(log_s) * (1.0 - mask)  # bounded scales on the transformed half only
    t = t * (1.0 - mask)
    if inverse:
        return (x - t) * jnp.exp(-log_s), -jnp.sum(log_s, axis=-1)
    return x * jnp.exp(log_s) + t, jnp.sum(log_s, axis=-1)


def _flow_log_prob(params, masks: Array, x: Array) -> Array:
    """log density of standardized ``x [N, D]``: map to the base N(0, I) (the inverse direction of sampling)."""
    log_det = jnp.zeros(x.shape[0])
    for layer, mask in reversed(list(zip(params, masks))):
        x, ld = _coupling(layer, mask, x, inverse=True)
        log_det = log_det + ld
    return _standard_normal_log_prob(x) + log_det


def fit_flow(key: Array, z: Array, *, num_layers: int = 8, hidden: int = 64, steps: int = 3000,
             batch_size: int = 256, learning_rate: float = 1e-3) -> FlowFit:
    r"""Fits a RealNVP flow to latents ``z [N, D]`` (e.g. the posterior means of the training set) by maximum
    likelihood: ``num_layers`` affine couplings (alternating halves; scales :math:`e^{\tanh(\cdot)}`), each an
    MLP of two ``hidden``-wide layers, after standardizing every dimension. Deterministic for ``key``."""
    z = _check(z, "fit_flow")
    if num_layers < 2 or hidden < 1 or steps < 1:
        raise ConfigError(f"fit_flow needs num_layers >= 2, hidden >= 1 and steps >= 1; got {num_layers}, "
                          f"{hidden}, {steps}.")
    dim = z.shape[1]
    shift, scale = jnp.mean(z, axis=0), jnp.std(z, axis=0) + 1e-6
    x = (z - shift) / scale
    keys = jax.random.split(key, num_layers + 1)
    params = [_init_mlp(k, (dim, hidden, hidden, 2 * dim), zero_last=True) for k in keys[:-1]]
    masks = _masks(dim, num_layers)
    params, losses = _fit(lambda p, batch, _: -jnp.mean(_flow_log_prob(p, masks, batch)), params, x, keys[-1],
                          steps, batch_size, learning_rate)
    # Losses in the units of z: the standardization's log-determinant added back.
    return FlowFit(params, shift, scale, losses + jnp.sum(jnp.log(scale)))


def flow_log_prob(fit: FlowFit, z: Array) -> Array:
    """The fitted density's :math:`\\log p(z)` for ``z [N, D]``, ``[N]`` (exact)."""
    masks = _masks(fit.shift.shape[0], len(fit.params))
    return _flow_log_prob(fit.params, masks, (z - fit.shift) / fit.scale) - jnp.sum(jnp.log(fit.scale))


@functools.partial(jax.jit, static_argnums=2)
def _flow_sample(fit: FlowFit, key: Array, n: int) -> Array:
    x = jax.random.normal(key, (n, fit.shift.shape[0]))
    for layer, mask in zip(fit.params, _masks(fit.shift.shape[0], len(fit.params))):
        x, _ = _coupling(layer, mask, x, inverse=False)
    return x * fit.scale + fit.shift


def flow_sample(fit: FlowFit, key: Array, n: int) -> Array:
    """``n`` latents ``[n, D]`` from the fitted flow."""
    return _flow_sample(fit, key, int(n))


# ----------------------------------------------------------------------------------------- two-stage VAE


class TwoStageFit(NamedTuple):
    """The second-stage VAE of :func:`fit_two_stage`.

    Attributes:
      params: ``{"encoder": MLP -> (mean, log scale) of q(u|z), "decoder": MLP -> mean of p(z|u),
        "log_gamma": the decoder's learned log scale}``.
      shift, scale: the standardization of the latents, ``[D]``.
      losses: the negative ELBO (nats per latent vector, in the units of z) at every training step.
    """

    params: dict
    shift: Array
    scale: Array
    losses: Array


def _two_stage_terms(params, x: Array, key: Array, k: int) -> Array:
    """``[k, N]`` importance log-weights :math:`\\log p(x|u_k) + \\log p(u_k) - \\log q(u_k|x)`."""
    out = _mlp(params["encoder"], x)
    mean, log_s = jnp.split(out, 2, axis=-1)
    eps = jax.random.normal(key, (k, *mean.shape))
    u = mean + jnp.exp(log_s) * eps
    log_q = jnp.sum(-0.5 * jnp.square(eps) - log_s - 0.5 * math.log(2 * math.pi), axis=-1)
    recon = _mlp(params["decoder"], u)
    g = params["log_gamma"]
    log_px = jnp.sum(-0.5 * jnp.square((x - recon) / jnp.exp(g)) - g - 0.5 * math.log(2 * math.pi), axis=-1)
    return log_px + _standard_normal_log_prob(u) - log_q


def fit_two_stage(key: Array, z: Array, *, latent_dim: int | None = None, hidden: int = 128, steps: int = 3000,
                  batch_size: int = 256, learning_rate: float = 1e-3) -> TwoStageFit:
    r"""Fits the second stage of the two-stage VAE (Dai & Wipf 2019) to latents ``z [N, D]``: an MLP VAE with
    ``latent_dim`` units (default D), a Gaussian decoder :math:`\mathcal{N}(z; \mathrm{dec}(u), \gamma^2 I)` with
    :math:`\gamma` learned, trained on the ELBO of the standardized latents. Deterministic for ``key``."""
    z = _check(z, "fit_two_stage")
    dim = z.shape[1]
    latent_dim = dim if latent_dim is None else latent_dim
    if latent_dim < 1 or hidden < 1 or steps < 1:
        raise ConfigError(f"fit_two_stage needs latent_dim >= 1, hidden >= 1 and steps >= 1; got {latent_dim}, "
                          f"{hidden}, {steps}.")
    shift, scale = jnp.mean(z, axis=0), jnp.std(z, axis=0) + 1e-6
    x = (z - shift) / scale
    k_enc, k_dec, k_fit = jax.random.split(key, 3)
    params = {"encoder": _init_mlp(k_enc, (dim, hidden, hidden, 2 * latent_dim)),
              "decoder": _init_mlp(k_dec, (latent_dim, hidden, hidden, dim)), "log_gamma": jnp.zeros(())}
    params, losses = _fit(lambda p, batch, k: -jnp.mean(_two_stage_terms(p, batch, k, 1)), params, x, k_fit,
                          steps, batch_size, learning_rate)
    return TwoStageFit(params, shift, scale, losses + jnp.sum(jnp.log(scale)))


def two_stage_log_prob(fit: TwoStageFit, key: Array, z: Array, *, num_samples: int = 256) -> Array:
    r"""An importance-sampling estimate of the second stage's :math:`\log p(z)`, ``[N]`` (the IWAE bound with
    ``num_samples`` samples of :math:`q(u \mid z)`; a lower bound that tightens as it grows)."""
    log_w = _two_stage_terms(fit.params, (z - fit.shift) / fit.scale, key, num_samples)
    return jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples) - jnp.sum(jnp.log(fit.scale))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _two_stage_sample(fit: TwoStageFit, key: Array, n: int, noise: bool) -> Array:
    latent_dim = fit.params["decoder"][0]["w"].shape[0]
    k_u, k_noise = jax.random.split(key)
    x = _mlp(fit.params["decoder"], jax.random.normal(k_u, (n, latent_dim)))
    if noise:
        x = x + jnp.exp(fit.params["log_gamma"]) * jax.random.normal(k_noise, x.shape)
    return x * fit.scale + fit.shift


def two_stage_sample(fit: TwoStageFit, key: Array, n: int, *, noise: bool = False) -> Array:
    """``n`` latents ``[n, D]``: :math:`u \\sim \\mathcal{N}(0, I)` decoded to the second stage's mean, as Dai &
    Wipf sample (their :math:`\\gamma` shrinks towards 0 in training, so the mean is the sample); ``noise=True``
    adds the decoder's :math:`\\gamma` noise: a sample of the fitted density itself."""
    return _two_stage_sample(fit, key, int(n), bool(noise))
