"""The chunk loop that both training (:mod:`jaxvae.loop`) and sweeps (:mod:`jaxvae.sweep`) run.

Steps are grouped into *chunks* between host events: a metric record every ``train.log_every`` steps, the end of
an epoch, and the intervals in ``every`` (checkpoints, validation, the monitor). Events fall on multiples of the
*global* step, so ``log_every=50`` records at 50, 100, ... whatever the epoch length, and a resumed run keeps the
same grid. Batch ``b`` of epoch ``e`` is always drawn from ``epoch_permutation(data_seed, e, N)``.

:class:`ChunkLoop` runs the chunks with a caller-supplied ``run_chunk`` (a compiled ``lax.scan`` over a dataset
on the device, or a Python loop over the jitted step) and yields after each one with the step's metrics and, at
multiples of ``log_every``, the record averaged over the chunks since the last one. The caller handles its own
events (checkpoints, validation, writing records), so the control flow stays in plain sight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import data as data_lib


def next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def chunk_end(step: int, steps_per_epoch: int, log_every: int, total_steps: int, *,
              every: tuple[int, ...] = ()) -> int:
    """The next step at which the host acts: the next multiple of ``log_every`` (or of any of ``every``; 0
    entries are ignored), the end of the epoch, or the end of training."""
    epoch_end = (step // steps_per_epoch + 1) * steps_per_epoch
    candidates = [epoch_end, total_steps] + [next_multiple(step, e) for e in (log_every, *every) if e]
    return min(candidates)


def due(step: int, every: int, total: int) -> bool:
    """Whether an event with interval ``every`` (0: never) falls at ``step`` (always at the end of training)."""
    return step == total or (every > 0 and step % every == 0)


def weighted_mean(trees: list[Any], weights: list[float]) -> Any:
    """``sum_i w_i tree_i`` leafwise (host numpy)."""
    return jax.tree.map(lambda *ms: sum(w * np.asarray(m) for w, m in zip(weights, ms)), *trees)


class Chunk(NamedTuple):
    """The steps from ``start`` (the step count of the state going in) to ``end`` (coming out)."""

    start: int
    end: int
    epoch: int
    first_batch: int  # index of the chunk's first batch within its epoch

    @property
    def length(self) -> int:
        return self.end - self.start


class ChunkResult(NamedTuple):
    state: Any
    chunk: Chunk
    seconds: float  # wall time of this chunk (dispatch to metrics on the host)
    record: dict[str, Any] | None  # at multiples of log_every (and the end): metric means + examples_per_sec


RunChunk = Callable[[Any, Any, Chunk], tuple[Any, Any]]  # (state, permutation, chunk) -> (state, metrics)


class ChunkLoop:
    """Runs ``run_chunk`` over the chunk grid from ``start`` to ``total_steps``.

    Args:
      run_chunk: ``(state, permutation, chunk) -> (state, metrics)``; ``metrics`` are the chunk's means (any
        pytree: per-model ``[N]`` arrays in a sweep).
      permutation_on_device: hand ``run_chunk`` the epoch's permutation as a device array (for a scanned chunk)
        rather than numpy (for a host loop that indexes the data itself).
    """

    def __init__(self, run_chunk: RunChunk, *, total_steps: int, steps_per_epoch: int, batch_size: int,
                 log_every: int, every: tuple[int, ...] = (), data_seed: int, num_examples: int,
                 permutation_on_device: bool):
        self.run_chunk = run_chunk
        self.total, self.spe, self.batch_size = total_steps, steps_per_epoch, batch_size
        self.log_every, self.every = log_every, tuple(every)
        self.data_seed, self.num_examples = data_seed, num_examples
        self.on_device = permutation_on_device
        self._seen_lengths: set[int] = set()
        self._replacement: Any = None
        self.steady_examples, self.steady_seconds = 0, 0.0

    def replace_state(self, state: Any) -> None:
        """Makes :meth:`run` continue from ``state`` instead of the state it last yielded (a change the host made
        between chunks, e.g. the end of the aggressive phase in :mod:`jaxvae.loop`)."""
        self._replacement = state

    @property
    def steady_examples_per_sec(self) -> float | None:
        """Throughput over the chunks that did not compile (the first chunk of every length compiles)."""
        return self.steady_examples / self.steady_seconds if self.steady_seconds else None

    def chunks(self, start: int) -> Iterator[Chunk]:
        step = start
        while step < self.total:
            end = chunk_end(step, self.spe, self.log_every, self.total, every=self.every)
            yield Chunk(step, end, step // self.spe, step % self.spe)
            step = end

    def run(self, state: Any, start: int) -> Iterator[ChunkResult]:
        perm_epoch, perm = -1, None
        pending: list[tuple[int, float, Any]] = []  # chunks since the last record
        for chunk in self.chunks(start):
            if chunk.epoch != perm_epoch:
                perm_np = data_lib.epoch_permutation(self.data_seed, chunk.epoch, self.num_examples)
                perm = jnp.asarray(perm_np.astype(np.int32)) if self.on_device else perm_np.astype(np.int32)
                perm_epoch = chunk.epoch
            t0 = time.perf_counter()
            state, metrics = self.run_chunk(state, perm, chunk)
            metrics = jax.device_get(metrics)
            seconds = time.perf_counter() - t0
            if chunk.length in self._seen_lengths:
                self.steady_examples += chunk.length * self.batch_size
                self.steady_seconds += seconds
            self._seen_lengths.add(chunk.length)
            pending.append((chunk.length, seconds, metrics))
            record = None
            if due(chunk.end, self.log_every, self.total):  # one record per log_every steps, averaged over them
                steps_in = sum(n for n, _, _ in pending)
                record = dict(weighted_mean([m for _, _, m in pending], [n / steps_in for n, _, _ in pending]))
                record["examples_per_sec"] = steps_in * self.batch_size / sum(t for _, t, _ in pending)
                pending.clear()
            yield ChunkResult(state, chunk, seconds, record)
            if self._replacement is not None:
                state, self._replacement = self._replacement, None


def make_host_chunk(step_fn: Callable, train: np.ndarray, batch_size: int, rows: Any,
                    make_batch: Callable[[np.ndarray], Any]) -> RunChunk:
    """A chunk as a Python loop over the jitted ``step_fn``, each batch gathered on the host (``rows``: this
    process's rows of a global batch) and placed with ``make_batch``; metrics averaged over the chunk."""

    def run(state, perm, chunk):
        history = []
        for b in range(chunk.first_batch, chunk.first_batch + chunk.length):
            local = train[perm[b * batch_size:(b + 1) * batch_size][rows]]
            state, m = step_fn(state, make_batch(local))
            history.append(m)
        return state, jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs), axis=0), *history)

    return run


def make_scan_chunk(compile_chunk: Callable[[int], Callable], data: Any) -> RunChunk:
    """A chunk as one compiled ``lax.scan`` over batches of ``data`` (on the device): ``compile_chunk(length)``
    gives the program of a chunk of that length (see :func:`jaxvae.train.make_train_chunk`), compiled on first
    use and reused for every later chunk of the same length."""
    compiled: dict[int, Callable] = {}

    def run(state, perm, chunk):
        if chunk.length not in compiled:
            compiled[chunk.length] = compile_chunk(chunk.length)
        return compiled[chunk.length](state, data, perm, jnp.int32(chunk.first_batch))

    return run
