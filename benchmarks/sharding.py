"""Sharded training: train-step time on a 1-device vs an N-device mesh, and accelerator throughput.

``--device cpu`` (default): N simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``, in a
subprocess). The same model, seed and global batch run on a 1-device mesh and on an N-device mesh (data parallel;
``--params fsdp`` shards parameters too); the table gives the median step time and the largest loss difference
between the two. On a machine with few cores the N-device mesh is expected to be no faster: the point is that it
runs and matches.

``--device gpu`` (or ``tpu``): all devices of the machine on the ``data`` axis; examples/s of the MLP and conv
presets' shapes, with the model FLOPs per step from XLA's cost analysis and the fraction of the device's matmul
rate that this achieves (measured with a large matmul of the same dtype on the same device, and against the
data-sheet peak where the device is known).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import common

# Dense data-sheet peaks (TFLOP/s per device) for float32 matmuls as XLA runs them by default (TF32 on NVIDIA
# Ampere and later, bf16 passes on TPU), used only for the "of peak" column; the measured matmul rate is the
# primary reference.
PEAK_TFLOPS = {"H100": 494.7, "H200": 494.7, "A100": 156.0, "L4": 60.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
               "TPU v5": 459.0}

MODELS = {
    # name: (overrides, event shape)
    "mlp": (["model.network=mlp", "model.hidden=512,256", "model.latent_dim=32"], (28, 28, 1)),
    "conv": (["model.network=conv", "model.channels=32,64", "model.conv_hidden=256", "model.latent_dim=16"],
             (28, 28, 1)),
}


def _setup(model_name: str, batch: int, params_mode: str = "replicated"):
    from jaxvae import config
    from jaxvae.models.factory import build_model
    from jaxvae.objectives.factory import build_objective
    from jaxvae.training.optimizers import build_optimizer

    overrides, event = MODELS[model_name]
    cfg = config.apply_overrides(config.get_preset("mnist"), [*overrides, f"train.batch_size={batch}",
                                                              f"mesh.params={params_mode}"])
    model = build_model(cfg, event)
    return cfg, model, build_optimizer(cfg, 10_000), build_objective(cfg, model, 10_000), event


def time_steps(mesh_shape: str, model_name: str, batch: int, steps: int, repeats: int, params_mode: str) -> dict:
    """Median seconds per train step (after one compiling step) on the mesh ``mesh_shape``; losses of the run."""
    import jax
    import numpy as np

    from jaxvae import sharding
    from jaxvae.training.step import init_train_state, jit_train_step, make_train_step

    _, model, opt, obj, event = _setup(model_name, batch, params_mode)
    mesh = sharding.make_mesh(mesh_shape)
    state, state_sh = sharding.init_sharded(lambda k: init_train_state(model, opt, obj, k),
                                            lambda s: sharding.train_state_shardings(s, mesh, params_mode),
                                            jax.random.key(0))
    batch_sh = sharding.batch_sharding(mesh, 1 + len(event))
    fn = jit_train_step(make_train_step(model, obj, opt), state_sh, batch_sh)
    rng = np.random.default_rng(0)
    batches = [sharding.make_global_batch(rng.uniform(size=(batch, *event)).astype(np.float32), batch_sh, batch)
               for _ in range(4)]
    t0 = time.perf_counter()
    state, m = fn(state, batches[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    losses, times = [float(m["loss"])], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            state, m = fn(state, batches[i % 4])
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / steps)
        losses.append(float(m["loss"]))
    flops = None
    try:
        cost = fn.lower(state, batches[0]).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        flops = float(cost.get("flops", 0.0)) or None
    except Exception:  # cost analysis is best effort (not every backend reports it)
        pass
    return {"mesh": mesh_shape, "devices": int(mesh.devices.size), "step_seconds": statistics.median(times),
            "compile_seconds": compile_s, "losses": losses, "flops_per_step": flops,
            "device_kind": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform}


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """The device's achieved matmul rate (TFLOP/s) for float32 ``[n, n] @ [n, n]`` at default precision."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    jax.block_until_ready(out)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def _peak(kind: str) -> float | None:
    for name, tflops in sorted(PEAK_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if name.lower() in kind.lower():
            return tflops
    return None


def run_cpu(args: argparse.Namespace) -> None:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices}",
           "JAX_PLATFORMS": "cpu"}
    rows = []
    for shape in ("1", str(args.devices)):
        cmd = [sys.executable, "-m", "benchmarks", "sharding", "--worker", shape, "--model", args.model,
               "--batch", str(args.batch), "--steps", str(args.steps), "--repeats", str(args.repeats),
               "--params", args.params]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    ref = rows[0]["losses"]
    lines = ["| mesh | devices | params | step time (ms, median) | examples/s | compile (s) "
             "| max loss diff vs 1 device |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = max(abs(a - b) for a, b in zip(r["losses"], ref))
        lines.append(f"| data={r['devices']} | {r['devices']} simulated CPU | {args.params} | "
                     f"{1e3 * r['step_seconds']:.2f} | {args.batch / r['step_seconds']:,.0f} | "
                     f"{r['compile_seconds']:.2f} | {diff:.2e} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        common.record_results(
            "sharding",
            f"Sharding: 1 vs {args.devices} simulated CPU devices ({args.model}, global batch {args.batch})",
            common.command_line(), table,
            notes=(f"Median over {args.repeats} repeats of {args.steps} steps after a compiling step; model "
                   f"{args.model} ({' '.join(MODELS[args.model][0])}), MNIST-shaped random data. The simulated "
                   "devices share the same CPU cores, so the 8-device mesh is not expected to be faster here; the "
                   "point is that the sharded program runs and matches the 1-device one (same seed and global "
                   "batch)."))


def run_accelerator(args: argparse.Namespace) -> None:
    import jax

    devices = jax.devices()
    if devices[0].platform == "cpu":
        raise SystemExit(f"--device {args.device}: JAX sees only CPU devices here; use --device cpu.")
    kind = devices[0].device_kind
    measured = matmul_tflops()
    peak = _peak(kind)
    lines = ["| model | devices | global batch | examples/s | model TFLOP/s per device | of measured matmul rate "
             "| of data-sheet peak |", "|---|---|---|---|---|---|---|"]
    for name in args.models.split(","):
        batch = args.per_device_batch * len(devices)
        r = time_steps("auto", name, batch, args.steps, args.repeats, args.params)
        # The compiled program is the per-device (SPMD-partitioned) one, so its FLOPs are per device.
        achieved = (r["flops_per_step"] or 0) / r["step_seconds"] / 1e12
        frac_peak = f"{100 * achieved / peak:.1f}% of {peak:g}" if peak else "n/a"
        lines.append(f"| {name} | {len(devices)}x {kind} | {batch} | {batch / r['step_seconds']:,.0f} | "
                     f"{achieved:.2f} | {100 * achieved / measured:.1f}% of {measured:.1f} | {frac_peak} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        common.record_results(f"sharding-{args.device}", f"Sharding: throughput on {len(devices)}x {kind}",
                              common.command_line(), table,
                              notes=("FLOPs per device and step from XLA's cost analysis of the compiled "
                                     "(partitioned) step; matmul rate measured with a float32 8192x8192 matmul "
                                     "at default precision on the same device."))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks sharding", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "gpu", "tpu"], default="cpu")
    p.add_argument("--devices", type=int, default=8, help="cpu: simulated devices of the large mesh")
    p.add_argument("--model", choices=sorted(MODELS), default="mlp", help="cpu: the model")
    p.add_argument("--models", default="mlp,conv", help="gpu/tpu: comma-separated models")
    p.add_argument("--batch", type=int, default=128, help="cpu: global batch")
    p.add_argument("--per-device-batch", type=int, default=256, help="gpu/tpu: examples per device")
    p.add_argument("--params", choices=["replicated", "fsdp"], default="replicated")
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3, help="repeats; the median step time is reported")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(time_steps(args.worker, args.model, args.batch, args.steps, args.repeats, args.params)))
    elif args.device == "cpu":
        run_cpu(args)
    else:
        run_accelerator(args)
