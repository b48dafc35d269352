"""What a new user ran into (issue 36): a config file for `jaxvae train --config`, messages that say where a bad
value came from and how to fix it, readable image grids, no "Run directory:" before a refusal, the namespace
package of a folder named like the library."""

import json

import numpy as np
import pytest

from jaxvae import cli, config
from jaxvae.errors import ConfigError, DataError
from jaxvae.rundir import report

TINY = ["model.hidden=16", "model.latent_dim=2", "train.steps=10", "train.log_every=5", "eval.num_samples=4",
        "eval.max_examples=32", "eval.num_images=8", "monitor.every=0", "track.backends=none"]


def _run(capsys, *args):
    rc = cli.main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# -- --config FILE ------------------------------------------------------------------------------------------------


def test_a_runs_config_json_is_accepted_back(tmp_path, capsys):
    cfg = config.apply_overrides(config.get_preset("mnist"), ["model.latent_dim=7", "model.hidden=64,32"])
    saved = tmp_path / "config.json"
    saved.write_text(config.to_json(cfg))
    rc, out, err = _run(capsys, "config", "show", "--config", str(saved))
    assert rc == 0, err
    assert config.from_dict(json.loads(out)) == cfg
    rc, out, err = _run(capsys, "config", "show", "--config", str(saved), "--set", "model.latent_dim=3")
    assert rc == 0 and json.loads(out)["model"]["latent_dim"] == 3  # --set on top of the file


def test_a_partial_yaml_config_starts_from_its_preset(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("preset: frey\nmodel:\n  latent_dim: 5\n  hidden: [64, 32]\ntrain:\n  steps: 100\n")
    rc, out, err = _run(capsys, "config", "show", "--config", str(path))
    assert rc == 0, err
    cfg = config.from_dict(json.loads(out))
    frey = config.get_preset("frey")
    assert (cfg.model.latent_dim, cfg.model.hidden, cfg.train.steps) == (5, (64, 32), 100)
    assert cfg.model.likelihood == frey.model.likelihood == "gaussian" and cfg.data.name == "frey"


@pytest.mark.parametrize("text, suffix, message", [
    ('{"model": {"latent_dim": 4,}}', ".json", "not valid JSON at line 1, column 28"),
    ("model:\n  latent_dim: [4\n", ".yaml", "not valid YAML at line"),
    ('{"model": {"latent_dimm": 4}}', ".json", "Did you mean 'model.latent_dim'"),
    ('{"model": {"latent_dim": "x"}}', ".json", "expected int"),
    ('{"model": {"hidden": 512}}', ".json", "model.hidden=512: expected a list of int"),
    ('[1, 2]', ".json", "must hold a mapping of sections"),
    ('{"preset": "mnsit"}', ".json", "Did you mean 'mnist'"),
])
def test_a_bad_config_file_names_the_file_and_the_problem(tmp_path, capsys, text, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    rc, _, err = _run(capsys, "train", "--workdir", str(tmp_path / "run"), "--config", str(path))
    assert rc == 2 and message in err and str(path) in err, err
    assert not (tmp_path / "run").exists()


def test_config_file_and_preset_may_not_disagree(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text('{"preset": "frey"}')
    rc, _, err = _run(capsys, "config", "show", "--config", str(path), "--preset", "mnist")
    assert rc == 2 and "is for preset 'frey'" in err, err
    with pytest.raises(ConfigError, match="cannot read it"):
        config.read_file(tmp_path / "missing.json")


def test_train_with_a_config_file(tmp_path, capsys):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"model": {"hidden": [16], "latent_dim": 2}, "train": {"steps": 10}}))
    sets = [a for s in TINY[4:] for a in ("--set", s)]
    rc, _, err = _run(capsys, "train", "--workdir", str(tmp_path / "run"), "--config", str(path),
                      "--no-progress", *sets)
    assert rc == 0, err
    saved = config.from_saved(tmp_path / "run" / "config.json")
    assert saved.model.hidden == (16,) and saved.train.steps == 10 and saved.preset == "digits"


# -- messages ---------------------------------------------------------------------------------------------------


def test_a_refused_value_in_a_saved_config_says_where_it_came_from(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    data = config.to_dict(config.get_preset("digits"))
    data["model"]["latent_dim"] = 8.5
    (run / "config.json").write_text(json.dumps(data))
    rc, _, err = _run(capsys, "train", "--workdir", str(run))
    assert rc == 2 and "model.latent_dim=8.5: expected int" in err, err
    assert f"This value comes from {run / 'config.json'}, the run's saved config" in err


def test_no_run_directory_line_before_a_refusal(tmp_path, capsys):
    rc, out, err = _run(capsys, "train", "--workdir", str(tmp_path / "run"), "--set", "data.name=/nonexistent.npy")
    assert rc == 2 and "nonexistent" in err
    assert "Run directory" not in out  # before: printed, then the data error


def test_a_dataset_without_download_address_says_so_plainly(tmp_path):
    from jaxvae.data import locate, registry

    with pytest.raises(DataError) as err:
        locate.locate(registry.DATASETS["words"], tmp_path)
    text = str(err.value)
    assert "(no public URL" not in text
    assert "they have no download address; see http://wordlist.aspell.net/" in text
    assert "apt-get install -y wamerican" in text


def test_grids_of_small_images_are_enlarged_to_be_readable():
    grid = report.image_grid(np.zeros((64, 8, 8, 1)), ncols=8)
    assert grid.shape[1] >= 512  # 8x8 digits: tiles of 64 px (before: 32, a 265-px-wide grid)
    assert report.image_grid(np.zeros((4, 64, 64, 1)), ncols=4).shape[1] == 4 * 65 + 1  # large ones kept


def test_a_folder_named_jaxvae_beside_a_script_does_not_shadow_the_package(tmp_path):
    """A script run beside a clone named jaxvae/ (a folder without __init__.py, i.e. a namespace package) imports
    the library: the Makefile's editable install puts the checkout on sys.path, where a regular package wins over a
    namespace folder (setuptools' default import hook loses to it: "module 'jaxvae' has no attribute 'VAE'")."""
    import subprocess
    import sys

    (tmp_path / "jaxvae" / "jaxvae").mkdir(parents=True)  # a clone: the repository folder, the package inside
    result = subprocess.run([sys.executable, "-c", "import jaxvae as jv; print(jv.VAE.__name__, jv.__file__)"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=3600,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("VAE ") and str(tmp_path) not in result.stdout


def test_diagnose_says_which_kl_it_prints(tmp_path):
    """A flow run's console said "total KL 74.6" where summary.json said 20.2: the two are different quantities
    (the flow's base Gaussian on training examples vs the model's KL with the flow on the test split)."""
    from jaxvae.runs import diagnose

    (tmp_path / "summary.json").write_text(json.dumps({"test_kl": 20.2}))
    result = {"num_train": 2000, "kl_reference": "prior", "kl_total": 74.6, "active_units": 5, "latent_dim": 20,
              "inactive_dims": [], "mutual_information": 3.0, "mmd_to_prior": 0.01,
              "prior_holes": {"hole_fraction": 0.1}, "sampler_hole_fraction": {"prior": 0.1}, "seconds": 1.0}
    result["kl_total_is"] = diagnose._kl_total_is(result, "iaf", tmp_path)
    text = diagnose.format_diagnostics(result, tmp_path)
    assert "total KL              74.600 nats (the KL of the flow's base Gaussian q0(z|x) to N(0, I)" in text
    assert "summary.json's test_kl, 20.200 nats, is the model's KL with the flow" in text
    assert diagnose._kl_total_is(result, "diagonal", tmp_path) == (
        "the KL of q(z|x) to the prior, averaged over 2,000 training examples")
