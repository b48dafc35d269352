"""The chunk loop that both training (:mod:`jaxvae.training.loop`) and sweeps (:mod:`jaxvae.runs.sweep`) run.

Steps are grouped into *chunks* between host events: a metric record every ``train.log_every`` steps, the end of
an epoch, and the intervals in ``every`` (checkpoints, validation, the monitor). Events fall on multiples of the
*global* step, so ``log_every=50`` records at 50, 100, ... whatever the epoch length, and a resumed run keeps the
same grid. Batch ``b`` of epoch ``e`` is always drawn from ``epoch_permutation(data_seed, e, N)``.

:class:`ChunkLoop` runs the chunks with a caller-supplied ``run_chunk`` (a compiled ``lax.scan`` over a dataset
on the device, or a Python loop over the jitted step) and yields after each one with, at multiples of
``log_every``, the record: the metrics averaged over the steps since the last record (summed one step at a time
across calls, so the record does not depend on how the steps were split). The caller handles its own
events (checkpoints, validation, writing records), so the control flow stays in plain sight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import data as data_lib
from jaxvae.data.batches import take
from jaxvae.training.program import per_active_step


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
    chunk: Chunk  # the steps run by this call (a piece of a grid chunk when chunks are bounded in time)
    seconds: float  # wall time of this chunk (dispatch to metrics on the host), compilation excluded
    record: dict[str, Any] | None  # at multiples of log_every (and the end): metric means + examples_per_sec


class RunChunk(Protocol):
    """How :class:`ChunkLoop` runs steps: ``(state, permutation, chunk, sums) -> (state, sums)``, where ``sums``
    are the metrics summed over the steps since the last record (None: none yet) and each step of ``chunk`` is
    added to them in order, so a record is bitwise the same however its steps were split into calls; and
    ``compile(state, permutation, chunk) -> seconds`` that compiles ahead of the first call (so that
    compilation is timed apart from the steps, and a program that cannot be built fails before a run directory
    is written)."""

    def __call__(self, state: Any, perm: Any, chunk: Chunk, sums: Any) -> tuple[Any, Any]: ...

    def compile(self, state: Any, perm: Any, chunk: Chunk) -> float: ...


class ChunkLoop:
    """Runs ``run_chunk`` over the chunk grid from ``start`` to ``total_steps``.

    Args:
      run_chunk: a :class:`RunChunk`; ``sums`` are the running sums of the step metrics (any pytree: per-model
        ``[N]`` arrays in a sweep), divided by the step count at each record.
      permutation_on_device: hand ``run_chunk`` the epoch's permutation as a device array (for a scanned chunk)
        rather than numpy (for a host loop that indexes the data itself).
      max_chunk_seconds: a bound on the wall time of one call of ``run_chunk`` (``train.max_chunk_seconds``; 0:
        none). The steps between two host events are then run in pieces of at most ``max_chunk_seconds /
        (seconds per step)`` steps, the rate measured on the pieces already run (the first piece of a run is one
        step), so that a signal is answered within about that time whatever one step costs. Pieces reuse one
        compiled program and leave the results, the records included, bitwise unchanged.
    """

    def __init__(self, run_chunk: RunChunk, *, total_steps: int, steps_per_epoch: int, batch_size: int,
                 log_every: int, every: tuple[int, ...] = (), data_seed: int, num_examples: int,
                 permutation_on_device: bool, max_chunk_seconds: float = 0.0):
        self.run_chunk = run_chunk
        self.total, self.spe, self.batch_size = total_steps, steps_per_epoch, batch_size
        self.log_every, self.every = log_every, tuple(every)
        self.data_seed, self.num_examples = data_seed, num_examples
        self.on_device = permutation_on_device
        self.max_chunk_seconds = float(max_chunk_seconds)
        self._replacement: Any = None
        self._pieces = 0
        self.step_seconds: float | None = None  # the latest measured wall time per step
        self.compile_seconds = 0.0
        self.steady_examples, self.steady_seconds = 0, 0.0
        self.current: Chunk | None = None  # the chunk in flight (for the signal handler's message)

    def replace_state(self, state: Any) -> None:
        """Makes :meth:`run` continue from ``state`` instead of the state it last yielded (a change the host made
        between chunks, e.g. the end of the aggressive phase in :mod:`jaxvae.training.loop`)."""
        self._replacement = state

    @property
    def steady_examples_per_sec(self) -> float | None:
        """Throughput over every chunk but the first (compilation excluded); None until two chunks ran."""
        return self.steady_examples / self.steady_seconds if self.steady_seconds else None

    def in_flight(self, host_work: str) -> str:
        """What a signal's acknowledgement says the loop does now and will do (``host_work``: what the caller
        does between chunks)."""
        chunk = self.current
        if chunk is None:
            return (f"finishing {host_work}, then writing a checkpoint and exiting with code 75; send the signal "
                    "again to stop at once without a checkpoint.")
        eta = "" if self.step_seconds is None else f" (about {self.step_seconds * chunk.length:.0f} s)"
        return (f"stopping after step {chunk.end:,} of {self.total:,}, the end of the steps in flight{eta}, then "
                "writing a checkpoint and exiting with code 75; send the signal again to stop at once without a "
                "checkpoint.")

    def chunks(self, start: int) -> Iterator[Chunk]:
        """The grid chunks from ``start``: the steps between two host events."""
        step = start
        while step < self.total:
            end = chunk_end(step, self.spe, self.log_every, self.total, every=self.every)
            yield Chunk(step, end, step // self.spe, step % self.spe)
            step = end

    def piece_limit(self) -> int | None:
        """The most steps the next call may run (None: no bound)."""
        if self.max_chunk_seconds <= 0:
            return None
        if self.step_seconds is None:
            return 1  # the first piece measures the rate
        return max(1, int(self.max_chunk_seconds / max(self.step_seconds, 1e-9)))

    def pieces(self, chunk: Chunk) -> Iterator[Chunk]:
        """``chunk`` split into calls of at most :meth:`piece_limit` steps (sized as the loop runs)."""
        step = chunk.start
        while step < chunk.end:
            limit = self.piece_limit()
            end = chunk.end if limit is None else min(chunk.end, step + limit)
            yield Chunk(step, end, chunk.epoch, chunk.first_batch + step - chunk.start)
            step = end

    def _permutation(self, epoch: int) -> Any:
        perm = data_lib.epoch_permutation(self.data_seed, epoch, self.num_examples).astype(np.int32)
        return jnp.asarray(perm) if self.on_device else perm

    def compile(self, state: Any, start: int) -> float:
        """Compiles the program of the chunks from ``start`` ahead of :meth:`run` (errors in building the step
        surface here); returns the seconds it took."""
        first = next(self.chunks(start), None)
        if first is None:
            return 0.0
        seconds = self.run_chunk.compile(state, self._permutation(first.epoch), first)
        self.compile_seconds += seconds
        return seconds

    def run(self, state: Any, start: int) -> Iterator[ChunkResult]:
        perm_epoch, perm = -1, None
        sums, steps_in, seconds_in = None, 0, 0.0  # since the last record
        for grid_chunk in self.chunks(start):
            if grid_chunk.epoch != perm_epoch:
                perm, perm_epoch = self._permutation(grid_chunk.epoch), grid_chunk.epoch
            for chunk in self.pieces(grid_chunk):
                self.current = chunk
                t0 = time.perf_counter()
                state, sums = self.run_chunk(state, perm, chunk, sums)
                sums = jax.device_get(sums)
                seconds = time.perf_counter() - t0
                self.step_seconds = seconds / chunk.length
                if self._pieces:  # the first call carries one-time costs (allocations, warm-up)
                    self.steady_examples += chunk.length * self.batch_size
                    self.steady_seconds += seconds
                self._pieces += 1
                steps_in, seconds_in = steps_in + chunk.length, seconds_in + seconds
                record = None
                if due(chunk.end, self.log_every, self.total):  # one record per log_every steps, averaged
                    record = per_active_step(dict(jax.tree.map(lambda s, n=steps_in: np.asarray(s) / n, sums)))
                    record["examples_per_sec"] = steps_in * self.batch_size / seconds_in
                    sums, steps_in, seconds_in = None, 0, 0.0
                self.current = None
                yield ChunkResult(state, chunk, seconds, record)
                if self._replacement is not None:
                    state, self._replacement = self._replacement, None


class _ScanChunk:
    """A chunk as one compiled loop over batches of ``data`` (on the device): ``program`` is a jitted
    :func:`jaxvae.training.step.make_train_chunk` function with ``carry_sums``, compiled once for every chunk
    length."""

    def __init__(self, program: Callable, data: Any):
        self.program, self.data = program, data
        self.compiled: Callable | None = None
        self.zeros: Any = None  # the metric sums of no steps

    def _args(self, state: Any, perm: Any, chunk: Chunk) -> tuple:
        return state, self.data, perm, jnp.int32(chunk.first_batch), jnp.int32(chunk.length)

    def compile(self, state: Any, perm: Any, chunk: Chunk) -> float:
        t0 = time.perf_counter()
        if self.compiled is None:
            args = self._args(state, perm, chunk)
            shapes = jax.eval_shape(self.program, *args, None)[1]
            self.zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
            self.compiled = self.program.lower(*args, self.zeros).compile()
        return time.perf_counter() - t0

    def __call__(self, state: Any, perm: Any, chunk: Chunk, sums: Any) -> tuple[Any, Any]:
        if self.compiled is None:
            self.compile(state, perm, chunk)
        return self.compiled(*self._args(state, perm, chunk), self.zeros if sums is None else sums)


class _HostChunk:
    """A chunk as a Python loop over the jitted ``step_fn``, each batch gathered on the host (``rows``: this
    process's rows of a global batch) and placed with ``make_batch``; metrics averaged over the chunk."""

    def __init__(self, step_fn: Callable, train: Any, batch_size: int, rows: Any,
                 make_batch: Callable[[Any], Any]):
        self.step_fn, self.train, self.batch_size, self.rows, self.make_batch = (
            step_fn, train, batch_size, rows, make_batch)
        self.compiled: Callable | None = None

    def _batch(self, perm: Any, b: int) -> Any:
        return self.make_batch(take(self.train, perm[b * self.batch_size:(b + 1) * self.batch_size][self.rows]))

    def compile(self, state: Any, perm: Any, chunk: Chunk) -> float:
        t0 = time.perf_counter()
        if self.compiled is None:
            self.compiled = self.step_fn.lower(state, self._batch(perm, chunk.first_batch)).compile()
        return time.perf_counter() - t0

    def __call__(self, state: Any, perm: Any, chunk: Chunk, sums: Any) -> tuple[Any, Any]:
        if self.compiled is None:
            self.compile(state, perm, chunk)
        for b in range(chunk.first_batch, chunk.first_batch + chunk.length):
            state, m = self.compiled(state, self._batch(perm, b))
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
        return state, sums


def make_host_chunk(step_fn: Callable, train: Any, batch_size: int, rows: Any,
                    make_batch: Callable[[Any], Any]) -> RunChunk:
    """A :class:`RunChunk` that loops over the jitted ``step_fn`` in Python, each batch gathered on the host
    (``rows``: this process's rows of a global batch) and placed with ``make_batch``; metrics summed step by
    step."""
    return _HostChunk(step_fn, train, batch_size, rows, make_batch)


def make_scan_chunk(program: Callable, data: Any) -> RunChunk:
    """A :class:`RunChunk` that runs ``program`` (a jitted :func:`jaxvae.training.step.make_train_chunk` function
    with ``carry_sums``, e.g. from :func:`jaxvae.training.step.jit_train_chunk`) over ``data`` on the device: one
    compiled program for chunks of every length."""
    return _ScanChunk(program, data)
