"""Batches that carry more than the examples: the nominal :class:`Batch` type and the leaf-wise operations the
engine applies to every split and batch, whether an array or a :class:`Batch`.

A conditional model reads its examples together with their labels (or any side input), so its batches are
pytrees: :class:`Labeled` ``(x [N, *E], y)`` and M2's training rows :class:`SemiSupervised` ``(x, xl, yl)``. They
are no arrays and do not pretend to be: the engine takes rows with :func:`take`, counts them with
:func:`num_examples`, sizes them with :func:`nbytes`, and reaches the examples with :func:`images` /
:func:`map_images`; each works leaf by leaf (every leaf has the examples on its first axis), so gathers inside
a compiled chunk and shardings over a mesh treat a batch like any pytree.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

Array = Any  # a numpy or JAX array


class Batch(abc.ABC):
    """Examples with what they carry, as a pytree whose every leaf has the examples on its first axis."""

    @property
    @abc.abstractmethod
    def images(self) -> Array:
        """The examples ``[N, *E]`` (what a likelihood scores and an image grid shows)."""

    @abc.abstractmethod
    def map_images(self, fn: Callable[[int, Array], Array]) -> Batch:
        """The batch with ``fn(i, a)`` applied to its ``i``-th example array (0: ``images``)."""


@typing.final
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Labeled(Batch):
    """Examples with their conditions: ``x [N, *E]`` and ``y``: int32 ``[N]`` classes (``-1``: unknown) or a
    float side input ``[N, S]``."""

    x: Any
    y: Any

    @property
    def images(self) -> Array:
        return self.x

    def map_images(self, fn: Callable[[int, Array], Array]) -> Labeled:
        return dataclasses.replace(self, x=fn(0, self.x))


@typing.final
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SemiSupervised(Batch):
    """M2's training rows: an example ``x [N, *E]`` used without its label, and a labelled example ``xl [N, *E]``
    with its class ``yl [N]``."""

    x: Any
    xl: Any
    yl: Any

    @property
    def images(self) -> Array:
        return self.x

    def map_images(self, fn: Callable[[int, Array], Array]) -> SemiSupervised:
        return dataclasses.replace(self, x=fn(0, self.x), xl=fn(1, self.xl))


def num_examples(data: Any) -> int:
    """The number of examples of an array or a :class:`Batch` (its first axis)."""
    return int(np.shape(jax.tree.leaves(data)[0])[0])


def take(data: Any, idx: Any) -> Any:
    """The rows ``idx`` (an index array or a slice) of every leaf of ``data``."""
    return jax.tree.map(lambda a: a[idx], data)


def nbytes(data: Any) -> int:
    """The bytes of every leaf of ``data``."""
    return sum(int(np.prod(np.shape(a))) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(data))


def images(data: Any) -> Array:
    """The examples of a batch (``x``), whatever it carries besides; an array is its own examples."""
    return data.images if isinstance(data, Batch) else data


def map_images(fn: Callable[..., Array], data: Any, key: jax.Array | None = None) -> Any:
    """``fn`` applied to every example array of ``data`` (``fn(x)``, or ``fn(key_i, x)`` with a key per array:
    ``key`` itself for the examples, ``fold_in(key, i)`` for the ``i``-th other one, a labelled partner)."""
    call = (lambda i, a: fn(a)) if key is None else (
        lambda i, a: fn(key if i == 0 else jax.random.fold_in(key, i), a))
    return data.map_images(call) if isinstance(data, Batch) else call(0, data)
