"""Experiment trackers: TensorBoard, MLflow and Weights & Biases receive what ``metrics.jsonl`` and
``summary.json`` hold.

``track.backends`` (a comma-separated list; ``none`` for none) chooses them; TensorBoard is on by default. Each
tracker gets the resolved config when it opens, every record of ``metrics.jsonl`` as scalars under
``<split>/<name>`` (``train/loss``, ``valid/elbo``, ``monitor/kl``, ...; per-dimension lists are left to
``metrics.jsonl``), the summary's numbers under ``summary/<name>`` and the image grids at the end. Only process 0
of a multi-process run tracks. A resumed run continues the same tracker run:

* **tensorboard** (``tensorboardX``, a core dependency): event files in ``<workdir>/tensorboard``; a resumed run
  writes with ``purge_step`` so that TensorBoard drops what the interrupted run logged after the checkpoint.
* **mlflow** (``pip install 'jaxvae[mlflow]'``): a run in the experiment ``track.project`` of the tracking
  server ``track.mlflow_uri`` (default: a local SQLite store ``<workdir>/mlflow.db`` with artifacts in
  ``<workdir>/mlartifacts``; MLflow 3 keeps its plain-file store in maintenance mode only), through
  ``MlflowClient`` (no global active run). Its id is kept in ``<workdir>/trackers.json`` for resume. Browse it
  with ``mlflow ui --backend-store-uri sqlite:///<workdir>/mlflow.db``.
* **wandb** (``pip install 'jaxvae[wandb]'``): a run of the project ``track.project`` in ``track.wandb_mode``
  (``offline`` by default: files under ``<workdir>/wandb``, uploaded later with ``wandb sync``); its id is kept in
  ``trackers.json`` for resume.

Only the host loop calls these (never traced code).
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxvae.errors import ConfigError
from jaxvae.rundir.writers import atomic_write_json, scalars_of

__all__ = ["TRACKERS", "Tracker", "check_available", "open_trackers", "scalars_of"]

STATE_FILE = "trackers.json"


class Tracker(abc.ABC):
    """One tracking back-end. Every method is called on the host, by process 0 only."""

    name: str

    @abc.abstractmethod
    def log_scalars(self, step: int, scalars: Mapping[str, float], prefix: str) -> None:
        """Logs ``{prefix}/{name}`` for every scalar at ``step``."""

    @abc.abstractmethod
    def log_summary(self, summary: Mapping[str, Any], step: int) -> None:
        """Logs the run's summary (its numbers) at the final ``step``."""

    @abc.abstractmethod
    def log_image(self, name: str, png: bytes, step: int) -> None:
        """Logs a PNG image."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flushes and closes (a resumed run opens the same tracker run again)."""


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, workdir: Path, config: Mapping[str, Any], resume_step: int | None, settings: Any):
        from tensorboardX import SummaryWriter

        # purge_step: TensorBoard hides the events at steps >= it that the interrupted run logged.
        self._writer = SummaryWriter(str(workdir / "tensorboard"),
                                     purge_step=None if resume_step is None else resume_step + 1)
        self._writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```",
                              resume_step or 0)

    def log_scalars(self, step, scalars, prefix):
        for key, value in scalars.items():
            self._writer.add_scalar(f"{prefix}/{key}", value, step)

    def log_summary(self, summary, step):
        self.log_scalars(step, scalars_of(summary), "summary")

    def log_image(self, name, png, step):
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        self._writer.add_image(name, image, step, dataformats="HWC")

    def close(self):
        self._writer.close()


class MLflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, workdir: Path, config: Mapping[str, Any], resume_step: int | None, settings: Any):
        from mlflow.tracking import MlflowClient

        local = not settings.mlflow_uri
        uri = settings.mlflow_uri or f"sqlite:///{(workdir / 'mlflow.db').absolute()}"
        self._client = MlflowClient(tracking_uri=uri)
        state = _read_state(workdir)
        run_id = state.get("mlflow_run_id") if state.get("mlflow_uri") == uri else None
        if run_id is None:
            experiment = self._client.get_experiment_by_name(settings.project)
            artifacts = (workdir / "mlartifacts").absolute().as_uri() if local else None
            experiment_id = experiment.experiment_id if experiment is not None else \
                self._client.create_experiment(settings.project, artifact_location=artifacts)
            run = self._client.create_run(experiment_id, run_name=settings.run_name or workdir.absolute().name)
            run_id = run.info.run_id
            _write_state(workdir, {"mlflow_uri": uri, "mlflow_run_id": run_id})
            for key, value in _flat(config).items():
                self._client.log_param(run_id, key, value)
            self._client.log_dict(run_id, dict(config), "config.json")
        else:
            self._client.update_run(run_id, status="RUNNING")
        self.run_id, self.uri = run_id, uri

    def log_scalars(self, step, scalars, prefix):
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}/{k}", v, stamp, step) for k, v in scalars.items()]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)

    def log_summary(self, summary, step):
        self.log_scalars(step, scalars_of(summary), "summary")
        self._client.log_dict(self.run_id, dict(summary), "summary.json")

    def log_image(self, name, png, step):
        import numpy as np
        from PIL import Image

        self._client.log_image(self.run_id, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
                               artifact_file=f"{name}.png")

    def close(self):
        self._client.set_terminated(self.run_id)


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, workdir: Path, config: Mapping[str, Any], resume_step: int | None, settings: Any):
        import wandb

        state = _read_state(workdir)
        run_id = state.get("wandb_run_id") or uuid.uuid4().hex[:12]
        _write_state(workdir, {"wandb_run_id": run_id})
        self._wandb = wandb
        self._run = wandb.init(dir=str(workdir.absolute()), project=settings.project, id=run_id, resume="allow",
                               mode=settings.wandb_mode, name=settings.run_name or workdir.absolute().name,
                               config=dict(config), reinit="create_new",
                               settings=wandb.Settings(silent=True, console="off", save_code=False))
        self.run_id = run_id

    def log_scalars(self, step, scalars, prefix):
        self._run.log({f"{prefix}/{k}": v for k, v in scalars.items()}, step=step)

    def log_summary(self, summary, step):
        self._run.summary.update({f"summary/{k}": v for k, v in scalars_of(summary).items()})

    def log_image(self, name, png, step):
        from PIL import Image

        self._run.log({name: self._wandb.Image(Image.open(io.BytesIO(png)).convert("RGB"))}, step=step)

    def close(self):
        self._run.finish()


# name -> (class, the module it needs, the pip extra that installs it)
TRACKERS: dict[str, tuple[Callable[..., Tracker], str, str]] = {
    "tensorboard": (TensorBoardTracker, "tensorboardX", "tensorboard"),
    "mlflow": (MLflowTracker, "mlflow", "mlflow"),
    "wandb": (WandbTracker, "wandb", "wandb"),
}


def check_available(backends: Sequence[str]) -> None:
    """Raises :class:`ConfigError` naming the extra to install for a chosen tracker whose library is absent."""
    for name in backends:
        if name not in TRACKERS:
            continue  # the config validation names the choices
        _, module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"track.backends includes {name}, but its library ({module}) is not installed. "
                              f"Install it with `pip install 'jaxvae[{extra}]'`, or drop {name} from "
                              "track.backends (e.g. track.backends=tensorboard, or none).")


@contextlib.contextmanager
def open_trackers(settings: Any, workdir: str | os.PathLike, config: Mapping[str, Any], *,
                  resume_step: int | None, enabled: bool = True) -> Iterator[list[Tracker]]:
    """The trackers of ``settings.backends`` (the ``track`` config section), open for the block; none when not
    ``enabled`` (processes other than 0)."""
    opened: list[Tracker] = []
    try:
        if enabled:
            check_available(settings.backends)
            for name in (b for b in settings.backends if b != "none"):
                opened.append(TRACKERS[name][0](Path(workdir), config, resume_step, settings))
        yield opened
    finally:
        for tracker in reversed(opened):
            tracker.close()


def _read_state(workdir: Path) -> dict[str, Any]:
    path = workdir / STATE_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def _write_state(workdir: Path, update: Mapping[str, Any]) -> None:
    atomic_write_json(workdir / STATE_FILE, {**_read_state(workdir), **update})


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model.latent_dim": "8", ...}``: the config as MLflow parameters (strings of at most 500 characters)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value)[:500] if not isinstance(value, str) else value[:500]
    return out
