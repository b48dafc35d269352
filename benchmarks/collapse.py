"""The posterior-collapse lab, image half: a VAE with a gated PixelCNN decoder on statically binarized MNIST,
trained plain and with each remedy on the same schedule, beside the same encoder with a factorized
(convolutional) decoder as the control. Each run is a real `jaxvae train` invocation; the table collects the
test ELBO, IWAE NLL, KL, mutual information and active units from each run's summary.json, the step at which
the latent-health monitor first reported collapse (and whether the run ended collapsed), and a plot of the
monitor's KL and active units over training for all runs.

The expected picture (Chen et al. 2017; Gulrajani et al. 2017; Alemi et al. 2018), measured here rather than
assumed: with the PixelCNN the plain VAE ends with KL, MI and active units near zero, while the factorized
decoder uses z; the remedies keep information in z.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common

ENCODER = ["model.network=conv", "model.latent_dim=20"]
PIXELCNN = ["model.decoder=pixelcnn", "model.pixelcnn.layers=4", "model.pixelcnn.features=32"]


def runs(steps: int) -> dict[str, list[str]]:
    warm = max(steps // 2, 1)
    return {
        "factorized decoder, plain ELBO": [],
        "PixelCNN, plain ELBO": PIXELCNN,
        f"PixelCNN, KL warm-up ({warm} steps)": [*PIXELCNN, "objective.beta_schedule=linear",
                                                 "objective.beta_start=0", f"objective.warmup_steps={warm}"],
        "PixelCNN, free bits (0.25/dim)": [*PIXELCNN, "objective.name=free_bits", "objective.free_bits.nats=0.25"],
        "PixelCNN, PI control (KL=10)": [*PIXELCNN, "objective.controller=pi", "objective.pi.kl_target=10",
                                         "objective.pi.kp=0.01", "objective.pi.ki=0.0005"],
        "PixelCNN, committed rate (0.25/dim)": [*PIXELCNN, "model.committed_rate=0.25"],
    }


def _monitor(workdir: Path) -> list[dict]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("split") == "monitor"]


def _plot(results: list[tuple[str, dict, list[dict], float]], path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_kl, ax_au) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name, _, mon, _ in results:
        st = [r["step"] for r in mon]
        ax_kl.plot(st, [r["kl"] for r in mon], label=name)
        ax_au.plot(st, [r["active_units"] for r in mon], label=name)
    ax_kl.set(xlabel="training step", ylabel="KL(q(z|x) || p(z)), nats (monitor batch)", yscale="symlog",
              title="KL over training")
    ax_au.set(xlabel="training step", ylabel="active units (of 20)", title="Active units over training",
              ylim=(-0.5, 20.5))
    ax_au.legend(fontsize=8, loc="center right")
    fig.suptitle(f"Posterior collapse with a PixelCNN decoder, binarized MNIST, {steps} steps of batch 100")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks collapse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(common.SHARED_DATA / "binarized_mnist"))
    p.add_argument("--steps", type=int, default=800, help="training steps of batch 100 per run (default 800)")
    p.add_argument("--nll-samples", type=int, default=50)
    p.add_argument("--nll-examples", type=int, default=500)
    p.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--plot", default=str(Path(__file__).with_name("collapse.png")))
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    if not any(Path(args.data_dir).glob("*train*")):
        sys.exit(f"Statically binarized MNIST not found in {args.data_dir}; pass --data-dir.")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="jaxvae-collapse-"))
    results = []
    for i, (name, sets) in enumerate(runs(args.steps).items()):
        workdir = root / f"run{i}"
        base = [f"data.dir={args.data_dir}", f"train.steps={args.steps}", "train.batch_size=100",
                "train.log_every=50", "monitor.every=50", "train.checkpoint_every=400",
                f"eval.num_samples={args.nll_samples}", f"eval.max_examples={args.nll_examples}"]
        cmd = [sys.executable, "-m", "jaxvae", "train", "--preset", "binarized-mnist", "--workdir", str(workdir),
               "--no-progress", *[a for s in [*base, *ENCODER, *sets] for a in ("--set", s)]]
        if (workdir / "summary.json").exists():  # written last: a finished run (delete the folder to retrain)
            print(f"{name}: finished run in {workdir} reused", flush=True)
        else:
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{name}: {out.stderr[-3000:]}")
        s = json.loads((workdir / "summary.json").read_text())
        results.append((name, s, _monitor(workdir), s["train_seconds"]))
        print(f"{name:36s} ELBO {s['test_elbo']:8.2f}  NLL {s['test_nll_iwae']:7.2f}  KL {s['test_kl']:6.2f}  "
              f"AU {s['active_units']:2d}  ({results[-1][3]:.0f} s)", flush=True)
    header = ("| run | test NLL (IWAE) | test ELBO | KL | MI | active units | first collapse warning | "
              "collapsed at the end | train s |\n|---|---|---|---|---|---|---|---|---|")
    lines = []
    for name, s, mon, t in results:
        first = next((r["step"] for r in mon if r.get("collapse")), None)
        end = mon[-1].get("collapse") if mon else None
        lines.append(f"| {name} | {s['test_nll_iwae']:.2f} ± {s['test_nll_iwae_stderr']:.2f} | "
                     f"{s['test_elbo']:.2f} | {s['test_kl']:.2f} | {s['mutual_information']:.3f} | "
                     f"{s['active_units']}/20 | {'step ' + str(first) if first is not None else 'never'} | "
                     f"{'yes' if end else 'no'} | {t:.0f} |")
    table = "\n".join([header, *lines])
    print(table)
    _plot(results, Path(args.plot), args.steps)
    print(f"plot: {args.plot}")
    if not args.no_record:
        common.append_results(
            "Posterior-collapse lab: PixelCNN decoder on statically binarized MNIST", common.command_line(), table,
            f"SHORTENED: {args.steps} steps of batch 100 ({args.steps / 500:.1f} epochs) per run, Adam 1e-3; conv "
            "encoder (32, 64 channels), 20 latents; PixelCNN decoder: 4 gated layers of 32 features, 3x3, spatial "
            "conditioning on z; control: the same encoder with the factorized conv decoder. Monitor every 50 "
            f"steps on the first validation images; IWAE with k={args.nll_samples} on {args.nll_examples} random "
            f"test images. Plot: benchmarks/{Path(args.plot).name}.")


if __name__ == "__main__":
    main()
