"""Console side of long work: the progress display and the stop-on-signal flag the loops check.

Nothing here touches JAX; the training loop (:mod:`jaxvae.loop`) and the sweep (:mod:`jaxvae.sweep`) share it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator

from jaxvae.errors import TrainingPreempted


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """Turns SIGTERM (how cloud TPU VMs announce preemption) and SIGINT into a flag (the yielded list, empty
    until a signal arrives) that a loop checks at the next chunk boundary, so the step in flight completes and a
    checkpoint is written. A second signal of the same kind while stopping falls through to the previous
    handler. Only active in the main thread."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        if received:  # asked twice: stop the hard way
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        received.append(signum)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def preempted(received: list[int], step: int, total: int, checkpoint_dir: object) -> TrainingPreempted:
    """The error a loop raises after it saved a checkpoint of ``step`` because of a signal in ``received``."""
    name = signal.Signals(received[0]).name
    return TrainingPreempted(
        f"Stopped by {name} at step {step} of {total}; a checkpoint of step {step} was written to "
        f"{checkpoint_dir}. Re-run the same command to resume exactly where it stopped.", received[0])


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
