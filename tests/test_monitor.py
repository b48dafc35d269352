"""The latent-health monitor: a forced collapse (huge beta) trips the warning and names the dimensions; a healthy
run does not; monitor records land in metrics.jsonl."""

import json
import re

import numpy as np
import pytest

from jaxvae import config, runs
from jaxvae.evaluation import monitor

FAST = ["train.steps=400", "eval.num_samples=10", "eval.max_examples=100", "monitor.every=100",
        "train.checkpoint_every=0"]


def _run(tmp_path, name, overrides):
    logs = []
    cfg = config.apply_overrides(config.get_preset("digits"), [*FAST, *overrides])
    summary = runs.fit(cfg, tmp_path / name, progress=False, log=logs.append)
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return summary, logs, [r for r in records if r.get("split") == "monitor"]


def test_forced_collapse_trips_the_warning_once_with_the_dimensions(tmp_path):
    summary, logs, monitor = _run(tmp_path, "collapse", ["objective.beta=30"])
    warnings = [line for line in logs if "WARNING posterior collapse" in line]
    assert len(warnings) == 1  # the same collapsed set is not repeated at every check
    assert "8 of 8 dimensions inactive (0-7)" in warnings[0] and "free bits" in warnings[0]
    assert [r["step"] for r in monitor] == [100, 200, 300, 400]
    assert monitor[-1]["collapse"] and monitor[-1]["active_units"] == 0 and monitor[-1]["kl"] < 0.1
    assert summary["active_units"] == 0
    # Every remedy it suggests is a valid --set for this run's config; none is for another kind of model.
    suggested = re.findall(r"--set ([^)]+)\)", warnings[0])
    assert len(suggested) == 5 and "word_dropout" not in warnings[0], suggested
    for sets in suggested:
        config.validate(config.apply_overrides(config.get_preset("digits"), sets.split()))


def test_healthy_run_does_not_warn_and_monitor_is_cheap(tmp_path):
    summary, logs, monitor = _run(tmp_path, "healthy", [])
    assert not any("WARNING" in line for line in logs)
    assert not any(r["collapse"] for r in monitor)
    assert monitor[-1]["active_units"] >= 2 and monitor[-1]["mi"] > 0.5
    assert len(monitor[-1]["kl_per_dim"]) == 8
    assert summary["monitor_seconds"] < summary["train_seconds"]  # sanity; the 5% budget is a benchmark


def _collapsed(d):
    return {"mean_variance": np.zeros(d), "kl_per_dim": np.zeros(d), "kl": 0.0, "mi": 0.0}


def test_the_warning_summarises_many_dimensions():
    # Before: one line listing all 76 indices.
    cfg = config.apply_overrides(config.get_preset("digits"), ["model.latent_dim=76"])
    out = _collapsed(76)
    out["mean_variance"][[10, 40]] = 1.0
    _, text = monitor.CollapseMonitor(cfg, 76).record(100, out)
    assert "74 of 76 dimensions inactive (0-9, 11-39, 41-75)" in text and "12, 13" not in text
    assert monitor.summarize_dims(list(range(0, 40, 2)), limit=3) == "0, 2, 4, ... (20 in all)"


@pytest.mark.parametrize("sets", [["objective.beta_schedule=linear", "objective.warmup_steps=1000"],
                                  ["objective.name=capacity", "objective.capacity.steps=1000"],
                                  ["objective.beta_schedule=cyclical", "objective.num_cycles=2"]])
def test_quiet_while_the_schedule_rises_says_so_once_then_warns(sets):
    cfg = config.apply_overrides(config.get_preset("digits"), sets)
    health = monitor.CollapseMonitor(cfg, 8, total_steps=4000)
    record, note = health.record(100, _collapsed(8))
    assert record["collapse"] and note.startswith("Note: the latent-health monitor") and "until step 1,000" in note
    assert health.record(200, _collapsed(8))[1] is None  # said once
    record, warning = health.record(1100, _collapsed(8))
    assert warning.startswith("WARNING posterior collapse at step 1,100")


@pytest.mark.parametrize("preset, sets, named, not_named", [
    ("digits", [], ["free bits", "PI control", "committed", "annealing", "aggressive"],
     ["word dropout", "weaker decoder"]),
    ("digits", ["objective.beta_schedule=linear", "objective.warmup_steps=10"], ["free bits"], ["annealing"]),
    ("digits", ["objective.name=free_bits", "objective.free_bits.nats=0.1"], ["PI control"], ["free bits"]),
    ("digits", ["objective.controller=pi"], ["free bits", "committed"], ["PI control", "annealing"]),
    ("words", [], ["word dropout", "aggressive"], ["weaker decoder"]),
    ("words", ["model.rnn.word_dropout=0.5", "train.aggressive.enabled=true", "data.valid_size=100"],
     ["free bits"], ["word dropout", "aggressive"]),
    ("binarized-mnist", ["model.network=conv", "model.decoder=pixelcnn"], ["weaker decoder", "committed"],
     ["word dropout"]),
])
def test_only_remedies_that_apply_and_are_not_on_are_named(preset, sets, named, not_named):
    cfg = config.apply_overrides(config.get_preset(preset), sets)
    text = "; ".join(monitor.remedies(cfg))
    assert all(n in text for n in named) and not any(n in text for n in not_named), text
    for found in re.findall(r"--set ([^)]+)\)", text):  # each one a valid change of this config
        config.apply_overrides(cfg, found.split())
