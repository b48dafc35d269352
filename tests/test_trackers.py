"""Experiment trackers, each read back with its own library's format or client: the TensorBoard event files
(TFRecord framing, tensorboardX's Event protobuf, TensorBoard's purge rule), the MLflow store (MlflowClient) and
the W&B offline run files (W&B's record protobuf). One run is interrupted after its first checkpoint and resumed,
so every check also covers "resume continues the same tracker run"."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from jaxvae import config, runs
from jaxvae.errors import ConfigError
from jaxvae.rundir import trackers, writers
from tests.test_reliability import TINY

pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'jaxvae[mlflow]')")
pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'jaxvae[wandb]')")

ALL = "track.backends=tensorboard,mlflow,wandb"
TRACKED = pytest.mark.xdist_group("tracked_run")  # the tests of one tracked run share a worker: built once


def _cfg(*extra):
    return config.apply_overrides(config.get_preset("digits"), [*TINY, *extra])


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A 40-step run with all three trackers, interrupted after the checkpoint of step 20 (checkpoint 40 and the
    summary removed, as if killed) and resumed."""
    workdir = tmp_path_factory.mktemp("tracked") / "run"
    runs.fit(_cfg(ALL), workdir, progress=False, log=lambda _: None)
    shutil.rmtree(workdir / "checkpoints" / "40")
    (workdir / "summary.json").unlink()
    summary = runs.fit(_cfg(ALL), workdir, progress=False, log=lambda _: None)
    train = {r["step"]: r for r in writers.read_metrics(workdir) if "split" not in r}
    assert sorted(train) == [10, 20, 30, 40]
    return workdir, summary, train


# -- TensorBoard ----------------------------------------------------------------------------------------------


def _tfrecords(path: Path):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        yield data[pos + 12:pos + 12 + length]
        pos += 12 + length + 4


def _tensorboard(logdir: Path) -> tuple[dict[str, dict[int, list[float]]], set[str], set[str]]:
    """Scalars {tag: {step: [values]}} as TensorBoard shows them (an event file's purge marker at step P hides the
    earlier events at steps >= P), image tags and text tags."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    scalars: dict[str, dict[int, list[float]]] = {}
    images, texts = set(), set()
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for raw in _tfrecords(path):
            event = Event.FromString(raw)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for values in scalars.values():
                    for step in [s for s in values if s >= event.step]:
                        del values[step]
            for value in event.summary.value:
                if value.HasField("image"):
                    images.add(value.tag)
                elif value.metadata.plugin_data.plugin_name == "text":
                    texts.add(value.tag)
                elif value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {}).setdefault(event.step, []).append(value.simple_value)
    return scalars, images, texts


@TRACKED
def test_tensorboard_holds_every_record_once_the_summary_the_images_and_the_config(tracked_run):
    workdir, summary, train = tracked_run
    scalars, images, texts = _tensorboard(workdir / "tensorboard")
    # One value per step: the resumed run's purge marker hides what the interrupted run logged after step 20.
    for key in ("loss", "elbo", "kl", "grad_norm"):
        assert scalars[f"train/{key}"] == {s: [pytest.approx(np.float32(r[key]))] for s, r in train.items()}, key
    valid = {r["step"]: r["elbo"] for r in writers.read_metrics(workdir) if r.get("split") == "valid"}
    assert scalars["valid/elbo"] == {s: [pytest.approx(np.float32(v))] for s, v in valid.items()}
    assert scalars["summary/test_elbo"][40][-1] == pytest.approx(np.float32(summary["test_elbo"]))
    assert {"reconstructions", "samples"} <= images
    assert any(tag.startswith("config") for tag in texts)


# -- MLflow ---------------------------------------------------------------------------------------------------


@TRACKED
def test_mlflow_holds_one_run_with_the_records_summary_config_and_images(tracked_run):
    from mlflow.tracking import MlflowClient

    workdir, summary, train = tracked_run
    state = json.loads((workdir / "trackers.json").read_text())
    client = MlflowClient(tracking_uri=state["mlflow_uri"])
    experiment = client.get_experiment_by_name("jaxvae")
    found = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in found] == [state["mlflow_run_id"]]  # the resumed run continued it
    run = found[0]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    latest = {}
    for m in sorted(history, key=lambda m: m.timestamp):
        latest[m.step] = m.value  # the resumed run logged steps 30 and 40 again, with the same values
    assert latest == {s: pytest.approx(r["loss"]) for s, r in train.items()}
    assert run.data.metrics["summary/test_elbo"] == pytest.approx(summary["test_elbo"])
    assert run.data.params["model.latent_dim"] == "4" and run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "summary.json", "reconstructions.png", "samples.png"} <= artifacts


# -- Weights & Biases -------------------------------------------------------------------------------------------


def _wandb_records(path: Path):
    """The records of a W&B run file: a 7-byte header (":W&B", magic, version), then LevelDB-log framing (32 KiB
    blocks of [crc32 4][length 2][type 1][data] chunks; FULL=1, FIRST=2, MIDDLE=3, LAST=4) around Record
    protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, block = 7, b"", 32768
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        length, kind = struct.unpack("<H", data[pos + 4:pos + 6])[0], data[pos + 6]
        if kind == 0:  # zero padding to the end of the block
            pos += room
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield pb.Record.FromString(pending)
            pending = b""


@TRACKED
def test_wandb_offline_files_hold_the_records_summary_config_and_images(tracked_run):
    workdir, summary, train = tracked_run
    run_id = json.loads((workdir / "trackers.json").read_text())["wandb_run_id"]
    files = sorted((workdir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.name == f"run-{run_id}.wandb" for f in files)  # one run id, two sessions
    def items(entries):
        return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in entries}

    latest, summaries, configs = {}, {}, {}
    for record in (r for f in files for r in _wandb_records(f)):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            logged = items(record.history.item)
            if "train/loss" in logged:
                latest[logged["_step"]] = logged["train/loss"]
        elif kind == "summary":
            summaries.update(items(record.summary.update))
        elif kind in ("config", "run"):  # the run record carries the config given to wandb.init
            configs.update(items((record.config if kind == "config" else record.run.config).update))
    assert latest == {s: pytest.approx(r["loss"]) for s, r in train.items()}
    assert summaries["summary/test_elbo"] == pytest.approx(summary["test_elbo"])
    assert configs["model"]["latent_dim"] == 4
    media = {p.name.split("_")[0] for p in (workdir / "wandb").glob("offline-run-*/files/media/images/*.png")}
    assert media == {"reconstructions", "samples"}


# -- choosing trackers ------------------------------------------------------------------------------------------


def test_the_config_and_the_implementations_name_the_same_trackers():
    assert config.TRACKER_NAMES == tuple(trackers.TRACKERS)


def test_tracker_choices_are_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"track\.backends=tensorbord: unknown 'tensorbord'"):
        _cfg("track.backends=tensorbord")
    with pytest.raises(ConfigError, match="none cannot go with trackers"):
        _cfg("track.backends=none,mlflow")
    runs.fit(_cfg("track.backends=none"), tmp_path / "run", progress=False, log=lambda _: None)
    assert not (tmp_path / "run" / "tensorboard").exists()
    # Trackers report the run; a resume may change them (no "different config" refusal).
    runs.fit(_cfg("track.backends=tensorboard"), tmp_path / "run", progress=False, log=lambda _: None)
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_a_tracker_that_is_not_installed_names_its_extra(tmp_path, monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else
                        real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'jaxvae\[wandb\]'"):
        runs.fit(_cfg("track.backends=tensorboard,wandb"), tmp_path / "run", progress=False, log=lambda _: None)
    assert not (tmp_path / "run" / "config.json").exists()  # refused before anything of the run was written


@pytest.mark.slow
def test_the_cli_with_every_tracker_prints_nothing_on_stderr(tmp_path):
    from tests.test_reliability import _cli, _sets

    result = _cli("train", "--workdir", str(tmp_path / "run"), "--no-progress", *_sets([*TINY, ALL]))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no library log lines, warnings or tracebacks
    assert {"tensorboard", "mlflow.db", "wandb", "trackers.json"} <= {p.name for p in (tmp_path / "run").iterdir()}
