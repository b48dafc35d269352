r"""Evaluation over whole datasets: the ELBO and the importance-weighted log-likelihood estimate.

:func:`iwae_log_likelihood` estimates :math:`\log p(x)` with :math:`K` importance samples (Burda et al. 2016):

.. math:: \log p(x) \approx \log \frac1K \sum_{k=1}^K \frac{p(x|z_k)\,p(z)}{q(z_k|x)}, \quad z_k \sim q(z|x),

streamed over chunks of samples with a running log-sum-exp, so that :math:`K = 5000` fits in a fixed memory
budget (``sample_chunk * batch_size`` decoder evaluations at a time). Examples are processed in batches; keys are
``fold_in(fold_in(key, batch_index), chunk_index)``, so a result is deterministic for a given key and batch size.

With ``mesh=`` (a :class:`jax.sharding.Mesh`, see :mod:`jaxvae.sharding`) each batch is split over the mesh's
``data`` axis, so every device evaluates ``batch_size / devices`` examples; the random numbers do not depend on
the split, so the sharded estimate equals the single-device one (up to float rounding).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.data import pad_to_multiple
from jaxvae.data.batches import num_examples, take
from jaxvae.evaluation import disentanglement
from jaxvae.models.protocol import Params, PureModel, params_dtype

Array = jax.Array

# Decoder evaluations (importance samples x examples) per inner step by default: on a CPU the activations must stay
# cache-sized (2.5k x 784 float32 is 7.8 MB; the step-size measurements are in benchmarks/RESULTS.md);
# accelerators want larger steps. Either way memory is bounded independently of K.
CPU_ROWS_PER_STEP, ACCELERATOR_ROWS_PER_STEP = 2_500, 100_000


# XLA:CPU (jaxlib 0.10) compiles the IWAE step's decoder matmuls, the per-pixel log-density and its row sum into
# one YNNPACK library fusion, which is slower than XLA:CPU's own emitters and dot runtime for this step, with the
# same values (profile in benchmarks/RESULTS.md). Only the evaluation programs get the option: MLP and conv
# training steps were not faster with it.
_CPU_EVAL_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _cpu_options_supported() -> bool:
    """Whether this jaxlib accepts :data:`_CPU_EVAL_OPTIONS` (a debug option that may be renamed or removed)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_EVAL_OPTIONS).lower(jnp.float32(0)).compile()
    except Exception:  # any refusal means: compile without the option
        return False
    return True


def eval_compiler_options() -> dict[str, str] | None:
    """XLA compiler options for the sample-heavy evaluation programs: YNNPACK fusions off on CPU, else none."""
    if jax.default_backend() == "cpu" and _cpu_options_supported():
        return dict(_CPU_EVAL_OPTIONS)
    return None


def default_sample_chunk(num_samples: int, batch_size: int) -> int:
    """Importance samples per inner step: about 2.5k (CPU) or 100k (GPU/TPU) decoder passes per step."""
    rows = CPU_ROWS_PER_STEP if jax.default_backend() == "cpu" else ACCELERATOR_ROWS_PER_STEP
    return max(1, min(num_samples, rows // batch_size))


class LogLikelihoodEstimate(NamedTuple):
    """Per-example estimates and their summary (nats)."""

    log_px: np.ndarray  # [N]
    mean: float  # mean log p(x) over examples
    standard_error: float  # sample standard error of that mean over examples (std with ddof=1 / sqrt(N))
    num_samples: int


def make_iwae_fn(model: PureModel, num_samples: int, sample_chunk: int, *,
                 mesh: jax.sharding.Mesh | None = None,
                 compiler_options: dict[str, str] | None = None) -> Callable[[Params, Array, Array], Array]:
    """A jitted ``(params, x [B, *E], key) -> log p(x) estimate [B]`` streaming ``num_samples`` in chunks, of the
    model's evaluation view (:meth:`~jaxvae.models.protocol.PureModel.evaluation`: no word dropout or dropout).

    With ``mesh``, ``x`` is split over the ``data`` axis (``B`` must be a multiple of its size; pass a global
    array from :func:`jaxvae.sharding.make_global_batch` in multi-process runs) and the result is replicated.
    ``compiler_options`` (e.g. :func:`eval_compiler_options`, which :func:`make_iwae_evaluator` uses) are passed
    to :func:`jax.jit`; JAX accepts them only on a top-level jit, so leave them out to call the function inside
    your own jitted code.
    """
    model = model.evaluation()  # no training-only noise (word dropout, dropout) in an estimate
    num_chunks = math.ceil(num_samples / sample_chunk)

    def log_px(params: Params, x: Array, key: Array) -> Array:
        def log_weights(c: Array) -> Array:
            """``[S, B]``: chunk ``c``'s importance log-weights, from the model's own forward pass."""
            return model.forward(params, x, jax.random.fold_in(key, c), sample_chunk).log_weights

        def body(running, c):  # running: [B] log-sum-exp of the weights so far
            log_w = log_weights(c)
            # Samples past num_samples in the last chunk are masked out.
            valid = c * sample_chunk + jnp.arange(sample_chunk) < num_samples
            log_w = jnp.where(valid[:, None], log_w, -jnp.inf)
            return jnp.logaddexp(running, jax.nn.logsumexp(log_w, axis=0)), None

        dtype = jax.eval_shape(log_weights, jnp.int32(0)).dtype  # float64 when params or data are
        init = jnp.full((num_examples(x),), -jnp.inf, dtype=dtype)
        total, _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
        return total - math.log(num_samples)

    if mesh is None:
        return jax.jit(log_px, compiler_options=compiler_options)
    from jaxvae import sharding

    def sharded(params: Params, x: Array, key: Array) -> Array:
        return log_px(params, sharding.constrain_batch(x, mesh), key)  # examples over `data`

    return jax.jit(sharded, out_shardings=sharding.replicated(mesh), compiler_options=compiler_options)


def make_iwae_evaluator(model: PureModel, *, num_samples: int = 5000, batch_size: int = 100,
                        sample_chunk: int | None = None, mesh: jax.sharding.Mesh | None = None
                        ) -> Callable[[Params, np.ndarray, Array], LogLikelihoodEstimate]:
    """Compiles once; returns ``(params, data [N, *E], key) -> LogLikelihoodEstimate`` (see
    :func:`iwae_log_likelihood`). Reuse it to evaluate many models of one architecture."""
    model = model.evaluation()
    if sample_chunk is None:
        sample_chunk = default_sample_chunk(num_samples, batch_size)
    fn = make_iwae_fn(model, num_samples, sample_chunk, mesh=mesh, compiler_options=eval_compiler_options())
    to_device: Callable[[np.ndarray], Array | np.ndarray] = lambda x: x
    if mesh is not None:
        from jaxvae import sharding

        sharding.check_batch_size(batch_size, mesh, key="batch_size (examples per IWAE batch)")
        x_sharding = sharding.batch_sharding(mesh, 1 + len(model.event_shape))
        rows = sharding.process_rows(x_sharding, batch_size, model.event_shape)  # this process's examples
        key_sharding = sharding.replicated(mesh)
        to_device = lambda x: sharding.make_global_batch(take(x, rows), sharding.batch_sharding_like(mesh, x),
                                                         batch_size)

    def estimate(params: Params, data: np.ndarray, key: Array) -> LogLikelihoodEstimate:
        padded, n = pad_to_multiple(data, batch_size)
        keys = [jax.random.fold_in(key, i // batch_size) for i in range(0, num_examples(padded), batch_size)]
        if mesh is not None:  # replicated global keys (every process holds the same key)
            keys = [jax.random.wrap_key_data(jax.make_array_from_process_local_data(
                key_sharding, np.asarray(jax.random.key_data(k))), impl=jax.random.key_impl(k)) for k in keys]
        out = [fn(params, to_device(take(padded, slice(i, i + batch_size))), k)
               for i, k in zip(range(0, num_examples(padded), batch_size), keys)]
        log_px = np.asarray(jnp.concatenate(out))[:n]
        # The sample standard error of the mean over examples (ddof=1); undefined (nan) for one example.
        se = float(np.std(log_px, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        return LogLikelihoodEstimate(log_px, float(np.mean(log_px)), se, num_samples)

    return estimate


def iwae_log_likelihood(model: PureModel, params: Params, data: np.ndarray, key: Array, *,
                        num_samples: int = 5000, batch_size: int = 100,
                        sample_chunk: int | None = None,
                        mesh: jax.sharding.Mesh | None = None) -> LogLikelihoodEstimate:
    r"""The IWAE estimate of :math:`\log p(x)` for every example of ``data [N, *E]``.

    Args:
      num_samples: K importance samples per example (5000 is the standard of Burda et al. 2016).
      batch_size: examples per compiled call (the last batch is padded, then trimmed).
      sample_chunk: samples per inner step (default: :func:`default_sample_chunk`, about 2.5k decoder evaluations
        per step on a CPU and 100k on an accelerator; peak memory does not grow with K).
      mesh: split each batch over this mesh's ``data`` axis (``batch_size`` must be a multiple of its size);
        the estimate equals the unsharded one. ``None`` (default): one device.
    """
    return make_iwae_evaluator(model, num_samples=num_samples, batch_size=batch_size,
                               sample_chunk=sample_chunk, mesh=mesh)(params, data, key)


def make_elbo_evaluator(model: PureModel, *, batch_size: int = 100
                        ) -> Callable[[Params, np.ndarray, Array], dict[str, Any]]:
    """Compiles once; returns ``(params, data [N, *E], key) -> dataset means`` of the ELBO terms.

    The result has ``elbo``, ``recon``, ``kl`` (analytic KL where the model has one) and, where every latent
    group has an analytic KL, ``kl_per_dim`` (a list of D floats, groups concatenated) and, for models with
    several groups, ``kl_groups`` (``{group: mean KL}``).
    """
    from jaxvae.objectives import losses as objectives

    model = model.evaluation()  # no training-only noise (word dropout, dropout)

    @jax.jit
    def step(params, x, key):
        fwd = model.forward(params, x, key)  # one pass: the terms of jv.elbo and the per-group KL
        recon, kl, per_dim = objectives.elbo_terms(fwd)
        per_dim = per_dim if per_dim is not None else jnp.zeros((num_examples(x), 0))
        return -(recon + kl), recon, kl, per_dim, fwd.kl_per_group() or {}

    def evaluate(params: Params, data: np.ndarray, key: Array) -> dict[str, Any]:
        padded, n = pad_to_multiple(data, batch_size)
        parts = [step(params, take(padded, slice(i, i + batch_size)), jax.random.fold_in(key, i // batch_size))
                 for i in range(0, num_examples(padded), batch_size)]
        elbo, recon, kl, per_dim = (np.asarray(jnp.concatenate(p))[:n] for p in list(zip(*parts))[:4])
        result: dict[str, Any] = {"elbo": float(elbo.mean()), "recon": float(recon.mean()),
                                  "kl": float(kl.mean())}
        if per_dim.shape[-1]:
            result["kl_per_dim"] = [float(v) for v in per_dim.mean(0)]
        groups = [p[4] for p in parts]
        if len(groups[0]) > 1:
            result["kl_groups"] = {g: float(np.asarray(jnp.concatenate([b[g] for b in groups]))[:n].mean())
                                   for g in groups[0]}
        return result

    return evaluate


def evaluate_elbo(model: PureModel, params: Params, data: np.ndarray, key: Array, *,
                  batch_size: int = 100) -> dict[str, Any]:
    """One-off :func:`make_elbo_evaluator` call (compiles each time; build the evaluator once in loops)."""
    return make_elbo_evaluator(model, batch_size=batch_size)(params, data, key)


def posterior_mean_fn(model: PureModel, params: Params) -> Callable[[Any], np.ndarray]:
    """``x [B, ...] -> codes [B, D]``: the flat posterior mean of every latent group (one jitted program).

    This is the representation disentanglement_lib scores (``representation_function`` = the encoder's mean).
    Groups conditioned on a sample of lower groups use the fixed key 0, so the codes are deterministic.
    """
    model = model.evaluation()
    encode = jax.jit(lambda p, x: model.encode(p, x, jax.random.key(0)).loc)
    dtype = params_dtype(params)  # the data in the parameters' precision (float32, or float64 under x64)
    return lambda x: np.asarray(encode(params, jnp.asarray(x, dtype)))


def disentanglement_metrics(model: PureModel, params: Params, dataset: Any, key: Array,
                            **kwargs: Any) -> dict[str, float]:
    """disentanglement_lib's metrics (:func:`jaxvae.evaluation.disentanglement.compute_all`) of a trained model's
    posterior means on a dataset with ground-truth factors (all its splits together form the factor grid:
    ``dsprites``, ``dsprites-small``); ``kwargs`` go to ``compute_all`` (``metrics``, ``num_train``, ``num_test``,
    ...)."""
    data = disentanglement.DatasetFactors.from_dataset(dataset)
    return disentanglement.compute_all(posterior_mean_fn(model, params), data, key, **kwargs)
