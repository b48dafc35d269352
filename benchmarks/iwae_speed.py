"""IWAE evaluation speed: the test log-likelihood with k=5000 importance samples (Burda et al. 2016) on 1,000 test
images, MLP VAE 784-512-256-32 (ReLU, Bernoulli), side by side in one run:

- ``jaxvae``: ``jaxvae.evaluation.likelihood.make_iwae_evaluator`` with its defaults (what ``jaxvae evaluate``
  runs);
- ``plain-jax``: a hand-written batched, jitted JAX evaluation (no Flax, no jaxvae);
- ``torch-iwae``: a batched plain-PyTorch evaluation under ``torch.no_grad``;
- ``pythae-nll``: pythae's ``VAE.get_nll`` (one image at a time, 100 samples per pass).

Every variant runs in a fresh process; images/s exclude compilation (reported separately). The matmul ceiling is
measured in the same run: the fastest rate of the decoder's three matrix products in XLA on this machine (with
XLA's default options and with jaxvae's evaluation options, at 2,500 and 10,000 rows), divided by the FLOPs one
image needs (5000 decoder passes plus one encoder pass). Speed does not depend on the weights, so each
variant uses its framework's default initialisation of the same architecture.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common

HIDDEN, LATENT, D = (512, 256), 32, 784
ENC_SIZES = [D, *HIDDEN, 2 * LATENT]
DEC_SIZES = [LATENT, *reversed(HIDDEN), D]
VARIANTS = ("jaxvae", "plain-jax", "torch-iwae", "pythae-nll")


def _matmul_flops(sizes: list[int]) -> int:
    return sum(2 * a * b for a, b in itertools.pairwise(sizes))


def flops_per_image(num_samples: int) -> int:
    return num_samples * _matmul_flops(DEC_SIZES) + _matmul_flops(ENC_SIZES)


def test_images(n: int, data_dir: str | None) -> tuple[np.ndarray, str]:
    """The first ``n`` statically binarized MNIST test images when the files exist, else random binary images."""
    if data_dir and Path(data_dir).exists():
        from jaxvae import config, runs

        cfg = config.apply_overrides(config.get_preset("binarized-mnist"), [f"data.dir={data_dir}"])
        return np.asarray(runs.load_run_dataset(cfg).split("test")[:n], np.float32), "binarized MNIST test"
    rng = np.random.default_rng(0)
    return (rng.uniform(size=(n, 28, 28, 1)) > 0.5).astype(np.float32), "random binary 28x28 images"


def bench_jaxvae(data: np.ndarray, num_samples: int) -> dict:
    import jax

    from jaxvae import config
    from jaxvae.evaluation import likelihood as evaluate
    from jaxvae.models import factory

    cfg = config.apply_overrides(config.get_preset("binarized-mnist"),
                                 [f"model.latent_dim={LATENT}", f"model.hidden={','.join(map(str, HIDDEN))}"])
    model = factory.build_model(cfg, data.shape[1:])
    params = jax.jit(model.init)(jax.random.key(0))
    estimate = evaluate.make_iwae_evaluator(model, num_samples=num_samples)
    t0 = time.perf_counter()
    estimate(params, data[:1], jax.random.key(1))  # compiles (one padded batch)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = estimate(params, data, jax.random.key(1))
    seconds = time.perf_counter() - t0
    per_batch = seconds / math.ceil(len(data) / 100)
    return {"images_per_sec": len(data) / seconds, "seconds": seconds, "compile_seconds": first - per_batch,
            "mean_log_px": est.mean}


def bench_plain_jax(data: np.ndarray, num_samples: int, batch: int = 20, chunk: int = 500) -> dict:
    """The evaluation as a JAX user would write it by hand: B images x a chunk of samples per scan step (the
    largest divisor of ``num_samples`` up to ``chunk``)."""
    import jax
    import jax.numpy as jnp

    chunk = math.gcd(num_samples, chunk)
    key = jax.random.key(0)

    def init(key, sizes):
        return [{"w": jax.random.normal(jax.random.fold_in(key, i), (a, b)) / math.sqrt(a), "b": jnp.zeros(b)}
                for i, (a, b) in enumerate(itertools.pairwise(sizes))]

    def net(layers, h):
        for i, layer in enumerate(layers):
            h = h @ layer["w"] + layer["b"]
            h = jax.nn.relu(h) if i < len(layers) - 1 else h
        return h

    params = {"enc": init(jax.random.fold_in(key, 0), ENC_SIZES),
              "dec": init(jax.random.fold_in(key, 1), DEC_SIZES)}

    @jax.jit
    def log_px(params, x, key):  # x [B, 784]
        mu, log_sigma = jnp.split(net(params["enc"], x), 2, axis=-1)

        def body(running, c):
            eps = jax.random.normal(jax.random.fold_in(key, c), (chunk, *mu.shape))
            z = mu + jnp.exp(log_sigma) * eps
            logits = net(params["dec"], z)
            log_lik = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
            log_w = log_lik - 0.5 * jnp.sum(z**2, -1) + 0.5 * jnp.sum(eps**2, -1) + jnp.sum(log_sigma, -1)
            return jnp.logaddexp(running, jax.nn.logsumexp(log_w, 0)), None

        total, _ = jax.lax.scan(body, jnp.full(x.shape[0], -jnp.inf), jnp.arange(num_samples // chunk))
        return total - math.log(num_samples)

    flat = data.reshape(len(data), -1)
    t0 = time.perf_counter()
    log_px(params, flat[:batch], key).block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = [log_px(params, flat[i:i + batch], jax.random.fold_in(key, i)) for i in range(0, len(flat), batch)]
    mean = float(jnp.concatenate(out).mean())
    seconds = time.perf_counter() - t0
    return {"images_per_sec": len(data) / seconds, "seconds": seconds,
            "compile_seconds": first - seconds * batch / len(data), "mean_log_px": mean}


def measure_matmul_rate(rows: int = 10_000, repeats: int = 5, compiler_options: dict | None = None) -> float:
    """GFLOP/s of the decoder's matrix products in XLA (no activations, no likelihood): the ceiling's rate."""
    import jax

    key = jax.random.key(0)
    ws = [jax.random.normal(jax.random.fold_in(key, i), (a, b)) / math.sqrt(a)
          for i, (a, b) in enumerate(itertools.pairwise(DEC_SIZES))]
    z = jax.random.normal(key, (rows, LATENT))

    def chain(z):
        for w in ws:
            z = z @ w
        return z

    f = jax.jit(chain, compiler_options=compiler_options)
    f(z).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(z).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return rows * _matmul_flops(DEC_SIZES) / best / 1e9


def matmul_rates() -> dict[str, float]:
    """The decoder matmul rate with XLA's default options and with the options jaxvae's evaluation compiles with
    (on CPU: YNNPACK fusions off), each at 2,500 and 10,000 rows; the ceiling uses the fastest of them."""
    from jaxvae.evaluation import likelihood as evaluate

    settings = {"default": None}
    if (options := evaluate.eval_compiler_options()) is not None:
        settings["eval-options"] = options
    rates = {f"{name}@{rows}": measure_matmul_rate(rows, compiler_options=opts)
             for name, opts in settings.items() for rows in (2_500, 10_000)}
    return {"gflops": max(rates.values()), "rates": rates}


def _single(kind: str, data_path: Path, num_samples: int) -> dict:
    data = np.load(data_path)
    if kind == "jaxvae":
        out = bench_jaxvae(data, num_samples)
    elif kind == "plain-jax":
        out = bench_plain_jax(data, num_samples)
    elif kind == "matmul-rate":
        out = matmul_rates()
    else:
        raise ValueError(kind)
    import jax

    out["device"] = str(jax.devices()[0].platform)
    out["peak_rss_mib"] = common.peak_rss_mib()
    return out


def _env(device: str) -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cuda" if device == "gpu" else "cpu"
    return env


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks iwae_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-images", type=int, default=1000, help="test images evaluated (default 1000)")
    p.add_argument("--pythae-images", type=int, default=200,
                   help="pythae's get_nll costs the same per image; time it on this many (default 200)")
    p.add_argument("--num-samples", type=int, default=5000, help="importance samples k per image (default 5000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is reported")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: JAX on CUDA (JAX_PLATFORMS=cuda) and PyTorch on cuda; needs both installed for GPU")
    p.add_argument("--data-dir", default=str(common.SHARED_DATA / "binarized_mnist"),
                   help="statically binarized MNIST (random binary images when absent; speed does not depend on "
                        "the pixels)")
    p.add_argument("--torch-python", default=str(common.HERE / ".venv-torch" / "bin" / "python"),
                   help="python of the PyTorch benchmark environment (make bench-torch-env); '' to skip")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    p.add_argument("--single", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:
        print(json.dumps(_single(args.single, Path(args.data), args.num_samples)))
        return

    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    torch_python = args.torch_python if args.torch_python and Path(args.torch_python).exists() else None
    if not torch_python:
        dropped = [v for v in variants if v in ("torch-iwae", "pythae-nll")]
        variants = [v for v in variants if v not in dropped]
        if dropped:
            print(f"(no PyTorch environment at {args.torch_python!r}: skipping {dropped}; `make bench-torch-env`)")
    data, source = test_images(args.num_images, args.data_dir)
    results: dict[str, list[dict]] = {v: [] for v in [*variants, "matmul-rate"]}
    with tempfile.TemporaryDirectory() as tmp:
        data_path, small_path = Path(tmp) / "images.npy", Path(tmp) / "images-pythae.npy"
        np.save(data_path, data, allow_pickle=False)
        np.save(small_path, data[:args.pythae_images], allow_pickle=False)
        kinds = [*variants, "matmul-rate"]
        for r in range(args.repeats):
            for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:  # rotate the order every repeat
                if kind in ("torch-iwae", "pythae-nll"):
                    path = small_path if kind == "pythae-nll" else data_path
                    cmd = [torch_python, str(common.HERE / "torch_bench.py"), "--kind", kind, "--batch", "20",
                           "--chunk", "500", "--num-samples", str(args.num_samples), "--device", args.device,
                           "--data", str(path)]
                    res = common.run_json_subprocess(cmd)
                else:
                    cmd = [sys.executable, "-m", "benchmarks.iwae_speed", "--single", kind, "--data",
                           str(data_path), "--num-samples", str(args.num_samples)]
                    res = common.run_json_subprocess(cmd, env=_env(args.device))
                results[kind].append(res)
                shown = (f"{res['gflops']:.0f} GFLOP/s" if kind == "matmul-rate" else
                         f"{res['images_per_sec']:.2f} images/s  mean log p(x) {res['mean_log_px']:.2f}")
                print(f"repeat {r + 1}/{args.repeats} {kind:12s} {shown}", flush=True)

    gflops = common.median([x["gflops"] for x in results["matmul-rate"]])
    rate_text = ", ".join(f"{k} {common.median([x['rates'][k] for x in results['matmul-rate']]):.0f}"
                          for k in results["matmul-rate"][0]["rates"])
    ceiling = gflops * 1e9 / flops_per_image(args.num_samples)
    ref = common.median_known([x["images_per_sec"] for x in results.get("pythae-nll", [])])
    header = ("| variant | images/s (median) | min | max | compile s | peak RSS MiB | vs pythae get_nll | "
              "% of matmul ceiling |\n|---|---|---|---|---|---|---|---|")
    fmt = common.fmt

    def vs_pythae(value: float | None) -> str:
        r = common.ratio(value, ref)
        return "n/a (pythae not run)" if r is None else f"{r:.2f}x"

    lines = []
    for kind in variants:
        ips = [x["images_per_sec"] for x in results[kind]]
        med = common.median(ips)
        lines.append(f"| {kind} | {med:.2f} | {min(ips):.2f} | {max(ips):.2f} | "
                     f"{fmt(common.median_known([x['compile_seconds'] for x in results[kind]]), '.2f')} | "
                     f"{fmt(common.median_known([x['peak_rss_mib'] for x in results[kind]]))} | "
                     f"{vs_pythae(med)} | {100 * med / ceiling:.0f}% |")
    lines.append(f"| matmul ceiling | {ceiling:.2f} | | | | | {vs_pythae(ceiling)} | 100% |")
    table = "\n".join([header, *lines])
    print(table)
    if not args.no_record:
        notes = (f"k={args.num_samples} on {args.num_images:,} {source} (pythae's get_nll timed on the first "
                 f"{args.pythae_images}; its cost per image is constant), device {args.device}. "
                 f"{args.repeats} repeats per variant, each in a fresh process, in rotating order. The matmul "
                 f"ceiling: the decoder's three matrix products ran at a median {gflops:.0f} GFLOP/s in XLA in "
                 f"this run (the fastest of XLA's default options and jaxvae's evaluation options, at 2,500 and "
                 f"10,000 rows; per setting: {rate_text}); one image needs "
                 f"{flops_per_image(args.num_samples) / 1e9:.2f} GFLOP.")
        common.record_results("iwae_speed" if args.device == "cpu" else f"iwae_speed-{args.device}",
                              f"IWAE evaluation speed, k={args.num_samples}, MLP VAE 784-512-256-32",
                              common.command_line(), table, notes)


if __name__ == "__main__":
    main()
