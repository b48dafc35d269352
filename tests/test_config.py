"""Config: presets, dotted overrides parsed by type, validation messages, JSON round trip."""

import json

import pytest

from jaxvae import config
from jaxvae.errors import ConfigError


def test_every_preset_is_valid_and_round_trips_through_json():
    for name in config.PRESETS:
        cfg = config.get_preset(name)
        assert cfg.preset == name
        config.validate(cfg)
        assert config.from_dict(json.loads(config.to_json(cfg))) == cfg


def test_overrides_are_parsed_by_field_type():
    cfg = config.apply_overrides(config.get_preset("mnist"), [
        "model.latent_dim=16", "model.hidden=512,256", "objective.beta=0.5", "train.steps=100",
        "data.dynamic_binarization=true", "data.dir=/tmp/x", "eval.max_examples=none",
    ])
    assert cfg.model.latent_dim == 16 and cfg.model.hidden == (512, 256)
    assert cfg.objective.beta == 0.5 and cfg.train.steps == 100
    assert cfg.data.dynamic_binarization is True and cfg.data.dir == "/tmp/x" and cfg.eval.max_examples is None
    assert config.diff(config.get_preset("mnist"), cfg)[0].startswith("data.dir")


@pytest.mark.parametrize("override, message", [
    ("model.latnt_dim=3", "Did you mean 'model.latent_dim'"),
    ("modl.latent_dim=3", "Did you mean 'model.latent_dim'"),
    ("model.latent_dim=0", "model.latent_dim must be positive"),
    ("model.latent_dim=2.5", "expected int"),
    ("objective.beta=-1", "objective.beta must be >= 0"),
    ("objective.beta=abc", "expected float"),
    ("objective.name=elbbo", "Did you mean 'elbo'"),
    ("train.batch_size=0", "train.batch_size must be positive"),
    ("data.dynamic_binarization=maybe", "expected bool"),
    ("latent_dim", "KEY=VALUE"),
    ("objective.cycle_ratio=1.5", "cycle_ratio"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        config.apply_overrides(config.get_preset("digits"), [override])


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'mnist'"):
        config.get_preset("mnsit")


def test_every_key_is_listed_and_settable():
    keys = config.all_keys()
    for required in ["data.name", "data.dir", "model.latent_dim", "train.batch_size", "train.epochs",
                     "train.steps", "train.seed", "optimizer.learning_rate", "objective.beta", "mesh.shape"]:
        assert required in keys
