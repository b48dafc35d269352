"""Trade-off strategies compared on real MNIST, dynamically binarized (the IWAE-paper protocol): the same MLP
(784-500-20) and epochs for all; constant beta=1, linear KL warm-up, cyclical annealing (M=4, R=0.5), free bits
(0.25 nats per dimension), PI-controlled KL. Each run is a real `jaxvae train` invocation; the table collects
the test ELBO, IWAE NLL, KL and active units from each run's summary.json."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common

STRATEGIES = {  # short name (--strategies): (table label, overrides)
    "constant": ("constant beta=1", []),
    "warmup": ("linear warm-up (10 epochs)", ["objective.beta_schedule=linear", "objective.warmup_steps=3900"]),
    "cyclical": ("cyclical (M=4, R=0.5)", ["objective.beta_schedule=cyclical", "objective.num_cycles=4",
                                           "objective.cycle_ratio=0.5"]),
    "free_bits": ("free bits (0.25/dim)", ["objective.name=free_bits", "objective.free_bits.nats=0.25"]),
    "pi": ("PI control (KL=30)", ["objective.controller=pi", "objective.pi.kl_target=30", "objective.pi.kp=0.01",
                                  "objective.pi.ki=0.0005"]),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks strategies", description=__doc__)
    p.add_argument("--data-dir", default=str(common.SHARED_DATA / "mnist"), help="the MNIST folder")
    p.add_argument("--epochs", type=int, default=30, help="training epochs per strategy (default 30)")
    p.add_argument("--steps", type=int, default=None, help="training steps per strategy (overrides --epochs)")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="comma-separated subset of " + ", ".join(STRATEGIES))
    p.add_argument("--nll-samples", type=int, default=1000, help="IWAE k of the test NLL (default 1000)")
    p.add_argument("--nll-examples", type=int, default=2000, help="test images of the NLL (default 2000)")
    p.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    args = p.parse_args(argv)
    chosen = [n for n in args.strategies.split(",") if n]
    unknown = sorted(set(chosen) - set(STRATEGIES))
    if unknown:
        raise SystemExit(f"unknown strateg(ies) {unknown}; choose from {', '.join(STRATEGIES)}")
    if not (Path(args.data_dir) / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"MNIST not found in {args.data_dir}; pass --data-dir.")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="jaxvae-strategies-"))
    rows = []
    for short in chosen:
        name, sets = STRATEGIES[short]
        workdir = root / name.split(" ")[0]
        common_sets = [f"data.dir={args.data_dir}", f"train.epochs={args.epochs}",
                       f"eval.num_samples={args.nll_samples}", f"eval.max_examples={args.nll_examples}",
                       *([f"train.steps={args.steps}"] if args.steps else [])]
        cmd = [sys.executable, "-m", "jaxvae", "train", "--preset", "mnist-dynamic", "--workdir", str(workdir),
               "--no-progress", *[a for s in common_sets + sets for a in ("--set", s)]]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        s = json.loads((workdir / "summary.json").read_text())
        rows.append((name, s, time.perf_counter() - t0))
        print(f"{name:28s} ELBO {s['test_elbo']:8.2f}  NLL {s['test_nll_iwae']:7.2f}  KL {s['test_kl']:6.2f}  "
              f"AU {s['active_units']:2d}  ({rows[-1][2]:.0f} s)", flush=True)
    header = ("| strategy | test ELBO | test NLL (IWAE) | test KL | recon | active units | MI | run s |\n"
              "|---|---|---|---|---|---|---|---|")
    lines = [f"| {n} | {s['test_elbo']:.2f} | {s['test_nll_iwae']:.2f} ± {s['test_nll_iwae_stderr']:.2f} | "
             f"{s['test_kl']:.2f} | {s['test_recon']:.2f} | {s['active_units']}/20 | "
             f"{s['mutual_information']:.2f} | {t:.0f} |" for n, s, t in rows]
    table = "\n".join([header, *lines])
    print(table)
    if not args.no_record:
        length = f"{args.steps} steps" if args.steps else f"{args.epochs} epochs"
        common.record_results(
            "strategies",
            "Trade-off strategies on dynamically binarized MNIST (MLP 784-500-20)", common.command_line(), table,
            f"{length}, batch 128, Adam 1e-3 for every strategy; IWAE with k={args.nll_samples} on "
            f"{args.nll_examples} random test images (test split binarized once with a fixed seed); each row is "
            "one `jaxvae train --preset mnist-dynamic` run.")


if __name__ == "__main__":
    main()
