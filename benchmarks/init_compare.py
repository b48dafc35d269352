"""Initialization matters at a fixed schedule: the Flax VAE example's setting (statically binarized MNIST,
MLP 784-500-20, Bernoulli, Adam 1e-3, batch 128) for a few epochs, jaxvae with Flax's default init
(``model.init=flax``) and with PyTorch's (``model.init=torch``), against pythae's VAE trained by a plain PyTorch
loop (PyTorch's default init), several seeds each; test -ELBO (nats, the whole test set).

Each jaxvae run is a real ``jaxvae train`` invocation (its summary.json gives ``test_elbo``); pythae runs in
benchmarks/.venv-torch (``benchmarks/torch_init_reference.py``)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import common


def _jaxvae(init: str, seed: int, epochs: int, data_dir: Path, workdir: Path) -> float:
    cmd = [sys.executable, "-m", "jaxvae", "train", "--preset", "binarized-mnist", "--workdir", str(workdir),
           "--no-progress", "--set", f"model.init={init}", f"train.seed={seed}", f"train.epochs={epochs}",
           f"data.dir={data_dir}", "eval.num_samples=10", "eval.max_examples=100", "monitor.every=0"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return -json.loads((workdir / "summary.json").read_text())["test_elbo"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks init_compare", description=__doc__)
    p.add_argument("--epochs", type=int, default=10, help="training epochs per run (default 10)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every variant (default 3)")
    p.add_argument("--data-dir", default=str(common.SHARED_DATA / "binarized_mnist"),
                   help="the statically binarized MNIST folder")
    p.add_argument("--torch-python", default=str(common.HERE / ".venv-torch" / "bin" / "python"),
                   help="python of the PyTorch environment (make bench-torch-env); pythae's row is left out "
                        "without it")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    args = p.parse_args(argv)
    if not any(Path(args.data_dir).glob("binarized_mnist_train*")):
        sys.exit(f"Statically binarized MNIST not found in {args.data_dir}; pass --data-dir.")
    from jaxvae import config, runs

    cfg = config.apply_overrides(config.get_preset("binarized-mnist"), [f"data.dir={args.data_dir}"])
    ds = runs.load_run_dataset(cfg)
    results: dict[str, list[float]] = {"jaxvae, model.init=flax": [], "jaxvae, model.init=torch": [],
                                       "pythae VAE (PyTorch loop and init)": []}
    with tempfile.TemporaryDirectory() as tmp:
        train, test = Path(tmp) / "train.npy", Path(tmp) / "test.npy"
        np.save(train, ds.train.reshape(-1, 28, 28), allow_pickle=False)
        np.save(test, ds.test.reshape(-1, 28, 28), allow_pickle=False)
        for seed in range(args.seeds):
            for init in ("flax", "torch"):
                v = _jaxvae(init, seed, args.epochs, Path(args.data_dir), Path(tmp) / f"{init}-{seed}")
                results[f"jaxvae, model.init={init}"].append(v)
                print(f"jaxvae init={init} seed={seed}: test -ELBO {v:.2f}", flush=True)
            if args.torch_python and Path(args.torch_python).exists():
                out = common.run_json_subprocess([args.torch_python, str(common.HERE / "torch_init_reference.py"),
                                                  "--train", str(train), "--test", str(test),
                                                  "--epochs", str(args.epochs), "--seed", str(seed)])
                results["pythae VAE (PyTorch loop and init)"].append(out["test_neg_elbo"])
                print(f"pythae seed={seed}: test -ELBO {out['test_neg_elbo']:.2f}", flush=True)
    rows = ["| model | test -ELBO per seed (nats) | median |", "|---|---|---|"]
    for name, vals in results.items():
        if vals:
            rows.append(f"| {name} | {' / '.join(f'{v:.2f}' for v in vals)} | {common.median(vals):.2f} |")
    table = "\n".join(rows)
    print(table)
    if not args.no_record:
        common.record_results(
            "init_compare",
            f"Initialization: Flax's default vs PyTorch's, the Flax example's setting, {args.epochs} epochs",
            common.command_line(), table,
            f"Statically binarized MNIST (50k train, the 10k test set), MLP 784-500-20 (ReLU), Bernoulli, Adam "
            f"1e-3, batch 128, {args.epochs} epochs (SHORTENED from the example's 30); seeds 0..{args.seeds - 1}. "
            "Test -ELBO: single-sample reconstruction + analytic KL, averaged over the test set.")


if __name__ == "__main__":
    main()
