"""Every preset's results are bitwise what they were before the model-protocol redesign.

``tests/golden/params_sha256.json`` holds the final ``params_sha256`` of 200-step runs of every preset that trains
offline, recorded from commit 91edddc (before the redesign) by ``python -m tests.golden.presets --write --real``.
A hash is a property of the exact program, the XLA build and the CPU it compiles for, so the file has one entry
per platform; the comparison runs where an entry matches and skips (saying why) elsewhere. Each run is a subprocess
at XLA's default optimization level (the suite compiles at -O0, tests/conftest.py).
"""

import json

import pytest

from tests.golden import presets

GOLDEN = json.loads(presets.GOLDEN.read_text())
HERE = presets.platform_entry(GOLDEN)
RECORDED = HERE or GOLDEN["platforms"][-1]  # the presets to parametrize over
FAST = ("digits",)  # default tier; the rest are in the slow tier


def _expected(kind: str, preset: str) -> str:
    if HERE is None:
        pytest.skip(f"no golden hashes were recorded on this platform ({presets.versions()}); hashes are bitwise "
                    "properties of one XLA build on one kind of CPU. Record them from the reference commit with "
                    "`python -m tests.golden.presets --write --real --recorded-from COMMIT` (see its docstring).")
    if preset not in HERE[kind]:
        pytest.skip(f"no {kind} golden hash for {preset} on this platform")
    return HERE[kind][preset]


@pytest.mark.parametrize("preset", [pytest.param(p, marks=() if p in FAST else pytest.mark.slow)
                                    for p in sorted(RECORDED["synthetic"])])
def test_preset_on_synthetic_data_is_bitwise_unchanged(preset, tmp_path):
    assert presets.shipped_hash("synthetic", preset, tmp_path) == _expected("synthetic", preset)


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("preset", sorted(RECORDED["real"]))
def test_preset_on_real_data_is_bitwise_unchanged(preset, tmp_path):
    expected = _expected("real", preset)
    folder = presets.SHARED / presets.REAL[preset]
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder} is absent")
    assert presets.shipped_hash("real", preset, tmp_path) == expected


def test_golden_file_covers_every_offline_preset():
    from jaxvae import config

    offline = set(presets.SYNTHETIC) - {"cifar10"}
    for entry in GOLDEN["platforms"]:
        assert offline <= set(entry["synthetic"]) and set(entry["synthetic"]) <= set(config.PRESETS)
