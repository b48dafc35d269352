"""Shared helpers: machine description, medians, peak RSS, missing figures ("n/a" with a reason), and recording
results in RESULTS.md (one current section per benchmark key; the section it replaces goes to RESULTS-archive.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
ARCHIVE = HERE / "RESULTS-archive.md"
SHARED_DATA = HERE.parent.parent / "shared" / "data"  # the shared real datasets beside the repository
MISSING = "n/a"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Python {platform.python_version()}"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Reads ``VmHWM`` from /proc/self/status: ``getrusage``'s ``ru_maxrss`` survives ``execve`` on Linux, so a
    benchmark subprocess would report its parent's peak when that was larger.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_train_loop(cfg, workdir: Path) -> dict:
    """jaxvae's real training path (``setup_run`` -> ``train_loop``) for ``cfg``: steady-state examples/s (the
    chunks that compiled excluded), the seconds that went to compiling, and the peak RSS.

    A figure the run could not give is None, with the reason under ``"why"`` (it never raises for a missing
    figure): steady state needs a chunk that ran a second time at the same length, so give the run at least two
    epochs and a ``train.log_every`` that divides the epoch.
    """
    import time

    from jaxvae import runs
    from jaxvae.training import loop

    ctx = runs.setup_run(cfg, workdir, log=lambda _: None)
    t0 = time.perf_counter()
    loop.train_loop(ctx, progress=False, log=lambda _: None)
    total = time.perf_counter() - t0
    steady = ctx.steady_examples_per_sec
    out = {"examples_per_sec": None, "compile_seconds": None, "peak_rss_mib": peak_rss_mib(),
           "steps_per_epoch": ctx.steps_per_epoch, "total_steps": ctx.total_steps}
    if not steady:
        out["why"] = (f"no steady state: no chunk of the {ctx.total_steps} steps ran twice at the same length "
                      f"(epoch {ctx.steps_per_epoch} steps, train.log_every={cfg.train.log_every}), so every "
                      "chunk compiled")
        return out
    out["examples_per_sec"] = steady
    out["compile_seconds"] = total - ctx.total_steps * cfg.train.batch_size / steady
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_known(values: list[float | None]) -> float | None:
    """The median of the values that are not None (or NaN); None when there is none."""
    known = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(known) if known else None


def fmt(value: float | None, spec: str = ",.0f", missing: str = MISSING) -> str:
    """``format(value, spec)``, or ``missing`` for a figure that was not measured (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def missing_reasons(results: dict[str, list[dict]]) -> str:
    """One sentence per variant whose runs reported a missing figure (their ``"why"``), for a section's notes."""
    lines = []
    for name, runs in results.items():
        whys = sorted({r["why"] for r in runs if r.get("why")})
        if whys:
            lines.append(f"{MISSING} for {name}: " + "; ".join(whys) + ".")
    return " ".join(lines)


def run_json_subprocess(cmd: list[str], timeout: float = 3600, env: dict[str, str] | None = None) -> dict:
    """Runs ``cmd`` (which prints one JSON object on its last stdout line) and returns that object."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def output_path(path: str | None, name: str, record: bool) -> Path:
    """Where a benchmark writes its plot ``name``: ``path`` when given; beside RESULTS.md when the run is recorded
    (the current section shows it); otherwise the temporary folder, so that a ``--no-record`` run never
    overwrites the plot of the recorded one."""
    if path:
        return Path(path)
    return HERE / name if record else Path(tempfile.gettempdir()) / f"jaxvae-benchmarks-{name}"


# --- RESULTS.md: one current section per benchmark key --------------------------------------------------------
#
# RESULTS.md is a preamble (title, introduction, a generated table of contents between TOC_START and TOC_END)
# followed by sections, each from a line "## <title> (<date>)" to the next such line ("###" subsections stay in
# their section). The line after the heading of a recorded section is "<!-- benchmark: KEY -->"; a section added
# by hand that belongs to one (a probe its reading refers to) carries "<!-- attached to: KEY -->" there instead.
# Recording a run of KEY puts its new section where the old KEY section was (or at the end), and moves the old
# section and every section attached to KEY, verbatim, to the end of RESULTS-archive.md.

TOC_START = "<!-- toc: generated by benchmarks/common.py from the section headings; do not edit by hand -->"
TOC_END = "<!-- /toc -->"
_KEY = re.compile(r"^<!-- benchmark: (\S+) -->\s*$")
_ATTACHED = re.compile(r"^<!-- attached to: (\S+) -->\s*$")
RESULTS_PREAMBLE = """# Benchmark results

The current result of every benchmark: one section per benchmark (one per reproduction target, one per half of
the collapse lab), each written by the benchmark's last recorded run (`python -m benchmarks NAME`, or `make
bench`) with the date, the machine, the exact command and the medians. Recording a new run replaces its
benchmark's section, and the replaced section moves unchanged to [RESULTS-archive.md](RESULTS-archive.md), which
keeps every earlier run. The two sections added by hand (a profile, a probe) sit beside the benchmark whose current
section refers to them, and move to the archive with it. Compare numbers only within one section: absolute times
on a shared 2-core machine drift between runs, so every comparison is made side by side in the same run.

The PyTorch peers run in their own environment (`make bench-torch-env` creates `benchmarks/.venv-torch` with
`torch==2.13.0` (CPU) and `pythae==0.1.2`); they are never dependencies of jaxvae.
"""
ARCHIVE_PREAMBLE = """# Benchmark results: archive

Earlier runs, moved here unchanged when a newer run of the same benchmark replaced them in
[RESULTS.md](RESULTS.md), which holds the current section of every benchmark; later moves are added at the end.
Notes in these sections that say "above", "below" or "the next section" refer to the order of the sections at
the time they were written.
"""


def split_sections(text: str) -> tuple[str, list[str]]:
    """``(preamble, sections)``: each section from its ``## `` heading to the next one, trailing whitespace
    stripped; a ``## `` line inside a fenced code block starts no section."""
    lines = text.splitlines(keepends=True)
    starts, fenced = [], False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            starts.append(i)
    if not starts:
        return text, []
    bounds = [*starts, len(lines)]
    return "".join(lines[:starts[0]]), ["".join(lines[a:b]).rstrip() for a, b in itertools.pairwise(bounds)]


def section_key(section: str) -> str | None:
    """The benchmark key of a recorded section (its ``<!-- benchmark: KEY -->`` line), else None."""
    lines = section.splitlines()
    match = _KEY.match(lines[1]) if len(lines) > 1 else None
    return match.group(1) if match else None


def attached_key(section: str) -> str | None:
    """The key a hand-written section is attached to (its ``<!-- attached to: KEY -->`` line), else None."""
    lines = section.splitlines()
    match = _ATTACHED.match(lines[1]) if len(lines) > 1 else None
    return match.group(1) if match else None


def heading_anchor(heading: str) -> str:
    """The anchor GitHub (and MyST) give a Markdown heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces as ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def table_of_contents(sections: list[str]) -> str:
    """The table of contents of RESULTS.md: each section's benchmark key and a link to its heading."""
    lines, seen = [TOC_START, "", "| benchmark | current section |", "|---|---|"], {}
    for section in sections:
        heading = section.splitlines()[0][3:].strip()
        anchor = heading_anchor(heading)
        if anchor in seen:  # GitHub numbers repeated headings: -1, -2, ...
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        if key := section_key(section):
            what = f"`{key}`"
        elif key := attached_key(section):
            what = f"`{key}` (note added by hand)"
        else:
            what = "(added by hand)"
        lines.append(f"| {what} | [{heading.replace('|', chr(92) + '|')}](#{anchor}) |")
    return "\n".join([*lines, "", TOC_END])


def render_results(preamble: str, sections: list[str]) -> str:
    """RESULTS.md from its preamble (the table of contents in it replaced, or added at its end) and sections."""
    toc = table_of_contents(sections)
    if TOC_START in preamble and TOC_END in preamble:
        head, rest = preamble.split(TOC_START, 1)
        preamble = head + toc + rest.split(TOC_END, 1)[1]
    else:
        preamble = preamble.rstrip() + "\n\n" + toc + "\n"
    return preamble.rstrip() + "\n\n" + "\n\n".join(sections) + "\n"


def replace_section(results_text: str, key: str, section: str) -> tuple[str, list[str]]:
    """``(new RESULTS.md text, replaced sections)``: ``section`` (a recorded section of ``key``) in place of the
    current ``key`` section, or at the end; the old ``key`` sections and those attached to ``key`` removed."""
    preamble, sections = split_sections(results_text)
    kept, replaced, placed = [], [], False
    for s in sections:
        if section_key(s) == key or attached_key(s) == key:
            replaced.append(s)
            if section_key(s) == key and not placed:
                kept.append(section)
                placed = True
        else:
            kept.append(s)
    if not placed:
        kept.append(section)
    return render_results(preamble, kept), replaced


def format_section(key: str, title: str, command: str, table: str, notes: str = "",
                   now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    versions = f"JAX {_version('jax')}, jaxlib {_version('jaxlib')}, flax {_version('flax')}"
    section = (f"## {title} ({stamp})\n<!-- benchmark: {key} -->\n\n- Machine: {machine()}\n"
               f"- Command: `{command}`\n- {versions}\n\n{table.strip()}\n")
    if notes:
        section += f"\n{notes.strip()}\n"
    return section.rstrip()


def record_results(key: str, title: str, command: str, table: str, notes: str = "", *,
                   results: Path | None = None, archive: Path | None = None,
                   now: dt.datetime | None = None) -> list[str]:
    """Makes this run the current section of benchmark ``key`` in RESULTS.md and moves the section it replaces
    (and the hand-written sections attached to ``key``) to the end of RESULTS-archive.md; returns the moved
    sections.

    Both files are written as temporary files beside them first and then renamed over the old ones (the archive
    first), under a lock, so an interrupted or failed write leaves both files as they were (at worst, when
    interrupted between the two renames, the moved sections are in both files; nothing is lost).
    """
    results, archive = results or RESULTS, archive or ARCHIVE
    section = format_section(key, title, command, table, notes, now)
    with _locked(results):
        text = results.read_text() if results.exists() else RESULTS_PREAMBLE
        new_text, moved = replace_section(text, key, section)
        writes = [(results, new_text)]
        if moved:
            old = archive.read_text().rstrip() if archive.exists() else ARCHIVE_PREAMBLE.rstrip()
            writes.insert(0, (archive, old + "\n\n" + "\n\n".join(moved) + "\n"))
        _replace_files(writes)
    return moved


def _write_temp(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _replace_files(writes: list[tuple[Path, str]]) -> None:
    """Writes every ``(path, text)`` to a temporary file first, then renames them over their paths in order."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, text in writes:
            temps.append((_write_temp(path, text), path))
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock for a read-modify-write of ``path``, taken on the folder that holds it (no lock file is
    left behind); concurrent benchmarks record one after the other."""
    import fcntl

    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "n/a"


def command_line() -> str:
    """The command that started this benchmark, quoted so that it can be pasted into a shell."""
    return "python -m benchmarks " + shlex.join(sys.argv[1:])


def mnist_classifier(data_dir: str, epochs: int = 5):
    """``(dataset, classifier, test accuracy, test features)``: real MNIST from ``data_dir`` (the program exits
    naming the folder when it is absent) and jaxvae's cached feature classifier (`jaxvae.evaluation.frechet`),
    trained for ``epochs`` (5 for every recorded figure; fewer only for a quick check)."""
    if not (Path(data_dir) / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"MNIST not found in {data_dir}; pass --data-dir.")
    from jaxvae import data
    from jaxvae.evaluation import frechet

    ds = data.load_dataset("mnist", data_dir)
    clf = frechet.train_classifier(ds.train, ds.labels["train"], epochs=epochs)
    return ds, clf, frechet.accuracy(clf, ds.test, ds.labels["test"]), frechet.dataset_features(clf, ds.test)
