"""The :class:`Dataset` container and the host-side helpers that build it: splits, support inference, binarize."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxvae.errors import DataError

#: Values a :attr:`Dataset.support` can take.
SUPPORTS = ("binary", "unit_interval", "real", "integer_0_255", "tokens")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A dataset as host numpy arrays, split into train / valid / test.

    Attributes:
      train, valid, test: float32 arrays ``[N, *event_shape]`` (read-only). ``valid`` may have ``N == 0``.
      name: the registry name, or the path of user data.
      event_shape: shape of one example; images are HWC, e.g. ``(28, 28, 1)``.
      support: the values the data takes, which decides the likelihood that fits it: ``"binary"`` (0/1),
        ``"unit_interval"`` ([0, 1]), ``"integer_0_255"`` (integers 0..255 stored as float32, for 256-way or
        discretized likelihoods), ``"real"``, or ``"tokens"`` (token ids of a text dataset, as exact float32
        integers; :mod:`jaxvae.data.text`).
      labels: ``{split: int32 [N]}`` class labels where the dataset has them, else ``None``.
      dynamic_binarization: if True, ``train`` holds grey levels in [0, 1] (``support`` is ``"binary"``) that the
        training loop must binarize afresh every epoch with :func:`binarize`; ``valid``/``test`` were binarized
        once with a fixed seed, so evaluation is deterministic.
      info: provenance: ``source``, ``license``, ``citation``, ``splits`` (how the splits were made), ``files``.
      vocabulary: the tokens of a text dataset (``support == "tokens"``), else ``None``.
      factors: ``{split: int32 [N, K]}`` the classes of the ground-truth factors of each example, for datasets
        generated from known factors (``dsprites``: see :mod:`jaxvae.data.dsprites`), else ``None``.
      factor_names, factor_sizes: the names of the ``K`` factor columns and their numbers of classes (factor
        ``k`` takes the classes ``0..factor_sizes[k] - 1``); set exactly when ``factors`` is.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    name: str
    event_shape: tuple[int, ...]
    support: str
    labels: dict[str, np.ndarray] | None = None
    dynamic_binarization: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    vocabulary: tuple[str, ...] | None = None
    factors: dict[str, np.ndarray] | None = None
    factor_names: tuple[str, ...] | None = None
    factor_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.support not in SUPPORTS:
            raise DataError(f"Dataset support must be one of {SUPPORTS}, got {self.support!r}.")
        if (self.support == "tokens") != (self.vocabulary is not None):
            raise DataError(f"{self.name}: token data (support 'tokens') and a vocabulary go together; got "
                            f"support {self.support!r} and vocabulary {'set' if self.vocabulary else 'None'}.")
        for split in SPLITS:
            x = getattr(self, split)
            if x.dtype != np.float32 or x.shape[1:] != tuple(self.event_shape):
                raise DataError(f"{self.name}: {split} must be float32 [N, {self.event_shape}], got {x.dtype} "
                                f"{x.shape}.")
            object.__setattr__(self, split, _read_only(x))
        if self.labels is not None:
            for split, y in self.labels.items():
                if len(y) != len(self.split(split)):
                    raise DataError(f"{self.name}: {len(y)} {split} labels for {len(self.split(split))} examples.")
            object.__setattr__(self, "labels", {s: _read_only(y) for s, y in self.labels.items()})
        if (self.factors is None) != (self.factor_names is None) or (self.factors is None) != (
                self.factor_sizes is None):
            raise DataError(f"{self.name}: factors, factor_names and factor_sizes go together; set all or none.")
        if self.factors is not None:
            self._check_factors()

    def _check_factors(self) -> None:
        sizes = tuple(int(k) for k in self.factor_sizes)
        if len(self.factor_names) != len(sizes) or set(self.factors) != set(SPLITS):
            raise DataError(f"{self.name}: factors need one [N, K] array per split {SPLITS} and K = "
                            f"{len(sizes)} names and sizes; got names {self.factor_names}, sizes {sizes}, "
                            f"splits {sorted(self.factors)}.")
        for split, f in self.factors.items():
            n = len(self.split(split))
            if f.dtype != np.int32 or f.shape != (n, len(sizes)):
                raise DataError(f"{self.name}: {split} factors must be int32 [{n}, {len(sizes)}], got {f.dtype} "
                                f"{f.shape}.")
            if n and (np.any(f.min(axis=0) < 0) or np.any(f.max(axis=0) >= np.asarray(sizes))):
                raise DataError(f"{self.name}: {split} factors hold classes outside 0..size-1 for the sizes "
                                f"{sizes}.")
        object.__setattr__(self, "factor_names", tuple(self.factor_names))
        object.__setattr__(self, "factor_sizes", sizes)
        object.__setattr__(self, "factors", {s: _read_only(f) for s, f in self.factors.items()})

    def split(self, name: str) -> np.ndarray:
        """The array of split ``name`` ("train", "valid" or "test")."""
        if name not in SPLITS:
            raise DataError(f"Unknown split {name!r}; use one of {SPLITS}.")
        return getattr(self, name)

    @property
    def sizes(self) -> dict[str, int]:
        """Number of examples per split."""
        return {s: len(getattr(self, s)) for s in SPLITS}

    def __repr__(self) -> str:
        sizes = "/".join(f"{n:,}" for n in self.sizes.values())
        dyn = ", dynamic_binarization=True" if self.dynamic_binarization else ""
        return (f"Dataset({self.name!r}, train/valid/test={sizes}, event_shape={self.event_shape}, "
                f"support={self.support!r}{dyn})")


def _read_only(x: np.ndarray) -> np.ndarray:
    view = x.view()  # a view, so that the caller's own array stays writeable
    view.flags.writeable = False
    return view


def binarize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample ``b ~ Bernoulli(x)`` elementwise for grey levels ``x`` in [0, 1]; returns float32 0/1 of x's shape.

    ``x == 0`` always gives 0 and ``x == 1`` always 1. Deterministic given the state of ``rng``.
    """
    x = np.asarray(x)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def split_off(x: np.ndarray, labels: np.ndarray | None, size: int, seed: int, what: str):
    """Hold out ``size`` examples: the LAST ``size`` of ``np.random.default_rng(seed).permutation(len(x))``.

    Returns ``(rest, held_out, rest_labels, held_out_labels)``, each in permutation order.
    """
    n = len(x)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 0 <= size < n:
        raise DataError(f"{what} must be an integer in [0, {n - 1}] (there are {n} examples to split), got "
                        f"{size!r}.")
    perm = np.random.default_rng(seed).permutation(n)
    keep, held = perm[: n - size], perm[n - size:]
    if labels is None:
        return x[keep], x[held], None, None
    return x[keep], x[held], labels[keep], labels[held]


def infer_support(arrays: list[np.ndarray], where: str) -> tuple[str, int | None]:
    """Infer the support of user data: ``(support, max_value)`` with ``max_value`` 1, 255 or None (real/[0,1]).

    All values in {0, 1}: binary. Integer-valued in 0..255 with a value above 1: 8-bit (``max_value`` 255).
    Floats in [0, 1]: unit_interval. Anything else: real. NaN/Inf and non-numeric dtypes raise DataError.
    """
    for x in arrays:
        if x.dtype.kind not in "biuf":
            raise DataError(f"{where}: expected numeric arrays, got dtype {x.dtype}; save float or int arrays.")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise DataError(f"{where} contains NaN or Inf values; remove or replace them before training.")
    nonempty = [x for x in arrays if x.size]
    if not nonempty:
        raise DataError(f"{where} holds no values.")
    lo = min(float(x.min()) for x in nonempty)
    hi = max(float(x.max()) for x in nonempty)
    integral = all(x.dtype.kind in "biu" or np.all(x == np.round(x)) for x in nonempty)
    if integral and lo >= 0 and hi <= 1:
        return "binary", 1
    if integral and lo >= 0 and hi <= 255:
        return "integer_0_255", 255
    if lo >= 0 and hi <= 1:
        return "unit_interval", None
    return "real", None
