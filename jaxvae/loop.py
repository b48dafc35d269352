"""The host-side training loop: data in, run directory out. It contains no math.

Steps are grouped into *chunks* between host events (a metric record every ``train.log_every`` steps, the end of
an epoch, validation, checkpoints). A chunk is either one ``jax.lax.scan`` over a dataset that lives on the device
(``train.loop=scan``) or a Python loop over the jitted step fed from host memory (``train.loop=host``). Both draw
batch ``b`` of epoch ``e`` from the same permutation ``epoch_permutation(seed, e, N)``, so they train the same
model, and a resumed run continues with exactly the batch it would have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import config as config_lib
from jaxvae import data as data_lib
from jaxvae import diagnostics, evaluate, monitor, report, sharding
from jaxvae.builders import (
    ModelBuilder,
    build_model,
    build_objective,
    build_optimizer,
    builder_reference,
    is_builder_reference,
    reference_is_importable,
)
from jaxvae.checkpoint import Checkpointer
from jaxvae.config import Config
from jaxvae.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    JaxvaeError,
    TrainingDivergedError,
    TrainingPreempted,
)
from jaxvae.likelihoods import bits_per_dim
from jaxvae.model import Params, PureModel, count_params
from jaxvae.train import (
    TrainState,
    init_train_state,
    jit_train_chunk,
    jit_train_step,
    make_train_chunk,
    make_train_step,
)
from jaxvae.writers import MetricWriter, atomic_write_json, read_metrics


@contextlib.contextmanager
def _stop_on_signals():
    """Turns SIGTERM (how cloud TPU VMs announce preemption) and SIGINT into a flag the loop checks at the next
    chunk boundary, so the step in flight completes and a checkpoint is written. A second signal of the same
    kind while stopping falls through to the previous handler. Only active in the main thread."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        if received:  # asked twice: stop the hard way
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        received.append(signum)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


@dataclasses.dataclass
class RunContext:
    """What the loop and the final evaluation share (built once by :func:`setup_run`)."""

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
    steady_examples_per_sec: float | None = None  # measured by train_loop, excluding compiling chunks
    monitor_seconds: float = 0.0  # time spent in the latent-health monitor (this process)
    train_seconds: float | None = None  # cumulative over resumes
    mesh: jax.sharding.Mesh | None = None  # the device mesh (see jaxvae.sharding); None: one default device
    state_shardings: Any = None  # a TrainState of NamedShardings matching `state`


def params_sha256(params: Params) -> str:
    """SHA-256 of the parameters' bytes, leaves in key-path order: equal hashes mean bitwise-equal models."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: str(kv[0])):
        h.update(str(path).encode())
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def load_run_dataset(cfg: Config) -> data_lib.Dataset:
    d = cfg.data
    return data_lib.load_dataset(d.name, d.dir, valid_size=d.valid_size,
                                 dynamic_binarization=d.dynamic_binarization,
                                 scale=d.scale, seed=data_seed(cfg), download=d.download)


def data_seed(cfg: Config) -> int:
    """The seed of the batch order and data splits: ``train.data_seed``, or ``train.seed`` when unset."""
    return cfg.train.seed if cfg.train.data_seed is None else cfg.train.data_seed


def _check_workdir(workdir: Path, cfg: Config, force: bool) -> None:
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
        changes = config_lib.diff(old, cfg)
        if changes and not force:
            raise CheckpointError(
                f"{workdir} holds a run with a different config; resuming it with this one would mix two "
                f"experiments. Differences (saved -> requested): {'; '.join(changes)}. Use another --workdir "
                "for a "
                "new run, or pass --force to resume with the new config.")


def setup_run(cfg: Config, workdir: str | os.PathLike, *, force: bool = False,
              log: Callable[[str], None] = print, model: ModelBuilder | None = None,
              restore_step: int | None = None, write_config: bool = True) -> RunContext:
    """Loads data, builds the model (``model``: a user builder, else ``cfg.model.network``), creates the state in
    its shardings on the mesh of ``cfg.mesh``, restores the checkpoint at ``restore_step`` (default: the latest,
    if any) and writes ``config.json`` (process 0, unless ``write_config=False``)."""
    config_lib.validate(cfg)
    workdir = Path(workdir)
    if write_config:
        _check_workdir(workdir, cfg, force)
    mesh = sharding.mesh_from_config(cfg)
    sharding.check_batch_size(cfg.train.batch_size, mesh)
    dataset = load_run_dataset(cfg)
    builder = model
    model = build_model(cfg, dataset.event_shape, builder)
    for split in ("train", "valid", "test"):
        x = dataset.split(split)
        if split == "train" and dataset.dynamic_binarization:
            continue  # grey levels, binarized inside the step
        if x.shape[0]:
            try:
                model.likelihood.validate_data(x)
            except DataError as e:
                raise DataError(f"{dataset.name} {split} split: {e}") from None
    n = dataset.train.shape[0]
    if cfg.train.batch_size > n:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the {n} training examples of "
                          f"{dataset.name}; use train.batch_size={min(n, 128)} or less.")
    steps_per_epoch = n // cfg.train.batch_size
    total_steps = cfg.train.steps or cfg.train.epochs * steps_per_epoch
    optimizer = build_optimizer(cfg, total_steps)
    objective = build_objective(cfg, model, total_steps, dataset_size=n)
    # Created directly in its shardings (eval_shape, then jit with out_shardings); restored into the same ones.
    state, state_shardings = sharding.init_sharded(
        lambda key: init_train_state(model, optimizer, objective, key),
        lambda shapes: sharding.train_state_shardings(shapes, mesh, cfg.mesh.params),
        jax.random.key(cfg.train.seed))
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=cfg.train.keep_checkpoints)
    try:
        if restore_step is not None and restore_step not in ckpt.all_steps():
            raise CheckpointError(f"{workdir} has no checkpoint of step {restore_step}; it has steps "
                                  f"{ckpt.all_steps() or 'none'}.")
        start_step = (ckpt.latest_step() or 0) if restore_step is None else restore_step
        if start_step:
            state = _restore(ckpt, state, start_step, cfg)
            log(f"Resuming {workdir} from the checkpoint at step {start_step}/{total_steps}.")
    finally:
        ckpt.close()
    if write_config and sharding.is_main_process():
        atomic_write_json(workdir / "config.json", config_lib.to_dict(cfg))
    return RunContext(cfg, workdir, dataset, model, state, total_steps, steps_per_epoch, start_step, optimizer,
                      objective, mesh=mesh, state_shardings=state_shardings)


def _restore(ckpt: Checkpointer, state: TrainState, step: int, cfg: Config) -> TrainState:
    try:
        return ckpt.restore(state, step)
    except CheckpointError as e:
        if not is_builder_reference(cfg.model.network):
            raise
        raise CheckpointError(f"{e} The model comes from the user builder model.network={cfg.model.network}: "
                              "if that code changed since the run was created, restore the version that "
                              "trained it.") from None


def _choose_loop(cfg: Config, dataset: data_lib.Dataset) -> str:
    if jax.process_count() > 1:
        return "host"  # each process feeds only its own rows of every batch (see the docs on multi-host runs)
    if cfg.train.loop != "auto":
        return cfg.train.loop
    if cfg.model.network == "conv" and cfg.model.conv_impl == "xla" and jax.default_backend() == "cpu":
        # XLA:CPU runs its native convolutions inside a scanned loop far slower than as separate jitted steps
        # (benchmarks/RESULTS.md). The matmul convolutions (conv_impl=auto on CPU) do not have that problem, and
        # there scan is the faster loop.
        return "host"
    return "scan" if dataset.train.nbytes <= cfg.train.device_data_limit_mb * 2**20 else "host"


def host_params(params: Params) -> Params:
    """Parameters for the host-side evaluations (validation, monitor, images): as they are in one process; as
    numpy copies in a multi-process run, so that each process evaluates locally without cross-process calls."""
    return sharding.to_host(params) if jax.process_count() > 1 else params


def chunk_end(step: int, steps_per_epoch: int, log_every: int, total_steps: int, *,
              every: tuple[int, ...] = ()) -> int:
    """The next step at which the host acts: the next multiple of ``log_every`` (or of any of ``every``: the
    checkpoint, validation and monitor intervals), the end of the epoch, or the end of training. Multiples are of
    the global step, so records and checkpoints fall where the settings say (``log_every=50``: 50, 100, ...)
    whatever the epoch length, and a resumed run keeps the same grid."""
    epoch_end = (step // steps_per_epoch + 1) * steps_per_epoch
    candidates = [epoch_end, total_steps] + [_next_multiple(step, e) for e in (log_every, *every) if e]
    return min(candidates)


def _weighted_mean(trees: list[Any], weights: list[float]) -> Any:
    """``sum_i w_i tree_i`` leafwise (host numpy)."""
    return jax.tree.map(lambda *ms: sum(w * np.asarray(m) for w, m in zip(weights, ms)), *trees)


def _due(step: int, every: int, total: int) -> bool:
    """Whether an event with interval ``every`` (0: never) falls at ``step`` (always at the end of training)."""
    return step == total or (every > 0 and step % every == 0)


def train_loop(ctx: RunContext, *, progress: bool = True, log: Callable[[str], None] = print) -> TrainState:
    """Runs the steps from ``ctx.start_step`` to ``ctx.total_steps``; writes metrics and checkpoints."""
    cfg, ds = ctx.cfg, ctx.dataset
    total, spe, bs = ctx.total_steps, ctx.steps_per_epoch, cfg.train.batch_size
    train_step = make_train_step(ctx.model, ctx.objective, ctx.optimizer,
                                 dynamic_binarization=ds.dynamic_binarization)
    if cfg.train.loop == "scan" and jax.process_count() > 1:
        log(f"train.loop=scan keeps the whole dataset on every device; with {jax.process_count()} processes each "
            "feeds only its own rows of every batch, so the host loop is used.")
    loop = _choose_loop(cfg, ds)
    evaluator = evaluate.make_elbo_evaluator(ctx.model, batch_size=cfg.eval.batch_size)
    ckpt = Checkpointer(ctx.workdir / "checkpoints", max_to_keep=cfg.train.keep_checkpoints)
    main = sharding.is_main_process()
    writer = MetricWriter(ctx.workdir, resume_step=ctx.start_step if ctx.start_step else None, enabled=main)
    previous = [r for r in read_metrics(ctx.workdir) if "elapsed_seconds" in r]
    elapsed = previous[-1]["elapsed_seconds"] if previous else 0.0

    mesh = ctx.mesh if ctx.mesh is not None else sharding.make_mesh("1")
    state_sh = ctx.state_shardings if ctx.state_shardings is not None else (
        sharding.train_state_shardings(ctx.state, mesh))
    batch_sh = sharding.batch_sharding(mesh, 1 + len(ds.event_shape))
    # On one device the batch needs no constraint (the program is the one of a plain jit).
    scan_batch_sh = batch_sh if mesh.devices.size > 1 else None
    if loop == "scan":
        train_data = jax.device_put(ds.train, sharding.replicated(mesh))
        chunk_fns: dict[int, Callable] = {}
    else:
        step_fn = jit_train_step(train_step, state_sh, batch_sh)
        rows = sharding.process_rows(batch_sh, bs, ds.event_shape)  # this process's rows of every batch
    log(f"Training {count_params(ctx.state.params):,} parameters on {ds.name} "
        f"({ds.train.shape[0]:,} train / {ds.valid.shape[0]:,} valid / {ds.test.shape[0]:,} test, event "
        f"{ds.event_shape}) for {total:,} steps of batch {bs} ({total / spe:.1f} epochs), loop={loop}, "
        f"{sharding.describe(mesh)}, params {cfg.mesh.params}.")

    health = monitor.CollapseMonitor(cfg, ctx.model.latent_dim) if cfg.monitor.every else None
    if health is not None:
        monitor_fn = monitor.make_monitor_fn(ctx.model)
        monitor_x = jax.device_put(monitor.monitor_batch(ds, cfg.monitor.batch_size))
    monitor_seconds = 0.0

    bar = _progress_bar(total, ctx.start_step, enabled=progress)
    state = ctx.state
    step = ctx.start_step
    event_every = (cfg.train.checkpoint_every, cfg.train.eval_every or spe, cfg.monitor.every)
    pending: list[tuple[int, float, dict]] = []  # chunks since the last metric record
    postfix: dict[str, str] = {}
    seen_lengths: set[int] = set()
    steady_examples, steady_seconds = 0, 0.0
    perm_epoch, perm = -1, None
    max_bad = cfg.optimizer.max_consecutive_nonfinite
    nonfinite_seen = int(state.nonfinite_total)
    stop = contextlib.ExitStack()
    received = stop.enter_context(_stop_on_signals())
    try:
        while step < total:
            end = chunk_end(step, spe, cfg.train.log_every, total, every=event_every)
            length, epoch, first_batch = end - step, step // spe, step % spe
            if epoch != perm_epoch:
                perm_np = data_lib.epoch_permutation(data_seed(cfg), epoch, ds.train.shape[0]).astype(np.int32)
                perm = jnp.asarray(perm_np) if loop == "scan" else perm_np
                perm_epoch = epoch
            t0 = time.perf_counter()
            if loop == "scan":
                if length not in chunk_fns:
                    chunk_fns[length] = jit_train_chunk(
                        make_train_chunk(train_step, bs, length, batch_sharding=scan_batch_sh), state_sh, mesh)
                state, metrics = chunk_fns[length](state, train_data, perm, jnp.int32(first_batch))
            else:
                history = []
                for b in range(first_batch, first_batch + length):
                    local = ds.train[perm[b * bs:(b + 1) * bs][rows]]  # only this process's rows
                    state, m = step_fn(state, sharding.make_global_batch(local, batch_sh, bs))
                    history.append(m)
                metrics = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs), axis=0), *history)
            metrics = jax.device_get(metrics)
            seconds = time.perf_counter() - t0
            elapsed += seconds
            if length in seen_lengths:
                steady_examples += length * bs
                steady_seconds += seconds
            seen_lengths.add(length)
            step = end
            pending.append((length, seconds, metrics))
            if _due(step, cfg.train.log_every, total):  # one record per log_every steps, averaged over them
                steps_in = sum(n for n, _, _ in pending)
                mean = _weighted_mean([m for _, _, m in pending], [n / steps_in for n, _, _ in pending])
                record = {"step": step, "epoch": round(step / spe, 4), **{k: v for k, v in mean.items()},
                          "examples_per_sec": steps_in * bs / sum(t for _, t, _ in pending),
                          "elapsed_seconds": elapsed, "nonfinite_total": int(state.nonfinite_total)}
                record.setdefault("beta", 1.0)
                writer.write(record)
                pending.clear()
                postfix.update(loss=f"{float(record['loss']):.2f}", kl=f"{float(record['kl']):.2f}",
                               beta=f"{float(record['beta']):.3g}")
            bad = int(state.nonfinite_consecutive)
            skipped_now = int(state.nonfinite_total) - nonfinite_seen
            nonfinite_seen = int(state.nonfinite_total)
            if 0 < skipped_now and bad < max_bad:
                (bar.write if progress else log)(
                    f"WARNING {skipped_now} update(s) up to step {step} had a non-finite loss or gradient and "
                    f"were skipped ({nonfinite_seen} so far; training stops after {max_bad} in a row).")
            if bad >= max_bad:
                raise TrainingDivergedError(
                    f"Training stopped at step {step}: the last {bad} updates had non-finite (NaN/Inf) loss or "
                    f"gradients and were skipped. Last good checkpoint: step {ckpt.latest_step() or 'none'} in "
                    f"{ctx.workdir / 'checkpoints'} (nothing after it was saved). Likely causes: a learning rate "
                    "that is too high (try optimizer.learning_rate smaller, or optimizer.grad_clip_norm=1), data "
                    "outside the likelihood's support, or an unbounded decoder scale.")
            if health is not None and _due(step, cfg.monitor.every, total):
                t_mon = time.perf_counter()
                out = jax.device_get(monitor_fn(host_params(state.params), monitor_x,
                                                jax.random.key(cfg.train.seed + 3)))
                monitor_seconds += time.perf_counter() - t_mon
                health_record, warning = health.record(step, out)
                writer.write(health_record)
                if warning:
                    (bar.write if progress else log)(warning)
            if _due(step, cfg.train.eval_every or spe, total):
                if ds.valid.shape[0]:
                    val = evaluator(host_params(state.params), ds.valid, jax.random.key(cfg.train.seed + 1))
                    writer.write({"step": step, "split": "valid", **val})
                    postfix["valid_elbo"] = f"{val['elbo']:.2f}"
            if _due(step, cfg.train.checkpoint_every, total):
                ckpt.save(state)
            # The progress line after this step's events, so it shows this step's record and validation.
            bar.set_postfix(**postfix)
            bar.update(length)
            if received and step < total:
                ckpt.save(state)
                ckpt.wait()
                name = signal.Signals(received[0]).name
                raise TrainingPreempted(
                    f"Stopped by {name} at step {step} of {total}; a checkpoint of step {step} was written to "
                    f"{ctx.workdir / 'checkpoints'}. Re-run the same command to resume exactly where it stopped.",
                    received[0])
    finally:
        stop.close()
        bar.close()
        writer.close()
        ckpt.close()
    ctx.steady_examples_per_sec = steady_examples / steady_seconds if steady_seconds else None
    ctx.monitor_seconds = monitor_seconds
    ctx.train_seconds = elapsed
    return state


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def _progress_bar(total: int, initial: int, enabled: bool):
    """A tqdm bar on a terminal; in logs (stderr not a TTY) one line per 10% of the run instead."""
    if enabled and not sys.stderr.isatty():
        return _LineProgress(total, initial)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not enabled,
                desc="train", mininterval=0.5)


class _LineProgress:
    """Progress for non-interactive output: ``step N/M (p%) loss=... kl=... [elapsed, ETA]`` every 10%."""

    def __init__(self, total: int, initial: int):
        self.total, self.n, self.start_n = total, initial, initial
        self.t0 = time.perf_counter()
        self.postfix: dict[str, str] = {}
        self.next_report = self._next(initial)

    def _next(self, n: int) -> int:
        tenth = max(1, self.total // 10)
        return min(self.total, (n // tenth + 1) * tenth)

    def update(self, k: int) -> None:
        self.n += k
        if self.n >= self.next_report:
            self.next_report = self._next(self.n)
            elapsed = time.perf_counter() - self.t0
            rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            fields = " ".join(f"{k}={v}" for k, v in self.postfix.items())
            print(f"step {self.n:,}/{self.total:,} ({100 * self.n / self.total:.0f}%) {fields} "
                  f"[{elapsed:.0f} s, ETA {eta:.0f} s]", file=sys.stderr, flush=True)

    def set_postfix(self, **kwargs: str) -> None:
        self.postfix.update(kwargs)

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def final_report(ctx: RunContext, state: TrainState, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluates on the test split, writes ``summary.json`` and the image grids (process 0), returns the summary.

    The IWAE estimate is sharded over the mesh's ``data`` axis (its batch rounded up to a multiple of the axis
    size); in a multi-process run the other evaluations run on each process's own copy of the parameters.
    """
    cfg, ds, model = ctx.cfg, ctx.dataset, ctx.model
    mesh = ctx.mesh
    params = host_params(state.params)
    key = jax.random.key(cfg.train.seed + 2)
    test = ds.test
    elbo_terms = evaluate.evaluate_elbo(model, params, test, jax.random.fold_in(key, 0),
                                        batch_size=cfg.eval.batch_size)
    nll_data = test[data_lib.random_subset(test.shape[0], cfg.eval.max_examples or None, data_seed(cfg))]
    t0 = time.perf_counter()
    if mesh is not None and mesh.devices.size > 1:
        n_data = sharding.data_axis_size(mesh)
        nll_batch = -(-cfg.eval.batch_size // n_data) * n_data
        nll = evaluate.iwae_log_likelihood(model, state.params, nll_data, jax.random.fold_in(key, 1),
                                           num_samples=cfg.eval.num_samples, batch_size=nll_batch, mesh=mesh)
    else:
        nll = evaluate.iwae_log_likelihood(model, params, nll_data, jax.random.fold_in(key, 1),
                                           num_samples=cfg.eval.num_samples, batch_size=cfg.eval.batch_size)
    nll_seconds = time.perf_counter() - t0
    latent = diagnostics.latent_summary(model, params, test, jax.random.fold_in(key, 2))
    history = [r for r in read_metrics(ctx.workdir) if "split" not in r]
    steady = ctx.steady_examples_per_sec
    if steady is None and history:
        steady = float(np.median([r["examples_per_sec"] for r in history[1:]] or [history[0]["examples_per_sec"]]))
    num_dims = math.prod(ds.event_shape)
    summary = {
        "dataset": ds.name,
        "preset": cfg.preset,
        "steps": int(state.step),
        "epochs": round(int(state.step) / ctx.steps_per_epoch, 3),
        "test_elbo": elbo_terms["elbo"],
        "test_recon": elbo_terms["recon"],
        "test_kl": elbo_terms["kl"],
        "test_nll_iwae": -nll.mean,
        "test_nll_iwae_stderr": nll.standard_error,
        "nll_num_samples": nll.num_samples,
        "nll_num_examples": int(nll_data.shape[0]),
        "nll_seconds": nll_seconds,
        "test_bits_per_dim": bits_per_dim(-nll.mean, num_dims),
        "kl_per_dim": elbo_terms.get("kl_per_dim"),
        "active_units": latent["active_units"],
        "mutual_information": latent["mutual_information"],
        "train_seconds": ctx.train_seconds if ctx.train_seconds is not None else (
            history[-1]["elapsed_seconds"] if history else 0.0),
        "examples_per_sec": steady,
        "nonfinite_updates": int(state.nonfinite_total),
        "monitor_seconds": ctx.monitor_seconds,
        "num_params": count_params(params),
        "params_sha256": params_sha256(params),
        "latent": latent,
    }
    if sharding.is_main_process():
        _write_images(ctx, params, key)
        atomic_write_json(ctx.workdir / "summary.json", summary)
    return summary


def _write_images(ctx: RunContext, params: Params, key: jax.Array) -> None:
    cfg, ds, model = ctx.cfg, ctx.dataset, ctx.model
    scale = report.value_scale(cfg.data.scale)
    n = max(8, cfg.eval.num_images - cfg.eval.num_images % 8)
    # A fixed random subset: some test splits are sorted by class (binarized MNIST).
    pick = data_lib.random_subset(ds.test.shape[0], n // 2, data_seed(cfg))
    originals = ds.test[pick]
    recon = np.asarray(jax.jit(model.reconstruct)(params, originals))
    z = jax.jit(model.prior_sample, static_argnums=2)(params, jax.random.fold_in(key, 3), n)
    samples = np.asarray(jax.jit(model.decode_mean)(params, z))
    orig_img, recon_img, sample_img = (report.to_images(a, ds.event_shape, scale=scale)
                                       for a in (originals, recon, samples))
    if orig_img is None:
        return  # not image data
    report.save_png(ctx.workdir / "reconstructions.png", report.reconstruction_grid(orig_img, recon_img))
    report.save_png(ctx.workdir / "samples.png", report.image_grid(sample_img, ncols=8))


def format_summary(summary: dict[str, Any], workdir: Path) -> str:
    rows = [
        ("run directory", str(workdir)),
        ("steps", f"{summary['steps']:,} ({summary['epochs']} epochs)"),
        ("test ELBO", f"{summary['test_elbo']:.3f} nats"),
        ("  reconstruction", f"{summary['test_recon']:.3f} nats"),
        ("  KL", f"{summary['test_kl']:.3f} nats"),
        (f"test NLL (IWAE, k={summary['nll_num_samples']})",
         f"{summary['test_nll_iwae']:.3f} ± {summary['test_nll_iwae_stderr']:.3f} nats "
         f"on {summary['nll_num_examples']:,} examples"),
        ("active units", f"{summary['active_units']} of {len(summary['latent']['posterior_mean_variance'])}"),
        ("mutual information", f"{summary['mutual_information']:.3f} nats"),
        ("train time", f"{summary['train_seconds']:.1f} s"),
        ("throughput", f"{summary['examples_per_sec']:,.0f} examples/s" if summary["examples_per_sec"] else "n/a"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def fit(cfg: Config, workdir: str | os.PathLike, *, model: ModelBuilder | None = None, force: bool = False,
        progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains (or resumes) a run in ``workdir`` and writes the complete run directory; returns the summary.

    Args:
      cfg: the configuration (:func:`jaxvae.config.get_preset`, :func:`jaxvae.config.apply_overrides`).
      workdir: the run directory; an existing one is resumed from its latest checkpoint.
      model: a user model builder ``(event_shape, latent_dim, likelihood, rngs) -> jv.Model`` (default: the
        built-in network named by ``cfg.model.network``). Its reference ``MODULE:QUALNAME`` is recorded as
        ``model.network`` in ``config.json`` so that resume, ``jaxvae evaluate``/``sample``/``diagnose`` and
        :func:`load_run` rebuild the same model; define it in an importable module for that.
      force: resume even if ``cfg`` differs from the saved config.
    """
    if not sharding.is_main_process():  # in a multi-process run only process 0 logs and shows progress
        log, progress = (lambda _: None), False
    if model is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, network=builder_reference(model)))
        if not reference_is_importable(model):
            log(f"Note: the model builder {cfg.model.network} is not importable by that name (a lambda, a local "
                "function or one defined in __main__), so the jaxvae CLI cannot reopen this run; reopen it with "
                "jv.load_run(workdir, model=...) or define the builder in a module.")
    ctx = setup_run(cfg, workdir, force=force, log=log, model=model)
    state = ctx.state
    if ctx.start_step < ctx.total_steps:
        state = train_loop(ctx, progress=progress, log=log)
    else:
        log(f"{ctx.workdir} already finished its {ctx.total_steps} steps; re-evaluating.")
    summary = final_report(ctx, state, log=log)
    log(format_summary(summary, ctx.workdir))
    return summary


def restore_run(workdir: str | os.PathLike, *, step: int | None = None,
                model: ModelBuilder | None = None) -> tuple[RunContext, Params]:
    """Loads a finished or interrupted run: its config, data, model and the parameters of the checkpoint at
    ``step`` (default: the latest). Writes nothing. ``model``: the builder, for runs whose recorded builder is
    not importable."""
    workdir = Path(workdir)
    saved = workdir / "config.json"
    if not saved.exists():
        hint = ""
        members = sorted(p.parent.name for p in workdir.glob("*/config.json"))
        if members:
            hint = f" It holds runs in subfolders ({', '.join(members[:4])}{', ...' if len(members) > 4 else ''})."
        raise CheckpointError(f"{workdir} is not a jaxvae run directory (no config.json).{hint} Train one first "
                              f"with `jaxvae train --workdir {workdir}`.")
    cfg = config_lib.from_dict(json.loads(saved.read_text()))
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=cfg.train.keep_checkpoints)
    if ckpt.latest_step() is None:
        ckpt.close()
        raise CheckpointError(f"{workdir} has no checkpoint yet; resume training with `jaxvae train --workdir "
                              f"{workdir}`.")
    ckpt.close()
    ctx = setup_run(cfg, workdir, log=lambda _: None, model=model, restore_step=step, write_config=False)
    return ctx, ctx.state.params


class LoadedRun(NamedTuple):
    """What :func:`load_run` returns.

    Attributes:
      model: the :class:`~jaxvae.model.PureModel` (``model.forward(params, x, key, k)``, ``model.encode``, ...).
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


def load_run(workdir: str | os.PathLike, step: int | None = None, *,
             model: ModelBuilder | None = None) -> LoadedRun:
    """Opens a run directory (finished or interrupted) for analysis in Python; writes nothing.

    Example::

        run = jv.load_run("runs/digits-20261201-120000")
        out = run.model.forward(run.params, run.dataset.test[:10], jax.random.key(0), 5)

    Args:
      workdir: the run directory (``config.json`` and ``checkpoints/``).
      step: the checkpoint to restore (default: the latest); an absent step is a clear error.
      model: the model builder, needed only when the recorded ``model.network`` is not importable (a lambda or a
        function defined in a notebook).
    """
    ctx, params = restore_run(workdir, step=step, model=model)
    return LoadedRun(ctx.model, params, ctx.cfg, ctx.dataset, int(ctx.state.step), ctx.workdir)
