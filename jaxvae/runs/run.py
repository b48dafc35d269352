"""Run directories: set a run up (data, model, state, restore), train it (:func:`fit`), reopen it
(:func:`restore_run`, :func:`load_run`).

The steps themselves run in :mod:`jaxvae.training.loop`; the end-of-run evaluation, images and console summary are
in
:mod:`jaxvae.runs.results`. A run directory holds ``config.json`` (the resolved config, with the model builder's
reference), ``checkpoints/``, ``metrics.jsonl``, ``summary.json`` and the image grids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxvae import config as config_lib
from jaxvae import data as data_lib
from jaxvae import sharding
from jaxvae.config import Config, data_seed, is_builder_reference
from jaxvae.data.batches import num_examples
from jaxvae.errors import CheckpointError, ConfigError, DataError, JaxvaeError
from jaxvae.models.factory import (
    ModelBuilder,
    build_model,
    builder_reference,
    reference_is_importable,
)
from jaxvae.models.protocol import Params, PureModel, count_params
from jaxvae.objectives.factory import build_objective
from jaxvae.rundir.checkpoint import Checkpointer
from jaxvae.rundir.writers import atomic_write_json, read_metrics
from jaxvae.runs import results
from jaxvae.training import aggressive, early_stopping
from jaxvae.training.loop import RunContext
from jaxvae.training.optimizers import build_optimizer
from jaxvae.training.program import ProgramBuilder, build_program, init_program_state
from jaxvae.training.step import TrainState, evaluation_params

__all__ = [
    "LoadedRun",
    "RunContext",
    "data_seed",
    "final_report",
    "fit",
    "load_run",
    "load_run_dataset",
    "open_run",
    "params_sha256",
    "restore_run",
    "setup_run",
    "write_run_config",
]


def params_sha256(params: Params) -> str:
    """SHA-256 of the parameters' bytes, leaves in key-path order: equal hashes mean bitwise-equal models."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: str(kv[0])):
        h.update(str(path).encode())
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def load_run_dataset(cfg: Config) -> data_lib.Dataset:
    """The run's dataset; for ``model.conditional`` its splits are the model's conditioned batches
    (:func:`jaxvae.models.conditional.condition_dataset`)."""
    d = cfg.data
    ds = data_lib.load_dataset(d.name, d.dir, valid_size=d.valid_size, dynamic_binarization=d.dynamic_binarization,
                               scale=d.scale, seed=data_seed(cfg), download=d.download)
    if cfg.model.conditional == "none":
        return ds
    from jaxvae.models import conditional

    return conditional.condition_dataset(ds, cfg.model.conditional, cfg.model.condition_classes,
                                         labels_per_class=d.labels_per_class, seed=data_seed(cfg))


def model_config(cfg: Config, dataset: data_lib.Dataset) -> Config:
    """``cfg`` with what the model takes from the data resolved: M2's default ``model.m2_alpha`` (0.1 N over the
    number of labelled examples, :func:`jaxvae.models.factory.m2_alpha`). ``config.json`` keeps the setting as
    given."""
    if cfg.model.conditional != "m2" or cfg.model.m2_alpha:
        return cfg
    from jaxvae.models.factory import m2_alpha

    alpha = m2_alpha(cfg, num_examples(dataset.train))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, m2_alpha=alpha))


def check_workdir(workdir: Path, cfg: Config, force: bool) -> None:
    """The run directory is writable, and any config already there is this one (unless ``force``)."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"  # per process: several may start in one folder
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"Cannot write to the run directory {workdir}: {e.strerror}. "
                          "Choose a writable --workdir.") from None
    saved = workdir / "config.json"
    if saved.exists():
        try:
            old = config_lib.from_dict(json.loads(saved.read_text()))
        except (json.JSONDecodeError, JaxvaeError) as e:
            raise CheckpointError(f"{saved} is not a valid jaxvae config ({e}). This folder is not a jaxvae run "
                                  "directory, or it is damaged; use another --workdir.") from None
        changes = config_lib.diff(old, cfg, ignore=config_lib.REPORTING_ONLY)
        if changes and not force:
            raise CheckpointError(
                f"{workdir} holds a run with a different config; resuming it with this one would mix two "
                f"experiments. Differences (saved -> requested): {'; '.join(changes)}. Use another --workdir "
                "for a new run, or pass --force to resume with the new config.")


def validate_data(model: PureModel, dataset: data_lib.Dataset) -> None:
    """Every split is in the likelihood's support (dynamically binarized training data is binarized later)."""
    from jaxvae.models.conditional import split_examples

    for split in ("train", "valid", "test"):
        x = split_examples(dataset, split)
        if split == "train" and dataset.dynamic_binarization:
            continue  # grey levels, binarized inside the step
        if x.shape[0]:
            try:
                model.likelihood.validate_data(x)
            except DataError as e:
                raise DataError(f"{dataset.name} {split} split: {e}") from None


def steps_of(cfg: Config, dataset: data_lib.Dataset) -> tuple[int, int]:
    """``(steps per epoch, total steps)``; a batch larger than the training set is a :class:`ConfigError`."""
    n = num_examples(dataset.train)
    if cfg.train.batch_size > n:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the {n} training examples of "
                          f"{dataset.name}; use train.batch_size={min(n, 128)} or less.")
    steps_per_epoch = n // cfg.train.batch_size
    return steps_per_epoch, cfg.train.steps or cfg.train.epochs * steps_per_epoch


def open_run(cfg: Config, workdir: str | os.PathLike, *, force: bool = False,
             log: Callable[[str], None] = print, model: ModelBuilder | None = None,
             restore_step: int | str | None = None, check_workdir_config: bool = True,
             program: ProgramBuilder | None = None) -> RunContext:
    """Loads data, builds the model (``model``: a user builder, else ``cfg.model.network``) and the training
    program (``program``, else ``train.program``, else one player), creates the state in its shardings on the
    mesh of ``cfg.mesh`` and restores the checkpoint at ``restore_step`` (default: the latest, if any), writing
    nothing into ``workdir``. ``check_workdir_config``: refuse a run directory that holds another config (unless
    ``force``)."""
    config_lib.validate(cfg)
    workdir = Path(workdir)
    if check_workdir_config:
        check_workdir(workdir, cfg, force)
    mesh = sharding.mesh_from_config(cfg)
    sharding.check_batch_size(cfg.train.batch_size, mesh)
    dataset = load_run_dataset(cfg)
    pure = build_model(model_config(cfg, dataset), dataset.event_shape, model)
    validate_data(pure, dataset)
    steps_per_epoch, total_steps = steps_of(cfg, dataset)
    optimizer = build_optimizer(cfg, total_steps, steps_per_epoch)
    if cfg.train.aggressive.enabled:  # one instance for the encoder, one for the rest (jaxvae.training.aggressive)
        optimizer = aggressive.split_optimizer(optimizer, cfg.train.aggressive.encoder_key)
    # Each factory once: the objective trains the model's training view (pure.training(), the same parameters).
    objective = build_objective(cfg, pure, total_steps, dataset_size=num_examples(dataset.train))
    train_program = build_program(cfg, pure, objective, optimizer, program)
    # Created directly in its shardings (eval_shape, then jit with out_shardings); restored into the same ones.
    state, state_shardings = sharding.init_sharded(
        lambda key: init_program_state(pure, train_program, key),
        lambda shapes: sharding.train_state_shardings(shapes, mesh, cfg.mesh.params),
        jax.random.key(cfg.train.seed))
    if restore_step == "best":
        _check_best(workdir)
    folder = early_stopping.BEST_DIR if restore_step == "best" else "checkpoints"
    start_step = 0
    if (workdir / folder).is_dir():
        # Read-only: restoring writes nothing (the training loop's own checkpointer cleans up after a killed save).
        ckpt = Checkpointer(workdir / folder, max_to_keep=cfg.train.keep_checkpoints, read_only=True)
        try:
            if restore_step == "best":
                restore_step = ckpt.latest_step()
            if restore_step is not None and restore_step not in ckpt.all_steps():
                raise CheckpointError(_missing_step(workdir, restore_step, ckpt.all_steps()))
            start_step = (ckpt.latest_step() or 0) if restore_step is None else restore_step
            if start_step:
                state = _restore(ckpt, state, start_step, cfg)
                log(f"Resuming {workdir} from the checkpoint at step {start_step}/{total_steps}.")
        finally:
            ckpt.close()
    elif restore_step is not None:
        raise CheckpointError(_missing_step(workdir, restore_step, []))
    return RunContext(cfg, workdir, dataset, pure, state, total_steps, steps_per_epoch, start_step, optimizer,
                      objective, train_program, mesh=mesh, state_shardings=state_shardings)


def _missing_step(workdir: Path, step: int | str, steps: list[int]) -> str:
    if not steps:
        return f"{workdir} has no checkpoint of step {step}: it has no checkpoints at all."
    nearest = min(steps, key=lambda s: abs(s - int(step)))
    return (f"{workdir} has no checkpoint of step {step}; it has steps {', '.join(map(str, steps))}. Pass one of "
            f"them (e.g. --step {nearest}, the nearest), --step latest (step {max(steps)}), or leave --step out "
            "for the model the run reports.")


def write_run_config(ctx: RunContext) -> None:
    """Writes ``config.json`` (the resolved config, with the model builder's reference) into the run directory
    (process 0)."""
    if sharding.is_main_process():
        atomic_write_json(ctx.workdir / "config.json", config_lib.to_dict(ctx.cfg))


def setup_run(cfg: Config, workdir: str | os.PathLike, *, force: bool = False,
              log: Callable[[str], None] = print, model: ModelBuilder | None = None,
              restore_step: int | str | None = None, write_config: bool = True,
              program: ProgramBuilder | None = None) -> RunContext:
    """:func:`open_run`, then ``config.json`` written (process 0, unless ``write_config=False``, which also skips
    the check of a config already in the directory)."""
    ctx = open_run(cfg, workdir, force=force, log=log, model=model, restore_step=restore_step,
                   check_workdir_config=write_config, program=program)
    if write_config:
        write_run_config(ctx)
    return ctx


def _check_best(workdir: Path) -> None:
    best = workdir / early_stopping.BEST_DIR
    if not best.is_dir() or not any(p.name.isdigit() for p in best.iterdir()):
        raise CheckpointError(f"{workdir} has no best checkpoint: it is kept only by runs trained with early "
                              "stopping (train.early_stopping.patience > 0). Use --step latest or a step number.")


def _restore(ckpt: Checkpointer, state: TrainState, step: int, cfg: Config) -> TrainState:
    try:
        return ckpt.restore(state, step)
    except CheckpointError as e:
        if not is_builder_reference(cfg.model.network):
            raise
        raise CheckpointError(f"{e} The model comes from the user builder model.network={cfg.model.network}: "
                              "if that code changed since the run was created, restore the version that "
                              "trained it.") from None


def run_summary(cfg: Config, dataset: data_lib.Dataset, state: TrainState, steps_per_epoch: int,
                test: dict[str, Any], params: Params, *, train_seconds: float, examples_per_sec: float | None,
                monitor_seconds: float) -> dict[str, Any]:
    """The fields of ``summary.json`` (a single run's and a sweep member's)."""
    return {
        "dataset": dataset.name,
        "preset": cfg.preset,
        "steps": int(state.step),
        "epochs": round(int(state.step) / steps_per_epoch, 3),
        **{k: v for k, v in test.items() if k != "latent"},
        "train_seconds": train_seconds,
        "examples_per_sec": examples_per_sec,
        "nonfinite_updates": int(state.nonfinite_total),
        "monitor_seconds": monitor_seconds,
        "num_params": count_params(params),
        "params_sha256": params_sha256(params),
        "latent": test["latent"],
    }


def final_report(ctx: RunContext, state: TrainState, *, log: Callable[[str], None] = print,
                 trackers: Sequence[Any] = ()) -> dict[str, Any]:
    """Evaluates on the test split, writes ``summary.json`` and the image grids (process 0) and hands both to the
    ``trackers`` (:mod:`jaxvae.rundir.trackers`); returns the summary.

    The IWAE estimate is sharded over the mesh's ``data`` axis; in a multi-process run the other evaluations run
    on each process's own copy of the parameters.
    """
    cfg = ctx.cfg
    stopper = early_stopping.for_run(cfg, ctx.workdir, ctx.steps_per_epoch, int(state.step))
    # With early stopping the run reports the best validation's checkpoint.
    chosen = state if stopper is None or stopper.best_step is None else _restore_best(ctx.workdir, state, stopper)
    evaluated = evaluation_params(chosen)  # the moving average when optimizer.ema_decay is set
    params = sharding.host_local(evaluated)
    key = results.final_key(cfg)
    test = results.TestEvaluation(ctx.model, cfg, ctx.dataset, mesh=ctx.mesh)(
        params, key, sharded_params=evaluated, log=log)
    history = [r for r in read_metrics(ctx.workdir) if "split" not in r]
    steady = ctx.steady_examples_per_sec
    if steady is None and history:
        steady = float(np.median([r["examples_per_sec"] for r in history[1:]] or [history[0]["examples_per_sec"]]))
    train_seconds = ctx.train_seconds if ctx.train_seconds is not None else (
        history[-1]["elapsed_seconds"] if history else 0.0)
    summary = run_summary(cfg, ctx.dataset, state, ctx.steps_per_epoch, test, params, train_seconds=train_seconds,
                          examples_per_sec=steady, monitor_seconds=ctx.monitor_seconds)
    if stopper is not None:
        stopped = int(state.step) if stopper.should_stop(int(state.step)) else None
        summary["early_stopping"] = stopper.summary(cfg.train.early_stopping.patience, stopped)
        if stopper.best_step is not None:
            log(f"Evaluated the best validation checkpoint (step {stopper.best_step}, validation ELBO "
                f"{stopper.best:.2f}).")
    phase = aggressive.for_run(cfg, ctx.workdir, int(state.step))
    if phase is not None:
        summary["aggressive"] = phase.summary()
    if sharding.is_main_process():
        results.write_images(ctx.workdir, cfg, ctx.dataset, ctx.model, params, key, log=log)
        atomic_write_json(ctx.workdir / "summary.json", summary)
        for tracker in trackers:
            tracker.log_summary(summary, int(state.step))
            for name in ("reconstructions", "samples"):
                if (ctx.workdir / f"{name}.png").exists():
                    tracker.log_image(name, (ctx.workdir / f"{name}.png").read_bytes(), int(state.step))
    return summary


def _restore_best(workdir: Path, like: TrainState, stopper: early_stopping.EarlyStopping) -> TrainState:
    best = Checkpointer(workdir / early_stopping.BEST_DIR, max_to_keep=1)
    try:
        if best.latest_step() != stopper.best_step:
            raise CheckpointError(
                f"{workdir / early_stopping.BEST_DIR} holds the checkpoint of step {best.latest_step()}, but the "
                f"best validation ELBO in metrics.jsonl is at step {stopper.best_step}. The run directory was "
                "changed by hand or by another run; restore it, or evaluate a step explicitly with "
                "`jaxvae evaluate --step latest`.")
        return best.restore(like, stopper.best_step)
    finally:
        best.close()


def with_builder(cfg: Config, model: ModelBuilder | None, log: Callable[[str], None],
                 program: ProgramBuilder | None = None) -> Config:
    """``cfg`` with ``model.network`` set to the reference of the user builder ``model`` and ``train.program``
    to that of ``program`` (those given), noting when a reference cannot be imported again."""
    for fn, key, section, field, reopen in ((model, "model builder", "model", "network", "model"),
                                            (program, "training program", "train", "program", "program")):
        if fn is None:
            continue
        reference = builder_reference(fn)
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section),
                                                                       **{field: reference})})
        if not reference_is_importable(fn):
            log(f"Note: the {key} {reference} is not importable by that name (a lambda, a local function or one "
                "defined in __main__), so the jaxvae CLI cannot reopen this run; reopen it with "
                f"jv.load_run(workdir, {reopen}=...) or define it in a module.")
    return cfg


def fit(cfg: Config, workdir: str | os.PathLike, *, model: ModelBuilder | None = None, force: bool = False,
        progress: bool = True, log: Callable[[str], None] = print,
        program: ProgramBuilder | None = None) -> dict[str, Any]:
    """Trains (or resumes) a run in ``workdir`` and writes the complete run directory; returns the summary.

    Args:
      cfg: the configuration (:func:`jaxvae.config.get_preset`, :func:`jaxvae.config.apply_overrides`).
      workdir: the run directory; an existing one is resumed from its latest checkpoint.
      model: a user model builder ``(event_shape, latent_dim, likelihood, rngs) -> jv.Model`` (default: the
        built-in network named by ``cfg.model.network``). Its reference ``MODULE:QUALNAME`` is recorded as
        ``model.network`` in ``config.json`` so that resume, ``jaxvae evaluate``/``sample``/``diagnose`` and
        :func:`load_run` rebuild the same model; define it in an importable module for that.
      force: resume even if ``cfg`` differs from the saved config.
      program: a function ``(cfg, model, objective, optimizer) -> jaxvae.training.Program`` declaring the
        players and state updates of the training step (default: one player, the configured objective and
        optimizer); recorded as ``train.program`` like the model builder.

    Raises:
      RunDirectoryBusyError: another process is writing into ``workdir`` (:func:`jaxvae.rundir.run_lock`).
      DiskFullError: a write failed for lack of space; the last complete checkpoint is intact, and calling
        ``fit`` again after freeing space resumes from it.
    """
    from jaxvae.rundir import lock as rundir
    from jaxvae.rundir import trackers as trackers_lib
    from jaxvae.training import loop
    from jaxvae.training import progress as progress_lib

    if not sharding.is_main_process():  # in a multi-process run only process 0 logs and shows progress
        log, progress_on = (lambda _: None), False
    else:
        progress_on = progress
    cfg = with_builder(cfg, model, log, program)
    built: list[RunContext] = []  # for the disk-full message's estimate before the first checkpoint

    def state_bytes() -> int:
        return sum(x.nbytes for x in jax.tree.leaves(built[0].state)) if built else 0

    path = Path(workdir)
    created = not path.exists()
    lock_existed = (path / rundir.LOCK_NAME).exists()
    started = False
    try:
        with rundir.run_lock(workdir), rundir.disk_full_guard(workdir, fallback_bytes=state_bytes):
            # Everything that can refuse the run (config, data, model, the compiled step) runs before the first
            # byte is written: a refused run leaves a directory it created absent and one that existed as it was.
            try:
                trackers_lib.check_available(cfg.track.backends)
                ctx = open_run(cfg, workdir, force=force, log=log, model=model, program=program)
                built.append(ctx)
                program = loop.prepare(ctx, log=log) if ctx.start_step < ctx.total_steps else None
            except BaseException:
                if created:
                    rundir.clear_except_lock(path)  # while the lock is held: nothing of anyone else's is there
                raise
            started = True
            log(f"Run directory: {ctx.workdir}")
            write_run_config(ctx)
            state = ctx.state
            with trackers_lib.open_trackers(ctx.cfg.track, ctx.workdir, config_lib.to_dict(ctx.cfg),
                                            resume_step=ctx.start_step or None,
                                            enabled=sharding.is_main_process()) as trackers:
                if program is not None:
                    state = loop.train_loop(ctx, progress=progress_on, log=log, trackers=trackers,
                                            program=program)
                else:
                    log(f"{ctx.workdir} already finished its {ctx.total_steps} steps; re-evaluating.")
                # The last checkpoint is on disk: from here a signal ends the process at once (exit 75).
                with progress_lib.stop_on_signals(exit_at_once=(
                        f"training is complete and its last checkpoint (step {int(state.step)}) is on disk; the "
                        "final evaluation is skipped (exit 75). Re-run the same command to evaluate.")):
                    summary = final_report(ctx, state, log=log, trackers=trackers)
    except BaseException:
        if not started:
            rundir.undo_lock_file(path, created=created, lock_existed=lock_existed)
        raise
    log(results.format_summary(summary, ctx.workdir))
    return summary


def _not_a_run(workdir: Path) -> CheckpointError:
    message = f"{workdir} is not a jaxvae run directory (no config.json)."
    members = sorted(p.parent for p in [*workdir.glob("*/config.json"), *workdir.glob("models/*/config.json")])
    if not members:
        return CheckpointError(f"{message} Train one first with `jaxvae train --workdir {workdir}`.")
    names = [str(p.relative_to(workdir)) for p in members]
    return CheckpointError(f"{message} It holds runs in subfolders ({', '.join(names[:4])}"
                           f"{', ...' if len(names) > 4 else ''}); pass one of them, e.g. {workdir / names[0]}.")


def restore_run(workdir: str | os.PathLike, *, step: int | str | None = None,
                model: ModelBuilder | None = None, program: ProgramBuilder | None = None
                ) -> tuple[RunContext, Params]:
    """Loads a finished or interrupted run: its config, data, model and the parameters of the checkpoint at
    ``step`` (their moving average when the run tracks one). Writes nothing. ``model`` and ``program``: the
    builder and the training program, for runs whose recorded ones are not importable.

    ``step``: a step number, ``"latest"``, ``"best"`` (the best validation of a run trained with early
    stopping), or ``None``: the model the run reports, i.e. ``"best"`` when the run used early stopping and has
    a best checkpoint, else ``"latest"``."""
    workdir = Path(workdir)
    saved = workdir / "config.json"
    if not saved.exists():
        raise _not_a_run(workdir)
    cfg = config_lib.from_saved(saved)
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=cfg.train.keep_checkpoints, read_only=True)
    latest = ckpt.latest_step()
    ckpt.close()
    if latest is None:
        sweep_dir = workdir.parent.parent
        if (sweep_dir / "sweep_config.json").exists():
            raise CheckpointError(f"{workdir} has no checkpoint yet: it is a member of the sweep in {sweep_dir}, "
                                  "which has not finished; resume it with the same `jaxvae sweep` command.")
        raise CheckpointError(f"{workdir} has no checkpoint yet; resume training with `jaxvae train --workdir "
                              f"{workdir}`.")
    if step is None:
        step = "best" if cfg.train.early_stopping.patience and (workdir / early_stopping.BEST_DIR).is_dir() \
            else "latest"
    if isinstance(step, str) and step not in ("best", "latest"):
        raise CheckpointError(f"step={step!r}: give a step number, 'latest' or 'best'.")
    ctx = setup_run(cfg, workdir, log=lambda _: None, model=model, restore_step=None if step == "latest" else step,
                    write_config=False, program=program)
    return ctx, evaluation_params(ctx.state)


class LoadedRun(NamedTuple):
    """What :func:`load_run` returns.

    Attributes:
      model: the :class:`~jaxvae.models.protocol.PureModel` (``model.forward(params, x, key, k)``,
        ``model.encode``, ...).
      params: the parameters of the restored checkpoint (a nested dict of arrays).
      config: the run's resolved :class:`~jaxvae.config.Config`.
      dataset: the run's :class:`~jaxvae.data.Dataset` (``dataset.train``, ``.valid``, ``.test``).
      step: the step of the restored checkpoint.
      workdir: the run directory.
    """

    model: PureModel
    params: Params
    config: Config
    dataset: data_lib.Dataset
    step: int
    workdir: Path


def load_run(workdir: str | os.PathLike, step: int | str | None = None, *,
             model: ModelBuilder | None = None, program: ProgramBuilder | None = None) -> LoadedRun:
    """Opens a run directory (finished or interrupted, a single run or a sweep member) for analysis in Python;
    writes nothing.

    Example::

        run = jv.load_run("runs/digits-20261201-120000")
        out = run.model.forward(run.params, run.dataset.test[:10], jax.random.key(0), 5)

    Args:
      workdir: the run directory (``config.json`` and ``checkpoints/``).
      step: the checkpoint to restore: a step number, ``"latest"``, ``"best"``, or ``None`` (the model the run
        reports: its best validation checkpoint with early stopping, else the latest); an absent step is a
        clear error.
      model: the model builder, needed only when the recorded ``model.network`` is not importable (a lambda or a
        function defined in a notebook).
      program: the training program function, likewise for ``train.program``.
    """
    ctx, params = restore_run(workdir, step=step, model=model, program=program)
    return LoadedRun(ctx.model, params, ctx.cfg, ctx.dataset, int(ctx.state.step), ctx.workdir)
