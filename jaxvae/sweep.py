"""Many models in ONE compiled program: a grid over KL weights, schedules, free bits or seeds.

All models share the architecture, the optimizer and the batches; they differ in their parameters, random
streams and the scheduled weights of their objective (:attr:`jaxvae.builders.Objective.hyper`). The train states
are stacked on a leading axis ``[N, ...]`` and one step is ``jax.vmap``-ed over them, so the per-step overhead
(dispatch, data movement, the Python loop) is paid once for the whole grid, and the matmuls of all models run
batched. Each model's results equal those of a separate ``jaxvae train`` run with the same config (which the
sweep writes into the model's folder, ``train.data_seed`` included so that the batch order matches).

Outputs in the sweep's directory: ``models/<i>-<label>/{config,summary}.json`` and ``metrics.jsonl``,
``sweep.json`` (every model's settings and results; failed models are listed, never dropped) and
``rate_distortion.png`` (rate = KL, distortion = reconstruction loss, ELBO iso-lines).

On a mesh (``mesh.shape``, see :mod:`jaxvae.sharding`) the stacked-model axis ``[N, ...]`` is split over the
``data`` axis when its size divides ``N``: each device trains ``N / devices`` models on the (replicated) batch.
Otherwise every device holds all models (a note says so). A sweep runs in one process.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import config as config_lib
from jaxvae import data as data_lib
from jaxvae import diagnostics, evaluate, report, sharding
from jaxvae.builders import build_model, build_objective, build_optimizer
from jaxvae.checkpoint import Checkpointer
from jaxvae.config import Config
from jaxvae.errors import ConfigError
from jaxvae.loop import _progress_bar, chunk_end, data_seed, load_run_dataset, params_sha256
from jaxvae.model import count_params
from jaxvae.train import init_train_state, jit_train_chunk, make_train_chunk, make_train_step_with_hyper
from jaxvae.writers import MetricWriter, atomic_write_json

# Keys whose values only change an objective's scheduled weights (or the seed), so models that differ in them
# can share one compiled program.
SWEEPABLE = (
    "objective.beta", "objective.beta_start", "objective.beta_schedule", "objective.warmup_steps",
    "objective.num_cycles", "objective.cycle_ratio", "objective.free_bits", "objective.capacity",
    "objective.capacity_steps", "objective.gamma", "objective.tc_alpha", "objective.tc_gamma",
    "objective.mmd_alpha", "objective.mmd_lambda", "train.seed",
)


def parse_over(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["objective.beta=0.5,1,2"]`` -> ``{"objective.beta": ["0.5", "1", "2"]}``."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--over {spec!r} is not of the form KEY=V1,V2,... (e.g. objective.beta=0.5,1,2).")
        key, values = spec.split("=", 1)
        out[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
        if not out[key.strip()]:
            raise ConfigError(f"--over {spec!r} lists no values.")
    return out


def expand_grid(base: Config, over: Mapping[str, Sequence[str]], seeds: int = 1) -> list[tuple[str, Config]]:
    """The configs of the grid (cartesian product of ``over``, times ``seeds`` seeds) with short labels.

    Seeds are ``train.seed + s`` for ``s < seeds``; every model keeps the base's batch order
    (``train.data_seed``). Keys that cannot share a compiled program are refused with the list of those that can.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1; got {seeds}.")
    for key in over:
        if key not in SWEEPABLE:
            hint = " (a controller's own settings are not sweepable)" if key.startswith("objective.") else ""
            raise ConfigError(f"{key} cannot vary within one sweep: models in a sweep share their architecture, "
                              f"optimizer and batches{hint}. Sweepable keys: {', '.join(SWEEPABLE)}. Run separate "
                              "`jaxvae train` runs (or several sweeps) for other keys.")
    if base.objective.controller != "none" and any(k != "train.seed" for k in over):
        raise ConfigError("With objective.controller set, the controller chooses beta; only train.seed can be "
                          "swept.")
    base = config_lib.apply_overrides(base, {"train.data_seed": data_seed(base)})
    keys = list(over)
    grid = []
    for values in itertools.product(*(over[k] for k in keys)):
        for s in range(seeds):
            overrides = dict(zip(keys, values))
            if "train.seed" not in overrides:
                overrides["train.seed"] = str(base.train.seed + s)
            elif seeds > 1:
                raise ConfigError("Use either --over train.seed=... or --seeds N, not both.")
            cfg = config_lib.apply_overrides(base, list(f"{k}={v}" for k, v in overrides.items()))
            label = "-".join(f"{k.split('.')[-1]}{v}" for k, v in overrides.items())
            grid.append((label, cfg))
    return grid


def _index(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tree)


def run_sweep(base: Config, over: Mapping[str, Sequence[str]], workdir: str | Path, *, seeds: int = 1,
              progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains the grid as one program, evaluates every model, writes the sweep directory; returns sweep.json."""
    grid = expand_grid(base, over, seeds)
    labels, configs = [g[0] for g in grid], [g[1] for g in grid]
    base = configs[0]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ds = load_run_dataset(base)
    model = build_model(base, ds.event_shape)
    n_train, bs = ds.train.shape[0], base.train.batch_size
    if bs > n_train:
        raise ConfigError(f"train.batch_size={bs} is larger than the {n_train} training examples.")
    spe = n_train // bs
    total = base.train.steps or base.train.epochs * spe
    optimizer = build_optimizer(base, total)
    objectives = [build_objective(c, model, total, dataset_size=n_train) for c in configs]
    n = len(configs)

    if jax.process_count() > 1:
        raise ConfigError(f"jaxvae sweep runs in one process (it uses all devices of one host); this run has "
                          f"{jax.process_count()} processes. Run one sweep per host, each with part of the grid.")
    mesh = sharding.mesh_from_config(base)
    if sharding.data_axis_size(mesh) > 1 and not sharding.stacked_axis_is_sharded(n, mesh):
        log(f"Note: the {n} models do not split evenly over the {sharding.data_axis_size(mesh)} devices of the "
            f"mesh's data axis, so every device trains all of them (replicated). Sweep a multiple of "
            f"{sharding.data_axis_size(mesh)} models to spread them over the devices.")
    keys = jnp.stack([jax.random.key(c.train.seed) for c in configs])
    # The stacked states are created directly in their shardings (models over `data` when that divides N).
    states, state_sh = sharding.init_sharded(
        jax.vmap(lambda k: init_train_state(model, optimizer, objectives[0], k)),
        lambda shapes: sharding.stacked_shardings(shapes, mesh), keys)
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=base.train.keep_checkpoints)
    start = ckpt.latest_step() or 0
    if start:
        states = ckpt.restore(states)
        log(f"Resuming the sweep in {workdir} from step {start}/{total}.")

    single = make_train_step_with_hyper(model, objectives[0], optimizer,
                                        dynamic_binarization=ds.dynamic_binarization)

    def sweep_step(states, batch):
        step = states.step[0]
        hypers = [o.hyper(step) for o in objectives]
        hyper = {k: jnp.stack([jnp.asarray(h[k], jnp.float32) for h in hypers]) for k in hypers[0]}
        return jax.vmap(single, in_axes=(0, None, 0))(states, batch, hyper)

    model_dirs = [workdir / "models" / f"{i:02d}-{label}" for i, label in enumerate(labels)]
    writers = []
    for d, c in zip(model_dirs, configs):
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "config.json", config_lib.to_dict(c))
        writers.append(MetricWriter(d, resume_step=start if start else None, tensorboard=False))
    atomic_write_json(workdir / "sweep_config.json",
                      {"base": config_lib.to_dict(base), "over": dict(over), "seeds": seeds, "labels": labels})
    log(f"Sweep of {n} models ({count_params(_index(states.params, 0)):,} parameters each) on {ds.name}, "
        f"{total:,} steps of batch {bs}, one compiled program, {sharding.describe(mesh)}.")

    train_data = jax.device_put(ds.train, sharding.replicated(mesh))
    chunk_fns: dict[int, Callable] = {}
    bar = _progress_bar(total, start, enabled=progress)
    step, perm_epoch, perm = start, -1, None
    t_train = time.perf_counter()
    log_every = base.train.log_every
    try:
        while step < total:
            end = chunk_end(step, spe, log_every, total)
            length, epoch = end - step, step // spe
            if epoch != perm_epoch:
                perm = jnp.asarray(data_lib.epoch_permutation(data_seed(base), epoch, n_train).astype(np.int32))
                perm_epoch = epoch
            if length not in chunk_fns:
                chunk_fns[length] = jit_train_chunk(make_train_chunk(sweep_step, bs, length), state_sh, mesh)
            t0 = time.perf_counter()
            states, metrics = chunk_fns[length](states, train_data, perm, jnp.int32(step % spe))
            metrics = jax.device_get(metrics)
            seconds = time.perf_counter() - t0
            step = end
            for i, w in enumerate(writers):
                record = {"step": step, "epoch": round(step / spe, 4), **{k: v[i] for k, v in metrics.items()},
                          "examples_per_sec": length * bs / seconds}
                record.setdefault("beta", 1.0)
                w.write(record)
            bar.update(length)
            finite_kl = metrics["kl"][np.isfinite(metrics["kl"])]
            if finite_kl.size:
                bar.set_postfix(kl=f"{finite_kl.min():.1f}..{finite_kl.max():.1f}")
            if step == total or (base.train.checkpoint_every and step % base.train.checkpoint_every < length):
                ckpt.save(states, step=step)
    finally:
        bar.close()
        for w in writers:
            w.close()
        ckpt.close()
    train_seconds = time.perf_counter() - t_train

    return _finish(workdir, ds, model, configs, labels, model_dirs, states, train_seconds, base, over, log)


def _finish(workdir, ds, model, configs, labels, model_dirs, states, train_seconds, base, over, log):
    max_bad = base.optimizer.max_consecutive_nonfinite
    evaluator = evaluate.make_elbo_evaluator(model, batch_size=base.eval.batch_size)
    iwae = evaluate.make_iwae_evaluator(model, num_samples=base.eval.num_samples, batch_size=base.eval.batch_size)
    test = ds.test
    if base.eval.max_examples and test.shape[0] > base.eval.max_examples:
        idx = np.random.default_rng(data_seed(base)).choice(test.shape[0], base.eval.max_examples, False)
        nll_data = test[np.sort(idx)]
    else:
        nll_data = test
    results = []
    for i, (cfg, label, d) in enumerate(zip(configs, labels, model_dirs)):
        params = _index(states.params, i)
        key = jax.random.key(cfg.train.seed + 2)
        bad = int(states.nonfinite_consecutive[i])
        terms = evaluator(params, test, jax.random.fold_in(key, 0))
        est = iwae(params, nll_data, jax.random.fold_in(key, 1))
        latent = diagnostics.latent_summary(model, params, test, jax.random.fold_in(key, 2))
        failed = bad >= max_bad or not all(math.isfinite(terms[k]) for k in ("elbo", "recon", "kl"))
        summary = {
            "label": label, "model_index": i, "failed": failed, "steps": int(states.step[i]),
            "settings": {k: config_lib._get(cfg, k) for k in [*over, "train.seed"]},
            "test_elbo": terms["elbo"], "test_recon": terms["recon"], "test_kl": terms["kl"],
            "kl_per_dim": terms.get("kl_per_dim"),
            "test_nll_iwae": -est.mean, "test_nll_iwae_stderr": est.standard_error,
            "nll_num_samples": est.num_samples, "nll_num_examples": int(nll_data.shape[0]),
            "active_units": latent["active_units"], "mutual_information": latent["mutual_information"],
            "nonfinite_updates": int(states.nonfinite_total[i]), "params_sha256": params_sha256(params),
            "train_seconds": train_seconds, "trained_in_sweep_of": len(configs),
        }
        atomic_write_json(d / "summary.json", summary)
        results.append(summary)
    sweep = {"dataset": ds.name, "num_models": len(configs), "train_seconds": train_seconds,
             "failed": [r["label"] for r in results if r["failed"]], "models": results}
    atomic_write_json(workdir / "sweep.json", sweep)
    report.plot_rate_distortion(results, workdir / "rate_distortion.png", title=f"{ds.name}: {', '.join(over)}")
    log(format_sweep(sweep, workdir))
    return sweep


def format_sweep(sweep: dict[str, Any], workdir: Path) -> str:
    rows = [("model", "ELBO", "recon", "KL", f"NLL k={sweep['models'][0]['nll_num_samples']}", "AU", "")]
    for r in sweep["models"]:
        rows.append((r["label"], f"{r['test_elbo']:.2f}", f"{r['test_recon']:.2f}", f"{r['test_kl']:.2f}",
                     f"{r['test_nll_iwae']:.2f}", str(r["active_units"]),
                     "FAILED (non-finite)" if r["failed"] else ""))
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"{sweep['num_models']} models trained together in {sweep['train_seconds']:.1f} s; "
                 f"results in {workdir / 'sweep.json'}, plot in {workdir / 'rate_distortion.png'}")
    if sweep["failed"]:
        lines.append(f"FAILED models (non-finite losses; their last finite parameters were evaluated): "
                     f"{', '.join(sweep['failed'])}")
    return "\n".join(lines)

