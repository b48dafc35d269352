"""Datasets for VAEs as host numpy arrays: registered benchmarks, user data, and deterministic batching.

>>> from jaxvae.data import load_dataset, iterate_batches
>>> ds = load_dataset("digits")            # bundled with scikit-learn; works offline
>>> ds.train.shape, ds.support
((1297, 8, 8, 1), 'unit_interval')
>>> batch = next(iterate_batches(ds.train, 64, seed=0, epoch=0))

Files are looked up in ``data_dir``, ``$JAXVAE_DATA_DIR``, the cache ``~/.cache/jaxvae`` (or
``$XDG_CACHE_HOME/jaxvae``) and system folders, and downloaded into the cache otherwise; every file is checked
against its published checksum (see :mod:`jaxvae.data.locate`). ``dsprites`` and ``dsprites-small`` are generated
on the host instead, with their factors as ground truth, and cached (see :mod:`jaxvae.data.dsprites`).
"""

from jaxvae.data.batching import (
    epoch_permutation,
    iterate_batches,
    pad_to_multiple,
    random_subset,
    steps_per_epoch,
)
from jaxvae.data.dataset import SUPPORTS, Dataset, binarize
from jaxvae.data.loading import load_dataset
from jaxvae.data.locate import find_data_dir
from jaxvae.data.registry import DATASETS, DatasetSpec

__all__ = [
    "DATASETS",
    "SUPPORTS",
    "Batch",
    "Dataset",
    "DatasetSpec",
    "Labeled",
    "SemiSupervised",
    "binarize",
    "epoch_permutation",
    "find_data_dir",
    "images",
    "iterate_batches",
    "load_dataset",
    "map_images",
    "nbytes",
    "num_examples",
    "pad_to_multiple",
    "random_subset",
    "steps_per_epoch",
    "take",
]

_BATCHES = ("Batch", "Labeled", "SemiSupervised", "images", "map_images", "nbytes", "num_examples", "take")


def __getattr__(name: str):
    """The batch types and their leaf-wise operations (:mod:`jaxvae.data.batches`, which imports JAX) load on
    first use, so the rest of this package stays JAX-free."""
    if name in _BATCHES:
        from jaxvae.data import batches

        return getattr(batches, name)
    raise AttributeError(f"module 'jaxvae.data' has no attribute {name!r}")
