"""Small helpers shared by test modules."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fresh_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``code`` in a new interpreter that imports this checkout of jaxvae (nothing imported beforehand, so a
    test can look at ``sys.modules`` or matplotlib's global state); returns the finished process."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
