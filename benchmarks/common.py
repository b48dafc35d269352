"""Shared helpers: machine description, medians, peak RSS, and appending results to RESULTS.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SHARED_DATA = HERE.parent.parent / "shared" / "data"  # the shared real datasets beside the repository


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Python {platform.python_version()}"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Reads ``VmHWM`` from /proc/self/status: ``getrusage``'s ``ru_maxrss`` survives ``execve`` on Linux, so a
    benchmark subprocess would report its parent's peak when that was larger.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_train_loop(cfg, workdir: Path) -> dict:
    """jaxvae's real training path (``setup_run`` -> ``train_loop``) for ``cfg``: steady-state examples/s (the
    chunks that compiled excluded), the seconds that went to compiling, and the peak RSS."""
    import time

    from jaxvae import loop, runs

    ctx = runs.setup_run(cfg, workdir, log=lambda _: None)
    t0 = time.perf_counter()
    loop.train_loop(ctx, progress=False, log=lambda _: None)
    total = time.perf_counter() - t0
    steady = ctx.steady_examples_per_sec
    return {"examples_per_sec": steady, "compile_seconds": total - ctx.total_steps * cfg.train.batch_size / steady,
            "peak_rss_mib": peak_rss_mib()}


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_json_subprocess(cmd: list[str], timeout: float = 3600, env: dict[str, str] | None = None) -> dict:
    """Runs ``cmd`` (which prints one JSON object on its last stdout line) and returns that object."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def append_results(title: str, command: str, table: str, notes: str = "") -> None:
    """Appends a dated section to RESULTS.md (never rewrites earlier results)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"\n## {title} ({stamp})\n\n- Machine: {machine()}\n- Command: `{command}`\n"
               f"- JAX {_version('jax')}, jaxlib {_version('jaxlib')}, flax {_version('flax')}\n\n{table}\n")
    if notes:
        section += f"\n{notes}\n"
    with open(RESULTS, "a") as f:
        f.write(section)


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "n/a"


def command_line() -> str:
    return "python -m benchmarks " + " ".join(sys.argv[1:])


def mnist_classifier(data_dir: str):
    """``(dataset, classifier, test accuracy, test features)``: real MNIST from ``data_dir`` (the program exits
    naming the folder when it is absent) and jaxvae's cached feature classifier (`jaxvae.frechet`)."""
    if not (Path(data_dir) / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"MNIST not found in {data_dir}; pass --data-dir.")
    from jaxvae import data, frechet

    ds = data.load_dataset("mnist", data_dir)
    clf = frechet.train_classifier(ds.train, ds.labels["train"], epochs=5)
    return ds, clf, frechet.accuracy(clf, ds.test, ds.labels["test"]), frechet.dataset_features(clf, ds.test)
