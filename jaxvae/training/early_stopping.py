"""Early stopping on the validation ELBO, with the best checkpoint kept (host side; no traced code).

Training stops once ``patience`` epochs have passed since the best validation ELBO (an improvement must exceed
``min_delta`` nats); the state of that best validation is saved in ``<workdir>/best/`` and is the model the run
reports: the final evaluation in ``summary.json``, the image grids, and by default ``jaxvae evaluate``, ``sample``
and ``diagnose`` (``--step latest`` for the last checkpoint instead).

The tracker's state (best value, its step) is a pure function of the run's validation history, and that history
is in ``metrics.jsonl``, which a resumed run truncates at the checkpoint it resumes from;
:meth:`EarlyStopping.replay` rebuilds it from those records, so a resumed run continues its patience count exactly
where the checkpoint left it, with no change to the checkpoint format (older runs resume as before).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["EarlyStopping"]


@dataclasses.dataclass
class EarlyStopping:
    """Tracks the best validation ELBO of a run.

    Attributes:
      patience_steps: stop when this many steps have passed since the best validation (``patience`` epochs).
      min_delta: the smallest increase of the validation ELBO (nats) that counts as an improvement.
      best: the best validation ELBO so far (``-inf`` before the first).
      best_step: the step of that validation (``None`` before the first).
    """

    patience_steps: int
    min_delta: float = 0.0
    best: float = -math.inf
    best_step: int | None = None

    def __post_init__(self) -> None:
        if self.patience_steps <= 0:
            raise ValueError(f"patience_steps must be positive, got {self.patience_steps}.")

    def update(self, step: int, elbo: float) -> bool:
        """Records the validation ELBO at ``step``; ``True`` when it is a new best (save the state then)."""
        if self.best_step is None or elbo > self.best + self.min_delta:
            self.best, self.best_step = float(elbo), int(step)
            return True
        return False

    def should_stop(self, step: int) -> bool:
        """Whether ``patience`` epochs have passed at ``step`` without a new best."""
        return self.best_step is not None and step - self.best_step >= self.patience_steps

    def replay(self, records: Iterable[Mapping[str, Any]], up_to: int) -> EarlyStopping:
        """Feeds the validation records (``split == "valid"``) of steps ``<= up_to`` in order; returns ``self``."""
        for r in records:
            if r.get("split") == "valid" and int(r["step"]) <= up_to:
                self.update(int(r["step"]), float(r["elbo"]))
        return self

    def summary(self, patience_epochs: int, stopped_at: int | None) -> dict[str, Any]:
        """The ``early_stopping`` entry of ``summary.json``."""
        return {"patience_epochs": patience_epochs, "min_delta": self.min_delta, "best_step": self.best_step,
                "best_valid_elbo": None if self.best_step is None else self.best, "stopped_at_step": stopped_at}


BEST_DIR = "best"  # <workdir>/best/: the Orbax checkpoint of the best validation (one kept)


def for_run(cfg: Any, workdir: Any, steps_per_epoch: int, up_to: int) -> EarlyStopping | None:
    """The tracker of a run with ``train.early_stopping.patience > 0`` (``None`` otherwise), replayed from its
    ``metrics.jsonl`` up to step ``up_to``."""
    es = cfg.train.early_stopping
    if not es.patience:
        return None
    from jaxvae.rundir.writers import read_metrics

    return EarlyStopping(es.patience * steps_per_epoch, es.min_delta).replay(read_metrics(workdir), up_to)
