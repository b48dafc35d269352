"""The README's library example runs exactly as written and trains (the ELBO it prints is a real number)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _library_example() -> str:
    text = README.read_text()
    section = text.split("## The library in 20 lines", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_library_example_runs_and_is_short():
    code = _library_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 24
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=3600)  # a hang guard, not a time limit
    assert result.returncode == 0, result.stderr
    elbo = float(re.search(r"ELBO (-?[\d.]+) nats", result.stdout).group(1))
    iwae = float(re.search(r"IWAE-50 bound (-?[\d.]+) nats", result.stdout).group(1))
    # Digits (64 pixels in [0, 1]): an untrained model scores about -44 nats; 2000 steps must get well above.
    assert -40.0 < elbo < 0.0, result.stdout
    assert iwae > elbo - 3.0, result.stdout
