"""The latent-health monitor: a forced collapse (huge beta) trips the warning and names the dimensions; a healthy
run does not; monitor records land in metrics.jsonl."""

import json
import re

from jaxvae import config, runs

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
    assert "Collapsed dimensions: 0, 1, 2, 3, 4, 5, 6, 7" in warnings[0] and "free bits" in warnings[0]
    assert [r["step"] for r in monitor] == [100, 200, 300, 400]
    assert monitor[-1]["collapse"] and monitor[-1]["active_units"] == 0 and monitor[-1]["kl"] < 0.1
    assert summary["active_units"] == 0
    # Every remedy it suggests is a valid --set (checked on the words preset, where all of them apply).
    suggested = re.findall(r"--set ([^)]+)\)", warnings[0])
    assert len(suggested) == 6, suggested
    for sets in suggested:
        config.validate(config.apply_overrides(config.get_preset("words"), sets.split()))


def test_healthy_run_does_not_warn_and_monitor_is_cheap(tmp_path):
    summary, logs, monitor = _run(tmp_path, "healthy", [])
    assert not any("WARNING" in line for line in logs)
    assert not any(r["collapse"] for r in monitor)
    assert monitor[-1]["active_units"] >= 2 and monitor[-1]["mi"] > 0.5
    assert len(monitor[-1]["kl_per_dim"]) == 8
    assert summary["monitor_seconds"] < summary["train_seconds"]  # sanity; the 5% budget is a benchmark
