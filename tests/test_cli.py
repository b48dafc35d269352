"""The ``jaxvae`` command line: ``--set`` parsing, help texts, and defaults for user data."""

import argparse
import json

import numpy as np
import pytest

from jaxvae import cli, config
from jaxvae.data import DATASETS
from tests.helpers import fresh_python

TINY = ["model.hidden=16", "model.latent_dim=2", "train.steps=10", "train.log_every=5", "eval.num_samples=4",
        "eval.max_examples=32", "eval.num_images=4", "monitor.every=0"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (nested) subcommand parser, by its full command, e.g. ``"config show"``."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = sub
                out.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return out


def _show(capsys, *args):
    rc = cli.main(["config", "show", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ------------------------------------------------------------------------------------------------ --set

@pytest.mark.parametrize("command", [["train"], ["sweep"], ["config", "show"]])
def test_set_takes_several_overrides_and_can_be_repeated(command):
    args = cli.build_parser().parse_args([*command, "--set", "model.latent_dim=3", "train.epochs=2",
                                          "--set", "train.seed=5"])
    assert args.set == ["model.latent_dim=3", "train.epochs=2", "train.seed=5"]


def test_several_overrides_after_one_set_are_all_applied(capsys):
    rc, out, err = _show(capsys, "--set", "model.latent_dim=3", "train.epochs=2", "--set", "train.seed=5")
    assert rc == 0, err
    cfg = json.loads(out)
    assert (cfg["model"]["latent_dim"], cfg["train"]["epochs"], cfg["train"]["seed"]) == (3, 2, 5)


@pytest.mark.parametrize("command", [["train"], ["sweep", "--seeds", "2"], ["config", "show"]])
def test_set_key_space_value_is_a_jaxvae_error_naming_key_equals_value(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the repo
    rc = cli.main([*command, "--set", "model.latent_dim", "16"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE
    assert "usage:" not in err and len(err.strip().splitlines()) == 1, err  # one paragraph, not argparse's
    assert "KEY=VALUE" in err and "--set model.latent_dim=16" in err, err
    assert not any(tmp_path.iterdir())  # no run directory was created


def test_set_help_shows_several_overrides():
    help_text = _subparsers(cli.build_parser())["train"].format_help()
    assert "--set KEY=VALUE [KEY=VALUE ...]" in help_text


# ------------------------------------------------------------------------------------------------ help

def test_every_option_of_every_subcommand_has_help():
    subs = _subparsers(cli.build_parser())
    assert {"train", "sweep", "evaluate", "sample", "diagnose", "config show", "presets"} <= set(subs)
    skip = (argparse._HelpAction, argparse._SubParsersAction)
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, sub in subs.items() for a in sub._actions
               if not isinstance(a, skip) and not (a.help or "").strip()]
    assert not missing, f"options without help: {missing}"


@pytest.mark.parametrize("command", ["evaluate", "sample", "diagnose"])
def test_help_output_documents_workdir(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("--workdir"))
    assert len(line.split(maxsplit=2)) == 3, out  # the option is followed by its help text


# ------------------------------------------------------------------------------------------------ user data

@pytest.fixture
def user_npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).uniform(size=(60, 6)).astype(np.float32))
    return path


def test_user_data_without_preset_starts_from_the_user_data_preset(user_npy, capsys):
    rc, out, err = _show(capsys, "--set", f"data.name={user_npy}")
    assert rc == 0, err
    cfg = json.loads(out)  # stdout stays pure JSON; the note goes to stderr
    assert cfg["preset"] == "user-data" and cfg["data"]["name"] == str(user_npy)
    assert cfg["train"]["epochs"] == config.get_preset("user-data").train.epochs
    assert cfg["train"]["epochs"] != config.get_preset("digits").train.epochs
    assert "user-data" in err and "--preset" in err


def test_user_data_preset_is_listed_and_general_purpose(capsys):
    assert cli.main(["presets"]) == 0
    assert any(line.startswith("user-data ") for line in capsys.readouterr().out.splitlines())
    cfg = config.get_preset("user-data")
    defaults = config.Config()
    assert cfg.model == defaults.model and cfg.objective == defaults.objective and cfg.data == defaults.data
    assert 1 <= cfg.train.epochs <= 100
    assert config.get_preset("digits").train.epochs == 300  # the digits preset is unchanged


def test_explicit_preset_wins_and_a_registered_name_starts_from_its_own_preset(user_npy, capsys):
    rc, out, err = _show(capsys, "--preset", "digits", "--set", f"data.name={user_npy}")
    assert rc == 0, err
    assert json.loads(out)["preset"] == "digits" and "user-data" not in err
    rc, out, err = _show(capsys, "--set", "data.name=digits")
    assert rc == 0 and json.loads(out)["preset"] == "digits" and err == ""
    # `--set data.name=mnist` alone used to train MNIST with the digits preset's 8x8-sized MLP and 300 epochs.
    for name in sorted(DATASETS):
        rc, out, err = _show(capsys, "--set", f"data.name={name}")
        assert rc == 0, err
        shown = json.loads(out)
        assert shown["preset"] == name and shown["data"]["name"] == name
        assert shown == json.loads(config.to_json(config.get_preset(name)))
        if name != "digits":
            assert f"the preset of data.name={name}" in err
    rc, out, err = _show(capsys, "--preset", "digits", "--set", "data.name=mnist")
    assert rc == 0 and json.loads(out)["preset"] == "digits" and err == ""


def test_config_show_validates_like_train(user_npy, capsys):
    rc, out, err = _show(capsys, "--set", f"data.name={user_npy}", "train.epochs=0")
    assert rc == cli.EXIT_USAGE and out == ""
    assert "train.epochs must be positive" in err


def test_train_on_an_npz_without_preset_records_the_user_data_preset(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"  # the key convention the README documents
    np.savez(path, train=rng.uniform(size=(80, 6)).astype(np.float32), test=rng.uniform(size=(20, 6)),
             train_labels=rng.integers(0, 3, 80), test_labels=rng.integers(0, 3, 20))
    workdir = tmp_path / "run"
    rc = cli.main(["train", "--workdir", str(workdir), "--no-progress", "--set", f"data.name={path}", *TINY,
                   "train.batch_size=16"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Preset: user-data" in out
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["preset"] == "user-data" and saved["data"]["name"] == str(path)


def test_help_presets_and_config_show_do_not_import_jax():
    """`jaxvae --help`, `presets` and `config show` run without importing JAX (the package's names load on first
    use; config show validates with the JAX-free component catalog), and config show refuses what train refuses."""
    code = ("import sys\nfrom jaxvae import cli\ncodes = []\n"
            "for argv in (['presets'], ['--help'], ['train', '--help'],\n"
            "             ['config', 'show', '--set', 'objective.name=beta_tcvae', 'data.name=mnist'],\n"
            "             ['config', 'show', '--set', 'objective.name=iwae', 'objective.controller=pi']):\n"
            "    try:\n        codes.append(cli.main(argv))\n"
            "    except SystemExit as e:\n        codes.append(e.code)\n"
            "print(*codes, 'JAX IMPORTED' if 'jax' in sys.modules else 'no jax')\n")
    result = fresh_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-7:] == ["0", "0", "0", "0", "2", "no", "jax"], result.stdout[-300:]
    assert "binarized-mnist" in result.stdout and "--workdir" in result.stdout
    assert "objective.controller=pi sets the KL weight of the elbo or free_bits or elbo_stl" in result.stderr


def test_every_public_name_resolves():
    import jaxvae as jv

    missing = [name for name in jv.__all__ if getattr(jv, name, None) is None]
    assert not missing
    assert jv.fit is jv.runs.fit and jv.rundir.LOCK_NAME == ".jaxvae.lock"  # any submodule resolves too
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        jv.not_a_name  # noqa: B018
