"""The training engine: a :class:`~jaxvae.training.program.Program` of players and non-gradient state, run
inside one jitted step (:mod:`~jaxvae.training.program`), the train state (:mod:`~jaxvae.training.state`), the
compiled step and chunks (:mod:`~jaxvae.training.step`, :mod:`~jaxvae.training.chunks`), the host loop,
the optimizers (:mod:`~jaxvae.training.optimizers`), early stopping and aggressive inference-network training.

Every name loads on first use (:mod:`jaxvae._lazy`)."""

from __future__ import annotations

from jaxvae._lazy import attach

_EXPORTS = {
    "program": (
        "Player",
        "Program",
        "Schedule",
        "StateUpdate",
        "init_program_state",
        "make_program_step",
        "per_active_step",
        "step_metrics",
    ),
    "state": (
        "EmaParamsState",
        "TrainState",
        "ema_params",
        "evaluation_params",
    ),
    "step": (
        "init_train_state",
        "make_train_chunk",
        "make_train_step",
    ),
}
_SUBMODULES = ("aggressive", "chunks", "early_stopping", "loop", "optimizers", "program", "progress", "state",
               "step")

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, _SUBMODULES)
