"""Pictures of a run: image grids of reconstructions and samples, written as PNG (Pillow, atomic)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from jaxvae.writers import default_file_mode


def image_grid(images: np.ndarray, *, ncols: int | None = None, pad: int = 1, min_tile: int = 32) -> np.ndarray:
    """Tiles ``images [N, H, W, C]`` (values in [0, 1]) into one uint8 image ``[rows*H', cols*W', C]``.

    Small images (e.g. 8x8 digits) are enlarged by an integer factor (nearest neighbour) to at least
    ``min_tile`` pixels so that the grid is readable.
    """
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    factor = max(1, math.ceil(min_tile / max(h, w)))
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    h, w = h * factor, w * factor
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = images[i]
    return (grid * 255).round().astype(np.uint8)


def to_images(x: np.ndarray, event_shape: tuple[int, ...], *, scale: float = 1.0) -> np.ndarray | None:
    """``[N, *E]`` data as ``[N, H, W, C]`` images in [0, 1], or ``None`` when the data is not image-like.

    Flat vectors whose length is a square (784 -> 28x28) are shown as square grey images.
    """
    x = np.asarray(x, np.float32) / scale
    if len(event_shape) == 3 and event_shape[-1] in (1, 3):
        return x
    if len(event_shape) == 2:
        return x[..., None]
    if len(event_shape) == 1 and math.isqrt(event_shape[0]) ** 2 == event_shape[0]:
        side = math.isqrt(event_shape[0])
        return x.reshape(-1, side, side, 1)
    return None


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Saves a uint8 ``[H, W]`` / ``[H, W, 1]`` / ``[H, W, 3]`` array as PNG atomically."""
    from PIL import Image

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, ncols: int = 8) -> np.ndarray:
    """Alternating rows of originals and their reconstructions (``[N, H, W, C]`` each)."""
    n = originals.shape[0] - originals.shape[0] % ncols
    rows = []
    for start in range(0, n, ncols):
        rows.append(originals[start:start + ncols])
        rows.append(reconstructions[start:start + ncols])
    return image_grid(np.concatenate(rows), ncols=ncols)
