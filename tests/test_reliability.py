"""Reliability: every bad input gets exit code 2, a message with the key phrase, no traceback, and no file of
the run directory changes; divergence stops with the last good checkpoint untouched; SIGKILL loses at most the
steps since the last checkpoint and the resumed run ends bitwise identical."""

import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxvae import config, runs
from jaxvae.rundir import writers
from tests.helpers import HANG_GUARD_SECONDS

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.hidden=32", "model.latent_dim=4", "train.steps=40", "train.log_every=10",
        "train.checkpoint_every=20", "eval.num_samples=5", "eval.max_examples=50", "monitor.every=0"]


def _cli(*args, timeout=HANG_GUARD_SECONDS):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAXVAE_NO_DOWNLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "jaxvae", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _sets(overrides):
    return [a for s in overrides for a in ("--set", s)]


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained") / "run"
    runs.fit(config.apply_overrides(config.get_preset("digits"), TINY), workdir, progress=False,
             log=lambda _: None)
    return workdir


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    np.save(d / "range.npy", rng.uniform(-1, 2, (200, 4, 4, 1)).astype(np.float32))
    np.save(d / "fractions.npy", rng.uniform(0, 255, (200, 4, 4, 1)).astype(np.float32))
    x = rng.uniform(0, 1, (200, 4, 4, 1)).astype(np.float32)
    x[3, 0, 0, 0] = np.nan
    np.save(d / "nan.npy", x)
    np.save(d / "odd.npy", rng.uniform(0, 1, (200, 30, 30, 1)).astype(np.float32))
    np.save(d / "objects.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    mnist = d / "mnist"
    mnist.mkdir()
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"]:
        (mnist / f"{name}.gz").write_bytes(gzip.compress(b"not the real file"))
    (d / "a_file").write_text("x")
    return d


# (name, args builder, key phrase). Args get the workdir appended; checkpoint cases work on a copy of a run.
CASES = [
    ("unknown preset", lambda b: ["--preset", "mnsit"], "Did you mean 'mnist'"),
    ("misspelled key", lambda b: _sets(["model.latnt_dim=4"]), "Did you mean 'model.latent_dim'"),
    ("wrong type", lambda b: _sets(["train.batch_size=many"]), "expected int"),
    ("negative beta", lambda b: _sets(["objective.beta=-1"]), "objective.beta must be >= 0"),
    ("zero latent dim", lambda b: _sets(["model.latent_dim=0"]), "model.latent_dim must be positive"),
    ("batch larger than the data", lambda b: _sets(["train.batch_size=5000"]), "larger than the 1297"),
    ("data outside [0, 1] for Bernoulli", lambda b: _sets([f"data.name={b}/range.npy"]), "needs data in [0, 1]"),
    ("non-integers for a discrete likelihood",
     lambda b: _sets([f"data.name={b}/fractions.npy", "model.likelihood=categorical256"]), "integer data"),
    ("NaN in the data", lambda b: _sets([f"data.name={b}/nan.npy"]), "NaN or Inf"),
    ("data shape that does not fit the network",
     lambda b: _sets([f"data.name={b}/odd.npy", "model.network=conv"]), "divisible by 4"),
    ("pickled (object) array", lambda b: _sets([f"data.name={b}/objects.npy"]), "refuses for safety"),
    ("checksum mismatch / corrupt download",
     lambda b: _sets(["data.name=mnist", f"data.dir={b}/mnist"]), "checksum"),
    ("unwritable workdir", None, "Cannot write to the run directory"),
]


@pytest.mark.parametrize("name, build, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(tmp_path, bad_files, name, build, phrase):
    workdir = bad_files / "a_file" / "run" if build is None else tmp_path / "run"
    args = [] if build is None else build(bad_files)
    result = _cli("train", "--workdir", str(workdir), *args, *_sets(["train.steps=5"]))
    assert result.returncode == 2, result.stdout + result.stderr
    assert phrase.lower() in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # no half-made run directory left behind


CHECKPOINT_CASES = [
    ("resume with a different config", lambda w: _sets([*TINY, "objective.beta=2"]), "different config"),
    ("incompatible checkpoint (--force, other architecture)",
     lambda w: ["--force", *_sets([*TINY[1:], "model.hidden=48"])], "does not fit this model"),
    ("corrupt checkpoint", "corrupt", "Could not restore the checkpoint"),
    ("corrupt config.json", "config", "not a valid jaxvae config"),
    ("foreign non-empty directory", "foreign", "refusing to write into it"),
]


@pytest.mark.parametrize("name, how, phrase", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_run_directories_are_refused_and_left_unchanged(tmp_path, trained_run, name, how, phrase):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run, workdir)
    args = _sets(TINY)
    if how == "corrupt":
        for f in (workdir / "checkpoints" / "40").rglob("d/*"):
            f.write_bytes(os.urandom(100))
    elif how == "config":
        (workdir / "config.json").write_text("{ not json")
    elif how == "foreign":
        workdir = tmp_path / "foreign"
        workdir.mkdir()
        (workdir / "notes.txt").write_text("mine")
    else:
        args = how(workdir)
    before = _snapshot(workdir)
    result = _cli("train", "--workdir", str(workdir), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert phrase in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(workdir) == before


@pytest.mark.slow  # moved to the slow tier to keep `make test` well under 10 minutes on 2 cores
def test_divergence_stops_with_the_last_good_checkpoint_unchanged(tmp_path, trained_run):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run, workdir)
    before = _snapshot(workdir / "checkpoints")
    result = _cli("train", "--workdir", str(workdir), "--force",
                  *_sets([*TINY[:2], "train.steps=80", *TINY[3:], "optimizer.learning_rate=1e30",
                          "optimizer.max_consecutive_nonfinite=3"]))
    assert result.returncode == 2, result.stderr
    assert "non-finite" in result.stderr and "Last good checkpoint: step 40" in result.stderr
    assert _snapshot(workdir / "checkpoints") == before  # nothing saved over it, nothing added
    records = [r for r in writers.read_metrics(workdir) if "split" not in r]
    assert records[-1]["nonfinite_total"] >= 3


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(tmp_path):
    sets = _sets(["model.hidden=32", "model.latent_dim=4", "train.steps=4000", "train.log_every=50",
                  "train.checkpoint_every=500", "eval.num_samples=5", "eval.max_examples=50", "monitor.every=0"])
    workdir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "jaxvae", "train", "--workdir", str(workdir), "--no-progress",
                             *sets], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    while proc.poll() is None and not (workdir / "checkpoints" / "500").is_dir():
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 1.0))  # somewhere after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=HANG_GUARD_SECONDS)
    assert proc.returncode == -signal.SIGKILL
    assert _cli("train", "--workdir", str(workdir), "--no-progress", *sets).returncode == 0
    assert _cli("train", "--workdir", str(tmp_path / "straight"), "--no-progress", *sets).returncode == 0
    resumed = json.loads((workdir / "summary.json").read_text())
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert resumed["params_sha256"] == straight["params_sha256"]
    steps = [r["step"] for r in writers.read_metrics(workdir) if "split" not in r]
    straight_steps = [r["step"] for r in writers.read_metrics(tmp_path / "straight") if "split" not in r]
    assert steps == straight_steps == list(range(50, 4001, 50))  # one record per train.log_every steps


def test_skipped_updates_are_counted_and_announced(tmp_path):
    logs = []
    cfg = config.apply_overrides(config.get_preset("digits"), [
        *TINY[:2], "train.steps=20", *TINY[3:], "optimizer.learning_rate=1e30",
        "optimizer.max_consecutive_nonfinite=1000"])
    summary = runs.fit(cfg, tmp_path / "run", progress=False, log=logs.append)
    assert summary["nonfinite_updates"] > 0
    assert any("were skipped" in line for line in logs)
    records = [r for r in writers.read_metrics(tmp_path / "run") if "split" not in r]
    assert records[-1]["skipped"] > 0 and records[-1]["nonfinite_total"] == summary["nonfinite_updates"]
