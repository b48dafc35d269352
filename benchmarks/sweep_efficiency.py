"""Sweep efficiency: an N-model `jaxvae sweep` against N sequential `jaxvae train` runs of the same models
(same configs, as a user would run them), wall time measured in the same benchmark run."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from benchmarks import common


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks sweep_efficiency", description=__doc__)
    p.add_argument("--preset", default="digits", help="the preset every model trains (default digits)")
    p.add_argument("--betas", default="0.1,0.25,0.5,1,2,4,8,16",
                   help="comma-separated KL weights, one model each (default: 8 of them)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs per model (default 100)")
    p.add_argument("--repeats", type=int, default=2, help="repeats; the median wall time is reported")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    args = p.parse_args(argv)
    betas = args.betas.split(",")
    sets = [f"train.epochs={args.epochs}", "eval.num_samples=100"]
    set_args = [a for s in sets for a in ("--set", s)]
    sweep_times, seq_times = [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            sweep_cmd = [sys.executable, "-m", "jaxvae", "sweep", "--preset", args.preset, "--workdir",
                         f"{tmp}/sweep", "--no-progress", "--over", f"objective.beta={args.betas}", *set_args]
            sweep_times.append(_run(sweep_cmd))
            t = 0.0
            for i, beta in enumerate(betas):
                t += _run([sys.executable, "-m", "jaxvae", "train", "--preset", args.preset, "--workdir",
                           f"{tmp}/run{i}", "--no-progress", "--set", f"objective.beta={beta}", *set_args])
            seq_times.append(t)
        print(f"repeat {r + 1}: sweep {sweep_times[-1]:.1f} s, sequential {seq_times[-1]:.1f} s", flush=True)
    sweep_s, seq_s = common.median(sweep_times), common.median(seq_times)
    table = ("| models | sweep (one program) s | sequential `jaxvae train` s | speed-up |\n|---|---|---|---|\n"
             f"| {len(betas)} | {sweep_s:.1f} | {seq_s:.1f} | {seq_s / sweep_s:.2f}x |")
    print(table)
    if not args.no_record:
        common.record_results(
            "sweep_efficiency", f"Sweep efficiency: {len(betas)} betas on {args.preset}, {args.epochs} epochs",
            common.command_line(), table,
            "Wall time of whole commands (data loading, compilation, training, final evaluation with IWAE "
            "k=100), "
            f"median of {args.repeats} repeats; runs: {[round(t, 1) for t in sweep_times]} (sweep), "
            f"{[round(t, 1) for t in seq_times]} (sequential).")


if __name__ == "__main__":
    main()
