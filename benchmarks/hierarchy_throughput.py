"""Training throughput of the hierarchies: jaxvae's real training path (config -> setup_run -> train_loop) against
the same models as a plain PyTorch eager loop (benchmarks/torch_hierarchy.py), side by side in one run, and the
per-step cost of each hierarchy relative to the one-layer model of the same width.

Models (Bernoulli likelihood, ELBO with one sample, Adam 1e-3, MNIST-shaped data [N, 28, 28, 1]):
- ``mlp1``: one stochastic layer 784-(200,200)-100, tanh (the width of the IWAE model's bottom layer);
- ``mlp2``: the IWAE paper's two-layer model 784-(200,200)-100-(100,100)-50 (preset ``mnist-2layer``'s network);
- ``topdown``: preset ``binarized-mnist-topdown``'s network (four groups of 4 channels at 14x14 and 7x7, 32
  channels);
- ``topdown1``: the same network with one latent group (4 channels at 7x7);
- flow posteriors on the binarized-mnist preset's MLP 784-500-20 (ReLU): ``diag`` (diagonal Gaussian),
  ``planar10``, ``radial10``, ``iaf4`` (MADE 320), ``sylvester4`` (8 Householder reflections); PyTorch has
  ``diag`` and ``planar10``.
Stabilizers are off on both sides (no warm-up, balancing, clamp, EMA or spectral regularization), so both run the
same arithmetic. Examples/s are steady state (the compiling chunk excluded); each variant runs in a fresh process;
variants are interleaved and their order rotated every repeat; the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import common

NETWORKS = {
    "mlp1": ["model.network=mlp", "model.latent_dim=100", "model.hidden=200,200", "model.activation=tanh"],
    "mlp2": ["model.network=hierarchical", "model.inference=bottom_up", "model.latent_dims=100,50",
             "model.layer_hidden=200,100", "model.layer_depth=2", "model.activation=tanh"],
    "topdown": ["model.network=hierarchical", "model.inference=top_down", "model.latent_dims=4,4,4,4",
                "model.groups_per_scale=2,2", "model.residual_channels=32", "model.activation=silu"],
    "topdown1": ["model.network=hierarchical", "model.inference=top_down", "model.latent_dims=4",
                 "model.groups_per_scale=0,1", "model.residual_channels=32", "model.activation=silu"],
}
# Flow posteriors on the binarized-mnist preset's MLP 784-500-20 (ReLU).
_FLOW_NET = ["model.network=mlp", "model.latent_dim=20", "model.hidden=500", "model.activation=relu"]
NETWORKS.update({
    "diag": _FLOW_NET,
    "planar10": [*_FLOW_NET, "model.posterior=planar", "model.flow_steps=10"],
    "radial10": [*_FLOW_NET, "model.posterior=radial", "model.flow_steps=10"],
    "iaf4": [*_FLOW_NET, "model.posterior=iaf", "model.flow_steps=4", "model.iaf_hidden=320"],
    "sylvester4": [*_FLOW_NET, "model.posterior=sylvester", "model.flow_steps=4", "model.householder=8"],
})
BASELINE = {"mlp1": "mlp1", "mlp2": "mlp1", "topdown": "topdown1", "topdown1": "topdown1",
            **{m: "diag" for m in ("diag", "planar10", "radial10", "iaf4", "sylvester4")}}
TORCH_MODELS = ("mlp1", "mlp2", "topdown", "topdown1", "diag", "planar10")  # in torch_hierarchy.py
KINDS = ["jaxvae", "torch-eager"]


def bench_jaxvae(model: str, data_path: Path, batch: int, epochs: int, workdir: Path) -> dict:
    from jaxvae import config

    with np.load(data_path) as f:
        steps = f["train"].shape[0] // batch
    sets = [f"data.name={data_path}", "data.valid_size=0", *NETWORKS[model], "model.likelihood=bernoulli",
            "objective.name=elbo", "objective.beta_schedule=constant", "optimizer.name=adam",
            "optimizer.learning_rate=1e-3", f"train.batch_size={batch}", f"train.epochs={epochs}",
            f"train.log_every={steps}", "train.checkpoint_every=0", "train.eval_every=1000000", "monitor.every=0"]
    return common.time_train_loop(config.apply_overrides(config.get_preset("mnist"), sets), workdir)


def _measure(kind: str, model: str, batch: int, epochs: int, data_path: Path, device: str,
             torch_python: str | None) -> dict:
    if kind == "torch-eager":
        cmd = [torch_python, str(common.HERE / "torch_hierarchy.py"), "--model", model, "--batch", str(batch),
               "--epochs", str(epochs), "--data", str(data_path), "--device", device]
        return common.run_json_subprocess(cmd)
    cmd = [sys.executable, "-m", "benchmarks.hierarchy_throughput", "--single", model, "--batch", str(batch),
           "--epochs", str(epochs), "--data", str(data_path.with_suffix(".npz"))]
    env = dict(os.environ, JAX_PLATFORMS="cuda" if device == "gpu" else "cpu")
    return common.run_json_subprocess(cmd, env=env)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks hierarchy_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp1,mlp2,topdown1,topdown",
                   help="comma-separated: " + ", ".join(NETWORKS))
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--epochs", type=int, default=4,
                   help="epochs per run; the first (compiling) is warm-up, so at least 2 give examples/s")
    p.add_argument("--mlp-steps", type=int, default=100, help="steps per epoch of the MLP models")
    p.add_argument("--conv-steps", type=int, default=10, help="steps per epoch of the top-down models")
    p.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is reported")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: JAX on CUDA (JAX_PLATFORMS=cuda) and PyTorch on cuda")
    p.add_argument("--torch-python", default=str(common.HERE / ".venv-torch" / "bin" / "python"),
                   help="python of the PyTorch environment (make bench-torch-env); '' to skip")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    p.add_argument("--single", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:
        with tempfile.TemporaryDirectory() as tmp:
            out = bench_jaxvae(args.single, Path(args.data), args.batch, args.epochs, Path(tmp) / "run")
        print(json.dumps(out))
        return
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(NETWORKS))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {sorted(NETWORKS)}")
    torch_python = args.torch_python if args.torch_python and Path(args.torch_python).exists() else None
    if not torch_python:
        print(f"(no PyTorch environment at {args.torch_python}; run `make bench-torch-env` to compare)")
    kinds = [k for k in KINDS if k != "torch-eager" or torch_python]
    variants = [(m, k) for m in models for k in kinds if k != "torch-eager" or m in TORCH_MODELS]
    results: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for m in models:
            steps = args.conv_steps if m.startswith("topdown") else args.mlp_steps
            paths[m] = Path(tmp) / f"{m}.npy"  # PyTorch reads the .npy, jaxvae the .npz beside it
            train = np.random.default_rng(0).uniform(size=(steps * args.batch, 28, 28, 1)).astype(np.float32)
            np.save(paths[m], train, allow_pickle=False)
            # Explicit splits, so that jaxvae trains on all of `train` (a bare .npy would lose 10% to a test split
            # and epochs would no longer be whole multiples of the logging interval).
            np.savez(paths[m].with_suffix(".npz"), train=train, test=train[: args.batch])
        for r in range(args.repeats):
            for m, k in variants[r % len(variants):] + variants[:r % len(variants)]:
                res = _measure(k, m, args.batch, args.epochs, paths[m], args.device, torch_python)
                results[(m, k)].append(res)
                why = f"  ({res['why']})" if res.get("why") else ""
                print(f"repeat {r + 1}/{args.repeats} {m:9s} {k:12s} {common.fmt(res['examples_per_sec']):>9} "
                      f"ex/s{why}", flush=True)
    med = {key: common.median_known([x["examples_per_sec"] for x in v]) for key, v in results.items()}
    rows = ["| model | variant | examples/s (median) | min | max | vs PyTorch eager | step cost vs one-layer |",
            "|---|---|---|---|---|---|---|"]
    fmt = common.fmt
    for m in models:
        for k in kinds:
            if (m, k) not in results:
                continue
            eps = [x["examples_per_sec"] for x in results[(m, k)] if x["examples_per_sec"] is not None]
            base = BASELINE[m]
            if (m, "torch-eager") not in med:
                vs = "— (no PyTorch model)" if m not in TORCH_MODELS else "n/a (PyTorch not run)"
            else:
                vs = fmt(common.ratio(med[(m, k)], med[(m, "torch-eager")]), ".2f")
                vs += "x" if vs != common.MISSING else ""
            if (base, k) not in med:
                rel = f"n/a ({base} not run)"
            else:
                rel = fmt(common.ratio(med[(base, k)], med[(m, k)]), ".2f")
                rel += f"x {base}" if rel != common.MISSING else ""
            rows.append(f"| {m} | {k} | {fmt(med[(m, k)])} | {fmt(min(eps, default=None))} | "
                        f"{fmt(max(eps, default=None))} | {vs} | {rel} |")
    table = "\n".join(rows)
    print(table)
    reasons = common.missing_reasons({f"{m} {k}": v for (m, k), v in results.items()})
    if reasons:
        print(reasons)
    if not args.no_record:
        common.record_results(
            "hierarchy_throughput", "Hierarchy training throughput vs PyTorch eager", common.command_line(),
            table,
            f"Batch {args.batch}; {args.epochs} epochs per run (the first is warm-up) of {args.mlp_steps} (MLP) / "
            f"{args.conv_steps} (top-down) steps; {args.repeats} repeats. 'step cost vs one-layer' = the "
            "one-layer model's examples/s over this model's, in the same framework (mlp1 for mlp2, topdown1 for "
            "topdown, diag for the flows)." + (f" {reasons}" if reasons else ""))


if __name__ == "__main__":
    main()
