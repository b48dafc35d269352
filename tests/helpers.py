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
