"""Files on disk: published checksums, verification, atomic downloads and writes, gzip reading, tar member checks.

Every file a loader reads is verified against the checksums published for it. A file is accepted when

* its bytes match ``FileSpec.hashes`` (the file as published at ``FileSpec.urls``), or
* its bytes match one of ``FileSpec.also_accept`` (known re-packagings, e.g. a local ``gzip -9`` wrapper), or
* its *content* matches ``FileSpec.content_hashes``, where the content is the decompressed bytes of a gzip file
  and the bytes themselves otherwise. This lets a re-compressed copy (Debian's Fashion-MNIST) or a decompressed
  copy (``train-images-idx3-ubyte`` without ``.gz``) pass, as long as the data inside is the canonical data.

A mismatch raises :class:`~jaxvae.errors.ChecksumError`; a mismatching file is never used.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from jaxvae.errors import ChecksumError, DataError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_DOWNLOAD_TIMEOUT_S = 60.0


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/jaxvae``, by default ``~/.cache/jaxvae``: where downloads and generated caches go."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxvae"


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset as published.

    Attributes:
      name: file name as published; downloads are stored under this name.
      hashes: ``{algorithm: hexdigest}`` of the file as published (any ``hashlib`` algorithm, e.g. md5, sha256).
      content_hashes: ``{algorithm: hexdigest}`` of the decompressed content (gzip) or of the plain file.
      also_accept: further ``{algorithm: hexdigest}`` sets of known re-packagings of the same data.
      alt_names: other names under which a local copy is accepted (e.g. without or with ``.gz``).
      urls: where to download the file from, tried in order.
    """

    name: str
    hashes: Mapping[str, str] = field(default_factory=dict)
    content_hashes: Mapping[str, str] = field(default_factory=dict)
    also_accept: tuple[Mapping[str, str], ...] = ()
    alt_names: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """All accepted file names, the published one first."""
        return (self.name, *self.alt_names)

    @property
    def verifiable(self) -> bool:
        """Whether any checksum is known for this file."""
        return bool(self.hashes or self.content_hashes or self.also_accept)


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _hash_stream(stream: BinaryIO, algorithms: set[str]) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in sorted(algorithms)}
    while chunk := stream.read(_CHUNK):
        for h in hashers.values():
            h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def file_hashes(path: Path, algorithms: set[str], *, decompress: bool = False) -> dict[str, str]:
    """Hex digests of the file at ``path`` (of its gzip content if ``decompress``), one pass for all algorithms."""
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:
        return _hash_stream(f, algorithms)


def _matches(actual: Mapping[str, str], expected: Mapping[str, str]) -> bool:
    return bool(expected) and all(actual.get(a) == v.lower() for a, v in expected.items())


def checksum_mismatch(path: Path, spec: FileSpec) -> str | None:
    """``None`` if ``path`` holds the data published as ``spec`` (see module doc), else what does not match.

    A spec without any checksum (a file for which none is published) is accepted as is; its parser validates it.
    """
    if not spec.verifiable:
        return None
    raw_sets = [spec.hashes, *spec.also_accept]
    algorithms = {a for s in raw_sets for a in s} | set(spec.content_hashes)
    raw = file_hashes(path, algorithms)
    if any(_matches(raw, s) for s in raw_sets):
        return None
    if spec.content_hashes:
        content = raw
        if is_gzip(path):
            try:
                content = file_hashes(path, set(spec.content_hashes), decompress=True)
            except (OSError, EOFError, zlib.error):
                content = {}  # truncated or corrupt gzip: its content cannot match
        if _matches(content, spec.content_hashes):
            return None
    expected = spec.hashes or spec.content_hashes or spec.also_accept[0]
    algo = "sha256" if "sha256" in expected else sorted(expected)[0]
    return f"{algo} checksum mismatch for {spec.name}: expected {expected[algo]}, got {raw[algo]}"


def verify_file(path: Path, spec: FileSpec) -> None:
    """Raise :class:`ChecksumError` unless ``path`` holds the data published as ``spec`` (see module doc)."""
    problem = checksum_mismatch(Path(path), spec)
    if problem is not None:
        where = f" (jaxvae downloads it from {spec.urls[0]})" if spec.urls else ""
        raise ChecksumError(
            f"{path}: {problem}. The file is corrupt, truncated, or not the published file (some copies on the "
            f"web are renamed pickles or HTML pages). It was not used: delete it and get the original{where}."
        )


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped if it is a gzip file; :class:`DataError` naming the file if corrupt."""
    path = Path(path)
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(
            f"{path} is not a valid gzip file ({e}); it is probably truncated or corrupt. Delete it and download "
            f"it again."
        ) from e


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(dest: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``dest`` atomically: ``write(f)`` fills a temporary file in the same folder, which is fsynced and
    renamed to ``dest`` only once complete, so readers see the old file or the new one, never a part of one. On
    any failure the temporary file is deleted and the error propagates."""
    dest = Path(dest)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; a cache is usually readable by others
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def open_url(url: str) -> BinaryIO:
    """Open ``url`` for reading (http, https or file). Tests monkeypatch this to stay off the network."""
    return urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S)


def download(spec: FileSpec, directory: Path) -> Path:
    """Download ``spec`` into ``directory`` atomically and return its path.

    Each URL is tried in order. The bytes go to a temporary file in ``directory``, are fsynced and verified, and
    only then renamed to ``directory / spec.name``; on any failure the temporary file is deleted, so a partial or
    mismatching file never appears under the final name.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / spec.name
    failures: list[str] = []
    mismatch: ChecksumError | None = None
    for url in spec.urls:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{spec.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            log.info("Downloading %s from %s", spec.name, url)
            with os.fdopen(fd, "wb") as out:
                with open_url(url) as response:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            problem = checksum_mismatch(tmp, spec)
            if problem is None:
                os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; a cache is usually readable by others
                os.replace(tmp, dest)
                _fsync_dir(directory)
                return dest
            mismatch = ChecksumError(
                f"Download of {url} failed verification: {problem}. The download was deleted; it was truncated, "
                f"or the server sent something else (retry later, or get the file by hand and put it in "
                f"{directory})."
            )
            failures.append(f"{url}: checksum mismatch")
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, HTTPError, timeouts: OSError
            failures.append(f"{url}: {e!r}" if not str(e) else f"{url}: {e}")
        finally:
            tmp.unlink(missing_ok=True)
    if mismatch is not None:
        raise mismatch
    tried = "; ".join(failures) or "no URL is known for it"
    raise DataError(
        f"Could not download {spec.name} ({tried}). Without internet access, copy the file into {directory} "
        f"(or into $JAXVAE_DATA_DIR) by hand."
    )


def check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse tar members that could escape a target folder or are not plain files or folders.

    Absolute names, names with ``..`` components, symbolic and hard links, devices and fifos all raise
    :class:`DataError`; the archives jaxvae reads contain none of them.
    """
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise DataError(
            f"{archive}: refusing tar member {name!r}, whose path is absolute or leaves the target folder. The "
            f"archive is not the published one; delete it and download it again."
        )
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "device or special file"
        raise DataError(
            f"{archive}: refusing tar member {name!r}, which is a {kind}. The archive is not the published one; "
            f"delete it and download it again."
        )


def read_tar_members(archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read the members named in ``wanted`` straight from a (gzipped) tar, without extracting anything.

    Every member is checked with :func:`check_tar_member` as the archive is streamed once from start to end.
    """
    archive = Path(archive)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                check_tar_member(member, archive)
                if member.isfile() and member.name in wanted:
                    f = tar.extractfile(member)
                    assert f is not None  # a regular file always has a stream
                    found[member.name] = f.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive} is not a readable tar archive ({e}); delete it and download it again.") from e
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataError(f"{archive} lacks the members {missing}; it is not the published archive. Delete it and "
                        f"download it again.")
    return found
