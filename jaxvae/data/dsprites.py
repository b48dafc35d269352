r"""dSprites, generated: binary images of a square, an ellipse or a heart on the published factor grid.

The published dataset (Matthey, Higgins, Hassabis & Lerchner 2017, ``deepmind/dsprites-dataset``; used first in
Higgins et al. 2017, "β-VAE") holds one 64x64 binary image for every combination of six factors, ``N = 737,280``:

=============  =====  ===================================================  ==============================
factor         size   values (``latents_possible_values``)                 here
=============  =====  ===================================================  ==============================
color          1      white (1.0)                                          one value
shape          3      square, ellipse, heart (1.0, 2.0, 3.0)               class 0, 1, 2
scale          6      ``linspace(0.5, 1, 6)``                              the sprite's linear size
orientation    40     ``linspace(0, 2 pi, 40)``: 0 and 2 pi both occur     radians, counter-clockwise
posX           32     ``linspace(0, 1, 32)``                               column of the centre
posY           32     ``linspace(0, 1, 32)``                               row of the centre (downwards)
=============  =====  ===================================================  ==============================

Image ``i`` of the grid has the factor classes ``np.unravel_index(i, (1, 3, 6, 40, 32, 32))``: the row-major
index over (color, shape, scale, orientation, posX, posY), posY varying fastest, as the published ``imgs`` and
``latents_classes`` (its README: "we varied one latent at a time, starting from Position Y, then Position X").
The factor values and sizes are those of the README, of ``tensorflow_datasets``' ``dsprites`` and of
disentanglement_lib's ``data/ground_truth/dsprites.py`` (``full_factor_sizes = [1, 3, 6, 40, 32, 32]``);
deepmind/dsprites-dataset issue 7 confirms that orientations 0 and 39 (0 and 2 pi) are the same images.

**Rendering.** DeepMind did not publish the renderer, so the shapes' outlines, sizes and position range are
choices, made to match what is published:

* A pixel is on when its centre lies inside the shape (no anti-aliasing; the published images are binary, "no
  noise was added"). Pixel ``(row, col)`` has its centre at ``(row + 0.5, col + 0.5)`` in pixel units.
* Position: the sprite's centre (its area centroid, so the centre of mass of an image does not move when the
  sprite turns) is at column ``S (1/4 + posX / 2)`` and row ``S (1/4 + posY / 2)`` of an ``S x S`` image: it spans
  the middle half of the image. At ``S = 64`` the 32 positions are ``32 / 31 = 1.03`` pixels apart, the smallest
  step for which every position gives different pixels, as the README says the grid was chosen ("the smallest
  step changes while ensuring that all pixel outputs were different"); infinite dSprites (Dziadzio et al. 2023,
  a re-implementation meant to match dSprites) uses the same ``1/4 + pos / 2`` mapping. The direction of posY
  (down the rows here) and the sense of rotation (counter-clockwise on screen here) are not documented.
* Size: at scale 1 every shape is ``SPRITE_WIDTH * S`` wide (20.99 pixels at ``S = 64``) in its own frame; a
  scale multiplies all lengths. The square has that side; the ellipse has that major axis and half of it as
  minor axis (the published ellipse is an elongated oval; its exact ratio is not documented); the heart is a
  square of side ``a`` turned by 45 degrees with two discs of diameter ``a`` on its two upper sides (the
  classic construction), ``a`` chosen to make it ``SPRITE_WIDTH * S`` wide, point down at orientation 0.
  Their areas at scale 1 are ``w^2``, ``pi w^2 / 8`` and ``(1 + pi / 4) a^2 = 0.613 w^2``.
  ``SPRITE_WIDTH`` is calibrated to the one published statistic of the sprites' size: the mean pixel of the
  published ``imgs``, 0.042494 (the ``mu_dsprites`` constant that dSprites loaders normalise with). The mean
  area over the grid, ``mean(scale^2) * mean(shape areas) = 0.5917 * 0.6685 w^2``, equals ``0.042494 * 64^2``
  pixels for ``w = 0.328 * 64``. The shapes' exact outlines in the original are unknown, so images here are
  dSprites-*style*: the factors, their grid, the image count and order are exact; the pixels are not the
  published ones.

**Variants** (:data:`VARIANTS`), both generated exactly and deterministically:

* ``dsprites``: the full grid, 737,280 images of 64x64.
* ``dsprites-small``: a CPU-sized subset of the same factor values rendered at 32x32 (every length halves):
  all 3 shapes and 6 scales, every 4th orientation (indices 0, 4, ..., 36: 10 values from 0 to 5.80 rad, so
  the duplicate 2 pi is left out), every 2nd posX and posY (indices 0, 2, ..., 30: 16 values each), 46,080
  images. Its factor classes index its own grid (orientation class ``k`` is published class ``4 k``).

**Cache.** :func:`load_grid` generates a variant's images once and stores them under the data folder (by default
``~/.cache/jaxvae/dsprites``) as ``<variant>-v<GENERATOR_VERSION>-<S>x<S>.npy``, a plain uint8 ``.npy`` array
``[N, S * S / 8]`` of the images bit-packed row by row (``np.packbits``; 377 MB for the full grid, 5.9 MB for
the small one), next to ``<same stem>.json``, which records the generator's parameters and the sha256 of the
``.npy`` file. Both are written atomically (a temporary file, fsynced, renamed). A cache whose manifest is
missing or whose parameters or checksum do not match is never used: it is regenerated (with a warning).

**Ground truth for the metrics.** :class:`DSpritesData` is a
:class:`~jaxvae.evaluation.disentanglement.GroundTruthData` that renders the images of any factor rows on demand,
without generating the whole grid; by default its factors are the five that vary (shape, scale, orientation, posX,
posY), as disentanglement_lib's ``dsprites_full``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from jaxvae.data.factors import GroundTruthData
from jaxvae.data.formats import read_npy
from jaxvae.data.storage import cache_root, file_hashes, write_atomically
from jaxvae.errors import DataError

log = logging.getLogger(__name__)

#: The six factors in the published order (``latents_names`` of the ``.npz``, as disentanglement_lib spells them).
FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
SHAPES = ("square", "ellipse", "heart")
#: ``latents_possible_values`` of the published dataset, factor by factor.
PUBLISHED_VALUES = (
    np.array([1.0]),
    np.array([1.0, 2.0, 3.0]),
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2 * np.pi, 40),
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)
PUBLISHED_SIZES = tuple(len(v) for v in PUBLISHED_VALUES)  # (1, 3, 6, 40, 32, 32)

#: Width of every shape at scale 1, as a fraction of the image side (see the module doc for the calibration).
SPRITE_WIDTH = 0.328
#: The sprite's centre spans ``[POSITION_MARGIN, 1 - POSITION_MARGIN]`` of the image side as pos goes 0 -> 1.
POSITION_MARGIN = 0.25
#: Bumped whenever the rendering changes, so that no cache of an older renderer is ever read.
GENERATOR_VERSION = 1

# The heart: a square of side a (per unit width) turned by 45 degrees, two discs of diameter a on its upper sides.
_HEART_SIDE = 1.0 / (1.0 + 1.0 / math.sqrt(2.0))  # width (1 + 1/sqrt 2) a = 1
_HEART_HALF_DIAGONAL = _HEART_SIDE / math.sqrt(2.0)
# Its area centroid lies above the turned square's centre by a / sqrt(2) (pi / 8 + 1 / 6) / (1 + pi / 4).
_HEART_CENTROID = _HEART_HALF_DIAGONAL * (math.pi / 8 + 1 / 6) / (1 + math.pi / 4)
#: Areas of the shapes at scale 1 in units of the squared width: square, ellipse (axes 1 and 1/2), heart.
SHAPE_AREAS = (1.0, math.pi / 8, (1 + math.pi / 4) * _HEART_SIDE**2)
# Farthest point of any shape from its centroid, per unit width: the square's corner (the heart's is 0.544).
_MAX_RADIUS = math.sqrt(0.5)


@dataclass(frozen=True)
class Variant:
    """A dSprites grid: a subset of the published factor values, rendered at ``image_size`` pixels square.

    Attributes:
      name: the registry name, e.g. ``"dsprites"``.
      image_size: ``S``; images are ``[S, S, 1]``.
      strides: per factor, every how many of the published values the grid keeps (from the first).
    """

    name: str
    image_size: int
    strides: tuple[int, ...]

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        """The published values this grid keeps, factor by factor (float64)."""
        return tuple(v[::s].copy() for v, s in zip(PUBLISHED_VALUES, self.strides))

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        """Number of values per factor, in :data:`FACTOR_NAMES` order."""
        return tuple(len(v) for v in self.factor_values)

    @property
    def num_images(self) -> int:
        return math.prod(self.factor_sizes)

    @property
    def event_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 1)

    def index(self, factors: np.ndarray) -> np.ndarray:
        """Image indices ``[N]`` (int64) of factor classes ``[N, 6]``: the row-major index over the grid."""
        factors = _check_factors(factors, self.factor_sizes, f"{self.name} factors")
        return np.ravel_multi_index(tuple(factors.T), self.factor_sizes).astype(np.int64)

    def factors(self, index: np.ndarray | Sequence[int]) -> np.ndarray:
        """Factor classes ``[N, 6]`` (int64) of image indices ``[N]``; the inverse of :meth:`index`."""
        index = np.asarray(index)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise DataError(f"{self.name} image indices must be a 1-D integer array, got {index.dtype} "
                            f"{index.shape}.")
        if index.size and (index.min() < 0 or index.max() >= self.num_images):
            raise DataError(f"{self.name} image indices must lie in [0, {self.num_images - 1}], got values in "
                            f"[{index.min()}, {index.max()}].")
        return np.stack(np.unravel_index(index, self.factor_sizes), axis=1).astype(np.int64)

    def values(self, factors: np.ndarray) -> np.ndarray:
        """The factor values ``[N, 6]`` (float64, as ``latents_values``) of factor classes ``[N, 6]``."""
        factors = _check_factors(factors, self.factor_sizes, f"{self.name} factors")
        return np.stack([v[factors[:, k]] for k, v in enumerate(self.factor_values)], axis=1)

    def render(self, factors: np.ndarray, *, chunk_size: int = 2048) -> np.ndarray:
        """The images uint8 ``[N, S, S, 1]`` (0/1) of factor classes ``[N, 6]`` of this grid."""
        values = self.values(factors)
        shape = np.rint(values[:, 1]).astype(np.int64) - 1  # published shape values are 1, 2, 3
        return render(shape, values[:, 2], values[:, 3], values[:, 4], values[:, 5],
                      image_size=self.image_size, chunk_size=chunk_size)[..., None]


#: The generated variants by registry name (see the module doc).
VARIANTS: dict[str, Variant] = {
    "dsprites": Variant("dsprites", 64, (1, 1, 1, 1, 1, 1)),
    "dsprites-small": Variant("dsprites-small", 32, (1, 1, 1, 4, 2, 2)),
}


def get_variant(variant: str | Variant) -> Variant:
    """The :class:`Variant` named ``variant`` (or ``variant`` itself), or DataError listing the names."""
    if isinstance(variant, Variant):
        return variant
    try:
        return VARIANTS[variant]
    except KeyError:
        raise DataError(f"Unknown dSprites variant {variant!r}; choose one of {', '.join(VARIANTS)}.") from None


def _check_factors(factors: np.ndarray, sizes: Sequence[int], what: str) -> np.ndarray:
    factors = np.asarray(factors)
    k = len(sizes)
    if factors.ndim != 2 or factors.shape[1] != k or factors.dtype.kind not in "iu":
        raise DataError(f"{what} must be integer classes [N, {k}] (one column per factor of {list(sizes)}), got "
                        f"{factors.dtype} {factors.shape}.")
    factors = factors.astype(np.int64)
    bad = [j for j in range(k) if factors.size and (factors[:, j].min() < 0 or factors[:, j].max() >= sizes[j])]
    if bad:
        raise DataError(f"{what}: column(s) {bad} hold classes outside 0..size-1 for the sizes {list(sizes)}.")
    return factors


# ------------------------------------------------------------------------------------------------- rendering


def _inside(shape: int, u: np.ndarray, v: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Whether the points ``(u, v)`` of the shape's own frame (centroid at 0, y up, unit width) are inside.

    ``u, v`` are ``[B, K, K]`` in units of the sprite's width at scale 1; ``scale`` is ``[B, 1, 1]``.
    """
    if shape == 0:  # square of side `scale`
        return np.maximum(np.abs(u), np.abs(v)) <= 0.5 * scale
    if shape == 1:  # ellipse with semi-axes scale / 2 (along u) and scale / 4
        return (u / (0.5 * scale)) ** 2 + (v / (0.25 * scale)) ** 2 <= 1.0
    # heart: the turned square centred _HEART_CENTROID * scale below the centroid, and the two discs
    x, y = np.abs(u) / scale, v / scale + _HEART_CENTROID  # mirror symmetric in u; unit scale
    half = _HEART_HALF_DIAGONAL
    diamond = x + np.abs(y) <= half
    disc = (x - 0.5 * half) ** 2 + (y - 0.5 * half) ** 2 <= (0.5 * _HEART_SIDE) ** 2
    return diamond | disc


def _window(centre: np.ndarray, size: int, radius: float) -> tuple[np.ndarray, int]:
    """First pixel ``[B]`` and length of a window along one axis that holds every pixel centre within
    ``radius`` of ``centre`` (pixel units), clipped to the image."""
    length = min(size, math.ceil(2 * radius) + 2)
    start = np.floor(centre - radius - 0.5).astype(np.int64)
    return np.clip(start, 0, size - length), length


def render(shape, scale, orientation, pos_x, pos_y, *, image_size: int = 64, chunk_size: int = 2048) -> np.ndarray:
    """Binary images uint8 ``[N, S, S]`` of sprites with the given factor *values* (see the module doc).

    Args:
      shape: ``[N]`` shape classes, 0 square, 1 ellipse, 2 heart.
      scale: ``[N]`` linear sizes (1: ``SPRITE_WIDTH * S`` wide).
      orientation: ``[N]`` angles in radians, counter-clockwise on screen.
      pos_x, pos_y: ``[N]`` positions; 0..1 moves the centre across the middle half of the image (any real value
        is allowed; what falls outside the image is cut off).
      image_size: ``S``.
      chunk_size: images rendered at a time (bounds the temporary memory, about 100 KB per image).

    Arrays broadcast against each other. Only a window around each sprite is evaluated, so the cost per image
    grows with the sprite's size, not the image's.
    """
    shape, scale, orientation, pos_x, pos_y = np.broadcast_arrays(
        np.asarray(shape), *(np.asarray(a, np.float64) for a in (scale, orientation, pos_x, pos_y)))
    if shape.ndim != 1:
        raise DataError(f"render takes 1-D factor arrays [N], got shape {shape.shape}.")
    if shape.dtype.kind not in "iu" or (shape.size and (shape.min() < 0 or shape.max() >= len(SHAPES))):
        raise DataError(f"shape must hold the integer classes 0..{len(SHAPES) - 1} ({', '.join(SHAPES)}).")
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise DataError("scale must be positive and finite.")
    if not all(np.all(np.isfinite(a)) for a in (orientation, pos_x, pos_y)):
        raise DataError("orientation, pos_x and pos_y must be finite.")
    if int(image_size) != image_size or image_size < 1 or chunk_size < 1:
        raise DataError(f"image_size and chunk_size must be positive integers, got {image_size}, {chunk_size}.")
    n, size = shape.shape[0], int(image_size)
    out = np.zeros((n, size, size), np.uint8)
    width = SPRITE_WIDTH * size  # pixels
    # theta mod 2 pi: 2 pi gives exactly the image of 0, as in the published data
    theta = np.mod(orientation, 2 * np.pi)
    cos, sin = np.cos(theta), np.sin(theta)
    span = 1.0 - 2 * POSITION_MARGIN
    centre_col = size * (POSITION_MARGIN + span * pos_x)
    centre_row = size * (POSITION_MARGIN + span * pos_y)
    for start in range(0, n, chunk_size):
        c = slice(start, min(start + chunk_size, n))
        b = c.stop - c.start
        radius = _MAX_RADIUS * width * float(scale[c].max()) + 1e-9
        col0, k = _window(centre_col[c], size, radius)
        row0, _ = _window(centre_row[c], size, radius)
        cols = col0[:, None] + np.arange(k)  # [B, K]
        rows = row0[:, None] + np.arange(k)
        x = (cols + 0.5 - centre_col[c, None]) / width  # [B, K], right, in widths
        y = (centre_row[c, None] - rows - 0.5) / width  # [B, K], up
        cb, sb = cos[c, None, None], sin[c, None, None]
        u = cb * x[:, None, :] + sb * y[:, :, None]  # [B, K(rows), K(cols)]: the shape's frame, turned back
        v = cb * y[:, :, None] - sb * x[:, None, :]
        window = np.zeros((b, k, k), bool)
        for s in range(len(SHAPES)):
            m = shape[c] == s
            if m.any():
                window[m] = _inside(s, u[m], v[m], scale[c][m, None, None])
        out[c][np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]] = window
    return out


def generate_grid(variant: str | Variant = "dsprites", *, chunk_size: int = 2048) -> np.ndarray:
    """All images of ``variant`` in index order: uint8 ``[N, S, S, 1]`` (0/1). No cache; see :func:`load_grid`.

    The full grid is 3 GB and takes about a minute on one core; ``dsprites-small`` about a second.
    """
    v = get_variant(variant)
    out = np.empty((v.num_images, *v.event_shape), np.uint8)
    step = 16 * chunk_size  # factor tables are built piecewise too
    for start in range(0, v.num_images, step):
        index = np.arange(start, min(start + step, v.num_images))
        out[index[0]:index[-1] + 1] = v.render(v.factors(index), chunk_size=chunk_size)
    return out


# ----------------------------------------------------------------------------------------------------- cache


def cache_stem(variant: str | Variant) -> str:
    """File name stem of a variant's cache, e.g. ``dsprites-small-v1-32x32``."""
    v = get_variant(variant)
    return f"{v.name}-v{GENERATOR_VERSION}-{v.image_size}x{v.image_size}"


def _manifest_params(v: Variant) -> dict:
    return {"variant": v.name, "generator_version": GENERATOR_VERSION, "image_size": v.image_size,
            "factor_names": list(FACTOR_NAMES), "factor_sizes": list(v.factor_sizes), "strides": list(v.strides),
            "sprite_width": SPRITE_WIDTH, "position_margin": POSITION_MARGIN, "num_images": v.num_images,
            "layout": "uint8 [N, S*S/8]: np.packbits of each image's rows, big bit order"}


def _read_cache(v: Variant, folder: Path) -> np.ndarray | None:
    """The images cached in ``folder``, or None (with a warning) when the cache is absent, stale or corrupt."""
    npy, manifest = folder / f"{cache_stem(v)}.npy", folder / f"{cache_stem(v)}.json"
    if not npy.is_file() and not manifest.is_file():
        return None
    problem = None
    try:
        recorded = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        recorded, problem = {}, f"its manifest {manifest.name} is missing or unreadable ({e})"
    if problem is None and recorded.get("params") != _manifest_params(v):
        problem = f"{manifest.name} was written for other parameters"
    elif problem is None:
        try:
            digest = file_hashes(npy, {"sha256"})["sha256"]
        except OSError as e:
            digest = f"unreadable ({e})"
        if digest != recorded.get("sha256"):
            problem = f"{npy.name} has sha256 {digest}, but {recorded.get('sha256')} was recorded"
    if problem is None:
        try:
            packed = read_npy(npy)
        except DataError as e:
            packed, problem = None, str(e)
        expected = (v.num_images, v.image_size * v.image_size // 8)
        if packed is not None and (packed.dtype != np.uint8 or packed.shape != expected):
            problem = f"{npy.name} holds {packed.dtype} {packed.shape}, expected uint8 {expected}"
    if problem is not None:
        log.warning("Ignoring the %s cache in %s: %s. It is corrupt or stale; generating the images again.",
                    v.name, folder, problem)
        return None
    return np.unpackbits(packed, axis=1).reshape(v.num_images, *v.event_shape)


def _write_cache(v: Variant, folder: Path, images: np.ndarray) -> Path:
    npy, manifest = folder / f"{cache_stem(v)}.npy", folder / f"{cache_stem(v)}.json"
    packed = np.packbits(images.reshape(v.num_images, -1), axis=1)
    write_atomically(npy, lambda f: np.save(f, packed, allow_pickle=False))
    record = {"params": _manifest_params(v), "sha256": file_hashes(npy, {"sha256"})["sha256"],
              "bytes": npy.stat().st_size}
    write_atomically(manifest, lambda f: f.write(json.dumps(record, indent=1).encode() + b"\n"))
    return npy


def load_grid(variant: str | Variant = "dsprites", folder: str | os.PathLike | None = None, *,
              search: Sequence[str | os.PathLike] = ()) -> tuple[np.ndarray, Path]:
    """The images of ``variant`` (uint8 ``[N, S, S, 1]``, index order), from the cache or generated into it.

    Args:
      variant: a name of :data:`VARIANTS` or a :class:`Variant`.
      folder: where a new cache is written (default: ``~/.cache/jaxvae/dsprites``, or ``$XDG_CACHE_HOME``'s).
      search: further folders holding caches to read, looked at before ``folder`` (e.g. a shared data folder).

    Returns:
      ``(images, path)``: the images, and the ``.npy`` they were read from or written to (or, when the cache could
      not be written, the path it would have had).
    """
    v = get_variant(variant)
    if folder is None:
        folder = cache_root() / "dsprites"
    folder = Path(folder).expanduser()
    for candidate in (*map(Path, search), folder):
        images = _read_cache(v, candidate)
        if images is not None:
            return images, candidate / f"{cache_stem(v)}.npy"
    log.info("Generating the %s images (%s of %dx%d) into %s", v.name, f"{v.num_images:,}", v.image_size,
             v.image_size, folder)
    images = generate_grid(v)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return images, _write_cache(v, folder, images)
    except OSError as e:
        log.warning("Could not write the %s cache into %s (%s); the images were generated but not cached.",
                    v.name, folder, e)
        return images, folder / f"{cache_stem(v)}.npy"


# ------------------------------------------------------------------------------------- ground-truth data


class DSpritesData(GroundTruthData):
    """dSprites as a :class:`~jaxvae.evaluation.disentanglement.GroundTruthData`: images rendered for any factor
    rows.

    Factors are the classes of ``factor_names`` (default: the five that vary, shape, scale, orientation, posX,
    posY, as disentanglement_lib's ``dsprites_full``; pass :data:`FACTOR_NAMES` to keep the constant color).
    :meth:`observations` renders float32 ``[N, S, S, 1]`` 0/1 images (no noise: ``key`` is unused), the same
    pixels as the grid's images of those factors; given ``images`` (the variant's grid, e.g. from
    :func:`load_grid`), it reads them from there instead of rendering.
    """

    def __init__(self, variant: str | Variant = "dsprites", *, factor_names: Sequence[str] = FACTOR_NAMES[1:],
                 images: np.ndarray | None = None):
        self.variant = get_variant(variant)
        names = tuple(factor_names)
        unknown = [n for n in names if n not in FACTOR_NAMES]
        if unknown or len(set(names)) != len(names) or not names:
            raise DataError(f"factor_names must be distinct names from {FACTOR_NAMES}, got {names}.")
        sizes = self.variant.factor_sizes
        missing = [n for n in FACTOR_NAMES if n not in names and sizes[FACTOR_NAMES.index(n)] > 1]
        if missing:
            raise DataError(f"factor_names leaves out {missing}, which vary in {self.variant.name}; an image "
                            f"needs every varying factor. Keep them (only color, of one value, may be left out).")
        if images is not None and (images.shape != (self.variant.num_images, *self.variant.event_shape)):
            raise DataError(f"images must be the {self.variant.name} grid [{self.variant.num_images}, "
                            f"{', '.join(map(str, self.variant.event_shape))}], got {images.shape}.")
        self.factor_names = names
        self._columns = [FACTOR_NAMES.index(n) for n in names]
        self._images = images

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        sizes = self.variant.factor_sizes
        return tuple(sizes[j] for j in self._columns)

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        return self.variant.event_shape

    def full_factors(self, factors: np.ndarray) -> np.ndarray:
        """The grid's factor classes ``[N, 6]`` of factor rows ``[N, K]`` (columns not kept are class 0)."""
        factors = _check_factors(factors, self.factor_sizes, "DSpritesData factors")
        full = np.zeros((factors.shape[0], len(FACTOR_NAMES)), np.int64)
        full[:, self._columns] = factors
        return full

    def observations(self, factors: np.ndarray, key: jax.Array | None = None) -> np.ndarray:
        full = self.full_factors(factors)
        if self._images is not None:
            return self._images[self.variant.index(full)].astype(np.float32)
        return self.variant.render(full).astype(np.float32)
