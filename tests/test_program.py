"""The training engine's players and non-gradient state (jaxvae.training): a two-player adversarial autoencoder
and a VAE with batch normalization train, resume bitwise after a crash, sweep as one program and run on 8
simulated devices like on one; schedules gate players; the one-player program is the step every preset had
(its golden hashes live in test_golden.py); checkpoints written before train states had ``model_state``
restore."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvae import config, runs
from jaxvae.data import load_dataset
from jaxvae.models.factory import build_model
from jaxvae.models.protocol import merge_trees, partition_tree
from jaxvae.objectives.factory import build_objective
from jaxvae.rundir import writers
from jaxvae.rundir.checkpoint import Checkpointer
from jaxvae.training import (
    Player,
    Program,
    Schedule,
    TrainState,
    init_program_state,
    make_program_step,
    per_active_step,
)
from jaxvae.training.optimizers import build_optimizer
from jaxvae.training.program import build_program
from tests import programs

REPO = Path(__file__).resolve().parent.parent
FAST = ["model.latent_dim=2", "train.batch_size=50", "train.steps=40", "train.log_every=10",
        "train.checkpoint_every=20", "eval.num_samples=5", "eval.max_examples=100", "eval.batch_size=50",
        "eval.num_images=16", "monitor.every=0"]
ADVERSARIAL = "tests.programs:adversarial"


def _cfg(*extra: str) -> config.Config:
    return config.apply_overrides(config.get_preset("digits"), [*FAST, *extra])


def _parts(cfg, builder, program=None):
    """The model (training view), program and step of ``cfg`` on digits, as open_run builds them."""
    ds = load_dataset("digits")
    model = build_model(cfg, ds.event_shape, builder)
    optimizer = build_optimizer(cfg, cfg.train.steps)
    objective = build_objective(cfg, model.training(), cfg.train.steps)
    prog = build_program(cfg, model, objective, optimizer, program)
    return ds, model, prog, jax.jit(make_program_step(prog))


def _steps(ds, prog, step, state, n):
    """``n`` steps on the consecutive batches of 50 that follow ``state.step``'s."""
    out = []
    for _ in range(n):
        i = int(state.step)
        state, metrics = step(state, jnp.asarray(ds.train[i * 50:(i + 1) * 50]), prog.hyper(state.step))
        out.append(jax.device_get(metrics))
    return state, out


def test_schedules_gate_steps_and_refuse_bad_values():
    steps = jnp.arange(8)
    assert Schedule().always and not Schedule(every=2).always and not Schedule(start=3).always
    assert np.asarray(Schedule(every=2, phase=1).active(steps)).tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert np.asarray(Schedule(every=3, start=3).active(steps)).tolist() == [0, 0, 0, 1, 0, 0, 1, 0]
    assert np.asarray(Schedule(start=5).active(steps)).tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="every must be at least 1"):
        Schedule(every=0)
    with pytest.raises(ValueError, match=r"phase must be in \[0, every=2\)"):
        Schedule(every=2, phase=2)
    with pytest.raises(TypeError, match="must be an integer"):
        Schedule(every=2.0)


def test_programs_refuse_what_they_cannot_run():
    objective = build_objective(_cfg(), build_model(_cfg(), (64,)).training(), 10)
    adam = optax.adam(1e-3)
    with pytest.raises(ValueError, match="must run every step"):
        Program((Player("a", objective, adam, schedule=Schedule(every=2)), Player("b", objective, adam)))
    with pytest.raises(ValueError, match="must differ"):
        Program((Player("a", objective, adam), Player("a", objective, adam)))
    with pytest.raises(ValueError, match="Python identifier"):
        Player("the critic", objective, adam)
    with pytest.raises(TypeError, match="one string"):
        Player("critic", objective, adam, params="critic")
    with pytest.raises(ValueError, match="at least one Player"):
        Program(())
    with pytest.raises(config.ConfigError, match=r"train\.program='nomodule'"):
        config.validate(_cfg("train.program=nomodule"))
    with pytest.raises(config.ConfigError, match=r"cannot run with train\.program"):
        config.validate(_cfg(f"train.program={ADVERSARIAL}", "train.aggressive.enabled=true",
                             "data.valid_size=100"))


def test_partition_and_merge_trees_invert_each_other():
    tree = {"encoder": {"w": 1, "b": 2}, "critic": {"w": 3}, "empty": {}}
    mine, rest = partition_tree(tree, lambda path: path[0] == "critic")
    assert mine == {"critic": {"w": 3}} and rest == {"encoder": {"w": 1, "b": 2}, "empty": {}}
    assert jax.tree.structure(merge_trees(mine, rest)) == jax.tree.structure(tree)
    with pytest.raises(ValueError, match="leaf in more than one tree"):
        merge_trees(tree, mine)


def test_two_players_alternate_and_each_trains_only_its_own_parameters():
    cfg = _cfg()
    ds, model, prog, step = _parts(cfg, programs.adversarial_ae, programs.adversarial)
    state = init_program_state(model, prog, jax.random.key(0))
    assert set(state.opt_state) == set(state.obj_state) == {"autoencoder", "critic"}
    critic0 = jax.device_get(state.params["critic"])
    state1, metrics = _steps(ds, prog, step, state, 1)
    # Step 0: the critic (every 2 steps, phase 1) is idle: its parameters and optimizer count are unchanged.
    assert metrics[0]["critic_active"] == 0 and metrics[0]["critic_loss"] == 0
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state1.params["critic"]), critic0)
    state2, metrics = _steps(ds, prog, step, state1, 1)
    assert metrics[0]["critic_active"] == 1 and metrics[0]["critic_loss"] > 0
    assert not np.allclose(state2.params["critic"]["out"]["kernel"], critic0["out"]["kernel"])
    assert {"loss", "elbo", "recon", "kl", "beta", "grad_norm", "adversarial", "critic_accuracy",
            "critic_grad_norm", "critic_skipped"} <= set(metrics[0])

    # The autoencoder player alone, from the same key, ends bitwise where the two-player program left the
    # autoencoder: the critic's updates touched no other parameter (and, within a step, came after it).
    _, _, alone, alone_step = _parts(cfg, programs.adversarial_ae, programs.autoencoder_only)
    single = init_program_state(model, alone, jax.random.key(0))
    single, _ = _steps(ds, alone, alone_step, single, 2)
    for name in ("vae",):
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(single.params[name]),
                     jax.device_get(state2.params[name]))


def test_metrics_of_a_scheduled_player_average_over_the_steps_it_ran():
    record = {"loss": 1.0, "critic_loss": 0.25, "critic_active": 0.5, "critic_grad_norm": np.array([0.1, 0.0]),
              "other_loss": 3.0}
    out = per_active_step(record)
    assert out["critic_loss"] == 0.5 and out["loss"] == 1.0 and out["other_loss"] == 3.0
    np.testing.assert_allclose(out["critic_grad_norm"], [0.2, 0.0])
    assert per_active_step({"critic_loss": 0.0, "critic_active": 0.0})["critic_loss"] == 0.0


def test_batch_statistics_are_state_updated_by_the_forward_pass():
    cfg = _cfg()
    ds, model, prog, step = _parts(cfg, programs.batchnorm_vae)
    assert model.state_paths == {("encoder", "norm", "mean"), ("encoder", "norm", "var")}
    state = init_program_state(model, prog, jax.random.key(0))
    assert set(state.model_state["encoder"]["norm"]) == {"mean", "var"}
    assert "mean" not in state.params["encoder"]["norm"]  # no gradient, no optimizer state for the statistics
    batch = jnp.asarray(ds.train[:50])
    hidden = state.params["encoder"]["hidden"]
    h = batch.reshape(50, -1) @ hidden["kernel"] + hidden["bias"]  # the pre-activations BatchNorm sees
    state1, _ = _steps(ds, prog, step, state, 1)
    # NNX's running average with momentum 0.9 from mean 0 and variance 1 (closed form of one update).
    np.testing.assert_allclose(state1.model_state["encoder"]["norm"]["mean"], 0.1 * jnp.mean(h, 0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(state1.model_state["encoder"]["norm"]["var"], 0.9 + 0.1 * jnp.var(h, 0),
                               rtol=1e-5)


def test_checkpoints_without_model_state_restore(tmp_path):
    cfg = _cfg()
    ds, model, prog, step = _parts(cfg, None)
    state, _ = _steps(ds, prog, step, init_program_state(model, prog, jax.random.key(0)), 2)
    legacy = collections.namedtuple("TrainState", TrainState._fields[:-1])  # the state before model_state
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(legacy(*state[:-1]))
    ckpt.wait()
    restored = ckpt.restore(init_program_state(model, prog, jax.random.key(1)))
    ckpt.close()
    assert isinstance(restored, TrainState) and restored.model_state == {}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params), jax.device_get(state.params))
    assert int(restored.step) == 2


def _crash_after(monkeypatch, step):
    original = writers.MetricWriter.write

    def crashing_write(self, record):
        original(self, record)
        if record["step"] == step and "split" not in record:
            raise KeyboardInterrupt

    monkeypatch.setattr(writers.MetricWriter, "write", crashing_write)
    return lambda: monkeypatch.setattr(writers.MetricWriter, "write", original)


@pytest.mark.slow
def test_a_batch_normalized_model_trains_through_fit_and_resumes_bitwise_after_a_crash(tmp_path, monkeypatch):
    """The non-gradient state through jv.fit: checkpointed, restored, evaluated with the running statistics."""
    cfg, quiet = _cfg(), dict(progress=False, log=lambda _: None)
    full = runs.fit(cfg, tmp_path / "full", model=programs.batchnorm_vae, **quiet)
    restore = _crash_after(monkeypatch, 30)  # the last checkpoint was at step 20
    with pytest.raises(KeyboardInterrupt):
        runs.fit(cfg, tmp_path / "resumed", model=programs.batchnorm_vae, **quiet)
    restore()
    logs: list[str] = []
    resumed = runs.fit(cfg, tmp_path / "resumed", model=programs.batchnorm_vae, progress=False, log=logs.append)
    assert any("from the checkpoint at step 20" in line for line in logs)
    assert resumed["params_sha256"] == full["params_sha256"]  # parameters and statistics, bitwise
    records = [r for r in writers.read_metrics(tmp_path / "resumed") if "split" not in r]
    assert [r["step"] for r in records] == [10, 20, 30, 40]  # no repeated or missing records
    assert [r["loss"] for r in records] == [r["loss"] for r in writers.read_metrics(tmp_path / "full")
                                            if "split" not in r]
    run = runs.load_run(tmp_path / "full")
    assert runs.params_sha256(run.params) == full["params_sha256"]
    assert not np.allclose(run.params["encoder"]["norm"]["mean"], 0.0)  # the running statistics moved, saved


@pytest.mark.slow
def test_a_two_player_program_through_the_cli_resumes_bitwise_after_sigkill(tmp_path):
    """`jaxvae train --set train.program=...`, killed with SIGKILL after a checkpoint, resumed by the same command,
    ends bitwise where an uninterrupted run ends; then evaluates and reopens with jv.load_run."""
    sets = ["--set", "model.network=tests.programs:adversarial_ae", f"train.program={ADVERSARIAL}",
            *[x for x in FAST if not x.startswith(("train.steps", "train.checkpoint_every"))],
            "train.steps=200", "train.checkpoint_every=20", "objective.beta=0.5"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "jaxvae", "train", "--no-progress", *sets]
    proc = subprocess.Popen([*command, "--workdir", str(tmp_path / "killed")], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    while proc.poll() is None and not (metrics.exists() and '"step": 50' in metrics.read_text()):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([*command, "--workdir", str(tmp_path / "killed")], cwd=REPO, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming" in resumed.stdout + resumed.stderr and "from the checkpoint at step" in resumed.stdout + \
        resumed.stderr
    straight = subprocess.run([*command, "--workdir", str(tmp_path / "straight")], cwd=REPO, env=env,
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed, full = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("killed", "straight"))
    assert killed["params_sha256"] == full["params_sha256"]
    saved = json.loads((tmp_path / "killed" / "config.json").read_text())
    assert saved["train"]["program"] == ADVERSARIAL
    records = [r for r in writers.read_metrics(tmp_path / "killed") if "split" not in r]
    assert [r["step"] for r in records] == list(range(10, 201, 10))
    # Averaged over the steps the critic ran (half of them), its accuracy is a share in [0, 1].
    assert all(r["critic_active"] == 0.5 and 0 <= r["critic_accuracy"] <= 1 for r in records)
    run = runs.load_run(tmp_path / "killed")  # the recorded model and program, reopened by name
    assert runs.params_sha256(run.params) == killed["params_sha256"] and np.isfinite(killed["test_elbo"])


@pytest.mark.slow
def test_a_two_player_sweep_is_one_program_equal_to_separate_runs(tmp_path):
    from jaxvae.runs.sweep import run_sweep

    quiet = dict(progress=False, log=lambda _: None)
    sweep = run_sweep(_cfg("train.checkpoint_every=0"), {"objective.beta": ["0.5", "2"]}, tmp_path / "sweep",
                      model=programs.adversarial_ae, program=programs.adversarial, **quiet)
    assert sweep["failed"] == []
    member = next((tmp_path / "sweep" / "models").glob("01-*"))
    cfg = config.from_dict(json.loads((member / "config.json").read_text()))
    assert cfg.train.program == ADVERSARIAL and cfg.objective.beta == 2.0
    alone = runs.fit(cfg, tmp_path / "alone", **quiet)  # the recorded program and model, reopened by name
    np.testing.assert_allclose(sweep["models"][1]["test_elbo"], alone["test_elbo"], rtol=1e-4)
    losses = [[r["loss"] for r in writers.read_metrics(d) if "split" not in r]
              for d in sorted((tmp_path / "sweep" / "models").iterdir())]
    np.testing.assert_allclose(losses[1], [r["loss"] for r in writers.read_metrics(tmp_path / "alone")
                                           if "split" not in r], rtol=1e-4)
    assert not np.allclose(losses[0], losses[1])  # the two weights trained different models


WORKER = """
import json, sys
import jax
from jaxvae import config, runs
from jaxvae.rundir import writers
from tests import programs
kind, out = sys.argv[1:3]
kwargs = dict(model=programs.adversarial_ae, program=programs.adversarial) if kind == "adversarial" else \\
    dict(model=programs.batchnorm_vae)
results = {{"devices": jax.device_count()}}
for shape in ("1", "8"):
    cfg = config.apply_overrides(config.get_preset("digits"), [*{fast!r}, "train.batch_size=48",
                                                              "train.checkpoint_every=0", f"mesh.shape={{shape}}"])
    summary = runs.fit(cfg, f"{{out}}/{{shape}}", progress=False, log=lambda _: None, **kwargs)
    losses = [r["loss"] for r in writers.read_metrics(f"{{out}}/{{shape}}") if "split" not in r]
    results[shape] = dict(losses=losses, test_elbo=summary["test_elbo"])
print(json.dumps(results))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["adversarial", "batchnorm"])
def test_programs_on_eight_simulated_devices_train_like_on_one(kind, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", WORKER.format(fast=FAST), kind, str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["devices"] == 8 and len(results["8"]["losses"]) == 4
    np.testing.assert_allclose(results["8"]["losses"], results["1"]["losses"], rtol=1e-5, atol=1e-5)
    # The test ELBO of the batch-normalized model divides by running variances that were reduced over the
    # sharded batch in another order: 1.4e-4 relative apart after 40 steps, so the looser tolerance.
    np.testing.assert_allclose(results["8"]["test_elbo"], results["1"]["test_elbo"], rtol=1e-3)
