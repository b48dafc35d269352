"""Orbax checkpoints of the whole :class:`~jaxvae.training.step.TrainState`: save every N steps, keep the last K.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a process killed during a
save leaves the previous checkpoints intact; :meth:`Checkpointer.latest_step` only sees finished ones. The typed
PRNG key is stored as its raw ``key_data`` (and wrapped again on restore).
"""

from __future__ import annotations

import ast
import base64
import collections
import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxvae.errors import CheckpointError


def _to_saveable(state: Any) -> Any:
    return state._replace(key=jax.random.key_data(state.key))


def _from_saveable(saved: Any, like: Any) -> Any:
    impl = jax.random.key_impl(like.key)
    return saved._replace(key=jax.random.wrap_key_data(saved.key, impl=impl))


class Checkpointer:
    """A thin wrapper of ``orbax.checkpoint.CheckpointManager`` for train states.

    Args:
      directory: the ``checkpoints/`` folder of a run.
      max_to_keep: the K most recent checkpoints are kept.
      read_only: open for restoring only: nothing is created, saved or deleted, and the temporary folders of a
        save in progress (by a training run holding the run directory's lock) are left alone.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, read_only: bool = False):
        self.directory = Path(directory).absolute()
        # cleanup_tmp_directories: a save interrupted by SIGKILL leaves a temporary folder; it is removed (the
        # finished checkpoints are untouched) when the run is resumed by the lock's holder.
        # Read-only without Orbax's own read_only flag, which logs warnings on every open: a reader creates
        # nothing, leaves temporary folders alone, and never saves (so nothing is ever deleted either).
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                               cleanup_tmp_directories=not read_only)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, state: Any, *, step: int | None = None, force: bool = True) -> None:
        """Saves ``state`` under ``step`` (default ``state.step``), asynchronously (:meth:`close` finishes)."""
        if self.read_only:
            raise RuntimeError(f"{self.directory} was opened read-only; it cannot save.")
        step = int(state.step) if step is None else step
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(_to_saveable(state)), force=force)

    def restore(self, like: Any, step: int | None = None) -> Any:
        """Restores the checkpoint at ``step`` (default: latest) into the structure, dtypes and shardings of
        ``like``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"No checkpoint found in {self.directory}.")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_saveable(like))
        legacy = self._without_model_state(step, target)
        if legacy is not None:
            target = legacy
        self._check_compatible(step, target)
        try:
            with _quiet_closed_loop_errors():
                saved = self._manager.restore(step, args=ocp.args.StandardRestore(target))
            if legacy is not None:
                saved = type(like)(*saved, model_state=like.model_state)
        except Exception as e:  # Orbax raises several types for corrupt or mismatched trees
            reason = str(e).strip().splitlines()[0].split(" See full")[0][:240] if str(e).strip() else \
                type(e).__name__
            raise CheckpointError(
                f"Could not restore the checkpoint at step {step} from {self.directory} ({reason}). It is "
                f"damaged (corrupt or missing files) or was written by a different model/config. Nothing was "
                f"changed. {self._other_steps_hint(step)}"
            ) from e
        return _from_saveable(saved, like)

    def _without_model_state(self, step: int, target: Any) -> Any:
        """For a checkpoint written before train states had ``model_state`` (jaxvae 0.x; a model without
        non-gradient variables): ``target`` without that field, so that the old checkpoint restores; else
        ``None``."""
        fields = getattr(type(target), "_fields", ())
        if "model_state" not in fields or jax.tree.leaves(target.model_state):
            return None
        try:
            meta = json.loads((self.directory / str(step) / "default" / "_METADATA").read_text())["tree_metadata"]
            stored = {ast.literal_eval(key)[0] for key in meta}
        except (OSError, ValueError, KeyError, TypeError, SyntaxError, IndexError):
            return None
        if "model_state" in stored:
            return None
        legacy = collections.namedtuple(type(target).__name__, [f for f in fields if f != "model_state"])
        return legacy(*(getattr(target, f) for f in legacy._fields))

    def _other_steps_hint(self, step: int) -> str:
        """How to go on from the checkpoints other than the damaged ``step``."""
        others = sorted((s for s in self.all_steps() if s != step), reverse=True)
        if not others:
            return ("There is no other checkpoint: restore an intact copy of the run directory, or start a new "
                    "run in another --workdir.")
        newest = others[0]
        damaged = self.directory / str(step)
        aside = self.directory.parent / f"damaged-checkpoint-{step}"
        return (f"The newest other checkpoint is step {newest}: to resume training from it, move the damaged one "
                f"out of the checkpoints folder (`mv {damaged} {aside}`) and run the command again; to evaluate, "
                f"sample or diagnose it, pass --step {newest}.")

    def _check_compatible(self, step: int, target: Any) -> None:
        """Compares the stored array shapes with ``target`` before restoring, for a clear error (and so that a
        failed restore does not leave Orbax's background I/O behind). Best effort: it reads Orbax's metadata
        file and skips the check when that file is absent or has another format."""
        try:
            item = self.directory / str(step) / "default"
            meta = json.loads((item / "_METADATA").read_text())["tree_metadata"]
            stored = {tuple(str(k) for k in ast.literal_eval(key)): tuple(v["value_metadata"]["write_shape"])
                      for key, v in meta.items() if "write_shape" in v.get("value_metadata", {})}
            shardings = _stored_shardings(item)  # a sharded array's write_shape is that of one shard
            stored = {k: _global_shape(shape, shardings.get(".".join(k))) for k, shape in stored.items()}
        except (OSError, ValueError, KeyError, TypeError, SyntaxError):
            return
        wanted = {tuple(_key_name(k) for k in path): tuple(leaf.shape)
                  for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}
        problems = [f"{'.'.join(k)} missing from the checkpoint" for k in wanted if k not in stored]
        problems += [f"{'.'.join(k)} has shape {stored[k]} in the checkpoint but {v} in this config"
                     for k, v in wanted.items() if k in stored and stored[k] != v]
        problems += [f"{'.'.join(k)} is in the checkpoint but not in this model"
                     for k in stored if k not in wanted]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise CheckpointError(
                f"The checkpoint at step {step} in {self.directory} does not fit this model/config: "
                f"{'; '.join(problems[:3])}{more}. It was written by a different architecture. Nothing was "
                "changed: resume it with its own config (drop --force and the --set overrides), or start a new "
                "run in another --workdir.")

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _stored_shardings(item: Path) -> dict[str, dict]:
    """Orbax's ``_sharding`` file of a saved item: ``{"params.w": {"shape": mesh shape, "axis_names": ...,
    "partition_spec": ...}}``; empty when absent (arrays saved from one device)."""
    path = item / "_sharding"
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {base64.b64decode(k).decode(): json.loads(v) for k, v in raw.items()}


def _global_shape(write_shape: tuple[int, ...], sharding: dict | None) -> tuple[int, ...]:
    """A stored array's global shape: its per-shard ``write_shape`` times the mesh sizes it is split over."""
    if not sharding or "partition_spec" not in sharding:
        return write_shape
    sizes = dict(zip(sharding["axis_names"], sharding["shape"]))
    out = list(write_shape)
    for i, axes in enumerate(sharding["partition_spec"][:len(out)]):
        for axis in [axes] if isinstance(axes, str) else (axes or []):
            out[i] *= sizes[axis]
    return tuple(out)


def _key_name(key: Any) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _is_closed_loop_error(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)


@contextlib.contextmanager
def _quiet_closed_loop_errors():
    """When a restore fails (corrupt files), TensorStore completes its remaining reads on background threads and
    their callbacks hit Orbax's already-closed event loop. Those secondary 'Event loop is closed' errors say
    nothing new; they are dropped (during and after the failed restore) so that the CheckpointError stays the
    one message the user sees. Every other error still goes to the original hooks."""
    previous = sys.excepthook, threading.excepthook, sys.unraisablehook

    def excepthook(tp, value, tb):
        if not _is_closed_loop_error(value):
            previous[0](tp, value, tb)

    def thread_hook(args):
        if not _is_closed_loop_error(args.exc_value):
            previous[1](args)

    def unraisable(args):
        if not _is_closed_loop_error(args.exc_value):
            previous[2](args)

    sys.excepthook, threading.excepthook, sys.unraisablehook = excepthook, thread_hook, unraisable
    try:
        yield
    except BaseException:
        raise  # keep the filters installed: the stray callbacks arrive after the exception
    else:
        sys.excepthook, threading.excepthook, sys.unraisablehook = previous
