"""Small helpers shared by test modules."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A guard against a hung subprocess only, never a performance limit: commands that take seconds on a quiet machine
# may take many times that on a loaded one.
HANG_GUARD_SECONDS = 3600


def fresh_python(code: str, timeout: float = HANG_GUARD_SECONDS) -> subprocess.CompletedProcess:
    """Runs ``code`` in a new interpreter that imports this checkout of jaxvae (nothing imported beforehand, so a
    test can look at ``sys.modules`` or matplotlib's global state); returns the finished process."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def straight_and_resumed(cfg, tmp_path: Path, last_checkpoint: int = 40, resumed_from: int = 20):
    """``(summary of an uninterrupted run, summary of the same run resumed after losing its last checkpoint)``;
    the resumed run is checked to restart from ``resumed_from``."""
    import shutil

    from jaxvae import runs

    straight = runs.fit(cfg, tmp_path / "straight", progress=False, log=lambda _: None)
    runs.fit(cfg, tmp_path / "resumed", progress=False, log=lambda _: None)
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / str(last_checkpoint))
    logs: list[str] = []
    resumed = runs.fit(cfg, tmp_path / "resumed", progress=False, log=logs.append)
    assert any(f"from the checkpoint at step {resumed_from}" in line for line in logs)
    return straight, resumed
