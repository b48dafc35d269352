"""Run-directory safety: one writer at a time, and a clear end when the disk fills up.

**The lock.** Every command that writes into a run directory (``jaxvae train``, ``sweep``, ``evaluate``,
``sample``, ``diagnose``; :func:`jaxvae.fit`, :func:`jaxvae.run_sweep`, :func:`jaxvae.runs.diagnose.run_diagnose`)
holds an exclusive ``fcntl.flock`` on ``<workdir>/.jaxvae.lock`` while it runs. The kernel releases the lock
when the holder exits or dies (SIGKILL, OOM, a lost node), so a crashed run never leaves a stale lock behind.
While the lock is held the file records the holder (PID, host, command, start time) for the message a second
writer gets; the holder empties it on release. A sweep holds its directory's lock, which covers its members
(``<sweep>/models/<i>-<label>/``); a command on one member holds that member's lock and a shared hold on the
sweep's, so several members can be worked on at once, but not while the sweep itself runs. In a multi-process
run process 0 holds the lock and every process learns whether it got it.

Reading never takes the lock: :func:`jaxvae.load_run`, ``jaxvae evaluate --out FILE`` and ``jaxvae sample --out
FILE`` (outputs outside the run directory) work beside a training run; they open the checkpoints read-only and
never clean up Orbax's temporary folders, which belong to the writer.

**A full disk.** :func:`disk_full_guard` turns a failed write for lack of space (``ENOSPC``/``EDQUOT``, also when
Orbax or TensorStore wrap it) into a :class:`~jaxvae.errors.DiskFullError` naming the directory, the free space
and the space a resume needs. Orbax writes a checkpoint into a temporary folder and renames it only when it is
complete, so the last complete checkpoint stays valid, and running the same command again after freeing space
resumes from it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from jaxvae.errors import ConfigError, DiskFullError, JaxvaeError, RunDirectoryBusyError

__all__ = ["LOCK_NAME", "clear_except_lock", "command_name", "disk_full_error", "disk_full_guard", "is_disk_full",
           "latest_complete_step", "lock_for_output", "remove_if_only_lock", "run_lock", "undo_lock_file",
           "writes_into"]

LOCK_NAME = ".jaxvae.lock"
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def command_name() -> str:
    """How this process was started, for the lock's record: ``jaxvae train`` for the CLI (also ``python -m
    jaxvae``), else the script's name (``python train.py``, ``python ipykernel_launcher.py``)."""
    argv = sys.argv or [""]
    first = Path(argv[0])
    if first.name == "jaxvae" or (first.name == "__main__.py" and first.parent.name == "jaxvae"):
        return " ".join(["jaxvae", *argv[1:2]])
    return f"python {first.name}" if first.name else "python"


def _sweep_of(workdir: Path) -> Path | None:
    """The sweep directory of a sweep member (``<sweep>/models/<member>``), else None."""
    sweep = workdir.parent.parent
    if workdir.parent.name == "models" and (sweep / "sweep_config.json").exists():
        return sweep
    return None


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _busy_message(directory: Path, holder: dict, member: Path | None) -> str:
    if holder.get("pid"):
        who = (f"`{holder.get('command', 'another jaxvae process')}` (PID {holder['pid']} on "
               f"{holder.get('host', 'an unknown host')}, since {holder.get('since', 'an unknown time')})")
    elif (directory / "sweep_config.json").exists() and member is None:
        who = "a jaxvae command working on one of its members (models/...)"
    else:
        who = "another jaxvae process (it has not recorded its details yet)"
    what = f"run directory {directory}" if member is None else (
        f"run directory {member} belongs to the sweep in {directory}, which")
    return (f"{what} is in use by {who}; wait for it or use another --workdir. Nothing was changed. Reading it "
            "is fine meanwhile: jv.load_run(...), or `jaxvae evaluate`/`sample` with --out outside the run "
            "directory.")


def _acquire(directory: Path, command: str, *, create: bool, member: Path | None = None,
             shared: bool = False) -> int:
    """Locks ``directory`` (``shared``: a sweep member's hold on its sweep, which records nothing) and returns the
    lock file's descriptor."""
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise ConfigError(f"Cannot write to the run directory {directory}: {e.strerror}. Choose a writable "
                          "--workdir (or, to only read this run, pass --out with a path outside it).") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunDirectoryBusyError(_busy_message(directory, holder, member)) from None
    if not shared:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "since": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError:
            pass  # e.g. a full disk: the lock holds all the same, only the details for the message are missing
    return fd


def _release(fd: int, *, shared: bool = False) -> None:
    if not shared:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
    os.close(fd)  # releases the flock


def _is_main_process() -> bool:
    if "jax" not in sys.modules:
        return True  # JAX not started: one process
    import jax

    return jax.process_index() == 0


def _agree_across_processes(ok: bool) -> bool:
    """Process 0's outcome, seen by every process of a multi-process run."""
    import jax

    if jax.process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def run_lock(workdir: str | os.PathLike, *, command: str | None = None, create: bool = True) -> Iterator[Path]:
    """Holds the run directory's lock (and its sweep's, for a sweep member) for the duration of the block.

    Args:
      workdir: the run (or sweep) directory; created when ``create`` (a new run).
      command: what the lock file records for the message a second writer gets (default: :func:`command_name`).

    Raises:
      RunDirectoryBusyError: another process holds the lock; nothing was changed.
      ConfigError: the directory cannot be written.
    """
    workdir = Path(workdir)
    command = command or command_name()
    sweep = _sweep_of(workdir)
    held: list[tuple[int, bool]] = []
    error: JaxvaeError | None = None
    if _is_main_process():
        try:
            held.append((_acquire(workdir, command, create=create), False))
            if sweep is not None:  # a member: a shared hold on its sweep, so the sweep cannot run meanwhile
                held.append((_acquire(sweep, command, create=False, member=workdir, shared=True), True))
        except JaxvaeError as e:
            error = e
    agreed = _agree_across_processes(error is None) if "jax" in sys.modules else error is None
    if error is not None or not agreed:
        for fd, shared in reversed(held):
            _release(fd, shared=shared)
        raise error or RunDirectoryBusyError(
            f"Process 0 could not take the lock of the run directory {workdir} (see its message); nothing was "
            "changed.")
    try:
        yield workdir
    finally:
        for fd, shared in reversed(held):
            _release(fd, shared=shared)


def writes_into(workdir: str | os.PathLike, out: str | os.PathLike) -> bool:
    """Whether ``out`` lies inside the existing run directory ``workdir``."""
    run = Path(workdir)
    return run.is_dir() and Path(out).absolute().resolve().is_relative_to(run.absolute().resolve())


@contextlib.contextmanager
def lock_for_output(workdir: str | os.PathLike, out: str | os.PathLike) -> Iterator[bool]:
    """Holds the run directory's lock while ``out`` is written into it; an output elsewhere (or a folder that does
    not exist, which then fails with its own message when read) needs none, so reading a run that is training stays
    possible. Yields whether the lock is held."""
    inside = writes_into(workdir, out)
    with run_lock(workdir, create=False) if inside else contextlib.nullcontext():
        yield inside


def remove_if_only_lock(workdir: Path) -> None:
    """Removes a run directory that is empty or holds nothing but an unheld (empty) lock file, so that a run
    refused before it wrote anything leaves no folder behind."""
    lock = workdir / LOCK_NAME
    with contextlib.suppress(OSError):
        names = [p.name for p in workdir.iterdir()]
        if names == [LOCK_NAME] and lock.stat().st_size == 0:
            lock.unlink()
            names = []
        if not names:
            workdir.rmdir()


def clear_except_lock(workdir: Path) -> None:
    """Removes everything in ``workdir`` but its lock file (a run refused before it started, in a directory it
    created; called while the lock is held, so that nothing of another process's can be there)."""
    with contextlib.suppress(OSError):
        for p in workdir.iterdir():
            if p.name == LOCK_NAME:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def undo_lock_file(workdir: Path, *, created: bool, lock_existed: bool) -> None:
    """After a refused start (lock released): the directory is removed if the run created it and it holds
    nothing else, else a lock file the run created is removed, so the directory is as it was."""
    if created:
        remove_if_only_lock(workdir)
    elif not lock_existed:
        lock = workdir / LOCK_NAME
        with contextlib.suppress(OSError):
            if lock.stat().st_size == 0:
                lock.unlink()


# -- a full disk ----------------------------------------------------------------------------------------------


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a write failed for lack of space."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(exc) for text in _DISK_FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def latest_complete_step(checkpoints: Path) -> int | None:
    """The newest step folder of an Orbax checkpoint directory that Orbax committed (read from the folder names
    and commit markers only, without Orbax)."""
    steps = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit() and (p / "commit_success.txt").exists()
             ] if checkpoints.is_dir() else []
    return max(steps) if steps else None


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def _space_needed(workdir: Path, fallback_bytes: int) -> int:
    """A resume writes one more checkpoint before Orbax deletes the oldest, plus metrics, images and the summary:
    the size of the newest checkpoint (or ``fallback_bytes`` before the first) and 1 MiB, doubled for margin."""
    step = latest_complete_step(workdir / "checkpoints")
    checkpoint = _folder_bytes(workdir / "checkpoints" / str(step)) if step is not None else fallback_bytes
    return 2 * (checkpoint + 2**20)


def _failed_write(exc: BaseException) -> str:
    """What could not be written, from the exception chain: an OSError's file name, else the first local file
    a TensorStore/Orbax message names, else the message's first line."""
    seen = set()
    chain = exc
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno in _DISK_FULL_ERRNOS:
            return f"could not write {chain.filename}" if chain.filename else chain.strerror or str(chain)
        match = re.search(r'local file "([^"]+)"', str(chain))
        if match:
            return f"could not write {match.group(1)}"
        chain = chain.__cause__ or chain.__context__
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def disk_full_error(workdir: Path, exc: BaseException, *, fallback_bytes: int = 0,
                    trains: bool = True) -> DiskFullError:
    """The :class:`DiskFullError` of a failed write into ``workdir``."""
    try:
        free = _mib(shutil.disk_usage(workdir).free)
    except OSError:
        free = "unknown"
    detail = _failed_write(exc)
    if trains:
        step = latest_complete_step(workdir / "checkpoints")
        kept = (f"The last complete checkpoint (step {step}) is intact" if step is not None
                else "No checkpoint was complete yet, so the run will start over")
        return DiskFullError(
            f"No space left on the disk of {workdir} ({free} free; {detail}). {kept}. Free at least "
            f"{_mib(_space_needed(workdir, fallback_bytes))} there (or move the run directory to a disk with "
            "room) and run the same command again to resume.")
    return DiskFullError(f"No space left on the disk of {workdir} ({free} free; {detail}); the file being "
                         "written was not created or kept its previous contents. Free some space there (a few MiB)"
                         " and run the command again, or pass --out with a path on another disk.")


@contextlib.contextmanager
def disk_full_guard(workdir: str | os.PathLike, *, fallback_bytes: Callable[[], int] | int = 0,
                    trains: bool = True) -> Iterator[None]:
    """Re-raises a write failed for lack of space inside the block as a :class:`DiskFullError` (other exceptions
    pass through unchanged)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if not is_disk_full(e):
            raise
        fallback = fallback_bytes() if callable(fallback_bytes) else fallback_bytes
        raise disk_full_error(Path(workdir), e, fallback_bytes=fallback, trains=trains) from e
