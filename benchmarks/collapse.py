"""The posterior-collapse lab. Two halves, each trained plain and with every remedy on the same schedule:

* ``--task image`` (default): a VAE with a gated PixelCNN decoder on statically binarized MNIST, beside the same
  encoder with a factorized (convolutional) decoder as the control.
* ``--task text``: the GRU encoder/decoder VAE of the ``words`` preset on English words as character sequences
  (Debian's wamerican word list), plain and with KL warm-up, free bits, PI control, a committed rate, word dropout
  (Bowman et al. 2016) and aggressive inference-network training (He et al. 2019).

Each run is a real `jaxvae train` invocation; the table collects the test ELBO, IWAE NLL, KL, mutual information
and active units from each run's summary.json, the step at which the latent-health monitor first reported
collapse (and whether the run ended collapsed), and a plot of the monitor's KL and active units over training for
all runs.

The expected picture (Bowman et al. 2016; Chen et al. 2017; Gulrajani et al. 2017; Alemi et al. 2018; He et al.
2019), measured here rather than assumed: with the autoregressive decoder the plain VAE ends with KL, MI and
active units near zero; the remedies keep information in z.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common

ENCODER = ["model.network=conv", "model.latent_dim=20"]
PIXELCNN = ["model.decoder=pixelcnn", "model.pixelcnn.layers=8", "model.pixelcnn.kernel_size=5",
            "model.pixelcnn.features=32"]


def image_runs(steps: int) -> dict[str, list[str]]:
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


def text_runs(steps: int) -> dict[str, list[str]]:
    warm = max(steps // 2, 1)
    warmup = ["objective.beta_schedule=linear", "objective.beta_start=0", f"objective.warmup_steps={warm}"]
    return {
        "GRU, plain ELBO": [],
        f"GRU, KL warm-up ({warm} steps)": warmup,
        "GRU, free bits (0.25/dim)": ["objective.name=free_bits", "objective.free_bits.nats=0.25"],
        "GRU, PI control (KL=5)": ["objective.controller=pi", "objective.pi.kl_target=5", "objective.pi.kp=0.01",
                                   "objective.pi.ki=0.0005"],
        "GRU, committed rate (0.1/dim)": ["model.committed_rate=0.1"],
        "GRU, word dropout 0.5": ["model.rnn.word_dropout=0.5"],
        f"GRU, word dropout 0.5 + KL warm-up ({warm} steps)": ["model.rnn.word_dropout=0.5", *warmup],
        "GRU, aggressive inference training (patience 1 epoch)": ["train.aggressive.enabled=true",
                                                                   "train.aggressive.patience=1"],
    }


# The monitor's thresholds in both halves: the defaults (0.1 nats of KL, 0.05 of MI in total) are absolute, and a
# 20- or 32-unit code that carries 0.15 nats has well under 0.01 nats per unit; 0.5 nats is less than one bit
# about which image or word.
MONITOR = ["monitor.min_kl=0.5", "monitor.min_mi=0.5"]


def greedy_reconstruction(workdir: Path, num: int = 1000) -> float:
    """The share of the first ``num`` test words whose greedy reconstruction (from the posterior mean) is exactly
    the word: what z determines about x, in one number."""
    import jax
    import numpy as np

    from jaxvae.runs import load_run

    run = load_run(workdir)
    x = run.dataset.test[:num]
    rec = np.asarray(jax.jit(run.model.reconstruct)(run.params, x))
    return float(np.mean(np.all(rec == x, axis=-1)))


TASKS = {
    "image": dict(preset="binarized-mnist", runs=image_runs, latents=20, batch=100, default_steps=800,
                  base=[*ENCODER, *MONITOR], epoch=500, checkpoint_every=400, every=50,
                  title="Posterior-collapse lab: PixelCNN decoder on statically binarized MNIST",
                  plot_title="Posterior collapse with a PixelCNN decoder, binarized MNIST",
                  plot="collapse.png",
                  setup="Adam 1e-3; conv encoder (32, 64 channels), 20 latents; PixelCNN decoder: 8 gated layers "
                        "of 32 features, 5x5 (17 rows of receptive field), spatial conditioning on z; control: "
                        "the same encoder with the factorized conv decoder. Monitor every 50 steps on the first "
                        "validation images, warning below 0.5 nats of KL or MI (the defaults are 0.1 and 0.05)"),
    "text": dict(preset="words", runs=text_runs, latents=32, batch=64, default_steps=8400, base=MONITOR,
                 epoch=840, checkpoint_every=1000, every=100,
                 title="Posterior-collapse lab: GRU decoder on English words (characters)",
                 plot_title="Posterior collapse with a GRU decoder, words (characters)",
                 plot="collapse_text.png",
                 setup="the words preset: Adam 1e-3, gradient clipping at 5; GRU encoder and decoder (embedding "
                       "64, state 256, z initialises the decoder's state and enters every step), 32 latents, "
                       "categorical likelihood over 28 tokens; aggressive training with the paper's settings "
                       "(at most 100 inner encoder steps, checked every 10) except a patience of 1 epoch instead "
                       "of 5, so that the phase ends inside the shortened schedule. Monitor every 100 steps on "
                       "the first 512 validation words, warning below 0.5 nats of KL or MI (the defaults are 0.1 "
                       "and 0.05); exact: the share of the first 1,000 test words that greedy decoding from the "
                       "posterior mean reconstructs exactly"),
}


def _monitor(workdir: Path) -> list[dict]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("split") == "monitor"]


def _plot(results: list[tuple[str, dict, list[dict], float]], path: Path, title: str, latents: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_kl, ax_au) = plt.subplots(1, 2, figsize=(12, 4.4), constrained_layout=True)
    for name, _, mon, _ in results:
        st = [r["step"] for r in mon]
        ax_kl.plot(st, [r["kl"] for r in mon], label=name)
        ax_au.plot(st, [r["active_units"] for r in mon], label=name)
    ax_kl.set(xlabel="training step", ylabel="KL(q(z|x) || p(z)), nats (monitor batch)", yscale="symlog",
              title="KL over training")
    ax_au.set(xlabel="training step", ylabel=f"active units (of {latents})", title="Active units over training",
              ylim=(-0.5, latents + 0.5))
    ax_au.legend(fontsize=7, loc="center right")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks collapse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="image")
    p.add_argument("--data-dir", default=None,
                   help="image: the binarized MNIST folder (default ../shared/data/binarized_mnist); text: a "
                        "folder holding american-english (default: /usr/share/dict, from the wamerican package)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per run (default: image 800 of batch 100; text 8400 of batch 64, the "
                        "words preset's 10 epochs)")
    p.add_argument("--nll-samples", type=int, default=50, help="IWAE k of the test NLL (default 50)")
    p.add_argument("--nll-examples", type=int, default=500, help="test examples of the NLL (default 500)")
    p.add_argument("--workdir", help="keep the runs here (default: a temporary folder); finished runs are reused")
    p.add_argument("--plot", default=None,
                   help="default: benchmarks/collapse.png (image), collapse_text.png (text); with --no-record, "
                        "the temporary folder")
    p.add_argument("--skip", action="append", default=[], metavar="TEXT",
                   help="leave out the runs whose name contains TEXT (repeatable); the table says which")
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="run only the runs whose name contains TEXT (repeatable); the table says which were "
                        "left out")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    args = p.parse_args(argv)
    task = TASKS[args.task]
    steps = args.steps or task["default_steps"]
    plot = common.output_path(args.plot, task["plot"], record=not args.no_record)
    data = []
    if args.task == "image":
        data_dir = args.data_dir or str(common.SHARED_DATA / "binarized_mnist")
        if not any(Path(data_dir).glob("*train*")):
            sys.exit(f"Statically binarized MNIST not found in {data_dir}; pass --data-dir.")
        data = [f"data.dir={data_dir}"]
    elif args.data_dir:
        data = [f"data.dir={args.data_dir}"]
    elif not Path("/usr/share/dict/american-english").is_file():
        sys.exit("The words dataset needs /usr/share/dict/american-english: sudo apt-get install -y wamerican "
                 "(or pass --data-dir with a folder holding that file).")
    root = Path(args.workdir or tempfile.mkdtemp(prefix=f"jaxvae-collapse-{args.task}-"))
    results = []
    skipped = []
    for i, (name, sets) in enumerate(task["runs"](steps).items()):
        if any(text in name for text in args.skip) or (args.only and not any(t in name for t in args.only)):
            skipped.append(name)
            continue
        workdir = root / f"run{i}"
        base = [*data, f"train.steps={steps}", f"train.batch_size={task['batch']}",
                f"train.log_every={task['every']}", f"monitor.every={task['every']}",
                f"train.checkpoint_every={task['checkpoint_every']}",
                f"eval.num_samples={args.nll_samples}", f"eval.max_examples={args.nll_examples}"]
        cmd = [sys.executable, "-m", "jaxvae", "train", "--preset", task["preset"], "--workdir", str(workdir),
               "--no-progress", *[a for s in [*base, *task["base"], *sets] for a in ("--set", s)]]
        if (workdir / "summary.json").exists():  # written last: a finished run (delete the folder to retrain)
            print(f"{name}: finished run in {workdir} reused", flush=True)
        else:
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{name}: {out.stderr[-3000:]}")
        s = json.loads((workdir / "summary.json").read_text())
        if args.task == "text":
            s["exact"] = greedy_reconstruction(workdir)
        results.append((name, s, _monitor(workdir), s["train_seconds"]))
        print(f"{name:48s} ELBO {s['test_elbo']:8.2f}  NLL {s['test_nll_iwae']:7.2f}  KL {s['test_kl']:6.2f}  "
              f"AU {s['active_units']:2d}  ({results[-1][3]:.0f} s)", flush=True)
    exact = args.task == "text"
    header = ("| run | test NLL (IWAE) | test ELBO | KL | MI | active units | " + ("exact | " if exact else "") +
              "first collapse warning | collapsed at the end | train s |\n|---|---|---|---|---|---|---|---|---|" +
              ("---|" if exact else ""))
    lines = []
    for name, s, mon, t in results:
        first = next((r["step"] for r in mon if r.get("collapse")), None)
        end = mon[-1].get("collapse") if mon else None
        lines.append(f"| {name} | {s['test_nll_iwae']:.2f} ± {s['test_nll_iwae_stderr']:.2f} | "
                     f"{s['test_elbo']:.2f} | {s['test_kl']:.2f} | {s['mutual_information']:.3f} | "
                     f"{s['active_units']}/{task['latents']} | "
                     + (f"{100 * s['exact']:.1f}% | " if exact else "") +
                     f"{'step ' + str(first) if first is not None else 'never'} | "
                     f"{'yes' if end else 'no'} | {t:.0f} |")
    table = "\n".join([header, *lines])
    if skipped:
        table += "\n\nLeft out (--skip / --only): " + "; ".join(skipped) + "."
    print(table)
    title = f"{task['plot_title']}, {steps} steps of batch {task['batch']}"
    _plot(results, plot, title, task["latents"])
    print(f"plot: {plot}")
    if not args.no_record:
        epochs = steps / task["epoch"]
        common.record_results(
            "collapse" if args.task == "image" else f"collapse-{args.task}", task["title"], common.command_line(),
            table,
            f"SHORTENED: {steps} steps of batch {task['batch']} ({epochs:.1f} epochs) per run; {task['setup']}; "
            f"IWAE with k={args.nll_samples} on {args.nll_examples} random test examples. Plot: "
            f"benchmarks/{os.path.relpath(plot, common.HERE)}.")


if __name__ == "__main__":
    main()
