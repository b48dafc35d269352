"""The training engine: a :class:`Program` of players and non-gradient state, run inside one jitted step.

See :mod:`jaxvae.training.program` for the contract and ``docs/architecture.md`` for how a program reaches the
run loop (``train.program`` / ``jv.fit(..., program=...)``).
"""

from jaxvae.training.program import (
    Player,
    Program,
    Schedule,
    StateUpdate,
    init_program_state,
    make_program_step,
    per_active_step,
    step_metrics,
)
from jaxvae.training.state import EmaParamsState, TrainState, ema_params, evaluation_params

__all__ = [
    "EmaParamsState",
    "Player",
    "Program",
    "Schedule",
    "StateUpdate",
    "TrainState",
    "ema_params",
    "evaluation_params",
    "init_program_state",
    "make_program_step",
    "per_active_step",
    "step_metrics",
]
