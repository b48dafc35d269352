"""Cost of the latent-health monitor at its default interval: the same `jaxvae train` run with the monitor on
(default `monitor.every`) and off (`monitor.every=0`), interleaved, plus the monitor's own measured seconds."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common


def _train(workdir: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "jaxvae", "train", "--workdir", str(workdir), "--no-progress",
           *[a for s in sets for a in ("--set", s)]]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads((workdir / "summary.json").read_text())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks monitor_cost", description=__doc__)
    p.add_argument("--data-dir", default=str(common.SHARED_DATA / "mnist"),
                   help="the MNIST folder (the embedded digits when absent)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs per run (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    args = p.parse_args(argv)
    mnist = (Path(args.data_dir) / "train-images-idx3-ubyte.gz").exists()
    base = (["data.name=mnist", f"data.dir={args.data_dir}", "model.latent_dim=20", "model.hidden=500"]
            if mnist else [])
    base += [f"train.epochs={args.epochs}", "train.batch_size=128", "train.log_every=100",
             "eval.num_samples=10", "eval.max_examples=100", "train.checkpoint_every=0"]
    on, off = [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            on.append(_train(Path(tmp) / "on", base))
            off.append(_train(Path(tmp) / "off", [*base, "monitor.every=0"]))
        print(f"repeat {r + 1}: monitor on {on[-1]['train_seconds']:.1f} s "
              f"(monitor {on[-1]['monitor_seconds']:.2f} s), off {off[-1]['train_seconds']:.1f} s", flush=True)
    share = common.median([s["monitor_seconds"] / s["train_seconds"] for s in on])
    t_on = common.median([s["train_seconds"] for s in on])
    t_off = common.median([s["train_seconds"] for s in off])
    steps = on[0]["steps"]
    table = ("| data | steps | monitor every | train s, monitor on | train s, off | monitor's own share | "
             "slow-down |\n|---|---|---|---|---|---|---|\n"
             f"| {'MNIST' if mnist else 'digits'} | {steps:,} | 200 steps (default) | {t_on:.1f} | {t_off:.1f} | "
             f"{100 * share:.2f}% | {100 * (t_on / t_off - 1):+.1f}% |")
    print(table)
    if not args.no_record:
        common.record_results("monitor_cost", "Latent-health monitor cost at the default interval",
                              common.command_line(), table,
                              f"Medians of {args.repeats} interleaved repeats; 'monitor's own share' is the "
                              "time spent in monitor calls (jitted, 512-example held-out batch) over the training "
                              "time of the same run; 'slow-down' compares whole training times, monitor on/off.")


if __name__ == "__main__":
    main()
