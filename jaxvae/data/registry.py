"""The registered datasets: where their files come from, their checksums, parsers, licenses and citations.

Each dataset is declared once, as a :class:`DatasetSpec` in :data:`DATASETS`. A spec lists one or more
:class:`Source` s (alternative sets of files with a parser each, tried in order), or, for a dataset generated on
the host (``dsprites``), the function that generates it, and the facts ``load_dataset`` needs to build the
splits. Parsers return the raw integer data (:class:`RawData`); scaling, validation splits and
binarization happen in :mod:`jaxvae.data.loading`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxvae.data import dsprites, formats, text
from jaxvae.data.storage import FileSpec
from jaxvae.errors import ChecksumError, DataError


@dataclass(frozen=True)
class RawData:
    """What a parser returns: uint8 arrays ``[N, *event_shape]`` with integer values in ``0..max_value``.

    ``splits`` always has ``"train"`` and has ``"valid"``/``"test"`` only where the dataset defines them.
    ``factors`` holds int32 ``[N, K]`` ground-truth factor classes for datasets generated from known factors.
    """

    splits: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] | None = None
    factors: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Source:
    """A set of files that together hold a dataset, and the function that parses them (paths keyed by name)."""

    files: tuple[FileSpec, ...]
    parse: Callable[[Mapping[str, Path]], RawData]


@dataclass(frozen=True)
class DatasetSpec:
    """The declaration of a registered dataset.

    Attributes:
      name: registry key, e.g. ``"mnist"``.
      sources: alternative file sets, the preferred first; the first with download URLs is the one downloaded.
      event_shape: shape of one example, HWC for images.
      max_value: raw values are integers ``0..max_value`` (1: binary, 16: sklearn digits, 255: 8-bit).
      valid_size: default number of validation examples split off the training split, ``None`` where the
        dataset has an official validation split.
      test_size: number of test examples split off where the dataset has no official test split.
      split_seed: seed of the fixed permutations that define the splits not published with the data.
      folders: folder names looked up under a data directory; the first is the cache folder.
      system_dirs: extra folders searched after the cache (e.g. Debian packages).
      vocabulary: the tokens of a text dataset (ids ``0..len - 1``; see :mod:`jaxvae.data.text`), else ``None``.
      install_hint: how to get files that cannot be downloaded (shown when they are missing).
      generate: for a dataset generated on the host instead of read from files (``sources`` is then empty):
        ``generate(search, folder) -> (RawData, paths)`` reads a valid cache from the folders ``search`` or
        ``folder``, or generates the data and caches it in ``folder``; ``paths`` are the cache files used.
      factor_names, factor_sizes: the ground-truth factors of ``RawData.factors`` (datasets that have them).
    """

    name: str
    description: str
    sources: tuple[Source, ...]
    event_shape: tuple[int, ...]
    max_value: int
    valid_size: int | None
    folders: tuple[str, ...]
    homepage: str
    license: str
    citation: str
    test_size: int | None = None
    split_seed: int = 0
    system_dirs: tuple[str, ...] = ()
    vocabulary: tuple[str, ...] | None = None
    install_hint: str = ""
    generate: Callable[[tuple[Path, ...], Path], tuple[RawData, tuple[Path, ...]]] | None = None
    factor_names: tuple[str, ...] | None = None
    factor_sizes: tuple[int, ...] | None = None

    @property
    def files(self) -> tuple[FileSpec, ...]:
        """The files of the preferred source (none for a generated dataset)."""
        return self.sources[0].files if self.sources else ()


# ---------------------------------------------------------------------------------------------------- MNIST-like

def _idx_files(base_urls: tuple[str, ...], hashes: dict[str, dict], content: dict[str, dict]) -> tuple:
    return tuple(
        FileSpec(f"{stem}.gz", hashes[stem], content.get(stem, {}), alt_names=(stem,),
                 urls=tuple(base + f"{stem}.gz" for base in base_urls))
        for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte")
    )


def _parse_idx_dataset(paths: Mapping[str, Path]) -> RawData:
    x_train, y_train = formats.read_idx_pair(paths["train-images-idx3-ubyte.gz"],
                                             paths["train-labels-idx1-ubyte.gz"], (28, 28))
    x_test, y_test = formats.read_idx_pair(paths["t10k-images-idx3-ubyte.gz"],
                                           paths["t10k-labels-idx1-ubyte.gz"], (28, 28))
    return RawData({"train": x_train, "test": x_test}, {"train": y_train, "test": y_test})


_MNIST_HASHES = {
    "train-images-idx3-ubyte": {"md5": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                "sha256": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"},
    "train-labels-idx1-ubyte": {"md5": "d53e105ee54ea40749a09fcbcd1e9432",
                                "sha256": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"},
    "t10k-images-idx3-ubyte": {"md5": "9fb629c4189551a2d022fa330f9573f3",
                               "sha256": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"},
    "t10k-labels-idx1-ubyte": {"md5": "ec29112dd5afa0611ce80d1b7f02629c",
                               "sha256": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
}
# md5 of the decompressed IDX files (computed from the canonical .gz files): accepts gunzipped copies.
_MNIST_CONTENT = {
    "train-images-idx3-ubyte": {"md5": "6bbc9ace898e44ae57da46a324031adb"},
    "train-labels-idx1-ubyte": {"md5": "a25bea736e30d166cdddb491f175f624"},
    "t10k-images-idx3-ubyte": {"md5": "2646ac647ad5339dbf082846283269ea"},
    "t10k-labels-idx1-ubyte": {"md5": "27ae3e4e09519cfbb04c329615203637"},
}
_FASHION_HASHES = {
    "train-images-idx3-ubyte": {"md5": "8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
    "train-labels-idx1-ubyte": {"md5": "25c81989df183df01b3e8a0aad5dffbe"},
    "t10k-images-idx3-ubyte": {"md5": "bef4ecab320f06d8554ea6380940ec79"},
    "t10k-labels-idx1-ubyte": {"md5": "bb300cfdad3c16e7a12a480ee83cd310"},
}
# md5 of the decompressed files: Debian's dataset-fashion-mnist re-compressed them, so only these match there.
_FASHION_CONTENT = {
    "train-images-idx3-ubyte": {"md5": "f4a8712d7a061bf5bd6d2ca38dc4d50a"},
    "train-labels-idx1-ubyte": {"md5": "9018921c3c673c538a1fc5bad174d6f9"},
    "t10k-images-idx3-ubyte": {"md5": "8181f5470baa50b63fa0f6fddb340f0a"},
    "t10k-labels-idx1-ubyte": {"md5": "15d484375f8d13e6eb1aabb0c3f46965"},
}

MNIST = DatasetSpec(
    name="mnist",
    description="MNIST handwritten digits, 28x28 grey levels; 60,000 train and 10,000 test images.",
    sources=(Source(_idx_files(("https://ossci-datasets.s3.amazonaws.com/mnist/",
                                "http://yann.lecun.com/exdb/mnist/"), _MNIST_HASHES, _MNIST_CONTENT),
                    _parse_idx_dataset),),
    event_shape=(28, 28, 1), max_value=255, valid_size=10_000, folders=("mnist",),
    homepage="http://yann.lecun.com/exdb/mnist/", license="CC BY-SA 3.0",
    citation="Y. LeCun, L. Bottou, Y. Bengio and P. Haffner. Gradient-based learning applied to document "
             "recognition. Proceedings of the IEEE, 86(11):2278-2324, 1998.",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    description="Fashion-MNIST (Zalando article images), 28x28 grey levels; 60,000 train and 10,000 test images.",
    sources=(Source(_idx_files(("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
                               _FASHION_HASHES, _FASHION_CONTENT), _parse_idx_dataset),),
    event_shape=(28, 28, 1), max_value=255, valid_size=10_000, folders=("fashion-mnist", "fashion_mnist"),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    homepage="https://github.com/zalandoresearch/fashion-mnist", license="MIT",
    citation="H. Xiao, K. Rasul and R. Vollgraf. Fashion-MNIST: a novel image dataset for benchmarking machine "
             "learning algorithms. arXiv:1708.07747, 2017.",
)

# ------------------------------------------------------------------------------------------------ binarized MNIST

_AMAT = {  # split: (sha1 of the .amat as published, sha256 of the gzip -9 wrapper kept in shared data folders)
    "train": ("cf70514ec5f481e54ad3eb0e6c03c83326ff96f8",
              "877c7951e875c52ab7801f4ff16aeecb7816ebd697658231efeb2b640f01a3d8"),
    "valid": ("13418487742e6ea6d48db7b5187353a20b1b1f8c",
              "aeb77ba9e35dc39d9e5034538273523e37ff578c97d723a59f7ee4345373abad"),
    "test": ("ca70bd7775e182596dec148d4dc1bc6bd6c4c5f4",
             "b70dc82f02d6c858f598dbd879445709c2e5070d9a9749588b9c3800efa44af1"),
}
_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


def _parse_amat(paths: Mapping[str, Path]) -> RawData:
    return RawData({split: formats.read_amat(paths[f"binarized_mnist_{split}.amat"]).reshape(-1, 28, 28, 1)
                    for split in ("train", "valid", "test")})


BINARIZED_MNIST = DatasetSpec(
    name="binarized-mnist",
    description="Statically binarized MNIST (Larochelle & Murray 2011), 50,000/10,000/10,000 binary 28x28 "
                "images. Rows are ordered by class: shuffle for training, evaluate on the full split.",
    sources=(Source(tuple(
        FileSpec(f"binarized_mnist_{split}.amat", {"sha1": sha1}, {"sha1": sha1}, also_accept=({"sha256": gz},),
                 alt_names=(f"binarized_mnist_{split}.amat.gz",),
                 urls=(f"{_LAROCHELLE}binarized_mnist_{split}.amat",))
        for split, (sha1, gz) in _AMAT.items()), _parse_amat),),
    event_shape=(28, 28, 1), max_value=1, valid_size=None, folders=("binarized_mnist", "binarized-mnist"),
    homepage=_LAROCHELLE, license="CC BY-SA 3.0 (derived from MNIST)",
    citation="H. Larochelle and I. Murray. The neural autoregressive distribution estimator. AISTATS 2011. "
             "(Binarization of R. Salakhutdinov and I. Murray, On the quantitative analysis of deep belief "
             "networks, ICML 2008.)",
)

# ---------------------------------------------------------------------------------------------------- Frey faces

#: sha256 of the raw bytes of the uint8 [1965, 28, 20] C-order array. No checksum is published for Roweis'
#: frey_rawface.mat, so a .mat is verified through the array it holds.
FREY_ARRAY_SHA256 = "2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78"
_FREY_NPY = "frey_faces_uint8_1965x28x20.npy"


def _parse_frey_npy(paths: Mapping[str, Path]) -> RawData:
    x = formats.read_npy(paths[_FREY_NPY])
    return RawData({"train": _check_frey(x, paths[_FREY_NPY], check_hash=False)[..., None]})


def _parse_frey_mat(paths: Mapping[str, Path]) -> RawData:
    path = paths["frey_rawface.mat"]
    return RawData({"train": _check_frey(formats.read_frey_mat(path), path, check_hash=True)[..., None]})


def _check_frey(x: np.ndarray, path: Path, *, check_hash: bool) -> np.ndarray:
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 20):
        raise DataError(f"{path}: expected uint8 Frey faces of shape [N, 28, 20], got {x.dtype} {x.shape}.")
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
    if check_hash and digest != FREY_ARRAY_SHA256:
        raise ChecksumError(f"{path}: the faces it holds have sha256 {digest}, expected {FREY_ARRAY_SHA256}; it "
                            f"is not Roweis' frey_rawface.mat. Delete it and download it again.")
    return x


FREY = DatasetSpec(
    name="frey",
    description="Frey faces: 1,965 grey-level 28x20 images of Brendan Frey's face (continuous; Gaussian "
                "likelihood), split 1,565/200/200 by a fixed permutation.",
    sources=(
        Source((FileSpec(_FREY_NPY,
                         {"sha256": "2177ea074dc1d5ce35294c687dfce79ced65db6d7b745d95a2e1757fcfbe41c0"}),),
               _parse_frey_npy),
        Source((FileSpec("frey_rawface.mat", urls=("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",)),),
               _parse_frey_mat),
    ),
    event_shape=(28, 20, 1), max_value=255, valid_size=200, test_size=200, folders=("frey_faces", "frey"),
    homepage="https://cs.nyu.edu/~roweis/data.html", license="no explicit license; research use",
    citation="B. Frey. Frey faces, from S. Roweis' data page; used in D. P. Kingma and M. Welling, Auto-encoding "
             "variational Bayes, ICLR 2014.",
)

# ------------------------------------------------------------------------------------------------------ CIFAR-10


def _parse_cifar10(paths: Mapping[str, Path]) -> RawData:
    x_train, y_train, x_test, y_test = formats.read_cifar10_tar(paths["cifar-10-binary.tar.gz"])
    return RawData({"train": x_train, "test": x_test}, {"train": y_train, "test": y_test})


CIFAR10 = DatasetSpec(
    name="cifar10",
    description="CIFAR-10, 32x32 colour images in 10 classes; 50,000 train and 10,000 test images (binary "
                "release).",
    sources=(Source((FileSpec("cifar-10-binary.tar.gz", {"md5": "c32a1d4ab5d03f1284b67883e8d87530"},
                              urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)),),
                    _parse_cifar10),),
    event_shape=(32, 32, 3), max_value=255, valid_size=5_000, folders=("cifar10", "cifar-10"),
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html", license="no explicit license; research use",
    citation="A. Krizhevsky. Learning multiple layers of features from tiny images. Technical report, University "
             "of Toronto, 2009.",
)

# ------------------------------------------------------------------------------------------------ sklearn digits


def _parse_digits(paths: Mapping[str, Path]) -> RawData:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    return RawData({"train": bunch.images.astype(np.uint8)[..., None]}, {"train": bunch.target.astype(np.int32)})


DIGITS = DatasetSpec(
    name="digits",
    description="UCI optical handwritten digits as bundled with scikit-learn: 1,797 8x8 images with values "
                "0..16 (scaled by 1/16), split 1,297/250/250 by a fixed permutation. Works offline.",
    sources=(Source((), _parse_digits),),
    event_shape=(8, 8, 1), max_value=16, valid_size=250, test_size=250, folders=("digits",),
    homepage="https://archive.ics.uci.edu/dataset/80", license="CC BY 4.0",
    citation="E. Alpaydin and C. Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning "
             "Repository, 1998.",
)

# ------------------------------------------------------------------------------------------------ words (text)

#: sha256 of /usr/share/dict/american-english as Debian's wamerican 2020.12.07-2 (bookworm) ships it.
WAMERICAN_SHA256 = "9f513f1ceadb6a01c5485b7dbdfd5118dc66cd70b59cae2851292112d4066a32"
WORD_LENGTH = 16  # letters; a sequence has one more position, the end-of-sequence token
WORDS_VOCABULARY = text.char_vocabulary("abcdefghijklmnopqrstuvwxyz")


def _parse_words(paths: Mapping[str, Path]) -> RawData:
    path = paths["american-english"]
    lines = path.read_text(encoding="utf-8").splitlines()
    words = sorted({w for w in lines if 0 < len(w) <= WORD_LENGTH and w.isascii() and w.isalpha() and w.islower()})
    return RawData({"train": text.encode(words, WORDS_VOCABULARY, WORD_LENGTH + 1)})


WORDS = DatasetSpec(
    name="words",
    description="English words as character sequences: the 63,779 lowercase a-z words of at most 16 letters in "
                "the wamerican word list (SCOWL), each a sequence of 17 tokens (letters, end, padding; "
                "vocabulary of 28). Split 53,779/5,000/5,000 by a fixed permutation. For the recurrent decoder "
                "(model.decoder=gru) and the text collapse lab.",
    sources=(Source((FileSpec("american-english", {"sha256": WAMERICAN_SHA256}),), _parse_words),),
    event_shape=(WORD_LENGTH + 1,), max_value=len(WORDS_VOCABULARY) - 1, valid_size=5_000, test_size=5_000,
    folders=("words",), system_dirs=("/usr/share/dict",), vocabulary=WORDS_VOCABULARY,
    install_hint="It ships with Debian and Ubuntu's wamerican package: sudo apt-get install -y wamerican "
                 "(installs /usr/share/dict/american-english), or copy that file from such a system.",
    homepage="http://wordlist.aspell.net/", license="SCOWL's permissive license (see /usr/share/doc/wamerican)",
    citation="K. Atkinson. SCOWL (Spell Checker Oriented Word Lists), size 50 American English list, as packaged "
             "by Debian (wamerican 2020.12.07).",
)

# ------------------------------------------------------------------------------------------- dSprites (generated)


def _dsprites_generator(name: str):
    variant = dsprites.VARIANTS[name]

    def generate(search: tuple[Path, ...], folder: Path) -> tuple[RawData, tuple[Path, ...]]:
        images, path = dsprites.load_grid(variant, folder, search=search)
        factors = variant.factors(np.arange(variant.num_images)).astype(np.int32)
        shape = np.ascontiguousarray(factors[:, dsprites.FACTOR_NAMES.index("shape")])
        return RawData({"train": images}, {"train": shape}, {"train": factors}), (path,)

    return generate


_DSPRITES_COMMON = dict(
    sources=(), max_value=1, folders=("dsprites",), factor_names=dsprites.FACTOR_NAMES,
    homepage="https://github.com/google-deepmind/dsprites-dataset",
    license="generated by jaxvae (no files are downloaded); the published dSprites is Apache 2.0",
    citation="L. Matthey, I. Higgins, D. Hassabis and A. Lerchner. dSprites: Disentanglement testing Sprites "
             "dataset. https://github.com/deepmind/dsprites-dataset, 2017. (I. Higgins et al., beta-VAE: "
             "Learning basic visual concepts with a constrained variational framework, ICLR 2017.)",
)

DSPRITES = DatasetSpec(
    name="dsprites",
    description="dSprites-style shapes, generated: one binary 64x64 image of a square, ellipse or heart for each "
                "of the 737,280 combinations of the published factor grid (shape 3, scale 6, orientation 40, "
                "posX 32, posY 32), with the factor classes [N, 6] as ground truth and the shape as label. "
                "Split 717,280/10,000/10,000 by a fixed permutation. Generated once (about a minute) and cached "
                "(377 MB); as float32 the images alone take 12.1 GB of host memory. See jaxvae.data.dsprites.",
    event_shape=dsprites.VARIANTS["dsprites"].event_shape, valid_size=10_000, test_size=10_000,
    generate=_dsprites_generator("dsprites"), factor_sizes=dsprites.VARIANTS["dsprites"].factor_sizes,
    **_DSPRITES_COMMON,
)

DSPRITES_SMALL = DatasetSpec(
    name="dsprites-small",
    description="dSprites-style shapes at 32x32 on a CPU-sized subset of the published factor grid (3 shapes, 6 "
                "scales, every 4th orientation: 10, every 2nd posX and posY: 16 each), 46,080 binary images "
                "with their factor classes; split 42,080/2,000/2,000 by a fixed permutation. Generated in about "
                "a second and cached. See jaxvae.data.dsprites.",
    event_shape=dsprites.VARIANTS["dsprites-small"].event_shape, valid_size=2_000, test_size=2_000,
    generate=_dsprites_generator("dsprites-small"), factor_sizes=dsprites.VARIANTS["dsprites-small"].factor_sizes,
    **_DSPRITES_COMMON,
)

#: The registered datasets by name. Tests may replace entries (e.g. with checksums of small fake files).
DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (MNIST, FASHION_MNIST, BINARIZED_MNIST, FREY, CIFAR10, DIGITS, WORDS, DSPRITES, DSPRITES_SMALL)
}
