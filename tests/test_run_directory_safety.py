"""Run directories under concurrent use and resource faults (README, "Reliability"): the run-directory lock, a
full disk (injected ENOSPC here; a real small filesystem in the slow tier), kills inside Orbax's asynchronous
save, damaged run files, and no traceback with exit 0."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxvae import config, rundir, runs
from jaxvae.errors import DiskFullError, RunDirectoryBusyError, RunFileWarning
from jaxvae.rundir import writers
from tests.helpers import HANG_GUARD_SECONDS
from tests.test_reliability import REPO, TINY, _cli, _sets, _snapshot

LOCK = rundir.LOCK_NAME


def _tiny_cfg(*extra):
    return config.apply_overrides(config.get_preset("digits"), [*TINY, *extra])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 40-step run (checkpoints at 20 and 40) and its summary."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    summary = runs.fit(_tiny_cfg(), workdir, progress=False, log=lambda _: None)
    return workdir, summary


def _copy(run, tmp_path, name="run"):
    return Path(shutil.copytree(run, tmp_path / name))


# -- the lock ---------------------------------------------------------------------------------------------------


def test_lock_records_its_holder_and_empties_the_file_on_release(tmp_path):
    with rundir.run_lock(tmp_path / "run", command="jaxvae train"):
        holder = json.loads((tmp_path / "run" / LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "jaxvae train"
        with pytest.raises(RunDirectoryBusyError, match=rf"in use by `jaxvae train` \(PID {os.getpid()} on "):
            with rundir.run_lock(tmp_path / "run"):
                pass
    assert (tmp_path / "run" / LOCK).read_text() == ""
    with rundir.run_lock(tmp_path / "run"):  # free again
        pass


def test_sweep_members_share_their_sweep_but_exclude_the_sweep_itself(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "models" / "00-a").mkdir(parents=True)
    (sweep / "models" / "01-b").mkdir()
    (sweep / "sweep_config.json").write_text("{}")
    with rundir.run_lock(sweep / "models" / "00-a"), rundir.run_lock(sweep / "models" / "01-b"):
        with pytest.raises(RunDirectoryBusyError, match="working on one of its members"):
            with rundir.run_lock(sweep):
                pass
    with rundir.run_lock(sweep, command="jaxvae sweep"):
        with pytest.raises(RunDirectoryBusyError, match=r"belongs to the sweep in .* `jaxvae sweep`"):
            with rundir.run_lock(sweep / "models" / "00-a"):
                pass


def test_the_kernel_releases_the_lock_of_a_killed_holder(tmp_path):
    workdir = tmp_path / "run"
    code = (f"import time; from jaxvae import rundir\nwith rundir.run_lock({str(workdir)!r}, command='holder'):\n"
            "    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryBusyError, match=f"`holder` \\(PID {holder.pid} "):
            with rundir.run_lock(workdir):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=HANG_GUARD_SECONDS)
    assert json.loads((workdir / LOCK).read_text())["pid"] == holder.pid  # its record stays, stale ...
    with rundir.run_lock(workdir, command="next"):  # ... but the lock is free
        assert json.loads((workdir / LOCK).read_text())["command"] == "next"


def test_writers_are_refused_and_readers_work_while_a_run_is_locked(tmp_path, finished_run):
    workdir = _copy(finished_run[0], tmp_path)
    before = _snapshot(workdir)
    with rundir.run_lock(workdir, command="jaxvae train"):
        for args in (["train", "--workdir", str(workdir)],
                     ["evaluate", "--workdir", str(workdir), "--num-samples", "2", "--max-examples", "20"]):
            result = _cli(*args)
            assert result.returncode == 2, result.stderr
            assert f"is in use by `jaxvae train` (PID {os.getpid()}" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
        elsewhere = tmp_path / "eval.json"
        result = _cli("evaluate", "--workdir", str(workdir), "--num-samples", "2", "--max-examples", "20",
                      "--out", str(elsewhere))
        assert result.returncode == 0, result.stderr
        assert json.loads(elsewhere.read_text())["step"] == 40
    after = _snapshot(workdir)
    assert {k: v for k, v in after.items() if k != LOCK} == {k: v for k, v in before.items() if k != LOCK}


def test_two_concurrent_trains_on_one_directory(tmp_path):
    sets = _sets([*TINY[:2], "train.steps=600", "train.log_every=50", "train.checkpoint_every=100", *TINY[5:]])
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAXVAE_NO_DOWNLOAD": "1"}
    first = subprocess.Popen([sys.executable, "-m", "jaxvae", "train", "--workdir", str(workdir), "--no-progress",
                              *sets], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    while first.poll() is None and not ((workdir / LOCK).exists() and (workdir / LOCK).read_text()):
        time.sleep(0.01)  # until the first holds the lock and has recorded itself (or has died: asserted below)
    first.send_signal(signal.SIGSTOP)  # holds the lock, paused, so the second surely starts while it runs
    try:
        second = _cli("train", "--workdir", str(workdir), "--no-progress", *sets)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=HANG_GUARD_SECONDS)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"is in use by `jaxvae train` (PID {first.pid} on" in second.stderr
    alone = runs.fit(config.apply_overrides(config.get_preset("digits"), sets[1::2]), tmp_path / "alone",
                     progress=False, log=lambda _: None)
    assert json.loads((workdir / "summary.json").read_text())["params_sha256"] == alone["params_sha256"]
    steps = [r["step"] for r in writers.read_metrics(workdir) if "split" not in r]
    assert steps == list(range(50, 601, 50))  # one writer: no duplicated or interleaved records


# -- a full disk --------------------------------------------------------------------------------------------------


def _enospc(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_full_disk_while_logging_ends_cleanly_and_resumes_bitwise(tmp_path, monkeypatch, finished_run):
    original = writers.MetricWriter.write

    def write(self, record):
        if record["step"] > 30:
            raise _enospc(self.path)
        original(self, record)

    monkeypatch.setattr(writers.MetricWriter, "write", write)
    with pytest.raises(DiskFullError, match=r"No space left on the disk of .*could not write .*metrics\.jsonl"
                                            r".*The last complete checkpoint \(step 20\) is intact"):
        runs.fit(_tiny_cfg(), tmp_path / "run", progress=False, log=lambda _: None)
    assert rundir.latest_complete_step(tmp_path / "run" / "checkpoints") == 20
    monkeypatch.setattr(writers.MetricWriter, "write", original)  # space freed
    summary = runs.fit(_tiny_cfg(), tmp_path / "run", progress=False, log=lambda _: None)
    assert summary["params_sha256"] == finished_run[1]["params_sha256"]


def test_full_disk_while_writing_the_summary_keeps_the_run(tmp_path, monkeypatch, finished_run):
    from jaxvae.runs import run as run_module  # the module whose code writes summary.json

    original = run_module.atomic_write_json
    monkeypatch.setattr(run_module, "atomic_write_json", lambda path, obj: (_ for _ in ()).throw(_enospc(path))
                        if Path(path).name == "summary.json" else original(path, obj))
    with pytest.raises(DiskFullError, match=r"step 40\) is intact"):
        runs.fit(_tiny_cfg(), tmp_path / "run", progress=False, log=lambda _: None)
    assert not (tmp_path / "run" / "summary.json").exists()
    monkeypatch.setattr(run_module, "atomic_write_json", original)
    summary = runs.fit(_tiny_cfg(), tmp_path / "run", progress=False, log=lambda _: None)  # re-evaluates
    assert summary["params_sha256"] == finished_run[1]["params_sha256"]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_full_disk_on_a_real_small_filesystem(tmp_path, finished_run):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip("mounting a 4 MiB tmpfs needs root and the mount capability (not available here)")
    try:
        sets = _sets([*TINY[:2], "train.steps=100", *TINY[3:]])
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 200_000))  # room for about one checkpoint
        result = _cli("train", "--workdir", str(disk / "run"), "--no-progress", *sets)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "No space left on the disk of" in result.stderr and "is intact" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
        kept = rundir.latest_complete_step(disk / "run" / "checkpoints")
        assert kept is not None and f"(step {kept}) is intact" in result.stderr
        ballast.unlink()
        result = _cli("train", "--workdir", str(disk / "run"), "--no-progress", *sets)
        assert result.returncode == 0, result.stderr
        assert f"Resuming {disk / 'run'} from the checkpoint at step {kept}/100" in result.stdout
        straight = runs.fit(config.apply_overrides(config.get_preset("digits"), sets[1::2]), tmp_path / "straight",
                            progress=False, log=lambda _: None)
        resumed = json.loads((disk / "run" / "summary.json").read_text())
        assert resumed["params_sha256"] == straight["params_sha256"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# -- kills inside the asynchronous save -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("point", ["create", "item", "commit", "renamed"])
def test_sigkill_inside_the_asynchronous_save_resumes_bitwise(tmp_path, point, finished_run):
    """tests/kill_in_save.py kills the process at ``point`` of the save of step 40 of 100 (the second)."""
    sets = _sets([*TINY[:2], "train.steps=100", *TINY[3:]])
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAXVAE_NO_DOWNLOAD": "1", "JAXVAE_TEST_KILL_POINT": point,
           "JAXVAE_TEST_KILL_AT_SAVE": "2"}
    workdir = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "kill_in_save.py"), "train", "--workdir",
                             str(workdir), "--no-progress", *sets], capture_output=True, text=True, env=env,
                            timeout=HANG_GUARD_SECONDS)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert names == (["20", "40"] if point == "renamed" else ["20", "40.orbax-checkpoint-tmp"])
    result = _cli("train", "--workdir", str(workdir), "--no-progress", *sets)
    assert result.returncode == 0, result.stderr
    assert f"from the checkpoint at step {40 if point == 'renamed' else 20}/100" in result.stdout
    straight = runs.fit(config.apply_overrides(config.get_preset("digits"), sets[1::2]), tmp_path / "straight",
                        progress=False, log=lambda _: None)
    assert json.loads((workdir / "summary.json").read_text())["params_sha256"] == straight["params_sha256"]
    assert not any(p.name.endswith("tmp") for p in (workdir / "checkpoints").iterdir())  # cleaned on resume


# -- damaged run files -------------------------------------------------------------------------------------------


def test_a_damaged_metrics_line_is_dropped_on_resume_with_a_warning(tmp_path, finished_run):
    workdir = _copy(finished_run[0], tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "40")  # as if killed after step 20's checkpoint
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    lines[0] = lines[0][:25] + "\0garbage"
    (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(RunFileWarning, match=r"line\(s\) 1 of \d+ are damaged .* dropped while resuming"):
        summary = runs.fit(_tiny_cfg(), workdir, progress=False, log=lambda _: None)
    assert summary["params_sha256"] == finished_run[1]["params_sha256"]
    assert all(json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines())


def test_damaged_metrics_and_summary_of_a_finished_run_via_the_cli(tmp_path, finished_run):
    workdir = _copy(finished_run[0], tmp_path)
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    lines[1] = "{not json"
    (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (workdir / "summary.json").write_text("{ truncated")
    result = _cli("train", "--workdir", str(workdir), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "jaxvae train: warning:" in result.stderr and "line(s) 2 of" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((workdir / "summary.json").read_text())  # re-evaluated and rewritten
    assert summary["params_sha256"] == finished_run[1]["params_sha256"]


def test_a_damaged_eval_json_is_replaced_with_a_warning(tmp_path, finished_run):
    workdir = _copy(finished_run[0], tmp_path)
    (workdir / "eval.json").write_text("[1, 2")
    result = _cli("evaluate", "--workdir", str(workdir), "--num-samples", "2", "--max-examples", "20")
    assert result.returncode == 0, result.stderr
    assert "eval.json could not be read (not valid JSON" in result.stderr and "will be replaced" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((workdir / "eval.json").read_text())["step"] == 40


def test_a_checkpoint_with_missing_files_names_the_way_back(tmp_path, finished_run):
    workdir = _copy(finished_run[0], tmp_path)
    (workdir / "checkpoints" / "40" / "default" / "manifest.ocdbt").unlink()
    before = _snapshot(workdir)
    result = _cli("train", "--workdir", str(workdir), "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "checkpoint at step 40" in result.stderr and "damaged" in result.stderr
    assert "--step 20" in result.stderr
    assert _snapshot(workdir) == before
    command = result.stderr.split("(`")[1].split("`)")[0]  # the message's own fix: `mv .../40 ...`
    assert command.startswith("mv ")
    subprocess.run(command.split(), check=True)
    result = _cli("train", "--workdir", str(workdir), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "from the checkpoint at step 20/40" in result.stdout
    assert json.loads((workdir / "summary.json").read_text())["params_sha256"] == finished_run[1]["params_sha256"]


# -- no traceback with exit 0 -------------------------------------------------------------------------------------


def test_an_exception_in_a_background_thread_fails_the_command(tmp_path, finished_run):
    """A background failure that jaxvae does not see raised (simulated: a thread that raises while `jaxvae
    presets` runs) makes the exit code non-zero with one line, not a traceback."""
    code = ("import sys, threading\nfrom jaxvae import cli\n"
            "original = cli.cmd_presets\n"
            "def presets(args):\n"
            "    t = threading.Thread(target=lambda: 1 / 0, name='writer'); t.start(); t.join()\n"
            "    return original(args)\n"
            "cli.cmd_presets = presets\nsys.argv = ['jaxvae', 'presets']\ncli.console_main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=HANG_GUARD_SECONDS)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "error: an exception in a background task or during clean-up: ZeroDivisionError in thread writer" \
        in result.stderr


# -- refusals write nothing -------------------------------------------------------------------------------------

# Refused only when the training step is built (the flow posterior has no density at a given point).
REFUSED_AT_THE_STEP = ["model.posterior=iaf", "objective.name=iwae_dreg"]


def _tree(directory: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``directory`` with its kind and content hash (a byte-identical check of the folder)."""
    out = {}
    for p in sorted(directory.rglob("*")):
        out[str(p.relative_to(directory))] = ("dir", 0) if p.is_dir() else ("file", hash(p.read_bytes()))
    return out


def test_a_run_refused_when_its_step_is_built_leaves_no_directory_and_the_fix_runs(tmp_path, capsys):
    from jaxvae import cli

    workdir = tmp_path / "run"
    rc = cli.main(["train", "--workdir", str(workdir), "--no-progress", *_sets([*TINY, *REFUSED_AT_THE_STEP])])
    err = capsys.readouterr().err
    assert rc == 2 and "iwae_dreg" in err, err
    assert not workdir.exists()  # before: .jaxvae.lock, config.json, metrics.jsonl, checkpoints/, tensorboard/
    rc = cli.main(["train", "--workdir", str(workdir), "--no-progress", *_sets([*TINY, "model.posterior=iaf"])])
    assert rc == 0, capsys.readouterr().err  # the corrected command is not refused as "a different config"


def test_refusals_leave_an_existing_directory_byte_identical(tmp_path, finished_run, capsys):
    from jaxvae import cli

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["train", "--workdir", str(empty), *_sets([*TINY, *REFUSED_AT_THE_STEP])]) == 2
    assert list(empty.iterdir()) == []  # not even a lock file
    run = _copy(finished_run[0], tmp_path)
    before = _tree(run)
    # Resuming with --force and a config the step refuses, and with a data error.
    assert cli.main(["train", "--workdir", str(run), "--force", *_sets([*TINY, *REFUSED_AT_THE_STEP])]) == 2
    missing_data = _sets([*TINY, "data.name=/nonexistent.npy"])
    assert cli.main(["train", "--workdir", str(run), "--force", *missing_data]) == 2
    capsys.readouterr()
    assert _tree(run) == before


def test_a_missing_step_names_the_fix(finished_run):
    from jaxvae.errors import CheckpointError

    with pytest.raises(CheckpointError) as err:  # before: only the list of steps
        runs.load_run(finished_run[0], step=35)
    assert "has no checkpoint of step 35; it has steps 20, 40. Pass one of them (e.g. --step 40, the nearest)" \
        in str(err.value) and "--step latest" in str(err.value)
