"""The host-side training loop of one run: chunks of steps in, metrics, validation, monitor records and
checkpoints out. It contains no math (the step is :mod:`jaxvae.training.step`) and no set-up (:mod:`jaxvae.runs`).

A chunk (see :mod:`jaxvae.training.chunks`) is either one ``jax.lax.scan`` over a dataset that lives on the device
(``train.loop=scan``) or a Python loop over the jitted step fed from host memory (``train.loop=host``). Both draw
batch ``b`` of epoch ``e`` from the same permutation ``epoch_permutation(seed, e, N)``, so they train the same
model, and a resumed run continues with exactly the batch it would have seen.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax

from jaxvae import data as data_lib
from jaxvae import sharding
from jaxvae.config import Config, data_seed
from jaxvae.data.batches import nbytes, num_examples
from jaxvae.errors import ConfigError, TrainingDivergedError
from jaxvae.evaluation import likelihood as evaluate
from jaxvae.evaluation import monitor
from jaxvae.models.protocol import PureModel, count_params
from jaxvae.rundir.checkpoint import Checkpointer
from jaxvae.rundir.writers import MetricWriter, read_metrics
from jaxvae.training import aggressive, early_stopping
from jaxvae.training.chunks import ChunkLoop, due, make_host_chunk, make_scan_chunk
from jaxvae.training.optimizers import skip_threshold
from jaxvae.training.program import Program, make_program_step
from jaxvae.training.progress import preempted, progress_bar, stop_on_signals
from jaxvae.training.step import (
    TrainState,
    evaluation_params,
    jit_train_chunk,
    jit_train_step,
    make_train_chunk,
)


@dataclasses.dataclass
class RunContext:
    """One run as the loop trains it and the final evaluation reads it (built once by
    :func:`jaxvae.runs.setup_run`)."""

    cfg: Config
    workdir: Path
    dataset: data_lib.Dataset
    model: PureModel
    state: TrainState
    total_steps: int
    steps_per_epoch: int
    start_step: int
    optimizer: Any
    objective: Any
    program: Program | None = None  # the training program (jaxvae.training); one player for every built-in preset
    steady_examples_per_sec: float | None = None  # measured by train_loop, excluding compiling chunks
    monitor_seconds: float = 0.0  # time spent in the latent-health monitor (this process)
    train_seconds: float | None = None  # cumulative over resumes
    mesh: jax.sharding.Mesh | None = None  # the device mesh (see jaxvae.sharding); None: one default device
    state_shardings: Any = None  # a TrainState of NamedShardings matching `state`


def choose_loop(cfg: Config, dataset: data_lib.Dataset) -> str:
    """``scan`` or ``host`` for ``train.loop`` (``auto``: scan when the training set fits on the device; always
    scan for ``train.aggressive``, whose inner loop draws its batches from the training set on the device)."""
    if cfg.train.aggressive.enabled:
        if jax.process_count() > 1:
            raise ConfigError(f"train.aggressive draws the inner loop's batches from the whole training set on "
                              f"the device, and a run of {jax.process_count()} processes feeds each batch from "
                              "host memory; train with aggressive inference training in one process, or set "
                              "train.aggressive.enabled=false.")
        return "scan"  # the config refuses train.loop=host with train.aggressive
    if jax.process_count() > 1:
        return "host"  # each process feeds only its own rows of every batch (see the docs on multi-host runs)
    if cfg.train.loop != "auto":
        return cfg.train.loop
    if cfg.model.network == "conv" and cfg.model.conv_impl == "xla" and jax.default_backend() == "cpu":
        # XLA:CPU runs its native convolutions inside a scanned loop far slower than as separate jitted steps
        # (benchmarks/RESULTS.md). The matmul convolutions (conv_impl=auto on CPU) do not have that problem, and
        # there scan is the faster loop.
        return "host"
    return "scan" if nbytes(dataset.train) <= cfg.train.device_data_limit_mb * 2**20 else "host"


def nonfinite_check(state: TrainState, step: int, seen: int, max_bad: int,
                    latest_checkpoint: Callable[[], object], checkpoint_dir: object, *,
                    skip_threshold: float | None = None) -> tuple[int, str | None]:
    """``(skipped updates so far, a warning or None)`` after a chunk; raises :class:`TrainingDivergedError` after
    ``max_bad`` skipped updates in a row (non-finite, or with a gradient norm above ``skip_threshold``), so that
    skipping never freezes a run silently."""
    bad = int(state.nonfinite_consecutive)
    total = int(state.nonfinite_total)
    why = "non-finite (NaN/Inf) loss or gradients" if skip_threshold is None else (
        f"non-finite (NaN/Inf) loss or gradients, or a gradient norm above optimizer.skip_threshold="
        f"{skip_threshold:g}")
    if bad >= max_bad:
        hint = "" if skip_threshold is None else (
            " If the gradient norms are just larger than the threshold (see grad_norm in metrics.jsonl), raise "
            "optimizer.skip_threshold.")
        raise TrainingDivergedError(
            f"Training stopped at step {step}: the last {bad} updates had {why} and were skipped. Last good "
            f"checkpoint: step {latest_checkpoint() or 'none'} in {checkpoint_dir} (nothing after it was saved). "
            "Likely causes: a learning rate that is too high (try optimizer.learning_rate smaller, or "
            "optimizer.grad_clip_norm=1), data outside the likelihood's support, or an unbounded decoder scale."
            f"{hint}")
    if total > seen:
        return total, (f"WARNING {total - seen} update(s) up to step {step} had {why} and were skipped ({total} "
                       f"so far; training stops after {max_bad} in a row).")
    return total, None


class TrainingProgram(NamedTuple):
    """What :func:`prepare` builds for :func:`train_loop`: the loop kind (``scan`` or ``host``), the compiled
    chunk loop, the mesh and the state's shardings."""

    loop: str
    chunks: ChunkLoop
    mesh: jax.sharding.Mesh
    state_shardings: Any


def prepare(ctx: RunContext, *, log: Callable[[str], None] = print) -> TrainingProgram:
    """Builds and compiles the training program of ``ctx`` (the step, the chunk loop over it, the evaluators)
    without writing anything, so that a setting the step cannot run with is refused before the run directory is
    touched. :func:`train_loop` then runs it."""
    cfg, ds = ctx.cfg, ctx.dataset
    total, spe, bs = ctx.total_steps, ctx.steps_per_epoch, cfg.train.batch_size
    if cfg.train.early_stopping.patience and not num_examples(ds.valid):
        raise ConfigError("train.early_stopping needs a validation split, and this dataset has none: set "
                          "data.valid_size > 0 (e.g. data.valid_size=1000), or turn it off with "
                          "train.early_stopping.patience=0.")
    agg = cfg.train.aggressive
    if agg.enabled and not num_examples(ds.valid):
        raise ConfigError("train.aggressive ends its phase on the validation mutual information, and this dataset "
                          "has no validation split: set data.valid_size > 0 (e.g. data.valid_size=1000), or turn "
                          "it off with train.aggressive.enabled=false.")
    if not agg.enabled:
        program = ctx.program if ctx.program is not None else Program.single(ctx.objective, ctx.optimizer)
        step_with_hyper = make_program_step(program, dynamic_binarization=ds.dynamic_binarization,
                                            skip_threshold=skip_threshold(cfg))

        def train_step(state: TrainState, batch: Any) -> tuple[TrainState, Any]:
            return step_with_hyper(state, batch, program.hyper(state.step))
    if cfg.train.loop == "scan" and jax.process_count() > 1:
        log(f"train.loop=scan keeps the whole dataset on every device; with {jax.process_count()} processes each "
            "feeds only its own rows of every batch, so the host loop is used.")
    loop = choose_loop(cfg, ds)
    mesh = ctx.mesh if ctx.mesh is not None else sharding.make_mesh("1")
    state_sh = ctx.state_shardings if ctx.state_shardings is not None else (
        sharding.train_state_shardings(ctx.state, mesh))
    batch_sh = sharding.batch_sharding_like(mesh, ds.train)
    if loop == "scan":
        # On one device the batch needs no constraint (the program is the one of a plain jit).
        scan_batch_sh = batch_sh if mesh.devices.size > 1 else None
        if agg.enabled:  # the inner loop's batches come from the dataset on the device
            train_step = aggressive.make_aggressive_train_step(
                ctx.objective, ctx.optimizer, batch_size=bs, max_inner=agg.max_inner, check_every=agg.check_every,
                dynamic_binarization=ds.dynamic_binarization, skip_threshold=skip_threshold(cfg),
                batch_sharding=scan_batch_sh)
        run_chunk = make_scan_chunk(
            jit_train_chunk(make_train_chunk(train_step, bs, batch_sharding=scan_batch_sh, pass_data=agg.enabled,
                                             carry_sums=True),
                            state_sh, mesh),
            jax.device_put(ds.train, sharding.replicated(mesh)))
    else:
        run_chunk = make_host_chunk(jit_train_step(train_step, state_sh, batch_sh), ds.train, bs,
                                    sharding.process_rows(batch_sh, bs, ds.event_shape),  # this process's rows
                                    lambda local: sharding.make_global_batch(local, batch_sh, bs))
    chunks = ChunkLoop(run_chunk, total_steps=total, steps_per_epoch=spe, batch_size=bs,
                       log_every=cfg.train.log_every,
                       every=(cfg.train.checkpoint_every, cfg.train.eval_every or spe, cfg.monitor.every),
                       data_seed=data_seed(cfg), num_examples=num_examples(ds.train),
                       permutation_on_device=loop == "scan", max_chunk_seconds=cfg.train.max_chunk_seconds)
    seconds = chunks.compile(ctx.state, ctx.start_step)
    if seconds > 5:
        log(f"Compiled the training step in {seconds:.1f} s.")
    return TrainingProgram(loop, chunks, mesh, state_sh)


def train_loop(ctx: RunContext, *, progress: bool = True, log: Callable[[str], None] = print,
               trackers: Sequence[Any] = (), program: TrainingProgram | None = None) -> TrainState:
    """Runs the steps from ``ctx.start_step`` to ``ctx.total_steps``; writes metrics (to ``metrics.jsonl`` and the
    ``trackers``) and checkpoints. ``program``: from :func:`prepare` (built here when not given).

    On SIGTERM/SIGINT the run stops after the steps in flight (at most about ``train.max_chunk_seconds``), saves
    a checkpoint of that step and raises :class:`~jaxvae.errors.TrainingPreempted`, also in the last chunk (the
    final evaluation is then left to the resumed run)."""
    cfg, ds = ctx.cfg, ctx.dataset
    total, spe, bs = ctx.total_steps, ctx.steps_per_epoch, cfg.train.batch_size
    program = prepare(ctx, log=log) if program is None else program
    loop, chunks, state_sh = program.loop, program.chunks, program.state_shardings
    evaluator = evaluate.make_elbo_evaluator(ctx.model, batch_size=cfg.eval.batch_size)
    ckpt = Checkpointer(ctx.workdir / "checkpoints", max_to_keep=cfg.train.keep_checkpoints)
    writer = MetricWriter(ctx.workdir, resume_step=ctx.start_step if ctx.start_step else None, trackers=trackers,
                          enabled=sharding.is_main_process())
    previous = [r for r in read_metrics(ctx.workdir) if "elapsed_seconds" in r]
    # Wall time of training, compilation included (it ran in prepare()), cumulative over resumes.
    elapsed = (previous[-1]["elapsed_seconds"] if previous else 0.0) + chunks.compile_seconds
    # Early stopping: its state is replayed from the validation records kept by the writer (<= start_step).
    stopper = early_stopping.for_run(cfg, ctx.workdir, spe, ctx.start_step)
    if stopper is not None:
        if stopper.should_stop(ctx.start_step):
            writer.close()
            ckpt.close()
            log(f"{ctx.workdir} stopped early at step {ctx.start_step} (best validation ELBO "
                f"{stopper.best:.2f} at step {stopper.best_step}); nothing to resume.")
            return ctx.state
        best_ckpt = Checkpointer(ctx.workdir / early_stopping.BEST_DIR, max_to_keep=1)

    mesh = program.mesh
    log(f"Training {count_params(ctx.state.params):,} parameters on {ds.name} "
        f"({num_examples(ds.train):,} train / {num_examples(ds.valid):,} valid / {num_examples(ds.test):,} test, "
        f"event {ds.event_shape}) for {total:,} steps of batch {bs} ({total / spe:.1f} epochs), loop={loop}, "
        f"{sharding.describe(mesh)}, params {cfg.mesh.params}.")
    if ctx.program is not None and (ctx.program.several or ctx.program.state_updates or ctx.state.model_state):
        log(f"Training program ({cfg.train.program or 'one player'}):\n  "
            + ctx.program.describe().replace("\n", "\n  ")
            + (f"\n  non-gradient state: {count_params(ctx.state.model_state):,} values" if ctx.state.model_state
               else ""))

    health = monitor.CollapseMonitor(cfg, ctx.model.latent_dim, ctx.model.groups, total_steps=total) \
        if cfg.monitor.every else None
    if health is not None:
        monitor_fn = monitor.make_monitor_fn(ctx.model)
        monitor_x = jax.device_put(monitor.monitor_batch(ds, cfg.monitor.batch_size))
    monitor_seconds = 0.0

    bar = progress_bar(total, ctx.start_step, enabled=progress)
    say = bar.write if progress else log
    state = ctx.state
    # Aggressive training: the phase's tracker is replayed from the records kept by the writer (<= start_step);
    # the phase is on only when both the tracker and the checkpointed flag say so.
    phase = aggressive.for_run(cfg, ctx.workdir, ctx.start_step)
    if phase is not None:
        if phase.active and not int(state.opt_state.active):
            phase.ended_at = ctx.start_step
        state = aggressive.set_phase(state, phase.active, state_sh.opt_state.active)
        mi_fn = aggressive.make_mi_evaluator(ctx.model, batch_size=cfg.eval.batch_size)
    postfix: dict[str, str] = {}
    nonfinite_seen = int(state.nonfinite_total)
    try:
        with stop_on_signals(lambda: chunks.in_flight("this step's records, validation and monitor")) as received:
            for result in chunks.run(state, ctx.start_step):
                state, step, length = result.state, result.chunk.end, result.chunk.length
                elapsed += result.seconds
                if result.record is not None:
                    record = {"step": step, "epoch": round(step / spe, 4), **result.record,
                              "elapsed_seconds": elapsed, "nonfinite_total": int(state.nonfinite_total)}
                    record.setdefault("beta", 1.0)
                    writer.write(record)
                    postfix.update(loss=f"{float(record['loss']):.2f}", kl=f"{float(record['kl']):.2f}",
                                   beta=f"{float(record['beta']):.3g}")
                nonfinite_seen, warning = nonfinite_check(
                    state, step, nonfinite_seen, cfg.optimizer.max_consecutive_nonfinite, ckpt.latest_step,
                    ctx.workdir / "checkpoints", skip_threshold=skip_threshold(cfg))
                if warning:
                    say(warning)
                if health is not None and due(step, cfg.monitor.every, total):
                    t_mon = time.perf_counter()
                    out = jax.device_get(monitor_fn(sharding.host_local(evaluation_params(state)), monitor_x,
                                                    jax.random.key(cfg.train.seed + 3)))
                    monitor_seconds += time.perf_counter() - t_mon
                    health_record, warning = health.record(step, out)
                    writer.write(health_record)
                    if warning:
                        say(warning)
                if phase is not None and phase.active and step % spe == 0:  # the phase's epoch-end decision
                    mi = mi_fn(sharding.host_local(evaluation_params(state)), ds.valid,
                               jax.random.key(cfg.train.seed + aggressive.MI_KEY_OFFSET))
                    ended = phase.update(step, mi)
                    writer.write(phase.record(step, mi))
                    postfix["valid_mi"] = f"{mi:.3f}"
                    if ended:  # before any checkpoint of this step, so that a resumed run sees the flag
                        state = aggressive.set_phase(state, False, state_sh.opt_state.active)
                        chunks.replace_state(state)
                        say(aggressive.end_message(step, spe, phase))
                if due(step, cfg.train.eval_every or spe, total) and num_examples(ds.valid):
                    val = evaluator(sharding.host_local(evaluation_params(state)), ds.valid,
                                    jax.random.key(cfg.train.seed + 1))
                    writer.write({"step": step, "split": "valid", **val})
                    postfix["valid_elbo"] = f"{val['elbo']:.2f}"
                    if stopper is not None:
                        if stopper.update(step, val["elbo"]):
                            best_ckpt.save(state)
                        if stopper.should_stop(step):
                            ckpt.save(state)  # a resumed run sees the stop (its replay ends here too)
                            say(f"Early stopping at step {step} (epoch {step / spe:.1f}): the validation ELBO has "
                                f"not improved on {stopper.best:.2f} (step {stopper.best_step}) for "
                                f"{cfg.train.early_stopping.patience} epoch(s); the final evaluation uses that "
                                "best checkpoint.")
                            bar.update(length)
                            break
                if due(step, cfg.train.checkpoint_every, total):
                    ckpt.save(state)
                # The progress line after this step's events, so it shows this step's record and validation.
                bar.set_postfix(**postfix)
                bar.update(length)
                if received:  # also after the last step: the final evaluation is left to the resumed run
                    ckpt.save(state)
                    ckpt.wait()
                    raise preempted(received, step, total, ctx.workdir / "checkpoints")
    finally:
        bar.close()
        writer.close()
        ckpt.close()
        if stopper is not None:
            best_ckpt.close()
    ctx.steady_examples_per_sec = chunks.steady_examples_per_sec
    ctx.monitor_seconds = monitor_seconds
    ctx.train_seconds = elapsed
    return state
