"""CLI start-up: wall time of ``jaxvae --help``, ``presets`` and ``config show``, beside the same commands of an
earlier revision (``--baseline REV``, checked out into a temporary git worktree) and a plain ``import jax``.

Every command runs as a fresh ``python -m jaxvae`` process with the same interpreter; the runs are interleaved
(round-robin) so that load on the machine affects every row alike; the table reports the median.

    python -m benchmarks cli_startup --baseline 2137303 --repeats 7
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import command_line, median, record_results

REPO = Path(__file__).resolve().parents[1]
COMMANDS = (("jaxvae --help", ["-m", "jaxvae", "--help"]), ("jaxvae presets", ["-m", "jaxvae", "presets"]),
            ("jaxvae config show", ["-m", "jaxvae", "config", "show"]))


def _time(args: list[str], source: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=tempfile.gettempdir(), check=True, stdout=subprocess.DEVNULL,
                   env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks cli_startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="a git revision to measure beside the working tree (e.g. the commit before "
                   "a change)")
    p.add_argument("--repeats", type=int, default=7, help="runs of each command (default 7)")
    p.add_argument("--no-record", action="store_true", help="print the table without recording it in RESULTS.md")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"this tree": REPO}
        if args.baseline:
            worktree = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(worktree),
                            args.baseline], check=True)
            sources[f"baseline {args.baseline}"] = worktree
        rows = [(f"{name} ({label})", cmd, src) for label, src in sources.items() for name, cmd in COMMANDS]
        rows.append(("python -c 'import jax' (reference)", ["-c", "import jax"], REPO))
        times: dict[str, list[float]] = {name: [] for name, _, _ in rows}
        try:
            for _ in range(args.repeats):
                for name, cmd, src in rows:
                    times[name].append(_time(cmd, src))
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                               check=False)
    lines = ["| command | median wall time (s) | min | max |", "|---|---|---|---|"]
    for name, values in times.items():
        lines.append(f"| {name} | {median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        record_results("cli_startup", "CLI start-up", command_line(), table,
                       f"Each command a fresh `python -m jaxvae` process, {args.repeats} runs each, interleaved.")
