"""``jaxvae evaluate --metrics ...``: disentanglement metrics of a trained run on a dataset with ground-truth
factors, written to eval.json beside the likelihood results, deterministic for a seed, shown in report.html; bad
requests are one-paragraph errors that change nothing."""

from __future__ import annotations

import json

import pytest

from jaxvae import cli

TINY = ["model.network=mlp", "model.hidden=16", "model.latent_dim=3", "train.steps=5", "train.log_every=5",
        "eval.num_samples=2", "eval.max_examples=16", "eval.num_images=4", "monitor.every=0"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private HOME and cache (the generated dsprites-small grid goes there)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("JAXVAE_DATA_DIR", raising=False)


def _train(workdir, preset, capsys):
    rc = cli.main(["train", "--preset", preset, "--workdir", str(workdir), "--no-progress",
                   *[a for s in TINY for a in ("--set", s)]])
    assert rc == 0, capsys.readouterr().err


def test_unknown_metric_names_are_a_usage_error_before_anything_is_read(tmp_path, capsys):
    rc = cli.main(["evaluate", "--workdir", str(tmp_path / "nowhere"), "--metrics", "likelihood,mig,migg"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE
    assert "'migg'" in err and "disentanglement" in err and "factor_vae" in err, err
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_disentanglement_metrics_go_to_eval_json_beside_the_likelihood_and_into_the_report(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, "dsprites-small", capsys)
    assert cli.main(["evaluate", "--workdir", str(run), "--num-samples", "3", "--max-examples", "20"]) == 0
    likelihood = json.loads((run / "eval.json").read_text())
    args = ["evaluate", "--workdir", str(run), "--metrics", "mig,sap,factor_vae",
            "--disentanglement-points", "300"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    first = json.loads((run / "eval.json").read_text())
    # The likelihood results of the same step stay; the metrics are added with their settings.
    assert {k: first[k] for k in likelihood} == likelihood
    scores = first["disentanglement"]
    assert set(scores) == {"mig", "sap", "factor_vae_train_accuracy", "factor_vae_score",
                           "factor_vae_num_active_dims"}
    assert all(0.0 <= v <= 1.0 for k, v in scores.items() if k != "factor_vae_num_active_dims")
    assert first["disentanglement_settings"]["num_train"] == 300 and "mig" in out and "factor_vae_score" in out
    # Deterministic for a seed; another seed draws other points.
    assert cli.main(args) == 0
    assert json.loads((run / "eval.json").read_text())["disentanglement"] == scores
    assert cli.main([*args, "--seed", "1"]) == 0
    assert json.loads((run / "eval.json").read_text())["disentanglement"] != scores
    assert cli.main(args) == 0  # back to seed 0 for the report
    capsys.readouterr()
    assert cli.main(["diagnose", "--workdir", str(run), "--max-examples", "200"]) == 0
    page = (run / "report.html").read_text()
    assert "Disentanglement" in page and "MIG" in page and f"{scores['mig']:.3f}" in page


@pytest.mark.slow
def test_disentanglement_on_a_dataset_without_factors_is_refused_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, "digits", capsys)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    rc = cli.main(["evaluate", "--workdir", str(run), "--metrics", "disentanglement"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE
    assert "ground-truth factors" in err and "digits" in err and "dsprites-small" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
