"""The ``jaxvae`` command: train, sweep, evaluate, sample, diagnose, config show, presets.

Bad input exits non-zero with a one-paragraph message (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import sys
import textwrap
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

from jaxvae import config as config_lib
from jaxvae.errors import ConfigError, JaxvaeError, TrainingPreempted
from jaxvae.rundir import lock as rundir

EXIT_USAGE = 2
EXIT_FAILED = 1  # an unexpected error, or an exception in a background thread or during clean-up
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped cleanly by SIGTERM/SIGINT with a checkpoint; re-run to resume
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a command killed by a closed pipe would exit


DEFAULT_PRESET = "digits"
USER_DATA_PRESET = "user-data"  # the default instead, when data.name is a path rather than a registered dataset


def _overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` values, each checked to be ``KEY=VALUE`` (``--set KEY VALUE`` is refused, naming the fix)."""
    items = list(args.set or [])
    for i, item in enumerate(items):
        if "=" in item:
            continue
        following = items[i + 1] if i + 1 < len(items) else None
        if following is not None and "=" not in following:
            fix = f"--set {item}={following}"
        else:
            fix = f"--set {item}=VALUE"
        raise JaxvaeError(f"--set takes KEY=VALUE overrides, but got {item!r}"
                          f"{f' followed by {following!r}' if following is not None else ''}. "
                          f"Join key and value with '=' (no spaces), e.g. {fix}; several overrides may follow one "
                          "--set: --set model.latent_dim=16 train.epochs=50.")
    return items


def _data_name(overrides: list[str]) -> str | None:
    """The last ``data.name`` given with ``--set``, if any."""
    name = None
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "data.name":
            name = value.strip()
    return name


def _default_preset(overrides: list[str]) -> str:
    """The preset of a command without ``--preset``: the preset named like the dataset of ``data.name`` (``--set
    data.name=mnist`` starts from the ``mnist`` preset), ``user-data`` when ``data.name`` is user data (a path,
    not a registered dataset name), else ``digits``."""
    name = _data_name(overrides)
    if not name:
        return DEFAULT_PRESET
    if name in config_lib.PRESETS:
        return name
    from jaxvae.data import DATASETS  # imports JAX (the generated datasets' module): only when needed

    return USER_DATA_PRESET if name not in DATASETS else DEFAULT_PRESET


def _config_from_args(args: argparse.Namespace, components=None) -> config_lib.Config:
    """The config of ``--preset``, ``--config FILE`` (on top of its preset) and ``--set`` (on top of both)."""
    overrides = _overrides(args)
    if getattr(args, "config", None):
        data = config_lib.read_file(args.config)
        section = data.get("data") if isinstance(data.get("data"), dict) else {}
        named = [f"data.name={section['name']}"] if isinstance(section.get("name"), str) else []
        preset = args.preset or data.get("preset") or _default_preset(named + overrides)
        cfg = config_lib.from_file(args.config, preset=preset if isinstance(preset, str) else None,
                                   components=components)
    else:
        cfg = config_lib.get_preset(args.preset or _default_preset(overrides))
    return config_lib.apply_overrides(cfg, overrides, components=components)


def _preset_note(args: argparse.Namespace, cfg: config_lib.Config) -> str | None:
    """Which preset a run without ``--preset`` started from, when ``data.name`` chose it (not ``digits``)."""
    chosen = _default_preset(args.set or [])
    if args.preset or getattr(args, "config", None) or chosen == DEFAULT_PRESET or cfg.preset != chosen:
        return None  # chosen with --preset, or read from a run directory's config.json (resume)
    if chosen == USER_DATA_PRESET:
        return (f"Preset: {cfg.preset} (data.name={cfg.data.name} is not a registered dataset, so the "
                f"general-purpose {cfg.preset!r} preset is the starting point; pass --preset to choose another).")
    return (f"Preset: {cfg.preset} (the preset of data.name={cfg.data.name}; pass --preset to choose another "
            "starting point).")


def _has_files(workdir: Path) -> bool:
    """Whether ``workdir`` holds anything besides a run-directory lock (a run that is starting holds only that)."""
    from jaxvae.rundir.lock import LOCK_NAME

    return workdir.is_dir() and any(p.name != LOCK_NAME for p in workdir.iterdir())


def _say(text: str) -> None:
    print(text, flush=True)  # each line at once, also into a pipe or a log file


def cmd_train(args: argparse.Namespace) -> int:
    from jaxvae.runs import run as runs

    if args.workdir:
        workdir = Path(args.workdir)
        saved = workdir / "config.json"
        if saved.exists() and not args.preset and not args.set and not args.config:
            cfg = config_lib.from_saved(saved)  # resume exactly what is there
        else:
            cfg = _config_from_args(args)
        if _has_files(workdir) and not saved.exists() and not args.force:
            raise JaxvaeError(f"{workdir} exists and is not empty, but it is not a jaxvae run directory (no "
                              "config.json); refusing to write into it. Choose a new --workdir, or pass --force.")
    else:
        cfg = _config_from_args(args)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = Path("runs") / f"{cfg.preset}-{stamp}"
        if workdir.exists():
            raise JaxvaeError(f"{workdir} already exists; pass --workdir to choose another run directory.")
    created = not workdir.exists()
    import jax

    if jax.process_count() > 1:  # every process checks the folder before process 0 writes into it
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxvae train: run directory checked")
    if jax.process_index() == 0:
        note = _preset_note(args, cfg)
        if note:
            print(note, flush=True)
    try:  # `jv.fit` prints the run directory once the run is accepted (after every check of config and data)
        runs.fit(cfg, workdir, force=args.force, progress=not args.no_progress, log=_say)
    except JaxvaeError:
        if created and workdir.is_dir():
            rundir.remove_if_only_lock(workdir)  # refused before anything was written: leave no run directory
        raise
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from jaxvae.runs import sweep

    cfg = _config_from_args(args)
    over = sweep.parse_over(args.over or [])
    if not over and args.seeds == 1:
        raise JaxvaeError("Nothing to sweep: give --over KEY=V1,V2,... (e.g. --over objective.beta=0.5,1,2) "
                          "and/or --seeds N.")
    workdir = Path(args.workdir) if args.workdir else (
        Path("runs") / f"sweep-{cfg.preset}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if _has_files(workdir) and not (workdir / "sweep_config.json").exists():
        raise JaxvaeError(f"{workdir} exists and is not empty, but it is not a jaxvae sweep directory; refusing "
                          "to write into it. Choose a new --workdir.")
    note = _preset_note(args, cfg)
    if note:
        print(note, flush=True)
    print(f"Sweep directory: {workdir}", flush=True)
    created = not workdir.exists()
    try:
        sweep.run_sweep(cfg, over, workdir, seeds=args.seeds, progress=not args.no_progress, log=_say)
    except JaxvaeError:
        if created and workdir.is_dir():
            rundir.remove_if_only_lock(workdir)  # refused before anything was written: leave no directory
        raise
    return 0


# `jaxvae evaluate --metrics`: the likelihood group (ELBO and IWAE NLL), every disentanglement metric, or single
# disentanglement metrics by their jaxvae.evaluation.disentanglement.METRICS names.
EVAL_GROUPS = ("likelihood", "disentanglement")


def _eval_metrics(spec: str) -> tuple[bool, list[str]]:
    """``--metrics`` -> (likelihood?, the disentanglement metrics to compute)."""
    from jaxvae.evaluation.disentanglement import METRICS

    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in (*EVAL_GROUPS, *METRICS)]
    if unknown or not names:
        raise JaxvaeError(f"--metrics {spec!r}: unknown {', '.join(map(repr, unknown)) or 'empty list'}. Use a "
                          f"comma-separated list of {', '.join(EVAL_GROUPS)} (all of {', '.join(METRICS)}) or "
                          f"single disentanglement metrics, e.g. --metrics likelihood,disentanglement.")
    chosen = list(METRICS) if "disentanglement" in names else [m for m in METRICS if m in names]
    return "likelihood" in names, chosen


def _likelihood_results(args: argparse.Namespace, ctx, params, data, key) -> dict:
    import jax
    import numpy as np

    from jaxvae import sharding
    from jaxvae.distributions.likelihoods import bits_per_dim
    from jaxvae.evaluation import likelihood as evaluate

    host_params = sharding.host_local(params)  # multi-process: each process evaluates its own copy
    terms = evaluate.evaluate_elbo(ctx.model, host_params, data, key, batch_size=args.batch_size)
    mesh = ctx.mesh if ctx.mesh is not None and ctx.mesh.devices.size > 1 else None
    batch = args.batch_size
    if mesh is not None:  # examples split over the mesh's data axis: a batch that divides evenly
        n_data = sharding.data_axis_size(mesh)
        batch = -(-batch // n_data) * n_data
    est = evaluate.iwae_log_likelihood(ctx.model, params, data, jax.random.fold_in(key, 1),
                                       num_samples=args.num_samples, batch_size=batch, mesh=mesh)
    if ctx.dataset.vocabulary:  # token data: bits per token (the end token counts, padding does not)
        from jaxvae.data import text

        num_dims = text.mean_length(data)
    else:
        num_dims = int(np.prod(ctx.dataset.event_shape))
    from jaxvae.data.batches import num_examples

    return {"num_examples": num_examples(data), "elbo": terms["elbo"], "recon": terms["recon"], "kl": terms["kl"],
            "nll_iwae": -est.mean, "nll_iwae_stderr": est.standard_error, "nll_num_samples": est.num_samples,
            "bits_per_dim": bits_per_dim(-est.mean, num_dims)}


def cmd_evaluate(args: argparse.Namespace) -> int:
    likelihood, chosen = _eval_metrics(args.metrics)
    if args.disentanglement_points < 2:
        raise JaxvaeError(f"--disentanglement-points must be at least 2; got {args.disentanglement_points}.")
    path = Path(args.out) if args.out else Path(args.workdir) / "eval.json"
    with rundir.lock_for_output(args.workdir, path):
        return _evaluate(args, path, likelihood, chosen)


def _evaluate(args: argparse.Namespace, path: Path, likelihood: bool, chosen: list[str]) -> int:
    import jax

    from jaxvae.data import batches, random_subset
    from jaxvae.evaluation import likelihood as evaluate
    from jaxvae.rundir.writers import atomic_write_json, read_json_object
    from jaxvae.runs import run as runs

    ctx, params = runs.restore_run(args.workdir, step=args.step)
    if chosen and ctx.dataset.factors is None:
        raise JaxvaeError(f"--metrics {args.metrics}: disentanglement metrics need a dataset with ground-truth "
                          f"factors, and {ctx.dataset.name} has none. Train on dsprites or dsprites-small (e.g. "
                          "`jaxvae train --preset dsprites-small`), or evaluate with --metrics likelihood.")
    key = jax.random.key(args.seed)
    step = int(ctx.state.step)
    result = {"split": args.split, "step": step}
    old = read_json_object(path, "it will be replaced by this evaluation") if path.exists() else None
    if old and old.get("step") == step and old.get("split") == args.split:
        result = {**old, **result}  # keep the other group's results of the same step and split
    if likelihood:
        data = ctx.dataset.split(args.split)
        rows = random_subset(batches.num_examples(data), args.max_examples or None, args.seed)
        data = batches.take(data, rows)
        result.update(_likelihood_results(args, ctx, params, data, key))
        labels = (ctx.dataset.labels or {}).get(args.split)
        if ctx.cfg.model.conditional == "m2" and labels is not None:  # M2's classifier q(y|x)
            from jaxvae.models import conditional

            result["classification_error"] = conditional.classification_error(
                ctx.model, params, batches.images(data), labels[rows])
    if chosen:
        points = args.disentanglement_points
        result["disentanglement"] = evaluate.disentanglement_metrics(
            ctx.model, params, ctx.dataset, jax.random.fold_in(key, 2), metrics=chosen, num_train=points,
            num_test=max(points // 2, 1))
        result["disentanglement_settings"] = {"metrics": chosen, "num_train": points,
                                              "num_test": max(points // 2, 1), "seed": args.seed,
                                              "representation": "posterior mean"}
    if jax.process_index() != 0:
        return 0  # process 0 writes and reports
    atomic_write_json(path, result)
    if likelihood:
        print(f"{args.split} split, {result['num_examples']:,} examples, step {step:,}:")
        rows = [("ELBO", f"{result['elbo']:.3f} nats"),
                (f"NLL (IWAE, k={result['nll_num_samples']})",
                 f"{result['nll_iwae']:.3f} ± {result['nll_iwae_stderr']:.3f} nats"),
                ("bits/token" if ctx.dataset.vocabulary else "bits/dim", f"{result['bits_per_dim']:.4f}")]
        if "classification_error" in result:
            rows.append(("classification error", f"{100 * result['classification_error']:.2f}% (q(y|x), M2)"))
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"  {label.ljust(width)}  {value}")
    if chosen:
        print(f"disentanglement at step {step:,} ({ctx.dataset.name}, posterior means, "
              f"{args.disentanglement_points:,} training points per metric):")
        for name, value in result["disentanglement"].items():
            print(f"  {name:27s}{value:.4f}")
    print(f"Wrote {path}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out {out} must end in .npz (a dataset file that data.name can read back).")
    with rundir.lock_for_output(args.workdir, out):
        return _encode(args, out)


def _encode(args: argparse.Namespace, out: Path) -> int:
    import io

    import numpy as np

    from jaxvae.evaluation import diagnostics
    from jaxvae.rundir.writers import atomic_write_bytes
    from jaxvae.runs import run as runs

    ctx, params = runs.restore_run(args.workdir, step=args.step)
    arrays = {}
    for split in ("train", "valid", "test"):
        x = ctx.dataset.split(split)
        if len(x) or split == "train":
            arrays[split] = np.asarray(diagnostics.encode_dataset(ctx.model, params, x).loc, np.float32)
        labels = (ctx.dataset.labels or {}).get(split)
        if labels is not None and len(x):
            arrays[f"{split}_labels"] = np.asarray(labels, np.int32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(out, buffer.getvalue())
    sizes = ", ".join(f"{k} {v.shape[0]:,}" for k, v in arrays.items() if not k.endswith("_labels"))
    print(f"Wrote {out}: posterior means [N, {ctx.model.latent_dim}] of {sizes}"
          + (" with labels" if any(k.endswith("_labels") for k in arrays) else "")
          + f". Train on them with --set data.name={out} model.likelihood=gaussian (e.g. M1+M2: "
          "model.conditional=m2).")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    tag = f"{args.sampler}-t{args.temperature:g}" if args.sampler == "prior" else args.sampler
    if args.label is not None:
        tag += f"-label{args.label}"
    out = Path(args.out or Path(args.workdir) / f"samples-{tag}-seed{args.seed}.png")
    with rundir.lock_for_output(args.workdir, out):
        return _sample(args, out)


def _sample(args: argparse.Namespace, out: Path) -> int:
    import jax
    import numpy as np

    from jaxvae.data import batches, random_subset
    from jaxvae.evaluation import diagnostics, expost, samplers
    from jaxvae.models import conditional
    from jaxvae.rundir import report
    from jaxvae.runs import run as runs

    ctx, params = runs.restore_run(args.workdir, step=args.step)
    model = ctx.model
    classes = conditional.grid_classes(ctx.cfg)
    if args.label is not None and not classes:
        raise ConfigError(f"--label draws samples of one class from a conditional model; {args.workdir} was "
                          "trained without one (model.conditional=none). Train with --set model.conditional=cvae "
                          "(or m2) to sample by label.")
    if args.label is not None and not 0 <= args.label < classes:
        raise ConfigError(f"--label {args.label} is not a class of this run: its classes are 0..{classes - 1}.")
    key = jax.random.key(args.seed)
    if args.sampler == "prior":
        z = samplers.prior_samples(model, params, key, args.num, temperature=args.temperature)
    elif args.sampler == "vamp":
        z = samplers.vamp_samples(model, params, key, args.num)
    else:  # an ex-post density fitted to the training set's posterior means
        data = ctx.dataset.train
        idx = random_subset(batches.num_examples(data), 10_000, args.seed)
        q = diagnostics.encode_dataset(model, params, batches.take(data, idx))
        if args.sampler == "gmm":  # Ghosh et al. 2020
            fit = samplers.fit_gmm(jax.random.fold_in(key, 1), q.loc, min(args.components, len(idx)))
            z = samplers.gmm_sample(fit.gmm, jax.random.fold_in(key, 2), args.num)
        elif args.sampler == "flow":  # RealNVP (jaxvae.evaluation.expost)
            z = expost.flow_sample(expost.fit_flow(jax.random.fold_in(key, 1), q.loc), jax.random.fold_in(key, 2),
                                   args.num)
        else:  # the two-stage VAE (Dai & Wipf 2019; jaxvae.evaluation.expost), sampled with its gamma noise:
            # when the second stage collapses (gamma near 1), its mean decodes every u to nearly the same latent
            # (RESULTS.md)
            z = expost.two_stage_sample(expost.fit_two_stage(jax.random.fold_in(key, 1), q.loc),
                                        jax.random.fold_in(key, 2), args.num, noise=True)
    if args.label is not None:
        z = conditional.latents_with_label(z, args.label)
    x = np.asarray(jax.jit(model.decode_mean)(params, z))
    from jaxvae.rundir.writers import atomic_write_npy

    atomic_write_npy(out.with_suffix(".npy"), x)
    if ctx.dataset.vocabulary:  # token data: the decoded texts
        from jaxvae.data import text
        from jaxvae.rundir.writers import atomic_write_text

        texts = text.decode(x, ctx.dataset.vocabulary)
        atomic_write_text(out.with_suffix(".txt"), "".join(f"{t}\n" for t in texts))
        print(" ".join(texts[:16]))
        print(f"Wrote {out.with_suffix('.txt')} and {out.with_suffix('.npy')}")
        return 0
    images = report.to_images(x, ctx.dataset.event_shape, scale=report.value_scale(ctx.cfg.data.scale))
    if images is not None:
        what = {"prior": f"the prior (T={args.temperature:g})", "vamp": "the VampPrior",
                "gmm": f"an ex-post Gaussian mixture ({args.components} components)",
                "flow": "an ex-post RealNVP flow", "two_stage": "a two-stage VAE (Dai & Wipf)"}[args.sampler]
        label = f", class {args.label}" if args.label is not None else (
            "; column c: class c" if classes else "")
        ncols = 8 if args.label is not None or not classes else classes
        title = f"{args.num} samples from {what}, seed {args.seed}{label}"
        report.save_png(out, report.annotate_grid(report.image_grid(images, ncols=ncols), title=title))
        print(f"Wrote {out} and {out.with_suffix('.npy')}")
    else:
        print(f"Wrote {out.with_suffix('.npy')} (data is not image-like, no PNG)")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from jaxvae.runs import diagnose

    diagnose.run_diagnose(args.workdir, max_examples=args.max_examples, gmm_components=args.components,
                          seed=args.seed, step=args.step, out_dir=args.out, log=_say)
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    # Validated like train, with the built-in components' names (the registries would import JAX).
    cfg = _config_from_args(args)
    note = _preset_note(args, cfg)
    if note:
        print(note, file=sys.stderr)  # stdout stays pure JSON
    print(config_lib.to_json(cfg))
    return 0


def cmd_config_keys(args: argparse.Namespace) -> int:
    rows = [k for k in config_lib.describe_keys() if not args.grep or args.grep.lower() in
            f"{k.key} {k.meaning}".lower()]
    if not rows:
        raise JaxvaeError(f"No config key or description contains {args.grep!r}; `jaxvae config keys` lists all.")
    width = max(len(k.key) for k in rows)
    for k in rows:
        lines = textwrap.wrap(f"{k.meaning} [{k.type}, default: {k.default or '(empty)'}]", max(40, 110 - width))
        print(f"{k.key.ljust(width)}  {lines[0]}")
        for line in lines[1:]:
            print(f"{' ' * width}  {line}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    width = max(map(len, config_lib.PRESETS))
    for name, (description, _) in config_lib.PRESETS.items():
        lines = textwrap.wrap(description, 100 - width)
        print(f"{name.ljust(width)}  {lines[0]}")
        for line in lines[1:]:
            print(f"{' ' * width}  {line}")
    return 0


def _step(text: str) -> int | str:
    if text in ("best", "latest"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a step: give a step number, 'latest' or 'best'.") \
            from None


def _add_step_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--step", type=_step, default=None,
                   help="checkpoint to use: a step number, 'latest', or 'best' (the best validation of a run "
                   "trained with train.early_stopping); default: the model the run reports (best with early "
                   "stopping, else latest)")


def _add_distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "multi-process runs", "Several hosts (or processes) train one model: start the same command on each. "
        "Cloud TPU pod slices, SLURM and Open MPI are detected; otherwise give all three (or set "
        "$JAXVAE_COORDINATOR_ADDRESS, $JAXVAE_NUM_PROCESSES, $JAXVAE_PROCESS_ID). See docs/multi_gpu.md.")
    g.add_argument("--coordinator-address", metavar="HOST:PORT", help="address of process 0, e.g. 10.0.0.1:1234")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes in the run")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")


def _start_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` when flags, environment or cluster say so (before any other JAX call)."""
    if not hasattr(args, "coordinator_address"):
        return
    from jaxvae import sharding

    how = sharding.maybe_initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    if how is not None:
        import jax

        if jax.process_index() == 0:
            print(f"Multi-process run: {jax.process_count()} processes, {jax.device_count()} devices ({how}).",
                  flush=True)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"named preset (see `jaxvae presets`); default: {DEFAULT_PRESET}, or "
                   f"{USER_DATA_PRESET} when data.name is a path to user data (.npy/.npz file or image folder)")
    p.add_argument("--config", metavar="FILE",
                   help="a config file, JSON (the format of a run's config.json) or YAML (.yaml/.yml), with all "
                   "or some sections, on top of its \"preset\" (or --preset); --set applies on top of it")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="override config values, e.g. --set model.latent_dim=16 train.epochs=50 (several after "
                   "one --set; --set may be repeated); `jaxvae config show` lists every key")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxvae", description="Train, control and diagnose VAEs in JAX.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (re-running on a workdir resumes it)")
    _add_config_args(p)
    p.add_argument("--workdir", help="run directory (default: runs/<preset>-<timestamp>)")
    p.add_argument("--force", action="store_true", help="resume even if the config differs from the saved one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_distributed_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="train a grid of models (beta, schedules, free bits, seeds) as one program")
    _add_config_args(p)
    p.add_argument("--over", action="extend", nargs="+", metavar="KEY=V1,V2,...",
                   help="values of a sweepable key, e.g. --over objective.beta=0.1,0.5,1,2; several keys make a "
                   "grid: --over objective.beta=1,4 objective.free_bits.nats=0,0.5 (several after one --over; "
                   "--over may be repeated)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per grid point (train.seed, +1, ...)")
    p.add_argument("--workdir", help="sweep directory (default: runs/sweep-<preset>-<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("evaluate", help="IWAE log-likelihood and ELBO of a trained run; writes eval.json")
    p.add_argument("--workdir", required=True, help="run directory of a `jaxvae train` run")
    p.add_argument("--num-samples", type=int, default=5000, help="importance samples per example (default 5000)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="data split to evaluate (default test)")
    p.add_argument("--max-examples", type=int, default=None, help="evaluate a random subset of this size")
    p.add_argument("--batch-size", type=int, default=100,
                   help="examples per evaluation batch (default 100; lower it if memory runs out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples and the subset (default 0)")
    p.add_argument("--metrics", default="likelihood", metavar="NAMES",
                   help="comma-separated: likelihood (ELBO and IWAE NLL; the default), disentanglement (MIG, "
                        "SAP, DCI, modularity/explicitness, BetaVAE and FactorVAE scores, for datasets with "
                        "ground-truth factors such as dsprites), or single ones: mig, sap, dci, "
                        "modularity_explicitness, beta_vae, factor_vae")
    p.add_argument("--disentanglement-points", type=int, default=10000, metavar="N",
                   help="training points of each disentanglement metric; test points: N/2 (default 10000, "
                        "disentanglement_lib's study setting)")
    p.add_argument("--out", metavar="FILE", help="where to write the results (default: <workdir>/eval.json; a "
                   "path outside the run directory needs no lock, so a run can be evaluated while it trains)")
    _add_step_arg(p)
    _add_distributed_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="decode samples from the prior of a trained run")
    p.add_argument("--workdir", required=True, help="run directory of a `jaxvae train` run")
    p.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--sampler", choices=["prior", "gmm", "flow", "two_stage", "vamp"], default="prior",
                   help="prior (with --temperature); ex-post densities fitted to the training set's posterior "
                   "means: gmm (Gaussian mixture, Ghosh et al. 2020), flow (RealNVP), two_stage (a second VAE, "
                   "Dai & Wipf 2019); vamp (the VampPrior's mixture)")
    p.add_argument("--temperature", type=float, default=1.0, help="prior sampler: std scale (default 1.0)")
    p.add_argument("--components", type=int, default=10, help="gmm sampler: mixture components")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--label", type=int, help="a conditional run (model.conditional=cvae or m2): the class every "
                   "sample is drawn for (default: the classes in turn, one grid column each)")
    p.add_argument("--out", help="PNG path (a .npy with the raw samples is written beside it; default: "
                   "<workdir>/samples-<sampler>[-t<temperature>][-label<label>]-seed<seed>.png)")
    _add_step_arg(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("encode", help="posterior means of every split of a trained run, as a dataset file "
                       "(.npz with labels) that another run can train on (M1+M2 of Kingma et al. 2014)")
    p.add_argument("--workdir", required=True, help="run directory of a `jaxvae train` run")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the dataset file to write (train, valid, "
                   "test and <split>_labels where the data has labels)")
    _add_step_arg(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("diagnose", help="latent health of a trained run: diagnostics.json and report.html")
    p.add_argument("--workdir", required=True, help="run directory of a `jaxvae train` run (report goes there)")
    p.add_argument("--max-examples", type=int, default=2000, help="examples per split used for the statistics")
    p.add_argument("--components", type=int, default=10, help="components of the ex-post mixture")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets and samples (default 0)")
    p.add_argument("--out", metavar="DIR", help="folder for diagnostics.json and report.html (default: the run "
                   "directory; a folder outside it needs no lock, so a run can be diagnosed while it trains)")
    _add_step_arg(p)
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("config", help="show configurations")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the resolved config as JSON")
    _add_config_args(show)
    show.set_defaults(func=cmd_config_show)
    keys = config_sub.add_parser("keys", help="list every config key with its meaning, type and default")
    keys.add_argument("--grep", metavar="TEXT", help="only keys whose name or description contains TEXT")
    keys.set_defaults(func=cmd_config_keys)

    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=cmd_presets)
    return parser


def _is_secondary(exc: BaseException | None) -> bool:
    """'Event loop is closed': Orbax's background callbacks that finish after a failed save or restore closed
    its event loop; they follow the error the command reports and say nothing new."""
    return isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)


@contextlib.contextmanager
def _one_line_reports(command: str, debug: bool) -> Iterator[list[str]]:
    """While a command runs: exceptions in background threads (Orbax's checkpoint writers, TensorStore) and
    exceptions ignored during clean-up are collected as one line each instead of printing tracebacks (``--debug``
    prints those too), jaxvae's :class:`~jaxvae.errors.RunFileWarning` prints as one line, absl's log lines (Orbax
    logs through absl) are silenced and MLflow's and Alembic's info lines too (unless ``--debug``)."""
    import warnings

    from jaxvae.errors import RunFileWarning

    errors: list[str] = []
    previous = threading.excepthook, sys.unraisablehook, warnings.showwarning
    quiet = [logging.getLogger(name) for name in ("absl", "mlflow.store.db.utils", "alembic")]  # info lines
    levels = [logger.level for logger in quiet]

    def on_thread(args):
        if debug:
            previous[0](args)
        if _is_secondary(args.exc_value):
            return
        where = f" in thread {args.thread.name}" if args.thread is not None else ""
        errors.append(f"{args.exc_type.__name__}{where}: {str(args.exc_value).strip().splitlines()[0][:300]}"
                      if str(args.exc_value).strip() else f"{args.exc_type.__name__}{where}")

    def on_unraisable(args):
        if debug:
            previous[1](args)
        if _is_secondary(args.exc_value):
            return
        errors.append(f"{type(args.exc_value).__name__} ignored during clean-up"
                      f"{f' ({args.err_msg})' if args.err_msg else ''}: {str(args.exc_value)[:300]}")

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RunFileWarning):
            print(f"jaxvae {command}: warning: {message}", file=sys.stderr, flush=True)
        else:
            previous[2](message, category, filename, lineno, file, line)

    threading.excepthook, sys.unraisablehook, warnings.showwarning = on_thread, on_unraisable, show
    if not debug:  # Orbax logs the failures it then raises (with tracebacks); the raised error is reported
        quiet[0].setLevel(logging.CRITICAL)
        for logger in quiet[1:]:
            logger.setLevel(logging.WARNING)
    try:
        yield errors
    finally:
        threading.excepthook, sys.unraisablehook, warnings.showwarning = previous
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    try:
        _start_distributed(args)
        return args.func(args)
    except TrainingPreempted as e:
        print(f"jaxvae {args.command}: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except JaxvaeError as e:
        if args.debug:
            traceback.print_exc()
        print(f"jaxvae {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"jaxvae {args.command}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout stopped early (`jaxvae config keys | head`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:  # a full disk while writing outputs (train and sweep raise DiskFullError themselves)
        if not rundir.is_disk_full(e):
            raise
        if args.debug:
            traceback.print_exc()
        out = getattr(args, "out", None)
        where = Path(out).absolute().parent if out and not Path(out).is_dir() else Path(out or args.workdir or ".")
        print(f"jaxvae {args.command}: error: {rundir.disk_full_error(where, e, trains=False)}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Runs one ``jaxvae`` command; returns its exit code (0 only when the command and every background task
    and clean-up succeeded)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _one_line_reports(args.command, args.debug) as errors:
        code = _run(args)
    if errors and code in (0, EXIT_PREEMPTED):  # after an error exit its own message says what went wrong
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        print(f"jaxvae {args.command}: error: an exception in a background task or during clean-up: "
              f"{errors[0]}{more}. Run with --debug for the tracebacks.", file=sys.stderr)
        code = code or EXIT_FAILED
    return code


def console_main() -> None:
    """Entry point of the ``jaxvae`` script and ``python -m jaxvae``.

    After an error exit the process ends with ``os._exit``: a failed Orbax/TensorStore restore can leave
    background I/O callbacks that would otherwise print tracebacks during interpreter teardown, burying the one
    paragraph the user needs. Everything jaxvae wrote is already flushed and closed at that point. After a
    successful command, an exception during interpreter teardown (a background thread, an ``atexit`` handler)
    still ends the process with a one-line error and exit code 1, never a traceback with exit 0.
    """
    code = main()
    if code:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def at_teardown(message: str) -> None:
        sys.stdout.flush()
        print(f"jaxvae: error during clean-up after the command finished: {message}", file=sys.stderr,
              flush=True)
        os._exit(EXIT_FAILED)

    threading.excepthook = lambda a: at_teardown(f"{a.exc_type.__name__}: {a.exc_value}")
    sys.unraisablehook = lambda a: at_teardown(f"{type(a.exc_value).__name__}: {a.exc_value}")
    sys.exit(code)


if __name__ == "__main__":
    console_main()
