"""Many models in ONE compiled program: a grid over KL weights, schedules, free bits or seeds.

All models share the architecture, the optimizer and the batches; they differ in their parameters, random
streams and the scheduled weights of their objective (:attr:`jaxvae.objectives.losses.Objective.hyper`). The train
states are stacked on a leading axis ``[N, ...]`` and one step is ``jax.vmap``-ed over them, so the per-step
overhead (dispatch, data movement, the Python loop) is paid once for the whole grid, and the matmuls of all models
run batched. Each model's results equal those of a separate ``jaxvae train`` run with the same config (which the
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
from jaxvae import sharding
from jaxvae.catalog import sweepable_keys
from jaxvae.config import Config, data_seed
from jaxvae.data.batches import num_examples
from jaxvae.errors import ConfigError
from jaxvae.models.factory import ModelBuilder, build_model
from jaxvae.models.protocol import count_params
from jaxvae.objectives.factory import build_objective
from jaxvae.rundir import report
from jaxvae.rundir.checkpoint import Checkpointer
from jaxvae.rundir.writers import MetricWriter, atomic_write_json
from jaxvae.runs import results
from jaxvae.runs.run import load_run_dataset, model_config, run_summary, steps_of, validate_data, with_builder
from jaxvae.training.chunks import ChunkLoop, due, make_scan_chunk
from jaxvae.training.optimizers import build_optimizer, skip_threshold
from jaxvae.training.program import ProgramBuilder, build_program, init_program_state, make_program_step
from jaxvae.training.progress import preempted, progress_bar, stop_on_signals
from jaxvae.training.step import evaluation_params, jit_train_chunk, make_train_chunk

# Keys whose values only change an objective's scheduled weights (or the seed), so models that differ in them
# can share one compiled program (each objective declares its own in jaxvae.catalog.OBJECTIVES).
SWEEPABLE = sweepable_keys()


def parse_over(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["objective.beta=0.5,1,2"]`` -> ``{"objective.beta": ["0.5", "1", "2"]}``."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--over {spec!r} is not of the form KEY=V1,V2,... (e.g. objective.beta=0.5,1,2).")
        key, values = spec.split("=", 1)
        key = config_lib.canonical_key(key)
        out[key] = [v.strip() for v in values.split(",")]
        if not values.strip():
            raise ConfigError(f"--over {spec!r} lists no values.")
        if "" in out[key]:
            raise ConfigError(f"--over {spec!r} has an empty value (item {out[key].index('') + 1}); list the "
                              "values separated by single commas, e.g. --over objective.beta=0.5,1,2.")
    return out


def expand_grid(base: Config, over: Mapping[str, Sequence[str]], seeds: int = 1) -> list[tuple[str, Config]]:
    """The configs of the grid (cartesian product of ``over``, times ``seeds`` seeds) with short labels.

    Seeds are ``train.seed + s`` for ``s < seeds``; every model keeps the base's batch order
    (``train.data_seed``). Keys that cannot share a compiled program are refused with the list of those that can.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1; got {seeds}.")
    over = {config_lib.canonical_key(k): v for k, v in over.items()}
    for key in over:
        if key not in SWEEPABLE:
            hint = " (a controller's own settings are not sweepable)" if key.startswith("objective.") else ""
            raise ConfigError(f"{key} cannot vary within one sweep: models in a sweep share their architecture, "
                              f"optimizer and batches{hint}. Sweepable keys: {', '.join(SWEEPABLE)}. Run separate "
                              "`jaxvae train` runs (or several sweeps) for other keys.")
    if base.train.early_stopping.patience:
        raise ConfigError("train.early_stopping is not available in a sweep (its models train in lock step, so "
                          "none can stop alone); set train.early_stopping.patience=0, or train the models with "
                          "separate `jaxvae train` runs.")
    if base.train.aggressive.enabled:
        raise ConfigError("train.aggressive is not available in a sweep: each model's inner loop stops after its "
                          "own number of encoder updates and its phase ends at its own epoch, while a sweep "
                          "trains its models in lock step in one vmapped program; set "
                          "train.aggressive.enabled=false, or train the models with separate `jaxvae train` runs.")
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
            label = "-".join(f"{_short(k)}{v}" for k, v in overrides.items())
            grid.append((label, cfg))
    return grid


def _short(key: str) -> str:
    """A key's name in member labels: ``objective.beta`` -> ``beta``, ``objective.capacity.nats`` ->
    ``capacity_nats``."""
    return "_".join(key.split(".")[1:])


def _index(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tree)


def run_sweep(base: Config, over: Mapping[str, Sequence[str]], workdir: str | Path, *, seeds: int = 1,
              model: ModelBuilder | None = None, progress: bool = True,
              log: Callable[[str], None] = print, program: ProgramBuilder | None = None) -> dict[str, Any]:
    """Trains the grid as one program, evaluates every model, writes the sweep directory; returns sweep.json.

    Args:
      base: the config every model starts from; ``over`` ``{key: [values]}``: the grid (sweepable keys only, see
        :data:`SWEEPABLE`); ``seeds``: seeds per grid point.
      model: a user model builder, as in :func:`jaxvae.fit` (its reference is recorded in every member's
        ``config.json``).

    Every member folder ``models/<i>-<label>/`` is a complete run directory (``config.json``, a checkpoint of
    the final step, ``metrics.jsonl``, ``summary.json``, images), so ``jaxvae evaluate``/``sample``/``diagnose``,
    :func:`jaxvae.load_run` and ``jaxvae train --workdir MEMBER`` (to train it further alone) work on it.

    The sweep holds the lock of ``workdir`` while it runs (:func:`jaxvae.rundir.run_lock`; a second writer is
    refused), and a write failed for lack of space ends it with a :class:`~jaxvae.errors.DiskFullError`.
    """
    from jaxvae.rundir import lock as rundir

    with rundir.run_lock(workdir), rundir.disk_full_guard(workdir):
        return _run_sweep(base, over, Path(workdir), seeds=seeds, model=model, progress=progress, log=log,
                          program=program)


def _run_sweep(base: Config, over: Mapping[str, Sequence[str]], workdir: Path, *, seeds: int,
               model: ModelBuilder | None, progress: bool, log: Callable[[str], None],
               program: ProgramBuilder | None = None) -> dict[str, Any]:
    base = with_builder(base, model, log, program)
    grid = expand_grid(base, over, seeds)
    labels, configs = [g[0] for g in grid], [g[1] for g in grid]
    base = configs[0]
    ds = load_run_dataset(base)
    pure = build_model(model_config(base, ds), ds.event_shape, model)
    validate_data(pure, ds)
    spe, total = steps_of(base, ds)
    n_train, bs = num_examples(ds.train), base.train.batch_size
    optimizer = build_optimizer(base, total, spe)
    objectives = [build_objective(c, pure, total, dataset_size=n_train) for c in configs]
    # Every model's program (they differ only in their players' scheduled weights); the first one's step is run.
    programs = [build_program(c, pure, o, optimizer, program) for c, o in zip(configs, objectives)]
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
        jax.vmap(lambda k: init_program_state(pure, programs[0], k)),
        lambda shapes: sharding.stacked_shardings(shapes, mesh), keys)
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=base.train.keep_checkpoints)
    start = ckpt.latest_step() or 0
    if start:
        states = ckpt.restore(states)
        log(f"Resuming the sweep in {workdir} from step {start}/{total}.")
    ckpt.close()

    single = make_program_step(programs[0], dynamic_binarization=ds.dynamic_binarization,
                               skip_threshold=skip_threshold(base))

    def sweep_step(states, batch):
        step = states.step[0]
        hyper = jax.tree.map(lambda *h: jnp.stack([jnp.asarray(v, jnp.float32) for v in h]),
                             *[p.hyper(step) for p in programs])
        return jax.vmap(single, in_axes=(0, None, 0))(states, batch, hyper)

    model_dirs = [workdir / "models" / f"{i:02d}-{label}" for i, label in enumerate(labels)]
    for d, c in zip(model_dirs, configs):
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "config.json", config_lib.to_dict(c))
    atomic_write_json(workdir / "sweep_config.json",
                      {"base": config_lib.to_dict(base), "over": dict(over), "seeds": seeds, "labels": labels})
    log(f"Sweep of {n} models ({count_params(_index(states.params, 0)):,} parameters each) on {ds.name}, "
        f"{total:,} steps of batch {bs}, one compiled program, {sharding.describe(mesh)}.")
    t_train = time.perf_counter()
    states, steady = _train(states, state_sh, sweep_step, ds, base, workdir, model_dirs, mesh, start, total, spe,
                            progress)
    train_seconds = time.perf_counter() - t_train
    # The sweep's last checkpoint is on disk: from here a signal ends the process at once (exit 75).
    with stop_on_signals(exit_at_once="training is complete and its last checkpoint is on disk; the final "
                         "evaluation of the models is skipped (exit 75). Re-run the same command to evaluate."):
        return _finish(workdir, ds, pure, configs, labels, model_dirs, states, train_seconds, steady, spe, over,
                       log)


def _train(states, state_sh, sweep_step, ds, base, workdir, model_dirs, mesh, start, total, spe, progress):
    """The chunk loop of :mod:`jaxvae.training.chunks` over the stacked states; one record per model per record
    step."""
    bs = base.train.batch_size
    run_chunk = make_scan_chunk(jit_train_chunk(make_train_chunk(sweep_step, bs, carry_sums=True), state_sh, mesh),
                                jax.device_put(ds.train, sharding.replicated(mesh)))
    chunks = ChunkLoop(run_chunk, total_steps=total, steps_per_epoch=spe, batch_size=bs,
                       log_every=base.train.log_every, every=(base.train.checkpoint_every,),
                       data_seed=data_seed(base), num_examples=num_examples(ds.train), permutation_on_device=True,
                       max_chunk_seconds=base.train.max_chunk_seconds)
    writers = [MetricWriter(d, resume_step=start if start else None) for d in model_dirs]
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=base.train.keep_checkpoints)
    bar = progress_bar(total, start, enabled=progress, desc="sweep")
    try:
        with stop_on_signals(lambda: chunks.in_flight("this step's records")) as received:
            for result in chunks.run(states, start):
                states, step = result.state, result.chunk.end
                if result.record is not None:
                    rate = result.record.pop("examples_per_sec")
                    for i, w in enumerate(writers):
                        record = {"step": step, "epoch": round(step / spe, 4),
                                  **{k: v[i] for k, v in result.record.items()}, "examples_per_sec": rate}
                        record.setdefault("beta", 1.0)
                        w.write(record)
                    finite_kl = result.record["kl"][np.isfinite(result.record["kl"])]
                    if finite_kl.size:
                        bar.set_postfix(kl=f"{finite_kl.min():.1f}..{finite_kl.max():.1f}")
                if due(step, base.train.checkpoint_every, total):
                    ckpt.save(states, step=step)
                bar.update(result.chunk.length)
                if received:  # also after the last step: the final evaluation is left to the resumed sweep
                    ckpt.save(states, step=step)
                    ckpt.wait()
                    raise preempted(received, step, total, workdir / "checkpoints")
    finally:
        bar.close()
        for w in writers:
            w.close()
        ckpt.close()
    return states, chunks.steady_examples_per_sec


def _finish(workdir, ds, model, configs, labels, model_dirs, states, train_seconds, steady, spe, over, log):
    """Every member evaluated like a single run (:class:`jaxvae.runs.results.TestEvaluation`), its final state
    saved as its own checkpoint, its summary and images written; then sweep.json and the rate-distortion plot."""
    base = configs[0]
    max_bad = base.optimizer.max_consecutive_nonfinite
    evaluation = results.TestEvaluation(model, base, ds)
    out = []
    for i, (cfg, label, d) in enumerate(zip(configs, labels, model_dirs)):
        state = _index(states, i)
        params = evaluation_params(state)
        key = results.final_key(cfg)
        log(f"Final evaluation of model {i + 1} of {len(configs)} ({label}) ...")
        test = evaluation(params, key)
        ckpt = Checkpointer(d / "checkpoints", max_to_keep=cfg.train.keep_checkpoints)
        try:
            ckpt.save(state)
        finally:
            ckpt.close()
        summary = run_summary(cfg, ds, state, spe, test, params, train_seconds=train_seconds,
                              examples_per_sec=steady, monitor_seconds=0.0)
        failed = int(state.nonfinite_consecutive) >= max_bad or not all(
            math.isfinite(summary[k]) for k in ("test_elbo", "test_recon", "test_kl"))
        summary = {"label": label, "model_index": i, "failed": failed,
                   "settings": {k: config_lib.get_value(cfg, k) for k in [*over, "train.seed"]},
                   **summary, "trained_in_sweep_of": len(configs)}
        if not failed:  # a failed model's parameters may decode to NaN
            results.write_images(d, cfg, ds, model, params, key)
        atomic_write_json(d / "summary.json", summary)
        out.append(summary)
    sweep = {"dataset": ds.name, "num_models": len(configs), "train_seconds": train_seconds,
             "failed": [r["label"] for r in out if r["failed"]], "models": out}
    atomic_write_json(workdir / "sweep.json", sweep)
    report.plot_rate_distortion(out, workdir / "rate_distortion.png", title=f"{ds.name}: {', '.join(over)}")
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

