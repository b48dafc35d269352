"""Datasets with known factors of variation, as the disentanglement metrics consume them.

:class:`GroundTruthData` is the two-step generative model ``y ~ p(y)``, ``x ~ p(x | y)`` of disentanglement_lib;
the metrics of :mod:`jaxvae.evaluation.disentanglement` score representations against it, and the datasets that
generate their images from the factors (:class:`jaxvae.data.dsprites.DSpritesData`) implement it. It lives with the
data so that datasets do not import the metrics.
"""

from __future__ import annotations

import abc

import jax
import numpy as np
from jax.typing import ArrayLike

Array = jax.Array

__all__ = ["GroundTruthData", "numpy_rng"]


def numpy_rng(key: Array) -> np.random.Generator:
    """A numpy generator seeded from the bits of a JAX key (new-style typed keys and raw ``uint32`` keys)."""
    key = jax.numpy.asarray(key)
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())


class GroundTruthData(abc.ABC):
    """A two-step generative model of a dataset with known factors: ``y ~ p(y)``, then ``x ~ p(x | y)``.

    Factor ``k`` takes the integer values ``0..factor_sizes[k] - 1``. Subclasses give :attr:`factor_sizes` and
    :meth:`observations`; :meth:`sample_factors` draws every factor independently and uniformly (as dSprites,
    Shapes3D and the other disentanglement_lib datasets do) unless overridden.
    """

    @property
    @abc.abstractmethod
    def factor_sizes(self) -> tuple[int, ...]:
        """The number of values of each factor, ``(S_1, ..., S_K)``."""

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def sample_factors(self, key: Array, num: int) -> np.ndarray:
        """``num`` factor vectors ``[num, K]`` (int64), each factor uniform over its values."""
        rng = numpy_rng(key)
        return np.stack([rng.integers(size, size=num) for size in self.factor_sizes], axis=1).astype(np.int64)

    @abc.abstractmethod
    def observations(self, factors: np.ndarray, key: Array) -> ArrayLike:
        """Observations ``[N, ...]`` for the factors ``[N, K]``; ``key`` drives any noise in ``p(x | y)``."""
