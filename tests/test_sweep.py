"""Sweeps: one compiled program gives the same models as separate runs; KL falls as beta rises; bad keys and
failed models are reported."""

import json

import numpy as np
import pytest

from jaxvae import config, runs
from jaxvae.errors import ConfigError
from jaxvae.runs import sweep

FAST = ["model.hidden=32", "model.latent_dim=4", "train.steps=60", "train.log_every=20",
        "train.checkpoint_every=0", "eval.num_samples=10", "eval.max_examples=100"]


@pytest.mark.slow
def test_sweep_equals_separate_runs_and_kl_decreases_with_beta(tmp_path):
    base = config.apply_overrides(config.get_preset("digits"), FAST)
    over = {"objective.beta": ["0.25", "1", "4", "16"]}
    result = sweep.run_sweep(base, over, tmp_path / "sweep", progress=False, log=lambda _: None)
    models = result["models"]
    assert [m["settings"]["objective.beta"] for m in models] == [0.25, 1.0, 4.0, 16.0]
    kls = [m["test_kl"] for m in models]
    assert kls == sorted(kls, reverse=True), kls
    assert (tmp_path / "sweep" / "rate_distortion.png").stat().st_size > 1000
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["failed"] == []
    # Each model's folder holds the config of an equivalent separate run; train two of them and compare.
    for i in (0, 3):
        model_dir = next((tmp_path / "sweep" / "models").glob(f"{i:02d}-*"))
        cfg = config.from_dict(json.loads((model_dir / "config.json").read_text()))
        single = runs.fit(cfg, tmp_path / f"single{i}", progress=False, log=lambda _: None)
        np.testing.assert_allclose(models[i]["test_elbo"], single["test_elbo"], rtol=1e-4)
        np.testing.assert_allclose(models[i]["test_kl"], single["test_kl"], rtol=1e-3, atol=1e-3)
        sweep_losses = [r["loss"] for r in _records(model_dir)]
        single_losses = [r["loss"] for r in _records(tmp_path / f"single{i}")]
        np.testing.assert_allclose(sweep_losses, single_losses, rtol=1e-4)


def _records(d):
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()
            if "split" not in json.loads(line)]


def test_grid_expansion_and_refusals():
    base = config.get_preset("digits")
    grid = sweep.expand_grid(base, {"objective.beta": ["1", "2"]}, seeds=3)
    assert len(grid) == 6
    assert [c.train.seed for _, c in grid] == [0, 1, 2, 0, 1, 2]
    assert all(c.train.data_seed == 0 for _, c in grid)
    with pytest.raises(ConfigError, match="cannot vary within one sweep"):
        sweep.expand_grid(base, {"model.latent_dim": ["2", "4"]})
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        sweep.parse_over(["objective.beta"])
    with pytest.raises(ConfigError, match="empty value"):  # was silently read as 0.5,1
        sweep.parse_over(["objective.beta=0.5,,1"])
    # Settings of one objective are sweepable under their section's name (or their older flat one).
    assert sweep.parse_over(["objective.free_bits=0,0.5"]) == {"objective.free_bits.nats": ["0", "0.5"]}
    fb = config.apply_overrides(base, ["objective.name=free_bits"])
    grid = sweep.expand_grid(fb, {"objective.free_bits.nats": ["0", "0.5"]})
    assert [label for label, _ in grid] == ["free_bits_nats0-seed0", "free_bits_nats0.5-seed0"]
    assert [c.objective.free_bits.nats for _, c in grid] == [0.0, 0.5]
    with pytest.raises(ConfigError, match="cannot vary within one sweep"):
        sweep.expand_grid(fb, {"objective.free_bits.group": ["1", "2"]})  # static: a different program


@pytest.mark.slow
def test_failed_models_are_reported_not_dropped(tmp_path):
    # A huge learning rate makes every update non-finite quickly; with a limit of 1 the models are failed.
    base = config.apply_overrides(config.get_preset("digits"), [
        *FAST, "optimizer.learning_rate=1e30", "optimizer.max_consecutive_nonfinite=1"])
    result = sweep.run_sweep(base, {"objective.beta": ["1", "2"]}, tmp_path, progress=False, log=lambda _: None)
    assert len(result["models"]) == 2
    assert result["failed"] == [m["label"] for m in result["models"]]
    # Each member is a run directory of its own: its final state reopens, with the summary's parameters.
    member = next((tmp_path / "models").glob("01-*"))
    run = runs.load_run(member)
    assert run.step == 60 and run.config.objective.beta == 2.0
    assert runs.params_sha256(run.params) == result["models"][1]["params_sha256"]
