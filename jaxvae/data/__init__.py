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
    "Dataset",
    "DatasetSpec",
    "binarize",
    "epoch_permutation",
    "find_data_dir",
    "iterate_batches",
    "load_dataset",
    "pad_to_multiple",
    "random_subset",
    "steps_per_epoch",
]
