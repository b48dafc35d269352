"""Config: presets, dotted overrides parsed by type, validation messages, JSON round trip."""

import json

import pytest

from jaxvae import config
from jaxvae.config import overrides
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


# Every integer-list key (model.hidden, model.channels, model.latent_dims, model.layer_hidden, ...).
INT_TUPLE_KEYS = [k.key for k in config.describe_keys() if k.type.startswith("tuple[int")]


def test_the_integer_list_keys_are_the_expected_ones():
    assert {"model.hidden", "model.channels", "model.latent_dims", "model.layer_hidden",
            "model.groups_per_scale", "optimizer.milestones"} <= set(INT_TUPLE_KEYS)


@pytest.mark.parametrize("key", INT_TUPLE_KEYS)
@pytest.mark.parametrize("value, bad", [("8,,x", "'' (item 2)"), ("8,x", "'x' (item 2)"), ("x", "'x' (item 1)"),
                                        ("4x2", "'4x2' (item 1)"), ("8,", "'' (item 2)"), ("8.5", "'8.5'"),
                                        (",8", "'' (item 1)")])
def test_malformed_integer_lists_are_refused_never_reinterpreted(key, value, bad):
    # Before: 8,,x and 8,x became (8,), x became (), and 4x2 became (4, 2).
    with pytest.raises(ConfigError) as err:
        overrides._replace_path(config.get_preset("digits"), key.split("."), value, key)
    message = str(err.value)
    assert f"{key}={value!r}" in message and bad in message and "comma-separated list of integers" in message


@pytest.mark.parametrize("value, parsed", [("8", (8,)), ("100,50", (100, 50)), (" 100 , 50 ", (100, 50)),
                                           ("(8,)", (8,)), ("[8, 4]", (8, 4)), ("", ()), ("()", ())])
def test_integer_lists_in_their_written_forms(value, parsed):
    cfg = overrides._replace_path(config.get_preset("digits"), ["model", "latent_dims"], value,
                                  "model.latent_dims")
    assert cfg.model.latent_dims == parsed


def test_a_malformed_integer_list_exits_2_with_the_value_and_writes_nothing(capsys, tmp_path, monkeypatch):
    from jaxvae import cli

    monkeypatch.chdir(tmp_path)
    rc = cli.main(["train", "--workdir", str(tmp_path / "run"), "--set", "model.network=hierarchical",
                   "model.latent_dims=8,,x"])
    err = capsys.readouterr().err
    assert rc == 2 and "model.latent_dims='8,,x'" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("values, message", [
    ({"model.hidden": 512}, "expected a list of int"),
    ({"model.hidden": ["8", "x"]}, r"model.hidden\[0\]='8': expected int, got str"),
    ({"model.latent_dim": 8.5}, "model.latent_dim=8.5: expected int, got float"),
    ({"data.dynamic_binarization": 1}, "expected bool, got int"),
    ({"model.network": 3}, "expected str, got int"),
])
def test_typed_values_are_checked_not_converted(values, message):
    with pytest.raises(ConfigError, match=message):
        config.apply_overrides(config.get_preset("digits"), values)


def test_typed_values_of_the_right_kind_are_accepted():
    cfg = config.apply_overrides(config.get_preset("digits"), {"model.hidden": [32, 16], "objective.beta": 4,
                                                               "train.steps": None})
    assert cfg.model.hidden == (32, 16) and cfg.objective.beta == 4.0 and isinstance(cfg.objective.beta, float)


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'mnist'"):
        config.get_preset("mnsit")


def test_every_key_is_listed_and_settable():
    keys = config.all_keys()
    for required in ["data.name", "data.dir", "model.latent_dim", "train.batch_size", "train.epochs",
                     "train.steps", "train.seed", "optimizer.learning_rate", "objective.beta", "mesh.shape"]:
        assert required in keys


def test_objective_settings_live_in_their_own_sections_and_the_flat_names_still_work():
    cfg = config.apply_overrides(config.get_preset("digits"), ["objective.capacity.nats=5",
                                                               "objective.geco_tolerance=17"])
    assert cfg.objective.capacity.nats == 5.0 and cfg.objective.geco.tolerance == 17.0
    assert config.get_value(cfg, "objective.capacity.nats") == config.get_value(cfg, "objective.capacity") == 5.0
    # A config.json written before the split (flat keys) loads to the same config.
    flat = config.to_dict(cfg)
    ob = flat["objective"]
    for section in ("free_bits", "capacity", "beta_tcvae", "info_vae", "geco", "pi"):
        ob.pop(section)
    ob.update(free_bits=0.0, free_bits_group=1, capacity=5.0, capacity_steps=10_000, gamma=1000.0,
              geco_tolerance=17.0, geco_alpha=0.99, geco_step_size=0.01, kl_target=10.0, pi_kp=0.01, pi_ki=1e-4,
              tc_alpha=1.0, tc_gamma=1.0, mmd_alpha=0.0, mmd_lambda=1000.0, mmd_kernel="imq")
    assert config.from_dict(flat) == cfg
    assert config.from_dict(json.loads(config.to_json(cfg))) == cfg
    with pytest.raises(ConfigError, match="is a section of settings"):
        config.apply_overrides(cfg, ["objective.geco=3"])
    with pytest.raises(ConfigError, match=r"objective\.geco\.alpha must be in"):
        config.apply_overrides(cfg, ["objective.geco.alpha=1.5"])
    with pytest.raises(ConfigError, match=r"objective\.capacity\.gamma must be >= 0"):
        config.apply_overrides(cfg, ["objective.capacity.gamma=-1"])


def test_choices_come_from_the_component_registries():
    from jaxvae import catalog

    assert set(catalog.OBJECTIVES) == {"elbo", "iwae", "free_bits", "capacity", "beta_tcvae", "info_vae",
                                         "miwae", "ciwae", "piwae", "iwae_dreg", "elbo_stl"}
    with pytest.raises(ConfigError, match="Did you mean 'capacity'"):
        config.apply_overrides(config.Config(), ["objective.name=capacty"])

    @catalog.OBJECTIVES.register("elbo_copy", controllable=True)
    def _copy(cfg, context):
        return catalog.OBJECTIVES["elbo"](cfg, context)

    try:  # a registered objective is a valid choice at once, with its controller rule
        cfg = config.apply_overrides(config.Config(), ["objective.name=elbo_copy", "objective.controller=pi"])
        assert cfg.objective.name == "elbo_copy"
    finally:
        catalog.OBJECTIVES._specs.pop("elbo_copy")
    with pytest.raises(ConfigError, match="sets the KL weight of the elbo or free_bits or elbo_stl objectives"):
        config.apply_overrides(config.Config(), ["objective.name=iwae", "objective.controller=pi"])
    with pytest.raises(ConfigError, match="needs a factorized prior"):
        config.apply_overrides(config.Config(), ["objective.name=beta_tcvae", "model.prior=vamp"])


def test_every_declared_component_has_its_factory_and_names_are_declared_once():
    """The catalog declares each component's name and traits once (read without JAX by validation and `config
    show`); the factories attach to those declarations, so every declared name builds something and a factory for
    an undeclared name is refused."""
    from jaxvae import catalog

    for registry in catalog.REGISTRIES:
        for name in registry:
            assert callable(registry[name]), (registry.key, name)
    assert config.registered_components() == catalog.components()
    assert config.BUILTIN_COMPONENTS == catalog.components()  # the 0.1 name still answers
    with pytest.raises(ValueError, match=r"not declared in jaxvae\.catalog"):
        catalog.OBJECTIVES.implement("no_such_objective")(lambda cfg, c: None)
    with pytest.raises(ValueError, match="declared twice"):
        catalog.OBJECTIVES.declare("elbo")



def test_every_config_key_is_described():
    """The comments in config.py are the documentation (`jaxvae config keys`, the docs' config reference):
    every key has one, and the keys are exactly those --set accepts."""
    described = config.describe_keys()
    assert [k.key for k in described] == [k for k in config.all_keys() if k != "preset"]
    assert not [k.key for k in described if len(k.meaning) < 8]
    byname = {k.key: k for k in described}
    assert byname["model.latent_dim"].default == "8" and byname["model.hidden"].default == "256,128"
    assert byname["train.aggressive.check_every"].meaning.startswith("The inner loop stops")  # a comment above
    # A comment that continues on the next line belongs to its own key, not to the key below it (before:
    # optimizer.warmup_steps showed the end of optimizer.schedule's text).
    assert byname["optimizer.schedule"].meaning.endswith("PyTorch's MultiStepLR)")
    assert byname["optimizer.warmup_steps"].meaning.startswith("warmup_cosine:")
    assert "hierarchical" not in byname["model.householder"].meaning  # a section's note is nobody's text


def test_config_keys_lists_and_filters(capsys):
    from jaxvae import cli

    assert cli.main(["config", "keys", "--grep", "capacity"]) == 0
    out = capsys.readouterr().out
    assert "objective.capacity.nats" in out and "model.latent_dim" not in out
    assert cli.main(["config", "keys", "--grep", "no-such-text"]) == 2
