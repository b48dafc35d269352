"""Aggressive inference-network training (He et al. 2019): the inner loop runs exactly the documented number of
encoder-only updates (against an oracle of the reference code's rule), the outer update is decoder-only, the
phase ends after `patience` epochs without a better validation MI (then joint updates, counted 0), a run
interrupted before and after the switch resumes bitwise, and the config refuses what cannot work."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvae import cli, config, runs
from jaxvae.errors import ConfigError
from jaxvae.models.factory import build_model
from jaxvae.objectives import Objective, ObjectiveOutput
from jaxvae.objectives.factory import build_objective
from jaxvae.rundir import writers
from jaxvae.runs import sweep
from jaxvae.training import aggressive
from jaxvae.training.aggressive import (
    AggressiveOptState,
    AggressivePhase,
    make_aggressive_train_step,
    split_optimizer,
)
from jaxvae.training.optimizers import build_optimizer
from jaxvae.training.program import OBJECTIVE_SALT as _OBJECTIVE_SALT
from jaxvae.training.step import TrainState, init_train_state, make_train_step

# ---------------------------------------------------------------------------------- a scripted loss sequence


def _scripted(losses):
    """An objective whose value after t encoder updates (SGD, rate 1) is ``losses[t]``: the encoder parameter w
    has gradient 1, so it is -t after t updates; the decoder parameter v has gradient 1 as well."""
    table = jnp.asarray(losses, jnp.float32)

    def loss(params, state, x, key, step, hyper):
        w, v = params["encoder"]["w"], params["decoder"]["v"]
        t = jnp.clip(jnp.round(-w).astype(jnp.int32), 0, table.shape[0] - 1)
        value = table[t] + (w - jax.lax.stop_gradient(w)) + (v - jax.lax.stop_gradient(v))
        return value, ObjectiveOutput(-value[None], value[None], jnp.zeros(1), None, {})

    return Objective(init=lambda p: {}, hyper=lambda step: {}, loss=loss, update=lambda s, out, step, hp: s)


def _state(opt, params=None):
    params = params if params is not None else {"encoder": {"w": jnp.float32(0.0)},
                                                "decoder": {"v": jnp.float32(0.0)}}
    zero = jnp.zeros((), jnp.int32)
    return TrainState(zero, params, opt.init(params), {}, jax.random.key(0), zero, zero)


def _oracle(losses, max_inner, check_every):
    """He et al.'s inner loop (jxhe/vae-lagging-encoder), the first window against +inf: the updates it runs."""
    previous, current = math.inf, 0.0
    for n in range(1, max_inner + 1):
        current += losses[n - 1]
        if n % check_every == 0:
            mean = current / check_every
            if previous - mean < 0:
                return n
            previous, current = mean, 0.0
    return max_inner


def _one_step(losses, max_inner, check_every, lr=1.0, active=True):
    opt = split_optimizer(optax.sgd(lr))
    step = jax.jit(make_aggressive_train_step(_scripted(losses), opt, batch_size=4, max_inner=max_inner,
                                              check_every=check_every))
    state = _state(opt)
    if not active:
        state = aggressive.set_phase(state, False)
    data = jnp.zeros((16, 2))
    return state, *step(state, data[:4], data)


@pytest.mark.parametrize("name, losses, max_inner, check_every, expected", [
    ("falling", np.arange(100, 0, -1), 25, 10, 25),  # never rises: every update runs
    ("constant (a zero rate)", np.full(40, 3.0), 25, 10, 25),  # previous - current = 0 is not < 0
    ("rising", np.arange(40), 25, 10, 20),  # the first window is compared with +inf, the second rises
    ("rising from one", np.arange(40), 30, 1, 2),
])
def test_the_inner_loop_runs_the_documented_number_of_encoder_updates(name, losses, max_inner, check_every,
                                                                      expected):
    assert _oracle(list(losses), max_inner, check_every) == expected
    lr = 0.0 if name.startswith("constant") else 1.0
    _, new, metrics = _one_step(losses, max_inner, check_every, lr=lr)
    assert float(metrics["aggressive_inner_steps"]) == expected and float(metrics["aggressive"]) == 1.0
    if lr:
        # The encoder moved once per inner update and not in the outer update; the decoder exactly once.
        assert float(new.params["encoder"]["w"]) == -expected
        assert float(new.params["decoder"]["v"]) == -1.0
        assert float(metrics["loss"]) == float(losses[expected])  # the outer update's loss, after the inner loop
    assert int(new.step) == 1 and int(new.nonfinite_total) == 0


def test_random_loss_sequences_stop_where_the_reference_rule_stops():
    rng = np.random.default_rng(0)
    for trial in range(12):
        check_every = int(rng.integers(1, 6))
        max_inner = int(rng.integers(check_every, 30))
        losses = rng.integers(0, 4, size=max_inner + 1).astype(np.float32)
        expected = _oracle(list(losses), max_inner, check_every)
        _, new, metrics = _one_step(losses, max_inner, check_every)
        assert float(metrics["aggressive_inner_steps"]) == expected, (trial, losses, max_inner, check_every)
        assert float(new.params["encoder"]["w"]) == -expected and float(new.params["decoder"]["v"]) == -1.0


def test_after_the_phase_both_parts_update_once_and_no_inner_step_is_counted():
    _, new, metrics = _one_step(np.arange(40), 25, 10, active=False)
    assert float(metrics["aggressive"]) == 0.0 and float(metrics["aggressive_inner_steps"]) == 0.0
    assert float(new.params["encoder"]["w"]) == -1.0 and float(new.params["decoder"]["v"]) == -1.0


def test_a_nonfinite_inner_update_is_not_applied_and_ends_the_inner_loop():
    _, new, metrics = _one_step([5.0, 4.0, 3.0, np.nan, 1.0, 0.0], 5, 1)
    assert float(metrics["aggressive_inner_steps"]) == 3 and float(new.params["encoder"]["w"]) == -3.0
    # The outer update sees the same NaN here (the scripted loss depends on w only), so it is skipped too: two
    # skipped updates in all, one in a row (inner updates do not count as consecutive outer skips).
    assert float(metrics["skipped"]) == 1.0 and float(new.params["decoder"]["v"]) == 0.0
    assert int(new.nonfinite_total) == 2 and int(new.nonfinite_consecutive) == 1


# --------------------------------------------------------------------------------------------- a real VAE

SMALL = ["model.hidden=16", "model.latent_dim=2", "train.batch_size=128", "train.log_every=5",
         "train.checkpoint_every=10", "eval.num_samples=4", "eval.max_examples=32", "eval.num_images=4",
         "monitor.every=0", "train.aggressive.enabled=true", "train.aggressive.max_inner=6",
         "train.aggressive.check_every=3"]


def _vae(overrides=()):
    cfg = config.apply_overrides(config.get_preset("digits"), [*SMALL, *overrides])
    model = build_model(cfg, (8, 8, 1))
    opt = split_optimizer(build_optimizer(cfg, 100))
    obj = build_objective(cfg, model, 100)
    return cfg, model, opt, obj, init_train_state(model, opt, obj, jax.random.key(0))


@pytest.mark.slow  # moved to the slow tier to keep `make test` well under 10 minutes on 2 cores
def test_on_a_vae_the_inner_loop_updates_only_the_encoder_and_the_joint_update_is_the_ordinary_one():
    cfg, model, opt, obj, state = _vae()
    assert isinstance(state.opt_state, AggressiveOptState) and int(state.opt_state.active) == 1
    data = jnp.asarray(np.random.default_rng(0).uniform(size=(200, 8, 8, 1)).astype(np.float32))
    batch = data[:128]
    step = jax.jit(make_aggressive_train_step(obj, opt, batch_size=128, max_inner=6, check_every=3))
    new, metrics = step(state, batch, data)
    assert 3 <= float(metrics["aggressive_inner_steps"]) <= 6
    enc0, rest0 = aggressive.split_params(state.params, "encoder")
    enc1, rest1 = aggressive.split_params(new.params, "encoder")
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(enc0), jax.tree.leaves(enc1)))
    # The decoder got exactly one update, from its initial values, at the encoder the inner loop left.
    key = jax.random.fold_in(jax.random.fold_in(state.key, 0), _OBJECTIVE_SALT)
    grads = jax.grad(lambda r: obj.loss(aggressive.merge_params(enc1, r, "encoder"), state.obj_state, batch, key,
                                        state.step, obj.hyper(state.step))[0])(rest0)
    updates, _ = opt.part.update(grads, state.opt_state.decoder, rest0)
    for want, got in zip(jax.tree.leaves(optax.apply_updates(rest0, updates)), jax.tree.leaves(rest1)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # After the phase: the same update as the ordinary train step with one optimizer over all parameters (Adam
    # works per parameter, so its two instances are one).
    ended = aggressive.set_phase(state, False)
    new, metrics = step(ended, batch, data)
    assert float(metrics["aggressive_inner_steps"]) == 0.0 and float(metrics["aggressive"]) == 0.0
    plain_opt = build_optimizer(cfg, 100)
    plain = init_train_state(model, plain_opt, obj, jax.random.key(0))
    plain, plain_metrics = jax.jit(make_train_step(model, obj, plain_opt))(plain, batch)
    for want, got in zip(jax.tree.leaves(plain.params), jax.tree.leaves(new.params)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics["loss"], plain_metrics["loss"], rtol=1e-6)


# ------------------------------------------------------------------------------------------------ the phase


def test_the_phase_ends_after_patience_epochs_without_a_better_mi_and_replays_from_the_records():
    phase = AggressivePhase(patience=2, min_delta=0.05)
    ends = [phase.update(10 * (e + 1), mi) for e, mi in enumerate([1.0, 2.0, 2.04, 2.5, 2.3, 2.52, 9.0])]
    # 1.0 and 2.0 are new bests, 2.04 is within min_delta (1 epoch), 2.5 a new best, 2.3 and 2.52 (< 2.55) are not:
    # the phase ends at the second of them; the later 9.0 is not looked at.
    assert ends == [False, False, False, False, False, True, False]
    assert (phase.best, phase.ended_at, phase.active) == (2.5, 60, False)
    records = [{"step": 10 * (e + 1), "split": "aggressive", "valid_mi": mi} for e, mi in
               enumerate([1.0, 2.0, 2.04, 2.5, 2.3, 2.52])] + [{"step": 15, "loss": 0.0}]
    replayed = AggressivePhase(2, 0.05).replay(records, up_to=50)
    assert (replayed.best, replayed.without_improvement, replayed.active) == (2.5, 1, True)
    assert AggressivePhase(2, 0.05).replay(records, up_to=60).ended_at == 60
    nan = AggressivePhase(1)
    assert not nan.update(1, 0.5) and nan.update(2, float("nan"))  # NaN is not an improvement
    with pytest.raises(ValueError, match=">= 1"):
        AggressivePhase(0)


def _train_records(workdir):
    return [r for r in writers.read_metrics(workdir) if "split" not in r]


# patience 1 and a min_delta no MI reaches: the first epoch's MI is the best, the second ends the phase at step 20
# (digits: 1,297 training examples, 10 batches of 128 per epoch).
PHASE_SWITCH = [*SMALL, "train.steps=40", "train.aggressive.patience=1", "train.aggressive.min_delta=1e9"]


@pytest.mark.slow  # moved to the slow tier to keep `make test` well under 10 minutes on 2 cores
def test_the_cli_trains_with_aggressive_training_and_the_phase_ends_after_patience_epochs(tmp_path, capsys):
    sets = [a for s in PHASE_SWITCH for a in ("--set", s)]
    assert cli.main(["train", "--workdir", str(tmp_path / "run"), "--no-progress", *sets]) == 0
    out = capsys.readouterr().out
    assert "aggressive inference training ends at step 20 (epoch 2): validation MI has not improved on" in out
    assert "for 1 epochs" in out
    records = _train_records(tmp_path / "run")
    assert [r["step"] for r in records] == list(range(5, 41, 5))
    for r in records:
        if r["step"] <= 20:
            assert r["aggressive"] == 1.0 and 3 <= r["aggressive_inner_steps"] <= 6
        else:
            assert r["aggressive"] == 0.0 and r["aggressive_inner_steps"] == 0.0
    phase = [r for r in writers.read_metrics(tmp_path / "run") if r.get("split") == "aggressive"]
    assert [(r["step"], r["aggressive"]) for r in phase] == [(10, 1.0), (20, 0.0)]  # no MI after the phase
    assert all(np.isfinite(r["valid_mi"]) for r in phase)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["aggressive"]["ended_at_step"] == 20
    assert summary["aggressive"]["best_valid_mi"] == phase[0]["valid_mi"]


@pytest.mark.slow
def test_runs_interrupted_before_and_after_the_phase_ends_resume_bitwise(tmp_path, monkeypatch):
    cfg = config.apply_overrides(config.get_preset("digits"), PHASE_SWITCH)
    quiet = lambda _: None
    full = runs.fit(cfg, tmp_path / "full", progress=False, log=quiet)
    assert full["aggressive"]["ended_at_step"] == 20
    original = writers.MetricWriter.write
    for crash_step, resumed_from in ((15, 10), (25, 20)):  # inside the patience window; just after the switch
        def crashing_write(self, record, crash_step=crash_step):
            original(self, record)
            if record["step"] == crash_step and "split" not in record:
                raise KeyboardInterrupt

        monkeypatch.setattr(writers.MetricWriter, "write", crashing_write)
        with pytest.raises(KeyboardInterrupt):
            runs.fit(cfg, tmp_path / "resumed", progress=False, log=quiet)
        monkeypatch.setattr(writers.MetricWriter, "write", original)
        # The next attempt resumes from the checkpoint before the crash (and, in the loop, crashes again later).
        assert max(int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir() if p.name.isdigit()) \
            == resumed_from
    logs = []
    resumed = runs.fit(cfg, tmp_path / "resumed", progress=False, log=logs.append)
    assert any("from the checkpoint at step 20" in line for line in logs)
    assert resumed["params_sha256"] == full["params_sha256"]  # bitwise the uninterrupted run
    assert resumed["aggressive"] == full["aggressive"]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("elapsed_seconds", "examples_per_sec")}
                        for r in rs]
    assert strip(_train_records(tmp_path / "resumed")) == strip(_train_records(tmp_path / "full"))


# ------------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("overrides, message", [
    (["train.aggressive.check_every=0"], r"train\.aggressive\.check_every must be >= 1"),
    (["train.aggressive.patience=0"], r"train\.aggressive\.patience must be >= 1"),
    (["train.aggressive.max_inner=5", "train.aggressive.check_every=10"], "use max_inner >= check_every >= 1"),
    (["train.aggressive.encoder_key= "], "encoder_key must name"),
    (["train.aggressive.enabled=true", "train.loop=host"], "train.loop=host does not do"),
    (["train.aggressive.enabled=true", "optimizer.schedule=cosine"], "optimizer.schedule=cosine"),
    (["train.aggressive.enabled=true", "optimizer.ema_decay=0.999"], "optimizer.ema_decay=0.999"),
    (["train.aggressive.enabled=true", "optimizer.plateau.patience=3"], "optimizer.plateau.patience=3"),
    (["train.aggressive.enabled=true", "optimizer.spectral_reg.weight=0.01",
      "optimizer.spectral_reg.init_weight=1", "optimizer.spectral_reg.warmup_steps=10"], "spectral_reg's warm-up"),
])
def test_the_config_refuses_what_aggressive_training_cannot_run_with(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config.apply_overrides(config.get_preset("digits"), overrides)


def test_settings_that_work_are_accepted_and_the_default_state_layout_is_unchanged():
    ok = config.apply_overrides(config.get_preset("digits"), [
        "train.aggressive.enabled=true", "objective.controller=pi", "optimizer.grad_clip_norm=5",
        "optimizer.spectral_reg.weight=0.01", "train.early_stopping.patience=3", "train.loop=scan"])
    assert ok.train.aggressive.enabled and ok.train.aggressive.max_inner == 100
    assert config.from_dict(config.to_dict(ok)) == ok
    cfg = config.get_preset("digits")
    assert not cfg.train.aggressive.enabled
    model = build_model(cfg, (8, 8, 1))
    opt = build_optimizer(cfg, 10)
    state = init_train_state(model, opt, build_objective(cfg, model, 10), jax.random.key(0))
    assert not isinstance(state.opt_state, AggressiveOptState)


def test_sweeps_models_without_the_encoder_key_and_data_without_validation_are_refused(tmp_path):
    base = config.apply_overrides(config.get_preset("digits"), ["train.aggressive.enabled=true"])
    with pytest.raises(ConfigError, match="not available in a sweep"):
        sweep.expand_grid(base, {"objective.beta": ["1", "2"]})
    cfg = config.apply_overrides(config.get_preset("digits"), [
        "model.network=hierarchical", "model.latent_dims=4,2", "train.aggressive.enabled=true"])
    model = build_model(cfg, (8, 8, 1))
    with pytest.raises(ConfigError, match=r"top-level keys: decoder, generative, inference\). Set "
                                          r"train\.aggressive\.encoder_key"):
        split_optimizer(build_optimizer(cfg, 10)).init(model.init(jax.random.key(0)))
    # Bottom-up hierarchies keep their inference network under "inference".
    opt = split_optimizer(build_optimizer(cfg, 10), "inference")
    assert isinstance(opt.init(model.init(jax.random.key(0))), AggressiveOptState)
    cfg = config.apply_overrides(config.get_preset("digits"), [*SMALL, "data.valid_size=0", "train.steps=10"])
    with pytest.raises(ConfigError, match=r"has no validation split: set data\.valid_size > 0"):
        runs.fit(cfg, tmp_path / "run", progress=False, log=lambda _: None)
