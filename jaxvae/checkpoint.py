"""Orbax checkpoints of the whole :class:`~jaxvae.train.TrainState`: save every N steps, keep the last K.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a process killed during a
save leaves the previous checkpoints intact; :meth:`Checkpointer.latest_step` only sees finished ones. The typed
PRNG key is stored as its raw ``key_data`` (and wrapped again on restore).
"""

from __future__ import annotations

import os
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
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, state: Any, *, step: int | None = None, force: bool = True) -> None:
        """Saves ``state`` under ``step`` (default ``state.step``), asynchronously (:meth:`close` finishes)."""
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
        try:
            saved = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # Orbax raises several types for corrupt or mismatched trees
            raise CheckpointError(
                f"Could not restore the checkpoint at step {step} from {self.directory}: {e}. The checkpoint is "
                "corrupt or was written by a different model/config; restore an intact run directory or start a "
                "new run in another --workdir."
            ) from e
        return _from_saveable(saved, like)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
