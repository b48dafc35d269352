"""Finding a registered dataset's files on disk, or downloading them into the cache.

Look-up order (the first folder holding a complete set of a source's files wins; every file is verified):

1. ``data_dir``, when given, and ``data_dir/<folder>``. If the files are not there this is an error: an explicit
   folder never falls back to a download.
2. ``$JAXVAE_DATA_DIR`` and ``$JAXVAE_DATA_DIR/<folder>``.
3. The cache, ``$XDG_CACHE_HOME/jaxvae/<folder>`` (default ``~/.cache/jaxvae/<folder>``).
4. System folders of the dataset (Fashion-MNIST: Debian's ``/usr/share/datasets/fashion-mnist``).
5. A download into the cache, unless ``download=False`` or ``$JAXVAE_NO_DOWNLOAD`` is set (to 1, true or yes).

``<folder>`` is one of the dataset's folder names (``mnist``, ``fashion-mnist``, ``binarized_mnist``,
``frey_faces``, ``cifar10``). A file found but failing its checksum raises ChecksumError: it is never skipped.

Generated datasets (``dsprites``, ``dsprites-small``) have no files to find: their cache is read from the first
folder of :func:`generated_folders` that holds a valid one, and written to ``data_dir/<folder>`` when
``data_dir`` is given, else to the user cache. A cache whose checksum does not match is regenerated, never used.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxvae.data.registry import DATASETS, DatasetSpec, Source
from jaxvae.data.storage import cache_root, verify_file
from jaxvae.data.storage import download as download_file
from jaxvae.errors import DataError

Found = tuple[Source, dict[str, Path]]


def cache_dir(spec: DatasetSpec) -> Path:
    """The folder downloads of ``spec`` go to."""
    return cache_root() / spec.folders[0]


def downloads_disabled() -> bool:
    """Whether ``$JAXVAE_NO_DOWNLOAD`` forbids downloads."""
    return os.environ.get("JAXVAE_NO_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")


def _with_folders(base: Path, spec: DatasetSpec) -> list[Path]:
    return [base, *(base / f for f in spec.folders)]


def _find(spec: DatasetSpec, dirs: list[Path]) -> Found | None:
    for d in dirs:
        for source in spec.sources:
            paths = {}
            for f in source.files:
                path = next((d / n for n in f.names if (d / n).is_file()), None)
                if path is None:
                    break
                paths[f.name] = path
            else:
                return source, paths
    return None


def _verified(found: Found) -> Found:
    source, paths = found
    for f in source.files:
        verify_file(paths[f.name], f)
    return found


def _expected(spec: DatasetSpec) -> str:
    def names(source: Source) -> str:
        return ", ".join(" or ".join(f.names) for f in source.files)

    alternatives = [f"[{names(s)}]" for s in spec.sources]
    return alternatives[0] if len(alternatives) == 1 else "either " + " or ".join(alternatives)


def _get_them(spec: DatasetSpec) -> str:
    """Where the files come from, as the end of a sentence: "get them from URL, URL" or the homepage."""
    urls = [u for s in spec.sources for f in s.files for u in f.urls[:1]]
    if urls:
        return f"get them from {', '.join(urls)}"
    return "they have no download address" + (f"; see {spec.homepage}" if spec.homepage else "")


def generated_folders(spec: DatasetSpec,
                      data_dir: str | os.PathLike | None = None) -> tuple[tuple[Path, ...], Path]:
    """Where a generated dataset's cache is looked for, and the folder a new cache goes to: ``(search, folder)``.

    With ``data_dir``: ``data_dir`` is searched and ``data_dir/<folder>`` is written. Without it:
    ``$JAXVAE_DATA_DIR`` and ``$JAXVAE_DATA_DIR/<folder>`` are searched, and the cache (:func:`cache_dir`) is both
    searched and written.
    """
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        return (base,), base / spec.folders[0]
    env = os.environ.get("JAXVAE_DATA_DIR")
    return (tuple(_with_folders(Path(env).expanduser(), spec)) if env else ()), cache_dir(spec)


def locate(spec: DatasetSpec, data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Found:
    """Find (or download) and verify the files of ``spec``: returns the source used and ``{file name: path}``."""
    if spec.generate is not None:
        raise DataError(f"{spec.name} is generated, not read from files; load it with "
                        f"load_dataset({spec.name!r}), which caches it in {generated_folders(spec, data_dir)[1]}.")
    if not any(s.files for s in spec.sources):
        return spec.sources[0], {}
    hint = f" {spec.install_hint}" if spec.install_hint else ""
    if data_dir is not None:
        dirs = _with_folders(Path(data_dir).expanduser(), spec)
        found = _find(spec, dirs)
        if found is None:
            raise DataError(
                f"{spec.name}: data_dir={str(data_dir)!r} does not hold its files. Expected {_expected(spec)} in "
                f"one of {', '.join(map(str, dirs))} ({_get_them(spec)}), or leave data_dir unset to search "
                f"$JAXVAE_DATA_DIR and the cache ({cache_dir(spec)}) and download there.{hint}")
        return _verified(found)
    dirs = []
    if env := os.environ.get("JAXVAE_DATA_DIR"):
        dirs += _with_folders(Path(env).expanduser(), spec)
    dirs += [cache_dir(spec), *map(Path, spec.system_dirs)]
    found = _find(spec, dirs)
    if found is not None:
        return _verified(found)
    if not download or downloads_disabled():
        why = "download=False" if not download else "$JAXVAE_NO_DOWNLOAD is set"
        raise DataError(
            f"{spec.name}: files not found and {why}. Expected {_expected(spec)} in one of "
            f"{', '.join(map(str, dirs))}. Put them in {cache_dir(spec)} or in $JAXVAE_DATA_DIR/{spec.folders[0]} "
            f"({_get_them(spec)}), or allow downloads.{hint}"
        )
    source = next((s for s in spec.sources if all(f.urls for f in s.files)), None)
    if source is None:
        raise DataError(f"{spec.name}: files not found and none can be downloaded. Expected {_expected(spec)} in "
                        f"one of {', '.join(map(str, dirs))}; see {spec.homepage}.{hint}")
    target = cache_dir(spec)
    paths = {}
    for f in source.files:
        path = next((target / n for n in f.names if (target / n).is_file()), None)
        if path is None:
            path = download_file(f, target)
        else:
            verify_file(path, f)
        paths[f.name] = path
    return source, paths


def find_data_dir(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The folder holding the verified files of registered dataset ``name``, downloading them if needed.

    See the module doc for the look-up order. Raises DataError for unknown names and for datasets bundled with a
    Python package (``digits``), which have no folder.
    """
    spec = get_spec(name)
    _, paths = locate(spec, data_dir, download=download)
    if not paths:
        raise DataError(f"{name} is bundled with its Python package and has no data folder; load it with "
                        f"load_dataset({name!r}).")
    return next(iter(paths.values())).parent


def get_spec(name: str) -> DatasetSpec:
    """The registered spec of ``name``, or DataError listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"Unknown dataset {name!r}. Registered datasets: {', '.join(sorted(DATASETS))}; or pass "
                        f"the path of a .npy/.npz file or of a folder of images.") from None
