"""Metric writers: ``metrics.jsonl``, mirrored to the experiment trackers (:mod:`jaxvae.rundir.trackers`); atomic
file writes.

Only the host loop calls these (never traced code). On multi-host runs only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxvae.errors import RunFileWarning


def scalars_of(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a ``metrics.jsonl`` record or a summary, keyed by name (``step``, ``split`` and lists
    left out)."""
    out = {}
    for key, value in record.items():
        if key in ("step", "split") or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def default_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` would give a new file (mkstemp uses 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: a temp file in the same folder, fsync, then ``os.replace``.

    A reader (or a process killed mid-write) sees the old file or the new one, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_write_npy(path: str | os.PathLike, array: Any) -> None:
    """Writes ``array`` as a ``.npy`` file atomically (no pickled objects)."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def read_json_object(path: str | os.PathLike, consequence: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; a file that is not one (damaged, truncated by hand, another format) gives a
    :class:`~jaxvae.errors.RunFileWarning` saying ``consequence`` and returns None."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) else f"not valid JSON: {e}"
        warnings.warn(RunFileWarning(f"{path} could not be read ({reason}); {consequence}."), stacklevel=2)
        return None
    if not isinstance(value, dict):
        warnings.warn(RunFileWarning(f"{path} holds a JSON {type(value).__name__}, not an object; {consequence}."),
                      stacklevel=2)
        return None
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """Python floats/ints/lists for JSON; non-finite floats become strings ("nan", "inf") to stay valid JSON."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class MetricWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and passes its numbers to the trackers.

    Args:
      workdir: the run directory.
      resume_step: when resuming, records with ``step > resume_step`` (written after the last checkpoint by the
        interrupted run) are dropped first, so the file has no duplicated or missing steps.
      trackers: :class:`jaxvae.rundir.trackers.Tracker` s (opened and closed by the caller) that receive each
        record's numbers as ``<split>/<name>`` (``train`` for training records).
      enabled: ``False`` makes every call a no-op and touches no file (the processes other than 0 of a
        multi-process run).
    """

    def __init__(self, workdir: str | os.PathLike, *, resume_step: int | None = None, trackers: Sequence[Any] = (),
                 enabled: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._file = None
        self._trackers = list(trackers) if enabled else []
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            lines = self.path.read_text(errors="replace").splitlines()
            steps = [_record_step(line) for line in lines]
            _warn_damaged(self.path, [i for i, step in enumerate(steps) if step is None], len(lines),
                          "dropped while resuming (the records around them are kept)")
            kept = [line for line, step in zip(lines, steps) if step is not None and step <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a")

    def write(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            return
        record = {k: _clean(v) for k, v in record.items()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._trackers:
            scalars = scalars_of(record)
            for tracker in self._trackers:
                tracker.log_scalars(int(record["step"]), scalars, record.get("split", "train"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _record_step(line: str) -> int | None:
    """The record's step, or None for a line that is not a complete record (e.g. torn by a killed process)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _warn_damaged(path: Path, bad: list[int], num_lines: int, what: str) -> None:
    """A :class:`RunFileWarning` for damaged lines of ``metrics.jsonl`` (0-based indices ``bad``), except a torn
    last line alone: a process killed while appending leaves one, and a resumed run drops it as a matter of
    course."""
    if not bad or bad == [num_lines - 1]:
        return
    numbers = ", ".join(str(i + 1) for i in bad[:8]) + (f" (and {len(bad) - 8} more)" if len(bad) > 8 else "")
    warnings.warn(RunFileWarning(f"{path}: line(s) {numbers} of {num_lines} are damaged (not a JSON record with a "
                                 f"step) and were {what}."), stacklevel=3)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl``. Damaged lines are skipped: a torn last line silently (a process killed
    while appending leaves one), others with a :class:`~jaxvae.errors.RunFileWarning` naming their numbers."""
    path = Path(workdir) / "metrics.jsonl"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    out, bad = [], []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "step" in record:
            out.append(record)
        else:
            bad.append(i)
    _warn_damaged(path, bad, len(lines), "skipped")
    return out
