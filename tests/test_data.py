"""Tests of jaxvae.data: parsers on small files in the real formats, checksums, downloads, look-up order, splits,
batching. No network: downloads use file:// URLs. Tests on the real data in ../shared/data skip without it."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from jaxvae.data import (
    DATASETS,
    Dataset,
    binarize,
    epoch_permutation,
    find_data_dir,
    formats,
    iterate_batches,
    load_dataset,
    registry,
    steps_per_epoch,
    storage,
)
from jaxvae.data.registry import DatasetSpec, RawData, Source
from jaxvae.data.storage import FileSpec
from jaxvae.errors import ChecksumError, DataError

SHARED = Path(os.environ.get("JAXVAE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_real_urlopen = storage.open_url


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private HOME and cache, no data env vars, and no network (only file:// URLs open)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("JAXVAE_DATA_DIR", raising=False)
    monkeypatch.delenv("JAXVAE_NO_DOWNLOAD", raising=False)

    def file_only(url):
        if not url.startswith("file://"):
            raise OSError(f"network disabled in tests: {url}")
        return _real_urlopen(url)

    monkeypatch.setattr(storage, "open_url", file_only)


def cache(tmp_path, folder):
    return tmp_path / "xdg" / "jaxvae" / folder


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def patch_checksums(monkeypatch, name: str, folder: Path) -> DatasetSpec:
    """Replace the registered checksums of ``name`` by the sha256 of the fake files in ``folder``."""
    spec = DATASETS[name]

    def fake(f: FileSpec) -> FileSpec:
        path = next((folder / n for n in f.names if (folder / n).exists()), None)
        return dataclasses.replace(f, hashes={"sha256": sha256(path)} if path else {"sha256": "0" * 64},
                                   content_hashes={}, also_accept=())

    sources = tuple(dataclasses.replace(s, files=tuple(map(fake, s.files))) for s in spec.sources)
    new = dataclasses.replace(spec, sources=sources)
    monkeypatch.setitem(DATASETS, name, new)
    return new


def idx_bytes(x: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, x.ndim]) + np.asarray(x.shape, ">u4").tobytes() + x.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n_train=30, n_test=10, gz=True, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for stem, x in arrays.items():
        data = idx_bytes(x)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def rows(x: np.ndarray) -> np.ndarray:
    """Rows of x sorted lexicographically (to compare multisets of examples)."""
    flat = x.reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


# ------------------------------------------------------------------------------------------------------- parsers

def test_mnist_idx_gz(tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path / "d")
    patch_checksums(monkeypatch, "mnist", tmp_path / "d")
    ds = load_dataset("mnist", tmp_path / "d", valid_size=5)
    assert ds.sizes == {"train": 25, "valid": 5, "test": 10}
    assert ds.event_shape == (28, 28, 1) and ds.support == "unit_interval" and ds.train.dtype == np.float32
    np.testing.assert_array_equal(ds.test[..., 0], arrays["t10k-images-idx3-ubyte"] / np.float32(255))
    train = arrays["train-images-idx3-ubyte"]
    perm = np.random.default_rng(0).permutation(30)  # documented: valid = last valid_size of this permutation
    np.testing.assert_array_equal(ds.valid[..., 0] * 255, train[perm[25:]])
    np.testing.assert_array_equal(ds.labels["valid"], arrays["train-labels-idx1-ubyte"][perm[25:]])
    assert ds.labels["train"].dtype == np.int32
    u = load_dataset("mnist", tmp_path / "d", valid_size=5, scale="uint8")
    assert u.support == "integer_0_255" and u.train.dtype == np.float32
    np.testing.assert_array_equal(u.test[..., 0], arrays["t10k-images-idx3-ubyte"])


def test_idx_decompressed_or_recompressed_copies_pass_content_checksums(tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path / "plain", gz=False)
    spec = DATASETS["mnist"]
    content = {f.name: {"md5": hashlib.md5(idx_bytes(arrays[f.alt_names[0]])).hexdigest()} for f in spec.files}
    files = tuple(dataclasses.replace(f, content_hashes=content[f.name]) for f in spec.files)
    patched = dataclasses.replace(spec, sources=(Source(files, spec.sources[0].parse),))
    monkeypatch.setitem(DATASETS, "mnist", patched)
    assert load_dataset("mnist", tmp_path / "plain", valid_size=5).sizes["test"] == 10  # uncompressed names
    regz = tmp_path / "regz"
    regz.mkdir()
    for stem, x in arrays.items():  # a different gzip wrapper (Debian-style): gz hash differs, content matches
        (regz / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(x), compresslevel=1, mtime=12345))
    assert load_dataset("mnist", regz, valid_size=5).sizes["train"] == 25
    tampered = idx_bytes(arrays["t10k-images-idx3-ubyte"] // 2)
    (regz / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(tampered))
    with pytest.raises(ChecksumError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_dataset("mnist", regz, valid_size=5)


def test_idx_corruption_is_reported_with_the_file_name(tmp_path):
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    bad_magic, short, truncated_gz = tmp_path / "magic", tmp_path / "short", tmp_path / "trunc.gz"
    bad_magic.write_bytes(b"\x00\x01" + good[2:])
    short.write_bytes(good[:-5])
    truncated_gz.write_bytes(gzip.compress(good)[:-20])
    for path, msg in ((bad_magic, "magic"), (short, "truncated"), (truncated_gz, "gzip")):
        with pytest.raises(DataError, match=msg) as e:
            formats.read_idx(path)
        assert str(path) in str(e.value)


def amat_text(x: np.ndarray) -> bytes:
    return "".join(" ".join(map(str, r)) + "\n" for r in x.reshape(len(x), -1)).encode()


@pytest.mark.parametrize("gz", [False, True])
def test_binarized_mnist_amat(tmp_path, monkeypatch, gz):
    rng = np.random.default_rng(1)
    data = {s: rng.integers(0, 2, (n, 784), dtype=np.uint8) for s, n in (("train", 7), ("valid", 3), ("test", 4))}
    for s, x in data.items():
        name = f"binarized_mnist_{s}.amat"
        if gz:
            (tmp_path / f"{name}.gz").write_bytes(gzip.compress(amat_text(x)))
        else:
            (tmp_path / name).write_bytes(amat_text(x))
    patch_checksums(monkeypatch, "binarized-mnist", tmp_path)
    ds = load_dataset("binarized-mnist", tmp_path)
    assert ds.support == "binary" and ds.sizes == {"train": 7, "valid": 3, "test": 4} and ds.labels is None
    np.testing.assert_array_equal(ds.valid.reshape(3, -1), data["valid"])  # official splits, order kept
    with pytest.raises(DataError, match="valid_size"):
        load_dataset("binarized-mnist", tmp_path, valid_size=2)
    with pytest.raises(DataError, match="already binary"):
        load_dataset("binarized-mnist", tmp_path, dynamic_binarization=True)
    with pytest.raises(DataError, match="uint8"):
        load_dataset("binarized-mnist", tmp_path, scale="uint8")


def test_amat_general_layout_and_errors(tmp_path):
    x = np.random.default_rng(2).integers(0, 2, (3, 784), dtype=np.uint8)
    loose = tmp_path / "loose.amat"  # CRLF line ends, double spaces, no final newline: slow path
    loose.write_bytes(amat_text(x).replace(b"\n", b" \r\n").replace(b" ", b"  ").rstrip())
    np.testing.assert_array_equal(formats.read_amat(loose), x.reshape(-1))
    short = tmp_path / "short.amat"
    short.write_bytes(amat_text(x)[:-4] + b"\n")
    with pytest.raises(DataError, match=r"line 3: expected 784 values, found 782"):
        formats.read_amat(short)
    bad = tmp_path / "bad.amat"
    bad.write_bytes(amat_text(x).replace(b"1", b"0.5", 1))
    with pytest.raises(DataError, match="line 1"):
        formats.read_amat(bad)


def fake_faces(n=450) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 28, 20), dtype=np.uint8)


def test_frey_npy(tmp_path, monkeypatch):
    faces = fake_faces()
    np.save(tmp_path / "frey_faces_uint8_1965x28x20.npy", faces)
    patch_checksums(monkeypatch, "frey", tmp_path)
    ds = load_dataset("frey", tmp_path)
    assert ds.sizes == {"train": 50, "valid": 200, "test": 200} and ds.event_shape == (28, 20, 1)
    assert ds.support == "unit_interval" and 0 <= ds.train.min() and ds.train.max() <= 1
    np.testing.assert_array_equal(rows(np.concatenate([ds.train, ds.valid, ds.test]) * 255), rows(faces))


def test_frey_mat_is_verified_through_its_array(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    faces = fake_faces()
    scipy_io.savemat(tmp_path / "frey_rawface.mat", {"ff": faces.reshape(len(faces), -1).T})
    monkeypatch.setattr(registry, "FREY_ARRAY_SHA256", hashlib.sha256(faces.tobytes()).hexdigest())
    ds = load_dataset("frey", tmp_path)
    assert ds.info["files"] == [str(tmp_path / "frey_rawface.mat")]
    np.testing.assert_array_equal(rows(np.concatenate([ds.train, ds.valid, ds.test]) * 255), rows(faces))
    monkeypatch.setattr(registry, "FREY_ARRAY_SHA256", "0" * 64)
    with pytest.raises(ChecksumError, match=r"frey_rawface\.mat"):
        load_dataset("frey", tmp_path)


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data))


def test_cifar10_binary_tar(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    records = {m: rng.integers(0, 256, (3 if "data" in m else 2, 3073), dtype=np.uint8)
               for m in formats.CIFAR10_MEMBERS}
    for r in records.values():
        r[:, 0] %= 10
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tar:
        add_member(tar, "cifar-10-batches-bin", type=tarfile.DIRTYPE)
        add_member(tar, "cifar-10-batches-bin/batches.meta.txt", b"airplane\n")
        for m, r in records.items():
            add_member(tar, m, r.tobytes())
    patch_checksums(monkeypatch, "cifar10", tmp_path)
    ds = load_dataset("cifar10", tmp_path, valid_size=3)
    assert ds.sizes == {"train": 12, "valid": 3, "test": 2} and ds.event_shape == (32, 32, 3)
    test = records["cifar-10-batches-bin/test_batch.bin"]
    np.testing.assert_array_equal(ds.labels["test"], test[:, 0])
    r = test[1]  # record: label, 1024 red, 1024 green, 1024 blue, each row-major
    assert ds.test[1, 5, 7, 2] * 255 == r[1 + 2 * 1024 + 5 * 32 + 7]
    assert not list(tmp_path.glob("cifar-10-batches-bin"))  # read in place, nothing extracted


@pytest.mark.parametrize("member", [
    {"name": "../evil"}, {"name": "/abs/evil"}, {"name": "a/../../evil"},
    {"name": "link", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"},
    {"name": "hard", "type": tarfile.LNKTYPE, "linkname": "cifar-10-batches-bin/test_batch.bin"},
    {"name": "dev", "type": tarfile.CHRTYPE},
])
def test_unsafe_tar_members_are_refused(tmp_path, member):
    archive = tmp_path / "x.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, "cifar-10-batches-bin/test_batch.bin", b"\0" * 3073)
        add_member(tar, **member)
    with pytest.raises(DataError, match="refusing tar member"):
        storage.read_tar_members(archive, {"cifar-10-batches-bin/test_batch.bin"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar.gz"]


# ----------------------------------------------------------------------------------------------------- user data

def test_user_npz_with_splits_and_labels(tmp_path):
    rng = np.random.default_rng(5)
    x, xt = rng.integers(0, 256, (40, 4, 4, 1), dtype=np.uint8), rng.integers(0, 256, (8, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "u.npz", train=x, test=xt, train_labels=np.arange(40), test_labels=np.arange(8))
    ds = load_dataset(tmp_path / "u.npz", valid_size=10)
    assert ds.sizes == {"train": 30, "valid": 10, "test": 8} and ds.support == "unit_interval"
    np.testing.assert_array_equal(ds.test * 255, xt)
    np.testing.assert_array_equal(ds.valid * 255, x[ds.labels["valid"]])  # labels follow their examples
    assert load_dataset("u.npz", tmp_path, scale="uint8").support == "integer_0_255"  # name relative to data_dir
    np.savez(tmp_path / "bad.npz", x_train=x)
    with pytest.raises(DataError, match="expected 'train'"):
        load_dataset(tmp_path / "bad.npz")


@pytest.mark.parametrize("x, support", [
    (np.random.default_rng(6).integers(0, 2, (50, 6)), "binary"),
    (np.random.default_rng(6).random((50, 6)).astype(np.float32), "unit_interval"),
    (np.random.default_rng(6).normal(size=(50, 6)), "real"),
    (np.random.default_rng(6).integers(0, 256, (50, 6)).astype(np.float64), "unit_interval"),  # 8-bit as floats
])
def test_user_npy_support_inference_and_default_split(tmp_path, x, support):
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert ds.support == support and ds.sizes == {"train": 40, "valid": 5, "test": 5}
    scale = 255 if x.max() > 1 and support == "unit_interval" else 1
    np.testing.assert_allclose(rows(np.concatenate([ds.train, ds.valid, ds.test]) * scale), rows(x), rtol=1e-6)
    assert not np.array_equal(load_dataset(tmp_path / "x.npy", seed=1).test, ds.test)  # seed splits user data


def test_user_data_errors(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="unpickling"):
        load_dataset(tmp_path / "obj.npy")
    np.save(tmp_path / "nan.npy", np.array([[0.5, np.nan]] * 20))
    with pytest.raises(DataError, match="NaN"):
        load_dataset(tmp_path / "nan.npy")
    np.save(tmp_path / "real.npy", np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(DataError, match="scale='uint8'"):
        load_dataset(tmp_path / "real.npy", scale="uint8")
    with pytest.raises(DataError, match="dynamic_binarization"):
        load_dataset(tmp_path / "real.npy", dynamic_binarization=True)
    with pytest.raises(DataError, match="No such file"):
        load_dataset(tmp_path / "missing.npy")
    with pytest.raises(DataError, match=r"Registered datasets: .*mnist"):
        load_dataset("not-a-dataset")


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(7)
    imgs = rng.integers(0, 256, (12, 6, 5), dtype=np.uint8)
    for sub, idx in (("train", range(10)), ("test", range(10, 12))):
        (tmp_path / "faces" / sub).mkdir(parents=True)
        for i in idx:
            Image.fromarray(imgs[i]).save(tmp_path / "faces" / sub / f"{i:03d}.png")
    (tmp_path / "faces" / "train" / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path / "faces", valid_size=2)
    assert ds.event_shape == (6, 5, 1) and ds.sizes == {"train": 8, "valid": 2, "test": 2}
    np.testing.assert_array_equal(ds.test[..., 0] * 255, imgs[10:])
    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / "faces" / "train" / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png"):
        load_dataset(tmp_path / "faces")
    Image.fromarray(imgs[0][:5]).save(tmp_path / "faces" / "train" / "rgb.png")
    with pytest.raises(DataError, match=r"rgb.png has shape \(5, 5, 1\)"):
        load_dataset(tmp_path / "faces")


# -------------------------------------------------------------------------------------- checksums and downloads

def toy_spec(monkeypatch, urls=(), hashes=None, folders=("toy",), system_dirs=()) -> DatasetSpec:
    """Register a one-file dataset "toy" (toy.npy, integers 0..255)."""
    def parse(paths):
        return RawData({"train": formats.read_npy(paths["toy.npy"]).astype(np.uint8)})

    files = (FileSpec("toy.npy", hashes or {}, urls=urls),)
    spec = DatasetSpec(name="toy", description="toy", sources=(Source(files, parse),),
                       event_shape=(2,), max_value=255, valid_size=1, test_size=1, folders=folders, homepage="",
                       license="", citation="", system_dirs=system_dirs)
    monkeypatch.setitem(DATASETS, "toy", spec)
    return spec


def write_toy(folder: Path, value: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "toy.npy", np.full((5, 2), value, np.uint8))
    return folder / "toy.npy"


def test_download_lands_verified_in_cache(tmp_path, monkeypatch):
    src = write_toy(tmp_path / "server", 7)
    urls = ("https://unreachable.invalid/toy.npy", src.as_uri())  # the first mirror fails, the second works
    toy_spec(monkeypatch, urls=urls, hashes={"sha256": sha256(src)})
    ds = load_dataset("toy")
    assert ds.train.max() == pytest.approx(7 / 255)
    assert find_data_dir("toy") == cache(tmp_path, "toy")
    assert sorted(p.name for p in cache(tmp_path, "toy").iterdir()) == ["toy.npy"]  # no temp files left


def test_truncated_download_raises_and_leaves_nothing(tmp_path, monkeypatch):
    src = write_toy(tmp_path / "server")
    expected = sha256(src)
    src.write_bytes(src.read_bytes()[:-3])  # the server sends a truncated file
    toy_spec(monkeypatch, urls=(src.as_uri(),), hashes={"sha256": expected})
    with pytest.raises(ChecksumError, match=f"expected {expected}, got {sha256(src)}"):
        load_dataset("toy")
    assert list(cache(tmp_path, "toy").iterdir()) == []


def test_unreachable_download_explains_what_to_do(tmp_path, monkeypatch):
    toy_spec(monkeypatch, urls=("https://unreachable.invalid/toy.npy",), hashes={"sha256": "0" * 64})
    with pytest.raises(DataError, match=r"network disabled.*copy the file into"):
        load_dataset("toy")


def test_mismatching_local_file_is_never_used(tmp_path, monkeypatch):
    src = write_toy(tmp_path / "server", 1)
    toy_spec(monkeypatch, urls=(src.as_uri(),), hashes={"sha256": sha256(src)})
    write_toy(cache(tmp_path, "toy"), 2)  # a stale, different copy in the cache
    with pytest.raises(ChecksumError, match=r"toy\.npy.*expected"):
        load_dataset("toy")
    write_toy(tmp_path / "explicit", 2)
    with pytest.raises(ChecksumError):
        load_dataset("toy", tmp_path / "explicit")


def test_no_download_and_explicit_dir_never_download(tmp_path, monkeypatch):
    src = write_toy(tmp_path / "server")
    toy_spec(monkeypatch, urls=(src.as_uri(),), hashes={"sha256": sha256(src)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"Expected \[toy.npy\] in one of .*empty.*empty/toy"):
        load_dataset("toy", tmp_path / "empty")
    monkeypatch.setenv("JAXVAE_NO_DOWNLOAD", "1")
    with pytest.raises(DataError, match=r"JAXVAE_NO_DOWNLOAD.*Put them in"):
        load_dataset("toy")
    monkeypatch.delenv("JAXVAE_NO_DOWNLOAD")
    with pytest.raises(DataError, match="download=False"):
        find_data_dir("toy", download=False)
    assert not cache(tmp_path, "toy").exists()


def test_lookup_order(tmp_path, monkeypatch):
    toy_spec(monkeypatch, folders=("toy", "toy_alias"), system_dirs=(str(tmp_path / "system"),))
    write_toy(tmp_path / "system")
    assert find_data_dir("toy") == tmp_path / "system"
    write_toy(cache(tmp_path, "toy"))
    assert find_data_dir("toy") == cache(tmp_path, "toy")
    write_toy(tmp_path / "env" / "toy_alias")
    monkeypatch.setenv("JAXVAE_DATA_DIR", str(tmp_path / "env"))
    assert find_data_dir("toy") == tmp_path / "env" / "toy_alias"
    write_toy(tmp_path / "env")
    assert find_data_dir("toy") == tmp_path / "env"
    write_toy(tmp_path / "explicit")
    assert find_data_dir("toy", tmp_path / "explicit") == tmp_path / "explicit"
    with pytest.raises(DataError, match="bundled"):
        find_data_dir("digits")


# ----------------------------------------------------------------------------------------------- digits, splits

def test_digits_offline_splits():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.sizes == {"train": 1297, "valid": 250, "test": 250} and ds.event_shape == (8, 8, 1)
    assert ds.support == "unit_interval" and ds.train.min() == 0 and ds.train.max() == 1
    assert np.all(ds.train * 16 == np.round(ds.train * 16))
    full = load_digits()
    allx = np.concatenate([ds.train, ds.valid, ds.test]).reshape(-1, 64) * 16
    ally = np.concatenate([ds.labels[s] for s in ("train", "valid", "test")])
    # the three splits partition the 1,797 (image, label) pairs: disjoint and complete
    np.testing.assert_array_equal(rows(np.c_[allx, ally]), rows(np.c_[full.data, full.target]))
    again = load_dataset("digits")
    for s in ("train", "valid", "test"):
        np.testing.assert_array_equal(again.split(s), ds.split(s))
    assert load_dataset("digits", valid_size=100).sizes == {"train": 1447, "valid": 100, "test": 250}
    np.testing.assert_array_equal(load_dataset("digits", valid_size=100).test, ds.test)  # test split fixed
    assert load_dataset("digits", valid_size=0).sizes["valid"] == 0
    with pytest.raises(DataError, match="valid_size"):
        load_dataset("digits", valid_size=5000)
    with pytest.raises(DataError, match="scale='uint8' needs 8-bit"):
        load_dataset("digits", scale="uint8")


def test_dataset_is_read_only_and_validated():
    ds = load_dataset("digits")
    with pytest.raises(ValueError):
        ds.train[0, 0, 0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.train = ds.test
    x = np.zeros((2, 3), np.float32)
    Dataset(x, x, x, name="z", event_shape=(3,), support="real")
    x[0, 0] = 1.0  # the caller's own array stays writeable
    with pytest.raises(DataError, match="support"):
        Dataset(x, x, x, name="z", event_shape=(3,), support="gaussian")
    assert "1,297/250/250" in repr(ds)


def test_dynamic_binarization():
    ds = load_dataset("digits", dynamic_binarization=True)
    assert ds.dynamic_binarization and ds.support == "binary"
    assert set(np.unique(ds.valid)) <= {0.0, 1.0} and set(np.unique(ds.test)) <= {0.0, 1.0}
    grey = load_dataset("digits")
    np.testing.assert_array_equal(ds.train, grey.train)  # train stays grey, binarized by the training loop
    np.testing.assert_array_equal(ds.test, binarize(grey.test, np.random.default_rng([0, 2])))  # documented seed
    np.testing.assert_array_equal(load_dataset("digits", dynamic_binarization=True).valid, ds.valid)
    assert not np.array_equal(load_dataset("digits", dynamic_binarization=True, seed=1).test, ds.test)


def test_binarize():
    x = np.array([0.0, 1.0, 0.3] * 20000, np.float32)
    b = binarize(x, np.random.default_rng(0))
    assert b.dtype == np.float32 and set(np.unique(b)) == {0.0, 1.0}
    assert np.all(b[0::3] == 0) and np.all(b[1::3] == 1) and abs(b[2::3].mean() - 0.3) < 0.01
    np.testing.assert_array_equal(b, binarize(x, np.random.default_rng(0)))


# ------------------------------------------------------------------------------------------------------ batching

def test_epoch_permutation():
    p = epoch_permutation(3, 0, 100)
    np.testing.assert_array_equal(p, epoch_permutation(3, 0, 100))
    np.testing.assert_array_equal(np.sort(p), np.arange(100))
    assert not np.array_equal(p, epoch_permutation(3, 1, 100))
    assert not np.array_equal(p, epoch_permutation(4, 0, 100))


def test_iterate_batches_resumes_exactly():
    x = np.arange(103)
    full = list(iterate_batches(x, 10, seed=1, epoch=2))
    assert len(full) == steps_per_epoch(103, 10) == 10 and all(len(b) == 10 for b in full)
    np.testing.assert_array_equal(np.concatenate(full), epoch_permutation(1, 2, 103)[:100])
    resumed = list(iterate_batches(x, 10, seed=1, epoch=2, start_batch=4))
    assert len(resumed) == 6
    for a, b in zip(full[4:], resumed):
        np.testing.assert_array_equal(a, b)
    tail = list(iterate_batches(x, 10, seed=1, epoch=2, drop_remainder=False))
    assert steps_per_epoch(103, 10, drop_remainder=False) == 11 and len(tail[-1]) == 3
    assert list(iterate_batches(x, 10, seed=1, epoch=2, start_batch=10)) == []
    with pytest.raises(DataError, match="start_batch"):
        list(iterate_batches(x, 10, seed=1, epoch=2, start_batch=11))
    with pytest.raises(DataError, match="batch_size"):
        steps_per_epoch(5, 10)


# ----------------------------------------------------------------------------------------------------- real data

# `real_data` is registered in pyproject.toml; these tests skip with a reason where the data is absent.
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} not found "
                                  f"(set JAXVAE_SHARED_DATA to the folder holding mnist/, binarized_mnist/, ...)")


@pytest.mark.real_data
@needs_shared
def test_real_mnist():
    ds = load_dataset("mnist", SHARED)  # verifies md5 and sha256 of the four published files
    assert ds.sizes == {"train": 50_000, "valid": 10_000, "test": 10_000}
    assert ds.train.min() == 0 and ds.train.max() == 1 and ds.support == "unit_interval"
    assert abs(float(np.concatenate([ds.train, ds.valid]).mean()) - 0.1307) < 1e-3  # the well-known MNIST mean
    assert np.bincount(ds.labels["test"]).tolist()[:2] == [980, 1135]


@pytest.mark.real_data
@needs_shared
def test_real_binarized_mnist_parses_fast():
    start = time.perf_counter()
    ds = load_dataset("binarized-mnist", SHARED)
    elapsed = time.perf_counter() - start
    print(f"binarized-mnist: verified and parsed in {elapsed:.2f} s")
    assert ds.sizes == {"train": 50_000, "valid": 10_000, "test": 10_000} and ds.support == "binary"
    assert set(np.unique(ds.test)) == {0.0, 1.0} and 0.1 < ds.train.mean() < 0.16
    assert elapsed < 5


@pytest.mark.real_data
@needs_shared
def test_real_frey():
    faces = formats.read_npy(SHARED / "frey_faces" / "frey_faces_uint8_1965x28x20.npy")
    first = faces[:1400] / 255.0
    assert faces.shape == (1965, 28, 20)
    assert abs(first.mean() - 0.6049) < 1e-3 and abs(first.std() - 0.1763) < 1e-3
    ds = load_dataset("frey", SHARED)
    assert ds.sizes == {"train": 1565, "valid": 200, "test": 200} and ds.event_shape == (28, 20, 1)


@pytest.mark.real_data
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian():
    ds = load_dataset("fashion-mnist")  # found after the (empty) cache; passes on its decompressed md5s
    assert ds.info["files"][0].startswith(str(DEBIAN_FASHION))
    assert ds.sizes == {"train": 50_000, "valid": 10_000, "test": 10_000}
    assert np.bincount(ds.labels["test"]).tolist() == [1000] * 10
