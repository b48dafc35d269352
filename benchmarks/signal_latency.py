"""Preemption latency: the time from SIGTERM to the acknowledgement and to exit 75, for the slowest model on a
CPU (the collapse lab's PixelCNN decoder on statically binarized MNIST, about 1.7 s per step of batch 100 on two
cores), with the chunks bounded in time (``train.max_chunk_seconds``, the default 10) and unbounded (``0``: a
chunk runs to the next host event, here the monitor every 50 steps, as before the bound existed).

Each repeat trains a fresh run with ``jaxvae train`` as a user would, sends SIGTERM a random time after the first
step (a uniform draw from ``--after`` seconds, the same draws for both settings), and reads the process's output
for the acknowledgement and the exit. The settings alternate within each repeat; the table gives medians.

    python -m benchmarks signal_latency --data-dir ../shared/data/binarized_mnist --repeats 3
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import common

PIXELCNN = ["model.network=conv", "model.latent_dim=20", "model.decoder=pixelcnn", "model.pixelcnn.layers=8",
            "model.pixelcnn.kernel_size=5", "model.pixelcnn.features=32", "train.batch_size=100",
            "train.log_every=50", "monitor.every=50", "train.checkpoint_every=400", "train.steps=800",
            "eval.num_samples=50", "eval.max_examples=500", "track.backends=none"]


def _one(workdir: Path, data_dir: str, bound: float, after: float, extra: list[str]) -> dict:
    sets = [*PIXELCNN, f"data.dir={data_dir}", f"train.max_chunk_seconds={bound:g}", *extra]
    cmd = [sys.executable, "-m", "jaxvae", "train", "--preset", "binarized-mnist", "--workdir", str(workdir),
           *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    events: dict[str, float] = {}
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            now = time.perf_counter()
            lines.append(line.rstrip())
            if line.startswith("Training ") and "training" not in events:
                events["training"] = now
            if "SIGTERM received" in line and "ack" not in events:
                events["ack"] = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while "training" not in events and proc.poll() is None:
        time.sleep(0.05)
    # The first step (one step, compiled before "Training ..." is printed) and then `after` seconds more.
    time.sleep(after)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    exited = time.perf_counter()
    reader.join(timeout=10)
    stopped = next((line for line in lines if "Stopped by SIGTERM at step" in line), "")
    step = int(stopped.split("at step ")[1].split()[0]) if stopped else None
    return {"rc": proc.returncode, "ack": events.get("ack", float("nan")) - sent, "exit": exited - sent,
            "step": step, "tail": lines[-3:]}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks signal_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(common.SHARED_DATA / "binarized_mnist"),
                   help="the binarized_mnist folder (default ../shared/data/binarized_mnist)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each setting (default 3)")
    p.add_argument("--after", default="5,40", help="SIGTERM this many seconds after training starts: a uniform "
                   "draw from LOW,HIGH (default 5,40)")
    p.add_argument("--workdir", help="where the runs go (default: a temporary folder, removed afterwards)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="a config override on top of the PixelCNN settings (repeatable; for a quick check)")
    p.add_argument("--no-record", action="store_true", help="print the table without recording it in RESULTS.md")
    args = p.parse_args(argv)
    if args.sets and not args.no_record:
        p.error("--set changes the measured set-up; use it with --no-record (a quick check), not for a record")
    if not (Path(args.data_dir) / "binarized_mnist_train.amat.gz").is_file():
        sys.exit(f"Statically binarized MNIST not found in {args.data_dir} (binarized_mnist_train.amat.gz); pass "
                 "--data-dir (see ../shared/data/README.md).")
    low, high = (float(v) for v in args.after.split(","))
    draws = [random.Random(i).uniform(low, high) for i in range(args.repeats)]
    settings = (("bounded (train.max_chunk_seconds=10, the default)", 10.0),
                ("unbounded (train.max_chunk_seconds=0)", 0.0))
    results: dict[str, list[dict]] = {name: [] for name, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        for r, after in enumerate(draws):
            for i, (name, bound) in enumerate(settings):
                out = _one(root / f"run{r}-{i}", args.data_dir, bound, after, args.sets)
                results[name].append(out)
                print(f"repeat {r + 1}/{args.repeats}, {name}: SIGTERM {after:.1f} s after the start; "
                      f"acknowledged after {out['ack']:.2f} s, exit {out['rc']} after {out['exit']:.1f} s "
                      f"(checkpoint of step {out['step']})", flush=True)
                if out["rc"] != 75:
                    print("\n".join(out["tail"]), file=sys.stderr)
    lines = ["| chunks | SIGTERM to acknowledgement (s) | SIGTERM to exit 75 (s), median | min | max | exits 75 |",
             "|---|---|---|---|---|---|"]
    for name, outs in results.items():
        acks, exits = [o["ack"] for o in outs], [o["exit"] for o in outs]
        lines.append(f"| {name} | {common.median(acks):.2f} | {common.median(exits):.1f} | {min(exits):.1f} | "
                     f"{max(exits):.1f} | {sum(o['rc'] == 75 for o in outs)} of {len(outs)} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        notes = (f"`jaxvae train --preset binarized-mnist` with the collapse lab's PixelCNN decoder (8 gated "
                 f"layers of 32 features at 5x5), {args.repeats} runs per setting, interleaved, SIGTERM a uniform "
                 f"{low:g}-{high:g} s after training started (the same draws for both settings).")
        common.record_results("signal_latency", "Preemption latency: SIGTERM to exit 75 for the PixelCNN decoder",
                              common.command_line(), table, notes)
