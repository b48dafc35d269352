r"""Evaluation over whole datasets: the ELBO and the importance-weighted log-likelihood estimate.

:func:`iwae_log_likelihood` estimates :math:`\log p(x)` with :math:`K` importance samples (Burda et al. 2016):

.. math:: \log p(x) \approx \log \frac1K \sum_{k=1}^K \frac{p(x|z_k)\,p(z)}{q(z_k|x)}, \quad z_k \sim q(z|x),

streamed over chunks of samples with a running log-sum-exp, so that :math:`K = 5000` fits in a fixed memory
budget (``sample_chunk * batch_size`` decoder evaluations at a time). Examples are processed in batches; keys are
``fold_in(fold_in(key, batch_index), chunk_index)``, so a result is deterministic for a given key and batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.model import Params, PureVAE

Array = jax.Array


class LogLikelihoodEstimate(NamedTuple):
    """Per-example estimates and their summary (nats)."""

    log_px: np.ndarray  # [N]
    mean: float  # mean log p(x) over examples
    standard_error: float  # standard error of that mean over examples
    num_samples: int


def _pad_batches(data: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    """Pads ``data`` with copies of its last example up to a multiple of ``batch_size`` (one compiled shape)."""
    n = data.shape[0]
    pad = (-n) % batch_size
    if pad:
        data = np.concatenate([data, np.repeat(data[-1:], pad, axis=0)])
    return data, n


def make_iwae_fn(model: PureVAE, num_samples: int, sample_chunk: int) -> Callable[[Params, Array, Array], Array]:
    """A jitted ``(params, x [B, *E], key) -> log p(x) estimate [B]`` streaming ``num_samples`` in chunks."""
    num_chunks = math.ceil(num_samples / sample_chunk)
    event_ndim = len(model.event_shape)

    @jax.jit
    def log_px(params: Params, x: Array, key: Array) -> Array:
        vae = model.merge(params)
        q = vae.encode(x)  # computed once per batch, reused by every chunk

        def body(carry, c):
            running = carry  # [B] log-sum-exp of the weights so far
            z = q.sample(jax.random.fold_in(key, c), sample_chunk)  # [S, B, D]
            log_w = (model.likelihood.log_prob(vae.decode(z), x, event_ndim=event_ndim)
                     + vae.prior_log_prob(z) - q.log_prob(z))  # [S, B]
            # Samples past num_samples in the last chunk are masked out.
            valid = c * sample_chunk + jnp.arange(sample_chunk) < num_samples
            log_w = jnp.where(valid[:, None], log_w, -jnp.inf)
            return jnp.logaddexp(running, jax.nn.logsumexp(log_w, axis=0)), None

        init = jnp.full(x.shape[:1], -jnp.inf, dtype=jnp.float32)
        total, _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
        return total - math.log(num_samples)

    return log_px


def make_iwae_evaluator(model: PureVAE, *, num_samples: int = 5000, batch_size: int = 100,
                        sample_chunk: int | None = None
                        ) -> Callable[[Params, np.ndarray, Array], LogLikelihoodEstimate]:
    """Compiles once; returns ``(params, data [N, *E], key) -> LogLikelihoodEstimate`` (see
    :func:`iwae_log_likelihood`). Reuse it to evaluate many models of one architecture."""
    if sample_chunk is None:
        sample_chunk = max(1, min(num_samples, 100_000 // batch_size))
    fn = make_iwae_fn(model, num_samples, sample_chunk)

    def estimate(params: Params, data: np.ndarray, key: Array) -> LogLikelihoodEstimate:
        padded, n = _pad_batches(np.asarray(data), batch_size)
        out = [fn(params, padded[i:i + batch_size], jax.random.fold_in(key, i // batch_size))
               for i in range(0, padded.shape[0], batch_size)]
        log_px = np.asarray(jnp.concatenate(out))[:n]
        se = float(np.std(log_px) / math.sqrt(max(n, 1)))
        return LogLikelihoodEstimate(log_px, float(np.mean(log_px)), se, num_samples)

    return estimate


def iwae_log_likelihood(model: PureVAE, params: Params, data: np.ndarray, key: Array, *,
                        num_samples: int = 5000, batch_size: int = 100,
                        sample_chunk: int | None = None) -> LogLikelihoodEstimate:
    r"""The IWAE estimate of :math:`\log p(x)` for every example of ``data [N, *E]``.

    Args:
      num_samples: K importance samples per example (5000 is the standard of Burda et al. 2016).
      batch_size: examples per compiled call (the last batch is padded, then trimmed).
      sample_chunk: samples per inner step (default: about 100k decoder evaluations per step).
    """
    return make_iwae_evaluator(model, num_samples=num_samples, batch_size=batch_size,
                               sample_chunk=sample_chunk)(params, data, key)


def make_elbo_evaluator(model: PureVAE, *, batch_size: int = 100
                        ) -> Callable[[Params, np.ndarray, Array], dict[str, float | list[float]]]:
    """Compiles once; returns ``(params, data [N, *E], key) -> dataset means`` of the ELBO terms.

    The result has ``elbo``, ``recon``, ``kl`` (analytic KL where the prior allows it) and, for diagonal Gaussian
    priors, ``kl_per_dim`` (a list of D floats).
    """
    from jaxvae import objectives

    @jax.jit
    def step(params, x, key):
        _, out = objectives.elbo(model, params, x, key)
        per_dim = out.kl_per_dim if out.kl_per_dim is not None else jnp.zeros((x.shape[0], 0))
        return out.elbo, out.recon, out.kl, per_dim

    def evaluate(params: Params, data: np.ndarray, key: Array) -> dict[str, float | list[float]]:
        padded, n = _pad_batches(np.asarray(data), batch_size)
        parts = [step(params, padded[i:i + batch_size], jax.random.fold_in(key, i // batch_size))
                 for i in range(0, padded.shape[0], batch_size)]
        elbo, recon, kl, per_dim = (np.asarray(jnp.concatenate(p))[:n] for p in zip(*parts))
        result: dict[str, float | list[float]] = {"elbo": float(elbo.mean()), "recon": float(recon.mean()),
                                                   "kl": float(kl.mean())}
        if per_dim.shape[-1]:
            result["kl_per_dim"] = [float(v) for v in per_dim.mean(0)]
        return result

    return evaluate


def evaluate_elbo(model: PureVAE, params: Params, data: np.ndarray, key: Array, *,
                  batch_size: int = 100) -> dict[str, float | list[float]]:
    """One-off :func:`make_elbo_evaluator` call (compiles each time; build the evaluator once in loops)."""
    return make_elbo_evaluator(model, batch_size=batch_size)(params, data, key)
