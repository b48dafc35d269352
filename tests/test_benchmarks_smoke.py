"""The benchmarks run as benchmarks/README.md documents them, and record their results as it says.

Default suite (fast, nothing trains):
- every ``python -m benchmarks NAME ...`` in benchmarks/README.md names a benchmark and only options its parser
  accepts (each command's parser runs in this process and is stopped right after parsing);
- RESULTS.md recording: a new run replaces its benchmark's section, the old one moves to RESULTS-archive.md, the
  table of contents follows, and a failed write leaves both files as they were;
- the committed RESULTS.md has one current section per benchmark key and an up-to-date table of contents, and the
  notebook code that reads it still finds its sections;
- a run without steady state reports n/a with the reason instead of crashing.

Slow tier (``make test-slow``): every command of the README runs in a subprocess as documented, with options that
shrink it to seconds appended (argparse keeps the last value of an option), ``--no-record``, its work folder and
plots in a temporary folder; it must exit 0 and print the figures it promises. The commands that still take over
40 s on 2 cores (most train on real data or evaluate whole test splits) run in the extended tier instead (``make
test-extended``, outside CI). Commands that need real data (../shared/data), Debian's word list, a GPU or
benchmarks/.venv-torch skip with the reason when it is absent; the
PyTorch peers are checked by separate tests, so the jaxvae parts always run.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks import common
from tests.helpers import HANG_GUARD_SECONDS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "benchmarks" / "README.md"
NOTEBOOKS = REPO / "notebooks"
TORCH_PYTHON = common.HERE / ".venv-torch" / "bin" / "python"
WORDS = Path("/usr/share/dict/american-english")


def _benchmarks() -> dict[str, str]:
    from benchmarks.__main__ import BENCHMARKS

    return BENCHMARKS


def readme_commands() -> list[str]:
    """Every ``python -m benchmarks NAME ...`` of benchmarks/README.md (inline code and ``bash`` blocks), comments
    dropped, normalized by ``shlex``; the placeholder ``NAME`` left out."""
    text = README.read_text()
    found = re.findall(r"`(python -m benchmarks [^`\n]+)`", text)
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        found += [line for line in block.splitlines() if line.startswith("python -m benchmarks ")]
    commands = []
    for command in found:
        words = shlex.split(command, comments=True)
        if words[3] != "NAME" and shlex.join(words) not in commands:
            commands.append(shlex.join(words))
    return commands


COMMANDS = readme_commands()


# --- fast: the README's commands parse --------------------------------------------------------------------------


class _Parsed(Exception):
    """Raised by the patched ``parse_args`` once a benchmark's options parsed: the benchmark itself never runs."""


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_names_a_benchmark_with_options_it_accepts(command, monkeypatch, capsys):
    name, *argv = shlex.split(command)[3:]
    assert name in _benchmarks(), f"{command!r}: no benchmark {name!r} (python -m benchmarks lists them)"
    module = importlib.import_module(_benchmarks()[name])
    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    try:
        module.main(argv)
    except _Parsed:
        pass
    except SystemExit as e:
        pytest.fail(f"{command!r}: the benchmark's parser rejected it (exit {e.code}): {capsys.readouterr().err}")
    else:
        pytest.fail(f"{command!r}: main() returned without parsing its arguments")


def test_readme_documents_every_benchmark_and_every_command_has_a_smoke_test():
    documented = {shlex.split(c)[3] for c in COMMANDS}
    assert set(_benchmarks()) <= documented, f"not in benchmarks/README.md: {set(_benchmarks()) - documented}"
    assert set(COMMANDS) == set(SMOKE), ("README commands without a smoke spec below (or specs of commands no "
                                         f"longer documented): {set(COMMANDS) ^ set(SMOKE)}")


# --- fast: recording in RESULTS.md ---------------------------------------------------------------------------

PREAMBLE = "# Results\n\nIntro.\n"


def _section(heading: str, marker: str | None, body: str) -> str:
    return f"## {heading}\n" + (f"<!-- {marker} -->\n" if marker else "") + f"\n{body}"


@pytest.fixture
def results_files(tmp_path):
    results, archive = tmp_path / "RESULTS.md", tmp_path / "RESULTS-archive.md"
    sections = [
        _section("Throughput (2026-01-01 10:00 UTC)", "benchmark: throughput", "| a | 1 |"),
        _section("A probe (by hand)", "attached to: collapse", "probe text"),
        _section("Collapse lab (2026-01-02 10:00 UTC)", "benchmark: collapse",
                 "table\n\n### A subsection\n\n```bash\n## not a heading\n```\n\nmore"),
        _section("Notes by hand", None, "free text"),
    ]
    results.write_text(common.render_results(PREAMBLE, sections))
    return results, archive


def _headings(path: Path) -> list[str]:
    return [s.splitlines()[0] for s in common.split_sections(path.read_text())[1]]


def test_record_replaces_the_section_of_its_key_in_place_and_archives_the_old_one(results_files):
    results, archive = results_files
    before = common.split_sections(results.read_text())[1]
    now = dt.datetime(2026, 2, 3, 4, 5, tzinfo=dt.UTC)
    moved = common.record_results("collapse", "Collapse lab", "python -m benchmarks collapse", "| new | 2 |",
                                  "Reading.", results=results, archive=archive, now=now)
    assert moved == [before[1], before[2]]  # the probe attached to collapse goes with the old lab section
    text = results.read_text()
    assert _headings(results) == ["## Throughput (2026-01-01 10:00 UTC)", "## Collapse lab (2026-02-03 04:05 UTC)",
                                  "## Notes by hand"]
    new = common.split_sections(text)[1][1]
    assert common.section_key(new) == "collapse"
    assert "- Command: `python -m benchmarks collapse`" in new and "| new | 2 |" in new and "Reading." in new
    assert "- Machine: " in new
    # the archive: its header, then the moved sections verbatim
    archived = archive.read_text()
    assert archived.startswith(common.ARCHIVE_PREAMBLE.rstrip())
    assert common.split_sections(archived)[1] == before[1:3]
    # the table of contents lists the current sections with working anchors, and nothing else
    toc = text.split(common.TOC_START)[1].split(common.TOC_END)[0]
    assert "[Collapse lab (2026-02-03 04:05 UTC)](#collapse-lab-2026-02-03-0405-utc)" in toc
    assert "(2026-01-02 10:00 UTC)" not in toc and "A probe" not in toc
    assert "| `throughput` |" in toc and "| (added by hand) | [Notes by hand](#notes-by-hand) |" in toc
    assert text.count(common.TOC_START) == 1 and text.startswith(PREAMBLE)

    # a second run of the same key: one current section still, the archive grows at its end
    common.record_results("collapse", "Collapse lab", "cmd", "| newer | 3 |", results=results, archive=archive,
                          now=now + dt.timedelta(hours=1))
    collapse = [h for h in _headings(results) if h.startswith("## Collapse")]
    assert collapse == ["## Collapse lab (2026-02-03 05:05 UTC)"]
    assert _headings(archive)[-1] == "## Collapse lab (2026-02-03 04:05 UTC)" and len(_headings(archive)) == 3


def test_record_of_a_new_key_appends_and_creates_missing_files(tmp_path):
    results, archive = tmp_path / "RESULTS.md", tmp_path / "RESULTS-archive.md"
    assert common.record_results("sharding", "Sharding", "cmd", "| x |", results=results, archive=archive) == []
    assert not archive.exists()  # nothing moved, nothing written
    common.record_results("gradient_snr", "SNR", "cmd", "| y |", results=results, archive=archive)
    text = results.read_text()
    assert text.startswith(common.RESULTS_PREAMBLE.rstrip())
    assert [common.section_key(s) for s in common.split_sections(text)[1]] == ["sharding", "gradient_snr"]
    assert text.count("| `sharding` |") == 1 and text.count("| `gradient_snr` |") == 1


def test_concurrent_records_are_all_kept(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    results, archive = tmp_path / "RESULTS.md", tmp_path / "RESULTS-archive.md"
    keys = [f"key{i % 4}" for i in range(12)]  # three runs of each of four keys, at once

    def record(key):
        return common.record_results(key, key, "cmd", "| x |", results=results, archive=archive)

    with ThreadPoolExecutor(6) as pool:
        moved = sum(len(m) for m in pool.map(record, keys))
    sections = common.split_sections(results.read_text())[1]
    assert sorted(common.section_key(s) for s in sections) == ["key0", "key1", "key2", "key3"]
    assert moved == 8 and len(common.split_sections(archive.read_text())[1]) == 8


def test_a_failed_write_leaves_both_files_as_they_were(results_files, monkeypatch):
    results, archive = results_files
    archive.write_text(common.ARCHIVE_PREAMBLE)
    before = (results.read_text(), archive.read_text())
    calls = []
    write_temp = common._write_temp

    def fail_second(path, text):
        calls.append(path)
        if len(calls) == 2:  # the archive's temporary file is written, RESULTS.md's fails
            raise OSError("disk full")
        return write_temp(path, text)

    monkeypatch.setattr(common, "_write_temp", fail_second)
    with pytest.raises(OSError, match="disk full"):
        common.record_results("throughput", "Throughput", "cmd", "| b |", results=results, archive=archive)
    assert (results.read_text(), archive.read_text()) == before
    assert sorted(p.name for p in results.parent.iterdir()) == ["RESULTS-archive.md", "RESULTS.md"]  # no temp


def test_sections_split_at_level_two_headings_outside_code_blocks():
    text = "# T\n\nintro\n\n## A\n\na\n\n### A.1\n\n```bash\n## code\n```\n\n## B\nb\n"
    preamble, sections = common.split_sections(text)
    assert preamble == "# T\n\nintro\n\n"
    assert sections == ["## A\n\na\n\n### A.1\n\n```bash\n## code\n```", "## B\nb"]
    anchor = common.heading_anchor("IWAE speed, k=5000 (2026-11-27 15:17 UTC)")
    assert anchor == "iwae-speed-k5000-2026-11-27-1517-utc"
    assert common.heading_anchor("VAE vs IWAE at k = 1, 5, 50") == "vae-vs-iwae-at-k--1-5-50"


# --- fast: the committed RESULTS.md --------------------------------------------------------------------------


def test_results_md_has_one_current_section_per_key_and_an_up_to_date_table_of_contents():
    text = common.RESULTS.read_text()
    preamble, sections = common.split_sections(text)
    keys = [common.section_key(s) for s in sections if common.section_key(s)]
    assert len(keys) == len(set(keys)), f"repeated keys: {sorted(k for k in keys if keys.count(k) > 1)}"
    for section in sections:
        key = common.section_key(section) or common.attached_key(section)
        assert key, f"a section without its key line: {section.splitlines()[0]}"
        assert key.split("-")[0] in _benchmarks(), f"{key}: no such benchmark"
        if common.attached_key(section):
            assert key in keys, f"{section.splitlines()[0]} is attached to {key}, which has no current section"
    assert common.render_results(preamble, sections) == text, "the table of contents is out of date"
    for target in sorted(p.stem for p in (common.HERE / "reproduce" / "configs").glob("*.json")):
        assert f"reproduce-{target}" in keys, f"no current section for the reproduction target {target}"
    archived = common.ARCHIVE.read_text()
    assert archived.startswith(common.ARCHIVE_PREAMBLE.rstrip())


def _notebook_titles() -> list[tuple[str, str]]:
    """``(notebook, title)`` for each ``for title in ("...", ...)`` loop in a notebook code cell that reads
    RESULTS.md."""
    out = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or "RESULTS.md" not in source:
                continue
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple | ast.List):
                    out += [(path.name, e.value) for e in node.iter.elts
                            if isinstance(e, ast.Constant) and isinstance(e.value, str)
                            and not e.value.endswith(".png")]
    return out


def test_the_notebooks_find_their_sections_of_results_md():
    titles = _notebook_titles()
    assert titles, "notebook 05 reads the collapse lab's sections from RESULTS.md"
    text = common.RESULTS.read_text()
    for notebook, title in titles:
        start = text.rfind("## " + title)  # what the notebook does
        assert start >= 0, f"{notebook}: no section {title!r} in RESULTS.md"
        end = text.find("\n## ", start + 1)
        section = text[start:end if end > 0 else None]
        assert common.section_key(section.rstrip()), f"{notebook}: {title!r} is not a benchmark's current section"


# --- fast: a missing figure is n/a with its reason ------------------------------------------------------------


def test_a_run_without_steady_state_reports_n_a_with_the_reason(monkeypatch, tmp_path):
    """The throughput benchmark's crash of issue 36: an epoch of 90 steps with ``train.log_every=100`` gives chunks
    of a new length each time, none steady; the figure is n/a with the reason, not a TypeError. (jaxvae's training
    is replaced by a stand-in with that outcome, so no JAX is imported.)"""
    from types import SimpleNamespace

    import jaxvae
    import jaxvae.training

    ctx = SimpleNamespace(steady_examples_per_sec=None, steps_per_epoch=90, total_steps=360)
    fake_runs = SimpleNamespace(setup_run=lambda cfg, workdir, log: ctx)
    fake_loop = SimpleNamespace(train_loop=lambda ctx, progress, log: None)
    # what `from jaxvae import runs` and `from jaxvae.training import loop` find
    monkeypatch.setitem(vars(jaxvae), "runs", fake_runs)
    monkeypatch.setitem(vars(jaxvae.training), "loop", fake_loop)
    cfg = SimpleNamespace(train=SimpleNamespace(log_every=100, batch_size=128))
    out = common.time_train_loop(cfg, tmp_path)
    assert out["examples_per_sec"] is None and out["compile_seconds"] is None
    assert "no steady state" in out["why"] and "train.log_every=100" in out["why"]
    assert common.fmt(out["examples_per_sec"]) == "n/a" and common.fmt(1234.5) == "1,234"
    assert common.ratio(None, 2.0) is None and common.median_known([None, 3.0, 1.0]) == 2.0
    assert "n/a for jaxvae-scan: no steady state" in common.missing_reasons({"jaxvae-scan": [out]})

    ctx.steady_examples_per_sec = 1000.0  # and with steady state: the figures, compile time = the rest
    out = common.time_train_loop(cfg, tmp_path)
    assert out["examples_per_sec"] == 1000.0 and "why" not in out


# --- slow: every README command runs, tiny --------------------------------------------------------------------


@dataclass(frozen=True)
class Smoke:
    """How to run one README command tiny: ``tiny`` is appended to it (``{tmp}`` is a fresh folder); ``expect``
    are patterns its output must contain (the promised figures, as table rows); ``needs`` are paths (relative to
    ../shared/data, or absolute) without which the test skips; ``extended``: in the extended tier (the commands
    that train on real data or evaluate full test splits even when tiny)."""
    tiny: tuple[str, ...]
    expect: tuple[str, ...]
    needs: tuple[str, ...] = ()
    gpu: bool = False
    extended: bool = False  # over 40 s even tiny on 2 cores: the extended tier (`make test-extended`), not CI's


NUM = r"-?[\d,]+(\.\d+)?"  # a measured figure (not "n/a")
BMNIST, MNIST = "binarized_mnist/binarized_mnist_train.amat.gz", "mnist/train-images-idx3-ubyte.gz"
THROUGHPUT_TINY = ("--batch-sizes", "8", "--steps-per-epoch", "3", "--epochs", "2", "--repeats", "1",
                   "--variants", "jaxvae-scan,plain-jax-host", "--torch-python", "")
IWAE_TINY = ("--num-images", "4", "--pythae-images", "2", "--num-samples", "20", "--repeats", "1",
             "--variants", "jaxvae,plain-jax", "--torch-python", "")
REPRODUCE_DRY = ("--dry-run", "--workdir", "{tmp}/repro")

SMOKE: dict[str, Smoke] = {
    "python -m benchmarks throughput --archs mlp,conv --batch-sizes 32,128,512": Smoke(
        THROUGHPUT_TINY,
        (rf"\| mlp \| 8 \| jaxvae-scan \| {NUM} \|", rf"\| mlp \| 8 \| plain-jax-host \| {NUM} \|",
         rf"\| conv \| 8 \| jaxvae-scan \| {NUM} \|"), extended=True),
    "python -m benchmarks throughput --device gpu --archs mlp,conv --batch-sizes 128,512,2048 --repeats 5": Smoke(
        THROUGHPUT_TINY, (rf"\| mlp \| 8 \| jaxvae-scan \| {NUM} \|",), gpu=True),
    "python -m benchmarks iwae_speed": Smoke(
        IWAE_TINY, (rf"\| jaxvae \| {NUM} \|", rf"\| plain-jax \| {NUM} \|", rf"\| matmul ceiling \| {NUM} \|")),
    "python -m benchmarks iwae_speed --device gpu --num-images 10000 --pythae-images 1000": Smoke(
        IWAE_TINY, (rf"\| jaxvae \| {NUM} \|",), gpu=True),
    "python -m benchmarks reproduce": Smoke(REPRODUCE_DRY, (r"== g_flows_static", r"\$ .* -m jaxvae evaluate")),
    "python -m benchmarks reproduce --dry-run": Smoke(REPRODUCE_DRY, (r"== a_flax_example", r"-m jaxvae train")),
    "python -m benchmarks reproduce c_iwae_table1 --schedule full --workdir /scratch/repro": Smoke(
        REPRODUCE_DRY, (r"\[c_iwae_table1\] IWAE k=50 \(full schedule\)",)),
    "python -m benchmarks reproduce --data-root ../shared/data": Smoke(
        ("a_flax_example", "--workdir", "{tmp}/repro", "--set", "train.steps=5", "--set", "eval.num_samples=2",
         "--set", "eval.max_examples=10", "--max-eval-examples", "5", "--eval-batch-size", "5"),
        (rf"\| VAE \| {NUM} \| 100.90 \|", r"VAE: ours .* vs published 100.90"), needs=(BMNIST,)),
    "python -m benchmarks sharding": Smoke(
        ("--devices", "2", "--steps", "2", "--repeats", "1"),
        (rf"\| data=1 \| 1 simulated CPU \| replicated \| {NUM} \|",
         rf"\| data=2 \| 2 simulated CPU .* \| {NUM} \|")),
    "python -m benchmarks sweep_efficiency": Smoke(
        ("--betas", "0.5,1", "--epochs", "1", "--repeats", "1"), (rf"\| 2 \| {NUM} \| {NUM} \| {NUM}x \|",),
        extended=True),
    "python -m benchmarks strategies": Smoke(
        ("--steps", "5", "--strategies", "pi", "--nll-samples", "2", "--nll-examples", "10", "--workdir",
         "{tmp}/runs"), (rf"\| PI control \(KL=30\) \| {NUM} \|",), needs=(MNIST,)),
    "python -m benchmarks monitor_cost": Smoke(
        ("--epochs", "1", "--repeats", "1"),
        (rf"\| (MNIST|digits) \| {NUM} \| 200 steps \(default\) \| {NUM} \|",), extended=True),
    "python -m benchmarks sample_quality": Smoke(
        ("--epochs", "1", "--num-samples", "300", "--components", "2", "--expost-steps", "5",
         "--classifier-epochs", "1"),
        (rf"\| VAE \(beta=1\) \| {NUM} \| {NUM} \|", rf"\| autoencoder \(beta=0\) \| {NUM} \|"), needs=(MNIST,),
        extended=True),
    "python -m benchmarks hierarchy_throughput --models diag,planar10,radial10,iaf4,sylvester4": Smoke(
        ("--models", "diag,planar10", "--batch", "8", "--mlp-steps", "2", "--epochs", "2", "--repeats", "1",
         "--torch-python", ""),
        (rf"\| diag \| jaxvae \| {NUM} \|", rf"\| planar10 \| jaxvae \| {NUM} \| .* \| {NUM}x diag \|")),
    "python -m benchmarks stabilizers": Smoke(
        ("--steps", "2", "--seeds", "0", "--ablations", "all stabilizers", "--eval-samples", "2",
         "--eval-examples", "10"), (rf"\| all stabilizers \| {NUM} \| {NUM} \|",), needs=(BMNIST,), extended=True),
    "python -m benchmarks init_compare --epochs 10 --seeds 3": Smoke(
        ("--epochs", "1", "--seeds", "1", "--torch-python", ""),
        (rf"\| jaxvae, model.init=flax \| {NUM} \| {NUM} \|", rf"\| jaxvae, model.init=torch \| {NUM} \|"),
        needs=(BMNIST,), extended=True),
    "python -m benchmarks collapse --workdir runs/collapse": Smoke(
        # The factorized-decoder control only: a PixelCNN run spends minutes on a CPU even for 2 steps, evaluating
        # its ELBO on the 10,000 validation and 10,000 test images (tests/test_autoregressive.py has the PixelCNN).
        ("--workdir", "{tmp}/runs", "--plot", "{tmp}/collapse.png", "--steps", "2", "--nll-samples", "2",
         "--nll-examples", "10", "--only", "factorized"),
        (rf"\| factorized decoder, plain ELBO \| {NUM} ± {NUM} \| {NUM} \|", r"Left out \(--skip / --only\)"),
        needs=(BMNIST,), extended=True),
    "python -m benchmarks collapse --task text --workdir runs/collapse_text": Smoke(
        ("--workdir", "{tmp}/runs", "--plot", "{tmp}/collapse_text.png", "--steps", "2", "--nll-samples", "2",
         "--nll-examples", "10", "--only", "GRU, plain"),
        (rf"\| GRU, plain ELBO \| {NUM} ± {NUM} \| {NUM} \|",), needs=(str(WORDS),), extended=True),
    "python -m benchmarks disentanglement --workdir runs/disentanglement": Smoke(
        ("--workdir", "{tmp}/runs", "--plot-dir", "{tmp}", "--steps", "2", "--seeds", "1", "--points", "100",
         "--models", "vae_betavae"),
        (rf"\| VAE \| {NUM} ± {NUM} \|", rf"\| beta-VAE \(beta=4\) \| 0 \| {NUM} \|",
         r"beta-VAE above the plain VAE on MIG .*: \*\*(holds|does not hold)\*\*", r"not checked"), extended=True),
    "python -m benchmarks gradient_snr": Smoke(
        ("--ks", "1,4", "--draws", "3", "--batch", "2", "--train-steps", "2", "--plot", "{tmp}/snr.png"),
        (rf"\| 4 \| {NUM} \| {NUM} \| {NUM} \|",), extended=True),
    "python -m benchmarks semi_supervised --epochs 15 --m1-epochs 10 --seeds 3": Smoke(
        ("--steps", "5", "--eval-examples", "20", "--seeds", "1"), (rf"\| M1\+M2 \| {NUM} \| {NUM} ± {NUM} \|",),
        needs=(MNIST,), extended=True),
    "python -m benchmarks conditional_samples": Smoke(
        ("--epochs", "1", "--per-label", "20", "--classifier-epochs", "1"),
        (rf"\| CVAE \| {NUM} \(-log p.*\) \| {NUM} \| {NUM}% \|",), needs=(MNIST,), extended=True),
    "python -m benchmarks signal_latency --data-dir ../shared/data/binarized_mnist --repeats 3": Smoke(
        ("--repeats", "1", "--after", "0,0", "--set", "model.pixelcnn.layers=1", "--set", "train.batch_size=8",
         "--set", "eval.max_examples=10", "--set", "eval.num_samples=2"),
        (r"\| bounded .* \| 1 of 1 \|", r"\| unbounded .* \| 1 of 1 \|"), needs=(BMNIST,), extended=True),
    "python -m benchmarks cli_startup": Smoke(
        ("--repeats", "1"), (rf"\| jaxvae --help \(this tree\) \| {NUM} \|",)),
}


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory) -> Path:
    """One cache folder for the module's subprocesses (the MNIST classifier, dSprites), never the user's."""
    return tmp_path_factory.mktemp("xdg-cache")


def _jax_has_gpu() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices('gpu')"], capture_output=True)
    return probe.returncode == 0


def _run_benchmark(argv: list[str], cache: Path, gpu: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "MPLBACKEND": "Agg", "JAXVAE_NO_DOWNLOAD": "1"}
    env["JAX_PLATFORMS"] = "" if gpu else "cpu"
    return subprocess.run([sys.executable, "-m", "benchmarks", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=HANG_GUARD_SECONDS)


def _skip_without(smoke: Smoke) -> None:
    for need in smoke.needs:
        path = Path(need) if Path(need).is_absolute() else common.SHARED_DATA / need
        if not path.exists():
            pytest.skip(f"needs {path} (see ../shared/data/README.md; the word list: apt-get install wamerican)")
    if smoke.gpu and not _jax_has_gpu():
        pytest.skip("needs a GPU and a CUDA build of jax (pip install -U 'jax[cuda12]')")


@pytest.mark.slow
@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.extended) if SMOKE[c].extended else c
                                     for c in sorted(SMOKE)])
def test_readme_command_runs_tiny(command, tmp_path, bench_cache):
    smoke = SMOKE[command]
    _skip_without(smoke)
    argv = [*shlex.split(command)[3:], *(a.format(tmp=tmp_path) for a in smoke.tiny), "--no-record"]
    results_before = common.RESULTS.read_bytes()
    out = _run_benchmark(argv, bench_cache, smoke.gpu)
    shown = f"$ python -m benchmarks {shlex.join(argv)}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    assert out.returncode == 0, shown
    for pattern in smoke.expect:
        assert re.search(pattern, out.stdout), f"no match for {pattern!r}:\n{shown}"
    assert common.RESULTS.read_bytes() == results_before, "a --no-record run changed RESULTS.md"


TORCH_PEERS = {  # the README command whose PyTorch variants to check, and the tiny options that pick them
    "python -m benchmarks throughput --archs mlp,conv --batch-sizes 32,128,512": (
        ("--batch-sizes", "8", "--steps-per-epoch", "3", "--epochs", "2", "--repeats", "1", "--variants",
         "torch-eager,pythae-trainer"), (rf"\| mlp \| 8 \| pythae-trainer \| {NUM} \|",)),
    "python -m benchmarks iwae_speed": (
        ("--num-images", "4", "--pythae-images", "2", "--num-samples", "20", "--repeats", "1", "--variants",
         "torch-iwae,pythae-nll"), (rf"\| pythae-nll \| {NUM} \|",)),
    "python -m benchmarks hierarchy_throughput --models diag,planar10,radial10,iaf4,sylvester4": (
        ("--models", "diag", "--batch", "8", "--mlp-steps", "2", "--epochs", "2", "--repeats", "1"),
        (rf"\| diag \| torch-eager \| {NUM} \|",)),
    "python -m benchmarks init_compare --epochs 10 --seeds 3": (
        ("--epochs", "1", "--seeds", "1"), (rf"\| pythae VAE \(PyTorch loop and init\) \| {NUM} \|",)),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(TORCH_PEERS))
def test_readme_command_runs_tiny_with_the_pytorch_peers(command, tmp_path, bench_cache):
    if not TORCH_PYTHON.exists():
        pytest.skip(f"no PyTorch environment at {TORCH_PYTHON} (make bench-torch-env); the jaxvae parts of this "
                    "command are checked by test_readme_command_runs_tiny")
    tiny, expect = TORCH_PEERS[command]
    _skip_without(SMOKE[command])
    argv = [*shlex.split(command)[3:], *tiny, "--no-record"]
    out = _run_benchmark(argv, bench_cache)
    assert out.returncode == 0, out.stderr[-4000:]
    for pattern in expect:
        assert re.search(pattern, out.stdout), f"no match for {pattern!r}:\n{out.stdout[-4000:]}"
