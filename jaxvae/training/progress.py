"""Console side of long work: the progress display and the stop-on-signal flag the loops check.

Nothing here touches JAX; the training loop (:mod:`jaxvae.training.loop`) and the sweep (:mod:`jaxvae.runs.sweep`)
share it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

from jaxvae.errors import TrainingPreempted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL, as the CLI exits after a preemption checkpoint


@contextlib.contextmanager
def stop_on_signals(describe: Callable[[], str] | None = None, *,
                    exit_at_once: str | None = None) -> Iterator[list[int]]:
    """Turns SIGTERM (how cloud TPU and GPU VMs announce preemption) and SIGINT into a flag (the yielded list,
    empty until a signal arrives) that a loop checks between chunks, so the steps in flight complete and a
    checkpoint is written.

    Every signal is acknowledged on stderr at once, also while the main thread waits for a compiled program (a
    watcher thread reads :func:`signal.set_wakeup_fd`): ``"SIGTERM received: " + describe()``. A second signal
    while stopping ends the process at once (exit ``128 + signal``) without a checkpoint.

    ``exit_at_once``: a phase with nothing to save (the final evaluation, after the last checkpoint is on disk):
    the first signal prints ``exit_at_once`` and ends the process at once with exit code 75.

    Only active in the main thread (elsewhere the flag never fills)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handler(signum, frame):
        if received:  # asked twice (the watcher normally ended the process already)
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        received.append(signum)

    reader, writer = socket.socketpair()
    reader.settimeout(None)
    writer.setblocking(False)
    seen: list[int] = []

    def watch() -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in (int(s) for s in STOP_SIGNALS):
                    continue
                name = signal.Signals(signum).name
                if exit_at_once is not None:
                    _say(f"{name} received: {exit_at_once}")
                    os._exit(EXIT_PREEMPTED)
                if seen:
                    _say(f"{name} received again: stopping at once, without a checkpoint (exit {128 + signum}). "
                         "Re-running the same command resumes from the last checkpoint.")
                    os._exit(128 + signum)
                seen.append(signum)
                what = describe() if describe is not None else "stopping after the steps in flight."
                _say(f"{name} received: {what}")

    for sig in previous:
        signal.signal(sig, handler)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="jaxvae-signal-watcher", daemon=True)
    watcher.start()
    try:
        yield received
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, h in previous.items():
            signal.signal(sig, h)
        with contextlib.suppress(OSError):
            reader.shutdown(socket.SHUT_RDWR)
        writer.close()
        watcher.join(timeout=5)
        reader.close()


def _say(text: str) -> None:
    """One line on stderr, at once (also from the watcher thread, while a progress bar draws)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.write(f"\n{text}\n")
        sys.stderr.flush()


def preempted(received: list[int], step: int, total: int, checkpoint_dir: object) -> TrainingPreempted:
    """The error a loop raises after it saved a checkpoint of ``step`` because of a signal in ``received``."""
    name = signal.Signals(received[0]).name
    then = ("Re-run the same command to resume exactly where it stopped." if step < total else
            "Training is complete; re-run the same command for the final evaluation it skipped.")
    return TrainingPreempted(
        f"Stopped by {name} at step {step} of {total}; a checkpoint of step {step} was written to "
        f"{checkpoint_dir}. {then}", received[0])


def progress_bar(total: int, initial: int, enabled: bool, desc: str = "train"):
    """A tqdm bar on a terminal; in logs (stderr not a TTY) one line per 10% of the run instead."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, initial)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not enabled,
                desc=desc, mininterval=0.5)


class LineProgress:
    """Progress for non-interactive output: ``step N/M (p%) loss=... kl=... [elapsed, ETA]`` every 10%."""

    def __init__(self, total: int, initial: int):
        self.total, self.n, self.start_n = total, initial, initial
        self.t0 = time.perf_counter()
        self.postfix: dict[str, str] = {}
        self.next_report = self._next(initial)

    def _next(self, n: int) -> int:
        tenth = max(1, self.total // 10)
        return min(self.total, (n // tenth + 1) * tenth)

    def update(self, k: int) -> None:
        self.n += k
        if self.n >= self.next_report:
            self.next_report = self._next(self.n)
            elapsed = time.perf_counter() - self.t0
            rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            fields = " ".join(f"{k}={v}" for k, v in self.postfix.items())
            print(f"step {self.n:,}/{self.total:,} ({100 * self.n / self.total:.0f}%) {fields} "
                  f"[{elapsed:.0f} s, ETA {eta:.0f} s]", file=sys.stderr, flush=True)

    def set_postfix(self, **kwargs: str) -> None:
        self.postfix.update(kwargs)

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass
