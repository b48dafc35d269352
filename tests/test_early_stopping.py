"""Early stopping: the tracker's rule, the epoch it picks in a real run (against the validation records), the best
checkpoint that the final evaluation and `evaluate`/`load_run` use, and a crash in the middle of the patience
window that resumes to the same stop, the same best and bitwise the same reported model."""

import math

import pytest

from jaxvae import config, runs
from jaxvae.errors import CheckpointError, ConfigError
from jaxvae.rundir import writers
from jaxvae.training.early_stopping import EarlyStopping

SMALL = ["model.latent_dim=4", "model.hidden=32,16", "train.batch_size=64", "train.epochs=40",
         "train.checkpoint_every=20", "train.log_every=20", "eval.num_samples=8", "eval.max_examples=64",
         "monitor.every=0", "train.early_stopping.patience=2", "train.early_stopping.min_delta=0.1"]


def test_the_tracker_keeps_the_first_best_beyond_min_delta_and_stops_after_patience():
    es = EarlyStopping(patience_steps=30, min_delta=0.5)
    assert not es.should_stop(100)  # nothing seen yet
    assert es.update(10, -100.0)  # the first validation is always the best so far
    assert not es.update(20, -99.6)  # +0.4 < min_delta
    assert es.update(30, -99.4)  # +0.6
    assert (es.best, es.best_step) == (-99.4, 30)
    assert not es.should_stop(59) and es.should_stop(60)
    records = [{"step": 10, "split": "valid", "elbo": -100.0}, {"step": 15, "loss": 1.0},
               {"step": 20, "split": "valid", "elbo": -99.6}, {"step": 30, "split": "valid", "elbo": -99.4},
               {"step": 40, "split": "valid", "elbo": -90.0}]
    replayed = EarlyStopping(30, 0.5).replay(records, up_to=30)
    assert (replayed.best, replayed.best_step) == (-99.4, 30)  # the record after up_to is ignored
    with pytest.raises(ValueError, match="positive"):
        EarlyStopping(0)


def _valid(workdir):
    return [r for r in writers.read_metrics(workdir) if r.get("split") == "valid"]


def _oracle(valid, min_delta):
    best, best_step = -math.inf, None
    for r in valid:
        if best_step is None or r["elbo"] > best + min_delta:
            best, best_step = r["elbo"], r["step"]
    return best, best_step


@pytest.mark.slow  # moved to the slow tier to keep `make test` well under 10 minutes on 2 cores
def test_early_stopping_picks_the_best_epoch_and_a_crash_inside_the_patience_window_resumes_exactly(
        tmp_path, monkeypatch):
    cfg = config.apply_overrides(config.get_preset("digits"), SMALL)
    full = runs.fit(cfg, tmp_path / "full", progress=False, log=lambda _: None)
    es = full["early_stopping"]
    spe = 1297 // 64  # digits: 1,297 training examples, whole batches of 64 per epoch
    valid = _valid(tmp_path / "full")
    best, best_step = _oracle(valid, 0.1)
    assert es["stopped_at_step"] is not None, "the schedule is long enough that this run must stop early"
    assert (es["best_step"], es["best_valid_elbo"]) == (best_step, best)
    assert valid[-1]["step"] == es["stopped_at_step"] == full["steps"]
    assert es["stopped_at_step"] - best_step == 2 * spe  # validation once per epoch: the first one past patience
    assert full["steps"] < 40 * spe
    # The reported model is the best checkpoint's, not the last one's.
    best_run = runs.load_run(tmp_path / "full")
    assert best_run.step == best_step
    assert runs.params_sha256(best_run.params) == full["params_sha256"]
    latest = runs.load_run(tmp_path / "full", step="latest")
    assert latest.step == full["steps"] and runs.params_sha256(latest.params) != full["params_sha256"]

    # Crash right after the validation one epoch after the best (its checkpoint is not written yet).
    crash_step = next(r["step"] for r in valid if r["step"] > best_step)
    original = writers.MetricWriter.write

    def crashing_write(self, record):
        original(self, record)
        if record.get("split") == "valid" and record["step"] == crash_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(writers.MetricWriter, "write", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        runs.fit(cfg, tmp_path / "resumed", progress=False, log=lambda _: None)
    monkeypatch.setattr(writers.MetricWriter, "write", original)
    logs = []
    resumed = runs.fit(cfg, tmp_path / "resumed", progress=False, log=logs.append)
    assert any("Resuming" in line for line in logs)
    assert resumed["early_stopping"] == es
    assert resumed["params_sha256"] == full["params_sha256"] and resumed["steps"] == full["steps"]
    assert _valid(tmp_path / "resumed") == valid
    # A finished (stopped) run is not trained further when resumed again.
    again = runs.fit(cfg, tmp_path / "resumed", progress=False, log=logs.append)
    assert any("stopped early" in line for line in logs) and again["steps"] == full["steps"]


@pytest.mark.slow
def test_early_stopping_needs_a_validation_split_and_best_needs_early_stopping(tmp_path):
    cfg = config.apply_overrides(config.get_preset("digits"), [*SMALL, "data.valid_size=0", "train.epochs=1"])
    with pytest.raises(ConfigError, match="validation split"):
        runs.fit(cfg, tmp_path / "a", progress=False, log=lambda _: None)
    plain = config.apply_overrides(config.get_preset("digits"), [*SMALL[:-2], "train.epochs=1"])
    runs.fit(plain, tmp_path / "b", progress=False, log=lambda _: None)
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        runs.load_run(tmp_path / "b", step="best")
    assert runs.load_run(tmp_path / "b").step == runs.load_run(tmp_path / "b", step="latest").step
