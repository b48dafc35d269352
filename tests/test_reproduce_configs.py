"""The reproduction targets in benchmarks/reproduce/configs are valid jaxvae configs (a typo there would only
surface after an hour of training), and the harness's checks say what the numbers say."""

import pytest

from benchmarks.reproduce import harness
from jaxvae import config

TARGETS = harness.load_targets([])


def test_all_published_targets_are_configured():
    assert set(TARGETS) == {"a_flax_example", "b_pythae_vae", "c_iwae_table1", "d_vampprior", "e_iwae_two_layer",
                            "f_topdown_static", "g_flows_static"}


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("schedule", ["short", "full"])
def test_every_run_resolves_to_a_valid_config(name, schedule):
    target = TARGETS[name]
    assert target["metric"] in ("neg_elbo", "nll_iwae") and target["check"] in ("value", "ordering")
    # The standard of Burda et al. (2016); f's anchor (a conv Ladder VAE) is published at k=1000.
    assert target["eval"]["num_samples"] == (1000 if name == "f_topdown_static" else 5000)
    labels = {run["label"] for run in target["runs"]}
    for a, _, b in target.get("ordering", []):
        assert a in labels and b in labels
    for run in target["runs"]:
        sets = [*run["set"], *target["schedules"][schedule]["set"], "data.dir=/nonexistent"]
        cfg = config.apply_overrides(config.get_preset(run["preset"]), sets)  # raises ConfigError on a typo
        if schedule == "short" and name != "a_flax_example":
            assert "SHORTENED" in target["schedules"][schedule]["note"]
        assert cfg.data.dir == "/nonexistent"


def test_iwae_table_runs_differ_only_in_objective_and_k():
    runs = {r["label"]: config.apply_overrides(config.get_preset(r["preset"]), r["set"])
            for r in TARGETS["c_iwae_table1"]["runs"]}
    assert runs["IWAE k=50"].model == runs["VAE k=1"].model
    assert runs["IWAE k=50"].objective.num_samples == 50 and runs["IWAE k=50"].objective.name == "iwae"
    assert runs["VAE k=50"].objective.name == "elbo" and runs["VAE k=50"].objective.num_samples == 50
    assert runs["VAE k=1"].model.hidden == (200, 200) and runs["VAE k=1"].model.activation == "tanh"


def test_two_layer_runs_are_the_iwae_papers_model():
    runs = {r["label"]: config.apply_overrides(config.get_preset(r["preset"]), r["set"])
            for r in TARGETS["e_iwae_two_layer"]["runs"]}
    two = runs["2-layer IWAE k=50"]
    assert two.model.network == "hierarchical" and two.model.latent_dims == (100, 50)
    assert two.model.layer_hidden == (200, 100) and two.model.layer_depth == 2 and two.model.activation == "tanh"
    assert two.data.dynamic_binarization and runs["2-layer VAE k=1"].model == two.model
    assert runs["1-layer VAE k=1"].model.latent_dim == 50


def test_per_layer_active_units_verdict():
    target = {"check": "ordering", "fewer_active_on_top": ["m"]}
    row = {**_row("m", 90.0, 85.0), "active_units_per_group": {"z1": 16, "z2": 5}}
    verdict = harness.verdicts(target, [row])[0]
    assert "16+5; the top layer has fewer active units than the bottom: holds" in verdict
    row["active_units_per_group"] = {"z1": 3, "z2": 5}
    assert "DOES NOT hold" in harness.verdicts(target, [row])[0]


def _row(label, value, published):
    return {"label": label, "value": value, "published": published}


def test_verdicts_report_tolerance_ordering_and_gap():
    value = {"check": "value", "tolerance": 1.0}
    assert "within tolerance" in harness.verdicts(value, [_row("VAE", 100.5, 100.9)])[0]
    assert "OUTSIDE tolerance" in harness.verdicts(value, [_row("VAE", 102.5, 100.9)])[0]
    order = {"check": "ordering", "ordering": [["IWAE k=50", "<", "VAE k=50"]], "gap": ["VAE k=50", "IWAE k=50"]}
    good = harness.verdicts(order, [_row("VAE k=50", 90.0, 86.35), _row("IWAE k=50", 89.0, 84.78)])
    assert "holds" in good[0] and "DOES NOT" not in good[0]
    assert "ours 1.00 nats, published 1.57" in good[1]
    bad = harness.verdicts(order, [_row("VAE k=50", 89.0, 86.35), _row("IWAE k=50", 89.5, 84.78)])
    assert "DOES NOT hold" in bad[0]


def test_early_stopped_runs_report_the_evaluated_step():
    summary = {"steps": 307_000, "early_stopping": {"best_step": 257_000, "stopped_at_step": 307_000}}
    assert harness._reported_step(summary) == 257_000  # what `jaxvae evaluate` evaluates by default
    assert harness._reported_step({"steps": 500}) == 500
    row = {"epochs": 1500, "batch_size": 100, "steps": 307_000, "early_stopping": summary["early_stopping"]}
    cell = harness._schedule_cell("full", row)
    assert "early-stopped at step 307,000" in cell and "evaluated) at step 257,000" in cell
    assert harness._schedule_cell("short", {**row, "early_stopping": None}) == "short: 1500 epochs, batch 100, " \
        "307,000 steps"
