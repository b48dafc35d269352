"""``load_dataset``: registered datasets and user data, split, scaled and (optionally) binarized.

Splits that a dataset does not define are held out deterministically: the held-out set is the LAST ``size``
examples of ``np.random.default_rng(split_seed).permutation(n)``, the rest (in permutation order) stays. A missing
test split is held out first (from all examples), then a missing validation split (from what is left). Registered
datasets use their fixed ``split_seed`` (0 for all), so their splits never change between runs:

* ``mnist``, ``fashion-mnist``: 50,000 / 10,000 / 10,000; official test split; valid is the last 10,000 of the
  permuted official 60,000 training images (as in the IWAE papers).
* ``binarized-mnist``: 50,000 / 10,000 / 10,000, the official splits (``valid_size`` must stay None). Rows are
  ordered by class: shuffle for training and evaluate on a full split, never on its first rows.
* ``cifar10``: 45,000 / 5,000 / 10,000; official test split; valid is the last 5,000 of the permuted train.
* ``frey``: 1,565 / 200 / 200; test is the last 200 of a permutation of all 1,965 images, valid the last 200 of a
  permutation of the remaining 1,765.
* ``digits``: 1,297 / 250 / 250, made like frey's from the 1,797 images.
* ``words``: 53,779 / 5,000 / 5,000, made like frey's from the 63,779 words (token sequences, support
  ``tokens``: the ids are kept as integers, see :mod:`jaxvae.data.text`).
* ``dsprites``: 717,280 / 10,000 / 10,000, and ``dsprites-small``: 42,080 / 2,000 / 2,000, made like frey's from
  the generated grid (:mod:`jaxvae.data.dsprites`). Disentanglement work trains on every image; the small
  held-out splits serve the library's evaluation (ELBO, IWAE), and the metrics sample the whole grid through
  :class:`jaxvae.data.dsprites.DSpritesData`. ``Dataset.factors`` carries each split's factor classes
  ``[N, 6]``, ``labels`` the shape.

User data (a ``.npy``/``.npz`` path or a folder of images) without valid/test splits is split the same way with
``seed``, holding out 10% of the training examples for each missing split unless ``valid_size`` says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxvae.data.dataset import SPLITS, Dataset, binarize, infer_support, split_off
from jaxvae.data.formats import read_image_folder, read_npy, read_npz
from jaxvae.data.locate import generated_folders, get_spec, locate
from jaxvae.data.registry import DATASETS, RawData
from jaxvae.errors import DataError

SCALES = ("unit", "uint8")


def load_dataset(
    name: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    valid_size: int | None = None,
    dynamic_binarization: bool = False,
    scale: str = "unit",
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load a registered dataset (see ``DATASETS``) or user data as a :class:`Dataset` of float32 host arrays.

    Args:
      name: a registered name (``mnist``, ``fashion-mnist``, ``binarized-mnist``, ``frey``, ``cifar10``,
        ``digits``, ``words``, ``dsprites``, ``dsprites-small``), or the path of a ``.npy``/``.npz`` file or of
        a folder of images (``.npz`` keys: ``train``, optional ``valid``, ``test`` and ``{split}_labels``; a
        folder may hold ``train/``, ``valid/``, ``test/``).
      data_dir: folder holding the files (see :mod:`jaxvae.data.locate` for the search order without it); for user
        data, a relative ``name`` is taken relative to it; for a generated dataset, the folder its cache is read
        from and written to (under ``data_dir/<folder>``).
      valid_size: validation examples to hold out of the training split, where the dataset defines no validation
        split (default: the dataset's, see the module doc; 0 gives an empty validation split).
      dynamic_binarization: return grey levels for training, to be re-binarized each epoch with
        :func:`binarize`, and validation/test splits binarized once (with generators seeded ``[seed, 1]`` and
        ``[seed, 2]``). ``support`` is then ``"binary"``. Needs data in [0, 1] and ``scale="unit"``.
      scale: ``"unit"``: values in [0, 1] (8-bit data divided by 255); ``"uint8"``: 8-bit data kept as the
        integers 0..255 (still float32), for 256-way or discretized likelihoods; only for 8-bit sources.
      seed: seeds what is not part of a dataset's definition: the one-time binarization of the evaluation splits
        and the split of user data. Registered datasets' splits do not depend on it.
      download: allow downloading missing files into the cache (also disabled by ``$JAXVAE_NO_DOWNLOAD=1``).
    """
    if scale not in SCALES:
        raise DataError(f"scale must be one of {SCALES}, got {scale!r}.")
    if isinstance(name, str) and name in DATASETS:
        spec = get_spec(name)
        if spec.generate is not None:
            raw, files = spec.generate(*generated_folders(spec, data_dir))
        else:
            source, paths = locate(spec, data_dir, download=download)
            raw, files = source.parse(paths), tuple(paths.values())
        max_value = spec.max_value
        factor_names, factor_sizes = spec.factor_names, spec.factor_sizes
        split_seed, default_valid, default_test = spec.split_seed, spec.valid_size, spec.test_size
        vocabulary = spec.vocabulary
        info = {"source": spec.homepage, "license": spec.license, "citation": spec.citation,
                "description": spec.description, "files": [str(p) for p in files]}
    else:
        path = _user_path(name, data_dir)
        raw, support, max_value = _read_user_data(path)
        split_seed, default_valid, default_test = seed, None, None
        info = {"source": str(path), "license": "unknown (user data)", "citation": "", "files": [str(path)]}
        vocabulary = factor_names = factor_sizes = None
        name = str(path)
    splits, labels, factors, notes = _make_splits(raw, split_seed, valid_size, default_valid, default_test)
    del raw  # the unsplit arrays (dsprites: 3 GB) are no longer needed
    if max_value is not None:
        support = "binary" if max_value == 1 else "unit_interval"
    if vocabulary is not None:  # token ids: kept as integers, never scaled or binarized
        support, max_value = "tokens", None
        if scale != "unit" or dynamic_binarization:
            raise DataError(f"{name} holds token ids (a text dataset): leave data.scale=unit and "
                            "data.dynamic_binarization=false.")
    if scale == "uint8":
        if max_value != 255:
            levels = f" (integers 0..{max_value})" if max_value not in (None, 1) else ""
            raise DataError(f"scale='uint8' needs 8-bit data (integers 0..255) but {name} has support "
                            f"{support!r}{levels}. Use scale='unit'.")
        support = "integer_0_255"
    arrays = {s: _to_float32(x, None if scale == "uint8" else max_value) for s, x in splits.items()}
    if dynamic_binarization:
        if support != "unit_interval":
            already = " (it is already binary)" if support == "binary" else ""
            raise DataError(f"dynamic_binarization needs grey levels in [0, 1] and scale='unit'; {name} has "
                            f"support {support!r}{already}.")
        for i, split in enumerate(("valid", "test"), start=1):
            arrays[split] = binarize(arrays[split], np.random.default_rng([seed, i]))
        support = "binary"
        notes.append(f"dynamic binarization: valid/test binarized once with np.random.default_rng([{seed}, 1]) "
                     f"and ([{seed}, 2]); train holds grey levels to binarize each epoch")
    info["splits"] = "; ".join(notes)
    event_shape = tuple(int(d) for d in arrays["train"].shape[1:])
    return Dataset(arrays["train"], arrays["valid"], arrays["test"], name=str(name), event_shape=event_shape,
                   support=support, labels=labels, dynamic_binarization=dynamic_binarization, info=info,
                   vocabulary=vocabulary, factors=factors, factor_names=factor_names if factors else None,
                   factor_sizes=factor_sizes if factors else None)


def _make_splits(raw: RawData, seed: int, valid_size, default_valid, default_test):
    splits, labels = dict(raw.splits), dict(raw.labels) if raw.labels is not None else None
    factors = dict(raw.factors) if raw.factors is not None else None
    if valid_size is not None and "valid" in splits:
        raise DataError(f"The data has its own validation split; leave valid_size unset (got {valid_size}).")
    if len(splits) == 1:
        notes = [f"{len(splits['train']):,} examples without predefined splits"]
    else:
        notes = ["predefined splits: " + ", ".join(f"{s} {len(x):,}" for s, x in splits.items())]
    tenth = max(1, len(splits["train"]) // 10)  # default for user data: 10% of the original training examples
    valid_size = default_valid if valid_size is None else valid_size
    for split, size in (("test", default_test), ("valid", valid_size)):
        if split in splits:
            continue
        pool = len(splits["train"])
        size = tenth if size is None else size
        what = "valid_size" if split == "valid" else "the test split size"
        y = labels.get("train") if labels else None
        splits["train"], splits[split], y_rest, y_held = split_off(splits["train"], y, size, seed, what)
        if labels is not None and y is not None:
            labels["train"], labels[split] = y_rest, y_held
        if factors is not None and "train" in factors:  # the same permutation: split_off depends on (seed, n)
            factors["train"], factors[split], _, _ = split_off(factors["train"], None, size, seed, what)
        notes.append(f"{split}: last {size:,} of np.random.default_rng({seed}).permutation({pool:,}) of the "
                     f"training examples, train keeps the other {pool - size:,}")
    if labels is not None and set(labels) != set(SPLITS):
        labels = None  # labels only where every split has them
    if factors is not None and set(factors) != set(SPLITS):
        factors = None
    return splits, labels, factors, notes


def _to_float32(x: np.ndarray, max_value: int | None) -> np.ndarray:
    y = x.astype(np.float32)
    if max_value is not None and max_value != 1:
        y /= np.float32(max_value)
    if not np.all(np.isfinite(y)):
        raise DataError("Values overflow float32 (|x| > 3.4e38); rescale the data.")
    return y


def _user_path(name: str | os.PathLike, data_dir: str | os.PathLike | None) -> Path:
    path = Path(name).expanduser()
    if data_dir is not None and not path.is_absolute():
        path = Path(data_dir).expanduser() / path
    if not path.exists():
        if path.suffix.lower() in (".npy", ".npz") or os.sep in str(name) or data_dir is not None:
            raise DataError(f"No such file or folder: {path}. Pass the path of a .npy/.npz file or of a folder of "
                            f"images, or a registered dataset ({', '.join(sorted(DATASETS))}).")
        get_spec(str(name))  # raises DataError listing the registered names
    return path


def _read_user_data(path: Path) -> tuple[RawData, str, int | None]:
    """Read user data and infer its support; integer data comes back with ``max_value`` 1 or 255."""
    labels = None
    if path.is_dir():
        subdirs = [s for s in SPLITS if (path / s).is_dir()]
        if subdirs and "train" not in subdirs:
            raise DataError(f"{path} has {subdirs} subfolders but no train/ subfolder; add train/.")
        folders = {s: path / s for s in subdirs} if subdirs else {"train": path}
        splits = {s: read_image_folder(folder) for s, folder in folders.items()}
    elif path.suffix.lower() == ".npy":
        splits = {"train": read_npy(path)}
    elif path.suffix.lower() == ".npz":
        arrays = read_npz(path)
        allowed = {*SPLITS, *(f"{s}_labels" for s in SPLITS)}
        if "train" not in arrays or set(arrays) - allowed:
            raise DataError(f"{path} has keys {sorted(arrays)}; expected 'train' and optionally 'valid', 'test' "
                            f"and '<split>_labels', e.g. np.savez(path, train=x_train, test=x_test).")
        splits = {s: arrays[s] for s in SPLITS if s in arrays}
        labels = {s: arrays[f"{s}_labels"] for s in SPLITS if f"{s}_labels" in arrays} or None
    else:
        raise DataError(f"{path}: user data must be a .npy or .npz file or a folder of .png/.jpg images.")
    event = splits["train"].shape[1:]
    for s, x in splits.items():
        if x.ndim < 2 or x.shape[1:] != event or len(x) == 0:
            raise DataError(f"{path}: split {s!r} has shape {x.shape}; every split must be a non-empty array "
                            f"[N, *event_shape] with the same event shape as train {event}.")
    for s, y in (labels or {}).items():
        if s not in splits or y.shape != (len(splits[s]),) or y.dtype.kind not in "iu":
            raise DataError(f"{path}: {s}_labels must be integers of shape [{len(splits.get(s, []))}], got "
                            f"{y.dtype} {y.shape}.")
    labels = {s: y.astype(np.int32) for s, y in labels.items()} if labels else None
    support, max_value = infer_support(list(splits.values()), str(path))
    if max_value is not None:
        splits = {s: x.astype(np.uint8) for s, x in splits.items()}
    return RawData(splits, labels), support, max_value
