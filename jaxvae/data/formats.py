"""Parsers for the file formats jaxvae reads. Each returns host numpy arrays and raises DataError naming the file.

No parser ever unpickles: ``.npy``/``.npz`` files are read with ``allow_pickle=False`` and CIFAR-10 is read from
its binary release, never the pickled "python version".
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from jaxvae.data.storage import read_bytes, read_tar_members
from jaxvae.errors import DataError

# IDX type codes (http://yann.lecun.com/exdb/mnist/, bottom of the page); all multi-byte values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or gzipped), e.g. ``train-images-idx3-ubyte.gz``, into a native-endian array."""
    data = read_bytes(path)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex()!r}); delete it and download "
                        f"it again.")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4)) if len(data) >= header else ()
    expected = header + math.prod(shape) * dtype.itemsize if shape else -1
    if len(data) != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has {len(data)} "
                        f"bytes; it is truncated or corrupt. Delete it and download it again.")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_pair(images_path: Path, labels_path: Path, image_shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Read matching IDX image and label files; images come back as uint8 ``[N, *image_shape, 1]``."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.shape[1:] != image_shape:
        raise DataError(f"{images_path}: expected uint8 images of shape [N, {', '.join(map(str, image_shape))}], "
                        f"got {images.dtype} {images.shape}.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: expected {len(images)} labels to match {images_path.name}, got shape "
                        f"{labels.shape}. Are the files from the same dataset and release?")
    return images[..., None], labels.astype(np.int32)


def read_amat(path: Path, row_size: int = 784) -> np.ndarray:
    """Read a 0/1 ``.amat`` text file (plain or gzipped; one example of ``row_size`` values a line) as uint8.

    Vectorized over the raw bytes (far faster than ``np.loadtxt``): every value must be a single ``0`` or ``1``
    character separated by whitespace, and every non-empty line must hold exactly ``row_size`` values.
    """
    a = np.frombuffer(read_bytes(path), np.uint8)
    line = 2 * row_size
    if a.size and a.size % line == 0:  # fast path: the published layout, "v v ... v\n" with single spaces
        rows = a.reshape(-1, line)
        values, seps = rows[:, 0::2], rows[:, 1::2]
        layout_ok = np.all(seps[:, :-1] == ord(" ")) and np.all(seps[:, -1] == ord("\n"))
        if layout_ok and np.all((values | 1) == ord("1")):  # bytes b"0" and b"1" only
            return (values - np.uint8(ord("0"))).reshape(-1)
    return _read_amat_general(a, path, row_size)


def _read_amat_general(a: np.ndarray, path: Path, row_size: int) -> np.ndarray:
    digit = (a == ord("0")) | (a == ord("1"))
    space = (a == ord(" ")) | (a == ord("\n")) | (a == ord("\r")) | (a == ord("\t"))
    bad = np.flatnonzero(~(digit | space) | np.append(digit[1:] & digit[:-1], False))
    if bad.size:
        pos = int(bad[0])
        line = int(np.count_nonzero(a[:pos] == ord("\n"))) + 1
        raise DataError(f"{path}, line {line}: expected only space-separated 0/1 values (a binarized .amat file), "
                        f"found {bytes(a[pos:pos + 12])!r}.")
    starts = np.concatenate([[0], np.flatnonzero(a == ord("\n")) + 1])
    starts = starts[starts < a.size]
    per_line = np.add.reduceat(digit, starts, dtype=np.int64) if a.size else np.zeros(0, np.int64)
    wrong = np.flatnonzero((per_line != 0) & (per_line != row_size))
    if wrong.size:
        raise DataError(f"{path}, line {int(wrong[0]) + 1}: expected {row_size} values, found "
                        f"{int(per_line[wrong[0]])}; the file is truncated or corrupt.")
    return a[digit] - np.uint8(ord("0"))


def read_npy(path: Path) -> np.ndarray:
    """Load a ``.npy`` file without unpickling; object arrays are refused with DataError."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:  # numpy raises ValueError for object arrays when allow_pickle=False
        raise DataError(f"{path} holds Python objects (it needs unpickling), which jaxvae refuses for safety. "
                        f"Save plain numeric arrays instead: np.save(path, np.asarray(x, np.float32)).") from e
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a valid .npy file ({e}).") from e


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Load all arrays of a ``.npz`` file without unpickling; object arrays are refused with DataError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        raise DataError(f"{path} holds Python objects (it needs unpickling), which jaxvae refuses for safety. "
                        f"Save plain numeric arrays instead: np.savez(path, train=x_train, test=x_test).") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a valid .npz file ({e}).") from e


def read_frey_mat(path: Path) -> np.ndarray:
    """Read Roweis' ``frey_rawface.mat`` (field ``ff``, 560 x 1965 uint8) as uint8 ``[1965, 28, 20]``."""
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise DataError(f"Reading {path} needs scipy (pip install scipy); or use frey_faces_uint8_1965x28x20.npy "
                        f"instead.") from e
    try:
        ff = loadmat(path)["ff"]
    except (KeyError, ValueError, OSError, TypeError) as e:
        raise DataError(f"{path} is not Roweis' frey_rawface.mat (no readable 'ff' field: {e}).") from e
    if ff.ndim != 2 or ff.shape[0] != 28 * 20 or ff.dtype != np.uint8:
        raise DataError(f"{path}: expected field 'ff' of 560 x N uint8 pixels, got {ff.dtype} {ff.shape}.")
    return np.ascontiguousarray(ff.T.reshape(-1, 28, 20))


CIFAR10_MEMBERS = (*(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)),
                   "cifar-10-batches-bin/test_batch.bin")


def read_cifar10_tar(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read ``cifar-10-binary.tar.gz`` in place (no extraction): ``(x_train, y_train, x_test, y_test)``.

    Each record of the ``.bin`` members is 1 label byte and 3072 pixel bytes (1024 red, 1024 green, 1024 blue, in
    row-major order); images come back as uint8 HWC ``[N, 32, 32, 3]``, labels as int32 in 0..9.
    """
    members = read_tar_members(path, set(CIFAR10_MEMBERS))
    xs, ys = [], []
    for name in CIFAR10_MEMBERS:
        data = members[name]
        if len(data) % 3073:
            raise DataError(f"{path}: member {name} has {len(data)} bytes, not a whole number of 3073-byte "
                            f"CIFAR-10 records; the archive is corrupt. Delete it and download it again.")
        records = np.frombuffer(data, np.uint8).reshape(-1, 3073)
        if records[:, 0].max(initial=0) > 9:
            raise DataError(f"{path}: member {name} has labels above 9; it is not CIFAR-10's binary release.")
        ys.append(records[:, 0].astype(np.int32))
        xs.append(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), np.ascontiguousarray(xs[5]), ys[5]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image_folder(folder: Path) -> np.ndarray:
    """Read every ``.png``/``.jpg`` in ``folder`` (sorted by name, not recursive) as uint8 ``[N, H, W, C]``.

    Grayscale images give one channel, colour images three (an alpha channel is dropped). All images must have
    the same size and channel count; the first one that differs is named in the DataError.
    """
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} images.")
    images = []
    for p in files:
        try:
            with Image.open(p) as im:
                if im.mode in ("I", "I;16", "I;16B", "F"):
                    raise DataError(f"{p}: {im.mode} images (16-bit or float) are not supported; save 8-bit ones.")
                gray = im.mode in ("1", "L", "LA") or (im.mode == "P" and _is_gray_palette(im))
                x = np.asarray(im.convert("L" if gray else "RGB"), np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{p} is not a readable image ({e}); remove it from {folder}.") from e
        x = x[..., None] if x.ndim == 2 else x
        if images and x.shape != images[0].shape:
            raise DataError(f"{p} has shape {x.shape} (height, width, channels) but {files[0].name} has "
                            f"{images[0].shape}; all images in {folder} must have the same size and mode.")
        images.append(x)
    return np.stack(images)


def _is_gray_palette(im) -> bool:
    palette = np.asarray(im.getpalette() or [0, 0, 0], np.uint8).reshape(-1, 3)
    return bool(np.all(palette == palette[:, :1]))
