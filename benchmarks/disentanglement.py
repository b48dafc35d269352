"""Disentanglement of the beta-VAE family on dSprites-style data, scored with disentanglement_lib's metrics.

Five models, each over several seeds, on the generated ``dsprites-small`` grid (``--dataset dsprites`` for the
full 64x64 grid on a bigger machine): a plain VAE and a beta-VAE (beta=4) as ONE ``jaxvae sweep`` (they differ
only in the KL weight), then a capacity-annealed beta-VAE (Burgess et al. 2018), a beta-TCVAE (Chen et al. 2018)
and a PI-controlled VAE (ControlVAE, Shao et al. 2020), each a sweep over its seeds. Every member is scored with
``jaxvae evaluate --metrics ...`` (MIG, SAP, DCI, modularity/explicitness and the FactorVAE score of
:mod:`jaxvae.evaluation.disentanglement`, on the posterior means), exactly as a user would.

Outputs: a table of the per-model means and standard deviations over seeds (and every run), the orderings
reported by Chen et al. 2018 (beta-TCVAE above the plain VAE and the beta-VAE on MIG) and Kim & Mnih 2018
(a total-correlation penalty above the plain VAE on their score) checked on our numbers, a plot of the metrics
per run (``benchmarks/disentanglement.png``) and latent traversal grids of seed 0 of each model
(``benchmarks/disentanglement_traversals.png``; ``--plot-dir`` elsewhere, and a ``--no-record`` run writes them to
the temporary folder). Finished sweeps and evaluations in ``--workdir`` are reused. ``--models`` trains a subset
(an ordering whose models were not trained is reported as not checked).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common

# The metrics of the table (each `jaxvae evaluate --metrics` name) and the columns they give.
METRICS = ["mig", "sap", "dci", "modularity_explicitness", "factor_vae"]
COLUMNS = [("mig", "MIG"), ("factor_vae_score", "FactorVAE"), ("dci_disentanglement", "DCI dis."),
           ("dci_completeness", "DCI comp."), ("dci_informativeness_test", "DCI inf."), ("sap", "SAP"),
           ("modularity", "modularity")]

TRAIN_EXAMPLES = {"dsprites-small": 42_080, "dsprites": 717_280}


def models(steps: int) -> list[tuple[str, list[str], dict[str, str]]]:
    """``(sweep name, --set overrides, {member label: model name})``; a member's label is sweep.py's."""
    return [
        ("vae_betavae", ["--over", "objective.beta=1,4"], {"beta1": "VAE", "beta4": "beta-VAE (beta=4)"}),
        ("capacity", ["--set", "objective.name=capacity", "objective.capacity.nats=25",
                      f"objective.capacity.steps={steps}", "objective.capacity.gamma=1000"],
         {"": "capacity beta-VAE (C -> 25 nats, gamma 1000)"}),
        ("beta_tcvae", ["--set", "objective.name=beta_tcvae", "objective.beta=6"],
         {"": "beta-TCVAE (beta=6)"}),
        ("pi", ["--set", "objective.controller=pi", "objective.pi.kl_target=8", "objective.beta_start=1",
                "objective.beta=10"], {"": "PI control (KL=8, beta in [1, 10])"}),
    ]


SWEEPS = [name for name, _, _ in models(0)]


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


def _model_name(label: str, names: dict[str, str]) -> str:
    for key, name in names.items():
        if key and label.startswith(key):
            return name
    return names[""]


def traversal_grid(member: Path, title: str, example: int = 0, num: int = 9, span: float = 2.5):
    """Decoded traversals of one test image over every latent dimension, rows sorted by the dimension's KL."""
    import numpy as np

    import jaxvae as jv

    run = jv.load_run(member)
    kl = np.asarray(json.loads((member / "summary.json").read_text())["kl_per_dim"])
    order = np.argsort(-kl)
    x = run.dataset.test[example]
    images = np.asarray(jv.traversals(run.model, run.params, x, dims=[int(d) for d in order], num=num,
                                      span=span))  # [D, num, H, W, 1]
    return images[..., 0], [f"z{d} ({kl[d]:.2f})" for d in order], title


def _plot_traversals(grids, path: Path, span: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(grids), figsize=(3.6 * len(grids), 4.0), constrained_layout=True)
    for ax, (images, rows, title) in zip(np.atleast_1d(axes), grids):
        d, n, h, w = images.shape
        canvas = np.ones((d * (h + 1) - 1, n * (w + 1) - 1))
        for i in range(d):
            for j in range(n):
                canvas[i * (h + 1):i * (h + 1) + h, j * (w + 1):j * (w + 1) + w] = images[i, j]
        ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
        ax.set_yticks([i * (h + 1) + h / 2 for i in range(d)], rows, fontsize=7)
        ax.set_xticks([0, canvas.shape[1] - 1], [f"-{span:g}", f"+{span:g}"], fontsize=7)
        ax.set_title(title, fontsize=8)
    fig.suptitle("Latent traversals of one test image (seed 0; rows: dimension (KL nats), sorted by KL; "
                 "columns: prior std)", fontsize=9)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _plot_metrics(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = COLUMNS[:3]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.0), constrained_layout=True)
    for ax, (key, label) in zip(axes, shown):
        for i, name in enumerate(names):
            values = [r["metrics"][key] for r in rows if r["model"] == name]
            ax.scatter([i] * len(values), values, s=22, alpha=0.8)
            ax.hlines(statistics.mean(values), i - 0.25, i + 0.25, color="k", lw=1.5)
        ax.set_xticks(range(len(names)), [n.split(" (")[0] for n in names], rotation=30, ha="right", fontsize=8)
        ax.set(title=f"{label} (dots: seeds, bar: mean)", ylim=(0, None))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Disentanglement on dSprites-style data (shortened schedule)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks disentanglement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="dsprites-small", choices=["dsprites-small", "dsprites"])
    p.add_argument("--steps", type=int, default=2500, help="training steps of batch 64 per model (default 2500)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per model (default 3)")
    p.add_argument("--points", type=int, default=5000,
                   help="training points of each metric (test/evaluation points: half); disentanglement_lib's "
                        "study uses 10000 (default 5000)")
    p.add_argument("--models", default=",".join(SWEEPS),
                   help="comma-separated subset of the sweeps " + ", ".join(SWEEPS) + " (default: all)")
    p.add_argument("--workdir",
                   help="keep the sweeps here (default: a temporary folder); finished parts are reused")
    p.add_argument("--plot-dir", default=None,
                   help="where the two plots go (default: benchmarks/; with --no-record, the temporary folder)")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    args = p.parse_args(argv)
    chosen = [m for m in args.models.split(",") if m]
    unknown = sorted(set(chosen) - set(SWEEPS))
    if unknown or not chosen:
        raise SystemExit(f"unknown model sweep(s) {unknown}; choose from {', '.join(SWEEPS)}")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="jaxvae-disentanglement-"))
    jaxvae = [sys.executable, "-m", "jaxvae"]
    common_sets = [f"train.steps={args.steps}", "train.log_every=250", "train.checkpoint_every=100000",
                   "eval.num_samples=100", "eval.max_examples=500"]
    rows = []
    names = []
    for sweep, extra, labels in models(args.steps):
        if sweep not in chosen:
            continue
        workdir = root / sweep
        if not (workdir / "sweep.json").exists():
            if extra[0] == "--over":  # a grid, times the seeds
                grid, sets = [*extra, "--seeds", str(args.seeds)], []
            else:  # one model over its seeds
                grid = ["--over", "train.seed=" + ",".join(map(str, range(args.seeds)))]
                sets = extra[1:]
            cmd = [*jaxvae, "sweep", "--preset", args.dataset, "--workdir", str(workdir), "--no-progress",
                   *grid, "--set", *common_sets, *sets]
            print(f"training {sweep}: {' '.join(cmd[2:])}", flush=True)
            _run(cmd)
        summary = json.loads((workdir / "sweep.json").read_text())
        for m in summary["models"]:
            member = next((workdir / "models").glob(f"{m['model_index']:02d}-*"))
            name = _model_name(m["label"], labels)
            if name not in names:
                names.append(name)
            eval_path = member / "eval.json"
            result = json.loads(eval_path.read_text()) if eval_path.exists() else {}
            if "disentanglement" not in result:
                _run([*jaxvae, "evaluate", "--workdir", str(member), "--metrics", ",".join(METRICS),
                      "--disentanglement-points", str(args.points)])
                result = json.loads(eval_path.read_text())
            seed = m["settings"]["train.seed"]
            rows.append({"model": name, "seed": seed, "member": member, "summary": m,
                         "metrics": result["disentanglement"]})
            d = result["disentanglement"]
            print(f"{name:45s} seed {seed}  MIG {d['mig']:.3f}  FactorVAE {d['factor_vae_score']:.3f}  "
                  f"DCI {d['dci_disentanglement']:.3f}  KL {m['test_kl']:.2f}", flush=True)

    header = ("| model | " + " | ".join(label for _, label in COLUMNS) + " | test ELBO | KL | active units |\n"
              "|---|" + "---|" * (len(COLUMNS) + 3))
    lines = []
    for name in names:
        mine = [r for r in rows if r["model"] == name]
        cells = [_mean_sd([r["metrics"][k] for r in mine]) for k, _ in COLUMNS]
        s = [r["summary"] for r in mine]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {statistics.mean(x['test_elbo'] for x in s):.2f} | "
                     f"{statistics.mean(x['test_kl'] for x in s):.2f} | "
                     f"{'/'.join(str(x['active_units']) for x in s)} |")
    per_run = ["| model | seed | " + " | ".join(label for _, label in COLUMNS) + " | KL |",
               "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        cells = " | ".join(f"{r['metrics'][k]:.3f}" for k, _ in COLUMNS)
        per_run.append(f"| {r['model']} | {r['seed']} | {cells} | {r['summary']['test_kl']:.2f} |")

    def mean_of(model: str, key: str) -> float:
        return statistics.mean(r["metrics"][key] for r in rows if r["model"] == model)

    vae, beta, tc = "VAE", "beta-VAE (beta=4)", "beta-TCVAE (beta=6)"
    checks = []
    orderings = (
        ("beta-TCVAE above the plain VAE on MIG (Chen et al. 2018)", tc, vae, "mig"),
        ("beta-TCVAE above the beta-VAE on MIG (Chen et al. 2018)", tc, beta, "mig"),
        ("beta-TCVAE (a total-correlation penalty) above the plain VAE on the FactorVAE score (Kim & Mnih 2018 "
         "report this for FactorVAE)", tc, vae, "factor_vae_score"),
        ("beta-VAE above the plain VAE on MIG (Chen et al. 2018, Higgins et al. 2017)", beta, vae, "mig"),
    )
    for claim, a, b, key in orderings:
        if a not in names or b not in names:
            checks.append(f"- {claim}: not checked ({a if a not in names else b} not trained, see --models)")
            continue
        ma, mb = mean_of(a, key), mean_of(b, key)
        paired = sum(ra["metrics"][key] > rb["metrics"][key] for ra, rb in zip(
            [r for r in rows if r["model"] == a], [r for r in rows if r["model"] == b]))
        checks.append(f"- {claim}: {ma:.3f} vs {mb:.3f}: **{'holds' if ma > mb else 'does not hold'}** on the "
                      f"means; {paired} of {args.seeds} seeds")
    table = "\n".join([header, *lines, "", "Every run:", "", *per_run, "", "Orderings on our numbers:", "",
                       *checks])
    print(table)
    plot = common.output_path(args.plot_dir and str(Path(args.plot_dir) / "disentanglement.png"),
                              "disentanglement.png", record=not args.no_record)
    _plot_metrics(rows, names, plot)
    grids = [traversal_grid(next(r["member"] for r in rows if r["model"] == n), n.split(" (")[0]) for n in names]
    trav = common.output_path(args.plot_dir and str(Path(args.plot_dir) / "disentanglement_traversals.png"),
                              "disentanglement_traversals.png", record=not args.no_record)
    _plot_traversals(grids, trav, span=2.5)
    print(f"plots: {plot}, {trav}")
    if not args.no_record:
        epochs = args.steps * 64 / TRAIN_EXAMPLES[args.dataset]
        common.record_results(
            "disentanglement",
            f"Disentanglement on {args.dataset}: VAE, beta-VAE, capacity, beta-TCVAE, PI control",
            common.command_line(), table,
            f"SHORTENED: {args.steps} steps of batch 64 ({epochs:.1f} epochs) per model (disentanglement_lib's "
            f"study trains 300,000 steps), {args.seeds} seeds each (train.seed 0..{args.seeds - 1}, one batch "
            "order); the "
            f"dsprites-small preset's conv VAE (32-64 channels), 10 latents, Bernoulli, Adam 1e-3. Metrics on the "
            f"posterior means with disentanglement_lib's definitions and {args.points:,} training / "
            f"{args.points // 2:,} test points (the study: 10,000 / 5,000), every factor of the grid but the "
            f"constant color; table cells are mean ± standard deviation over seeds. Plots: "
            f"benchmarks/{os.path.relpath(plot, common.HERE)}, benchmarks/{os.path.relpath(trav, common.HERE)}.")


if __name__ == "__main__":
    main()
