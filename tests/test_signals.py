"""Signals while a run's steps are slow: SIGTERM is acknowledged at once, the run stops after the steps in flight
(also in its last chunk) with a checkpoint and exit 75, a signal during the final evaluation ends the process at
once with exit 75, and chunks are bounded in wall time so the run stops between the events of its grid.

The model sleeps in every forward pass (a host callback), so one step takes about ``STEP`` seconds whatever the
machine; no assertion depends on how long anything took."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jaxvae.rundir import writers

REPO = Path(__file__).resolve().parents[1]
STEP = "0.6"  # seconds one forward pass sleeps

SLOWMODEL = '''
import os
import time

import jax

import jaxvae as jv


CALLS = [0]


def _slow():
    CALLS[0] += 1
    print(f"slow forward {CALLS[0]}", flush=True)  # the test signals at a given forward pass
    time.sleep(float(os.environ["SLOW_STEP_SECONDS"]))


class SlowVAE(jv.VAE):
    """The MLP VAE with a sleep in every forward pass: a step that takes seconds on any machine."""

    def forward(self, x, key, num_samples=1):
        jax.debug.callback(_slow)
        return super().forward(x, key, num_samples)


def build(event_shape, latent_dim, likelihood, rngs):
    return SlowVAE.mlp(event_shape, latent_dim, likelihood, hidden=(16,), rngs=rngs)
'''

SETS = ["model.network=slowmodel:build", "model.latent_dim=2", "train.log_every=100", "train.checkpoint_every=0",
        "monitor.every=0", "eval.num_samples=40", "eval.batch_size=10", "eval.max_examples=10",
        "eval.num_images=8", "track.backends=none"]


def _env(project):
    return {**os.environ, "PYTHONPATH": f"{project}:{REPO}", "SLOW_STEP_SECONDS": STEP}


def _start(project, workdir, *sets):
    args = [a for s in (*SETS, *sets) for a in ("--set", s)]
    return subprocess.Popen([sys.executable, "-m", "jaxvae", "train", "--workdir", str(workdir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=project,
                            env=_env(project))


def _signal_when(proc, marker: str, signum=signal.SIGTERM) -> list[str]:
    """Reads the process's output until a line contains ``marker``, sends ``signum``, then reads to the end."""
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if marker in line:
            proc.send_signal(signum)
            break
    lines += proc.stdout.read().splitlines()
    proc.wait(timeout=3600)  # a hang guard, not a time limit
    return lines


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "slowmodel.py").write_text(SLOWMODEL)
    return tmp_path


def _checkpoints(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_sigterm_in_the_last_chunk_and_in_the_final_evaluation_exit_75_then_the_rerun_finishes(project):
    workdir = project / "run"
    # 4 steps, one chunk of the grid: a first piece of one step measures the rate, then the last 3 steps. The
    # signal comes from inside step 2's forward pass.
    proc = _start(project, workdir, "train.steps=4")
    lines = _signal_when(proc, "slow forward 2")
    out = "\n".join(lines)
    assert proc.returncode == 75, out
    ack = next(i for i, line in enumerate(lines) if line.startswith("SIGTERM received:"))
    stop = next(i for i, line in enumerate(lines) if "Stopped by SIGTERM at step 4 of 4" in line)
    assert "stopping after step 4 of 4" in lines[ack] and ack < stop  # acknowledged while the chunk ran
    assert "final evaluation it skipped" in lines[stop] and "Traceback" not in out
    assert _checkpoints(workdir) == [4] and not (workdir / "summary.json").exists()
    assert [r["step"] for r in writers.read_metrics(workdir) if "split" not in r] == [4]

    # The rerun goes straight to the final evaluation; a signal there ends the process at once.
    proc = _start(project, workdir, "train.steps=4")
    lines = _signal_when(proc, "Final evaluation")
    out = "\n".join(lines)
    assert proc.returncode == 75, out
    assert any("the final evaluation is skipped (exit 75)" in line for line in lines), out
    assert not (workdir / "summary.json").exists() and _checkpoints(workdir) == [4]

    done = subprocess.run([sys.executable, "-m", "jaxvae", "train", "--workdir", str(workdir), "--no-progress"],
                          capture_output=True, text=True, cwd=project, env=_env(project), timeout=3600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["nll_num_samples"] == 40


@pytest.mark.slow
def test_chunks_bounded_in_time_stop_inside_the_grid_and_resume_bitwise(project):
    sets = ["train.steps=10", "train.max_chunk_seconds=1.5", "train.log_every=4"]
    workdir = project / "stopped"
    # Chunks of the grid end at steps 4, 8 and 10 (the records): unbounded, a signal in step 3 would stop at 4.
    proc = _start(project, workdir, *sets)
    lines = _signal_when(proc, "slow forward 3")  # inside step 3
    out = "\n".join(lines)
    assert proc.returncode == 75, out
    stopped = _checkpoints(workdir)
    assert stopped == [3], out  # pieces of at most 2 steps after the first: [0, 1), [1, 3)
    resumed = subprocess.run([sys.executable, "-m", "jaxvae", "train", "--workdir", str(workdir), "--no-progress"],
                             capture_output=True, text=True, cwd=project, env=_env(project), timeout=3600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"from the checkpoint at step {stopped[0]}" in resumed.stdout
    straight = subprocess.run([sys.executable, "-m", "jaxvae", "train", "--workdir", str(project / "straight"),
                               "--no-progress", *[a for s in (*SETS, *sets) for a in ("--set", s)]],
                              capture_output=True, text=True, cwd=project, env=_env(project), timeout=3600)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    a, b = (json.loads((d / "summary.json").read_text()) for d in (workdir, project / "straight"))
    assert a["params_sha256"] == b["params_sha256"] and a["steps"] == b["steps"] == 10
    strip = lambda run: [{k: v for k, v in r.items() if k not in ("elapsed_seconds", "examples_per_sec")}
                         for r in writers.read_metrics(run) if "split" not in r]
    assert [r["step"] for r in strip(workdir)] == [4, 8, 10]  # no record repeated or missing
    # The record at 4 averages the one step run after the resume (the stopped process's steps 1-3 are in the
    # checkpoint's parameters, not in a record); every later record is bitwise the uninterrupted run's.
    assert strip(workdir)[1:] == strip(project / "straight")[1:]


def test_the_acknowledgement_comes_while_the_main_thread_waits(tmp_path):
    """The watcher thread answers a signal while the main thread is blocked (here in time.sleep, as it would be in
    a compiled program): the acknowledgement is printed before the main thread wakes up and sees the flag."""
    code = (
        "import os, signal, sys, threading, time\n"
        "from jaxvae.training.progress import stop_on_signals\n"
        "with stop_on_signals(lambda: 'stopping after step 7.') as received:\n"
        "    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()\n"
        "    time.sleep(3)\n"
        "    print('woke up with', received, flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "SIGTERM received: stopping after step 7." in result.stderr
    assert f"woke up with [{int(signal.SIGTERM)}]" in result.stdout


def test_a_second_signal_stops_at_once(tmp_path):
    code = (
        "import os, signal, time\n"
        "from jaxvae.training.progress import stop_on_signals\n"
        "with stop_on_signals(lambda: 'stopping after step 7.') as received:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.5)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "    print('not reached', flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 128 + int(signal.SIGINT), result.stderr
    assert "SIGINT received again: stopping at once" in result.stderr and "not reached" not in result.stdout

