"""Deterministic, resumable minibatching on the host.

The order of an epoch depends only on ``(seed, epoch)``, so a run resumed from a checkpoint taken after it had
consumed ``k`` batches of epoch ``e`` continues with exactly the batches it would have seen next:
``iterate_batches(x, b, seed=s, epoch=e, start_batch=k)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from jaxvae.errors import DataError


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of epoch ``epoch``: ``np.random.default_rng([seed, epoch]).permutation(n)`` (int64 ``[n]``)."""
    if seed < 0 or epoch < 0:
        raise DataError(f"seed and epoch must be non-negative integers, got seed={seed}, epoch={epoch}.")
    return np.random.default_rng([seed, epoch]).permutation(n)


def pad_to_multiple(data: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    """``(data padded with copies of its last example to a multiple of batch_size, original N)``: evaluation in
    batches of one shape (one compiled program); trim results to ``[:N]``."""
    if not isinstance(data, np.ndarray):
        import jax  # only for the pytree batches of jaxvae.models.conditional (this module imports no JAX)

        if not isinstance(data, jax.Array):
            padded = jax.tree.map(lambda a: pad_to_multiple(a, batch_size)[0], data)
            return padded, int(np.shape(jax.tree.leaves(data)[0])[0])
    data = np.asarray(data)
    n = data.shape[0]
    pad = (-n) % batch_size
    if pad:
        data = np.concatenate([data, np.repeat(data[-1:], pad, axis=0)])
    return data, n


def random_subset(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a random subset of ``range(n)`` of ``min(n, size)`` examples, without replacement
    (``np.random.default_rng(seed).choice``); all of ``range(n)`` when ``size`` is None or at least ``n``.

    The one way jaxvae picks evaluation and diagnostic subsets: sorted, so a subset of a class-sorted split (the
    binarized-MNIST test split) is still spread over all classes and keeps the split's order."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches in an epoch of ``n`` examples."""
    _check_batch_size(batch_size, n, drop_remainder)
    return n // batch_size if drop_remainder else -(-n // batch_size)


def iterate_batches(
    x: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    drop_remainder: bool = True,
    start_batch: int = 0,
) -> Iterator[np.ndarray]:
    """Yield the batches of epoch ``epoch`` of ``x`` in the order of :func:`epoch_permutation`.

    Args:
      x: array ``[N, ...]``; batches are gathered copies ``x[indices]``.
      batch_size: examples per batch.
      seed, epoch: select the permutation.
      drop_remainder: drop the last, smaller batch (default), so that every batch has the same shape and a jitted
        step compiles once.
      start_batch: skip the first ``start_batch`` batches of the epoch (to resume a run mid-epoch).
    """
    n = len(x)
    steps = steps_per_epoch(n, batch_size, drop_remainder)
    if not 0 <= start_batch <= steps:
        raise DataError(f"start_batch must be in [0, {steps}] for {n} examples in batches of {batch_size}, got "
                        f"{start_batch}.")
    perm = epoch_permutation(seed, epoch, n)
    for step in range(start_batch, steps):
        yield x[perm[step * batch_size:(step + 1) * batch_size]]


def _check_batch_size(batch_size: int, n: int, drop_remainder: bool) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if drop_remainder and batch_size > n:
        raise DataError(f"batch_size {batch_size} exceeds the {n} examples, so drop_remainder=True leaves no "
                        f"batch; use a smaller batch size.")
