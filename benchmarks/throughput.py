"""Training throughput: jaxvae's real training path (scan and host loops) against a hand-written JAX loop and,
in the same run, the PyTorch peers (plain eager loop and pythae's BaseTrainer, in their own environment).

Models (ReLU, Bernoulli likelihood, Adam 1e-3, MNIST-shaped data [N, 28, 28, 1], latent 32):
- ``mlp``: MLP VAE 784-512-256-32;
- ``conv``: jaxvae's ``model.network=conv`` (3x3 stride-2 convolutions with 32 and 64 channels, dense 256), and the
  same layers in PyTorch (see torch_bench.py). The hand-written JAX loops exist for the MLP only.
Examples/s are measured in steady state (chunks/epochs that compiled are excluded); compile seconds separately.
jaxvae reads the data as a ``.npz`` with an explicit (small) test split, so that it trains on every example, as
the other variants do, and its epoch is exactly ``--steps-per-epoch`` steps, each a logging interval: every epoch
after the first runs the same compiled chunk. A figure a run could not measure (one epoch gives no steady state)
is reported as n/a with the reason. ``--device gpu`` runs the same scripts with JAX on CUDA and PyTorch on cuda.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common

HIDDEN = (512, 256)
LATENT = 32
STEPS_PER_EPOCH = 100  # default; --steps-per-epoch changes it


def synthetic_mnist(n: int, seed: int = 0) -> np.ndarray:
    """Grey images in [0, 1] with MNIST's shape; throughput does not depend on the values."""
    return np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)).astype(np.float32)


def write_data(path: Path, train: np.ndarray, test_rows: int) -> Path:
    """``path`` (a ``.npy``, what the PyTorch and hand-written JAX variants read) and the ``.npz`` beside it that
    jaxvae reads: the same training array with an explicit test split, so that jaxvae holds nothing out of
    ``train`` (a bare ``.npy`` loses 10% to a test split, and then its epoch is no multiple of the logging
    interval)."""
    np.save(path, train, allow_pickle=False)
    np.savez(path.with_suffix(".npz"), train=train, test=train[:test_rows])
    return path


def bench_jaxvae(data_path: Path, batch: int, epochs: int, loop_kind: str, workdir: Path,
                 network: str = "mlp", conv_impl: str = "auto") -> dict:
    """The real path: config -> setup_run -> train_loop, data read from a user ``.npz`` file (``train`` and
    ``test``); one metric record per epoch, so every epoch is one chunk of the same length and only the first
    compiles."""
    from jaxvae import config

    with np.load(data_path) as f:
        steps_per_epoch = f["train"].shape[0] // batch
    sets = [f"data.name={data_path}", f"model.network={network}", f"model.latent_dim={LATENT}",
            f"model.hidden={','.join(map(str, HIDDEN))}", f"train.batch_size={batch}", f"train.epochs={epochs}",
            f"train.loop={loop_kind}", f"train.log_every={steps_per_epoch}", "train.checkpoint_every=0",
            "train.eval_every=1000000", "data.valid_size=0", f"model.conv_impl={conv_impl}"]
    return common.time_train_loop(config.apply_overrides(config.get_preset("mnist"), sets), workdir)


def _plain_jax_vae(batch: int, seed: int = 0):
    """A hand-written pure-JAX MLP VAE (no Flax, no jaxvae): params as a dict, Bernoulli, analytic KL."""
    import jax
    import jax.numpy as jnp
    import optax

    sizes_enc = [784, *HIDDEN, 2 * LATENT]
    sizes_dec = [LATENT, *reversed(HIDDEN), 784]
    key = jax.random.key(seed)

    def init_mlp(key, sizes):
        layers = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            w = jax.random.normal(jax.random.fold_in(key, i), (a, b)) * jnp.sqrt(1.0 / a)
            layers.append({"w": w, "b": jnp.zeros((b,))})
        return layers

    def mlp(layers, x):
        for i, layer in enumerate(layers):
            x = x @ layer["w"] + layer["b"]
            if i < len(layers) - 1:
                x = jax.nn.relu(x)
        return x

    params = {"enc": init_mlp(jax.random.fold_in(key, 0), sizes_enc),
              "dec": init_mlp(jax.random.fold_in(key, 1), sizes_dec)}
    opt = optax.adam(1e-3)

    def loss_fn(params, x, key):
        x = x.reshape(x.shape[0], -1)
        mu, log_sigma = jnp.split(mlp(params["enc"], x), 2, axis=-1)
        z = mu + jnp.exp(log_sigma) * jax.random.normal(key, mu.shape)
        logits = mlp(params["dec"], z)
        rec = -jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
        kl = jnp.sum(0.5 * (mu**2 + jnp.exp(2 * log_sigma) - 1) - log_sigma, -1)
        return jnp.mean(rec + kl)

    def step(carry, x):
        params, opt_state, key, i = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, x, jax.random.fold_in(key, i))
        updates, opt_state = opt.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state, key, i + 1), loss

    return (params, opt.init(params), key, jnp.int32(0)), step


def bench_plain_jax_host(data: np.ndarray, batch: int, epochs: int) -> dict:
    import jax

    carry, step = _plain_jax_vae(batch)
    jstep = jax.jit(step, donate_argnums=0)
    n_steps = data.shape[0] // batch
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    carry, loss = jstep(carry, data[:batch])
    loss.block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(epochs - 1):
        perm = rng.permutation(data.shape[0])
        for b in range(n_steps):
            carry, loss = jstep(carry, data[perm[b * batch:(b + 1) * batch]])
    loss.block_until_ready()
    seconds = time.perf_counter() - t0
    if epochs < 2:
        return _no_steady_state(epochs)
    eps = (epochs - 1) * n_steps * batch / seconds
    return {"examples_per_sec": eps, "compile_seconds": first - batch / eps, "peak_rss_mib": common.peak_rss_mib()}


def _no_steady_state(epochs: int) -> dict:
    return {"examples_per_sec": None, "compile_seconds": None, "peak_rss_mib": common.peak_rss_mib(),
            "why": f"no steady state in {epochs} epoch (the first epoch compiles); pass --epochs 2 or more"}


def bench_plain_jax_scan(data: np.ndarray, batch: int, epochs: int) -> dict:
    import jax
    import jax.numpy as jnp

    carry, step = _plain_jax_vae(batch)
    n_steps = data.shape[0] // batch
    device_data = jax.device_put(data)

    @jax.jit
    def epoch(carry, perm):
        xs = jnp.take(device_data, perm[: n_steps * batch], axis=0).reshape(n_steps, batch, *data.shape[1:])
        return jax.lax.scan(step, carry, xs)

    epoch = jax.jit(epoch, donate_argnums=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    carry, losses = epoch(carry, jnp.asarray(rng.permutation(data.shape[0])))
    losses.block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(epochs - 1):
        carry, losses = epoch(carry, jnp.asarray(rng.permutation(data.shape[0])))
    losses.block_until_ready()
    seconds = time.perf_counter() - t0
    if epochs < 2:
        return _no_steady_state(epochs)
    eps = (epochs - 1) * n_steps * batch / seconds
    return {"examples_per_sec": eps, "compile_seconds": first - n_steps * batch / eps,
            "peak_rss_mib": common.peak_rss_mib()}


def _single(kind: str, arch: str, batch: int, epochs: int, data_path: Path) -> dict:
    data = np.load(data_path)
    with tempfile.TemporaryDirectory() as tmp:
        if kind.startswith("jaxvae-"):
            conv_impl = "xla" if kind.endswith("-xlaconv") else "auto"
            out = bench_jaxvae(data_path.with_suffix(".npz"), batch, epochs, kind.split("-")[1],
                               Path(tmp) / "run", arch, conv_impl)
        elif kind == "plain-jax-host":
            out = bench_plain_jax_host(data, batch, epochs)
        elif kind == "plain-jax-scan":
            out = bench_plain_jax_scan(data, batch, epochs)
        else:
            raise ValueError(kind)
    import jax

    out["device"] = jax.devices()[0].platform
    return out


JAX_KINDS = ["jaxvae-scan", "jaxvae-host", "plain-jax-host", "plain-jax-scan"]
PLAIN_KINDS = ["plain-jax-host", "plain-jax-scan"]  # hand-written for the MLP only
# Conv only, not run by default: jaxvae with XLA's native convolutions (model.conv_impl=xla) instead of the
# matmul convolutions that model.conv_impl=auto picks on CPU (jaxvae.models.convops).
XLACONV_KINDS = ["jaxvae-scan-xlaconv", "jaxvae-host-xlaconv"]
TORCH_KINDS = ["torch-eager", "pythae-trainer"]


def _measure(kind: str, arch: str, batch: int, args: argparse.Namespace, data_path: Path,
             torch_python: str | None) -> dict:
    """One measurement in a fresh process, so that one variant's caches and memory do not affect another."""
    import os
    import sys

    if kind in TORCH_KINDS:
        cmd = [torch_python, str(common.HERE / "torch_bench.py"), "--kind", kind, "--arch", arch, "--batch",
               str(batch), "--epochs", str(args.epochs), "--steps-per-epoch", str(_steps(arch, args)),
               "--device", args.device, "--data", str(data_path)]
        return common.run_json_subprocess(cmd)
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--single", kind, "--arch", arch, "--batch", str(batch),
           "--epochs", str(args.epochs), "--data", str(data_path)]
    env = dict(os.environ, JAX_PLATFORMS="cuda" if args.device == "gpu" else "cpu")
    return common.run_json_subprocess(cmd, env=env)


def _steps(arch: str, args: argparse.Namespace) -> int:
    return args.steps_per_epoch or (STEPS_PER_EPOCH if arch == "mlp" else 25)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="mlp", help="comma-separated: mlp, conv")
    p.add_argument("--batch-sizes", default="128", help="comma-separated, e.g. 32,128,512")
    p.add_argument("--epochs", type=int, default=4,
                   help="epochs per run; the first one (compiling) is warm-up, so at least 2 give examples/s")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="default: 100 for mlp, 25 for conv")
    p.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is reported")
    p.add_argument("--variants", default=",".join(JAX_KINDS + TORCH_KINDS),
                   help="comma-separated subset of " + ", ".join(JAX_KINDS + XLACONV_KINDS + TORCH_KINDS))
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: JAX on CUDA (JAX_PLATFORMS=cuda) and PyTorch on cuda")
    p.add_argument("--torch-python", default=str(common.HERE / ".venv-torch" / "bin" / "python"),
                   help="python of the PyTorch benchmark environment (make bench-torch-env); '' to skip")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    p.add_argument("--single", help=argparse.SUPPRESS)
    p.add_argument("--arch", default="mlp", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:
        print(json.dumps(_single(args.single, args.arch, args.batch, args.epochs, Path(args.data))))
        return

    torch_python = args.torch_python if args.torch_python and Path(args.torch_python).exists() else None
    if args.torch_python and not torch_python:
        print(f"(no PyTorch environment at {args.torch_python}; run `make bench-torch-env` to compare)")
    chosen = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(chosen) - set(JAX_KINDS + XLACONV_KINDS + TORCH_KINDS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {JAX_KINDS + XLACONV_KINDS + TORCH_KINDS}")
    rows = []
    missing: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            for batch in [int(b) for b in args.batch_sizes.split(",")]:
                data_path = write_data(Path(tmp) / f"mnist-shaped-{arch}-{batch}.npy",
                                       synthetic_mnist(_steps(arch, args) * batch), batch)
                kinds = [k for k in chosen if (k not in TORCH_KINDS or torch_python)
                         and (arch == "mlp" or k not in PLAIN_KINDS)
                         and (arch == "conv" or k not in XLACONV_KINDS)]
                results: dict[str, list[dict]] = {k: [] for k in kinds}
                for r in range(args.repeats):
                    # Interleave the variants and rotate their order every repeat, so that drifts in machine
                    # load and any after-effect of one variant on the next hit all of them alike.
                    for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                        res = _measure(kind, arch, batch, args, data_path, torch_python)
                        results[kind].append(res)
                        why = f"  ({res['why']})" if res.get("why") else ""
                        print(f"{arch} batch {batch} repeat {r + 1}/{args.repeats} {kind:15s} "
                              f"{common.fmt(res['examples_per_sec']):>10} ex/s  "
                              f"compile {common.fmt(res['compile_seconds'], '.2f')} s{why}", flush=True)
                ref = common.median_known([x["examples_per_sec"] for x in results.get("pythae-trainer", [])])
                for kind in kinds:
                    eps = [x["examples_per_sec"] for x in results[kind] if x["examples_per_sec"] is not None]
                    med = common.median_known(eps)
                    rows.append((arch, batch, kind, med, min(eps, default=None), max(eps, default=None),
                                 common.median_known([x["compile_seconds"] for x in results[kind]]),
                                 common.median_known([x["peak_rss_mib"] for x in results[kind]]),
                                 common.ratio(med, ref)))
                    missing[f"{arch} batch {batch} {kind}"] = results[kind]
    header = ("| model | batch | variant | examples/s (median) | min | max | compile s | peak RSS MiB | "
              "vs pythae |\n|---|---|---|---|---|---|---|---|---|")
    fmt = common.fmt
    no_pythae = "n/a (pythae not run)"
    lines = [f"| {a} | {b} | {k} | {fmt(m)} | {fmt(lo)} | {fmt(hi)} | {fmt(c, '.2f')} | {fmt(rss)} | "
             f"{fmt(vp, '.2f', no_pythae)}{'' if vp is None else 'x'} |"
             for a, b, k, m, lo, hi, c, rss, vp in rows]
    table = "\n".join([header, *lines])
    print(table)
    reasons = common.missing_reasons(missing)
    if reasons:
        print(reasons)
    if not args.no_record:
        steps = ", ".join(f"{a}: {_steps(a, args)}" for a in args.archs.split(","))
        common.record_results(
            "throughput" if args.device == "cpu" else f"throughput-{args.device}",
            f"Training throughput ({args.archs} VAE, latent 32, Adam), device {args.device}",
            common.command_line(), table,
            f"{args.repeats} repeats per variant, each in a fresh process, interleaved in rotating order; "
            f"{args.epochs} epochs of ({steps}) steps, the first (compiling) epoch excluded from examples/s. "
            "jaxvae runs with its defaults (latent-health monitor on)." + (f" {reasons}" if reasons else ""))


if __name__ == "__main__":
    main()
