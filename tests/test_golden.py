"""Every preset's results are bitwise what they were before the model-protocol redesign.

``tests/golden/params_sha256.json`` holds the final ``params_sha256`` of 200-step runs of every preset that trains
offline, recorded at commit 91edddc (before the redesign) by ``python -m tests.golden.presets --write --real``. A
hash is a property of the exact program and XLA build, so the comparison runs where the versions match the
recorded ones and skips (saying why) elsewhere.
"""

import json

import pytest

from tests.golden import presets

GOLDEN = json.loads(presets.GOLDEN.read_text())
FAST = ("digits",)  # default tier; the rest are in the slow tier


def _skip_unless_same_versions():
    now = presets.versions()
    if now != GOLDEN["versions"]:
        pytest.skip(f"golden hashes were recorded with {GOLDEN['versions']}; this environment has {now}. Hashes "
                    "are bitwise properties of one XLA build.")


@pytest.mark.parametrize("preset", [pytest.param(p, marks=() if p in FAST else pytest.mark.slow)
                                    for p in sorted(GOLDEN["synthetic"])])
def test_preset_on_synthetic_data_is_bitwise_unchanged(preset, tmp_path):
    _skip_unless_same_versions()
    assert presets.synthetic_hash(preset, tmp_path) == GOLDEN["synthetic"][preset]


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("preset", sorted(GOLDEN["real"]))
def test_preset_on_real_data_is_bitwise_unchanged(preset, tmp_path):
    _skip_unless_same_versions()
    folder = presets.SHARED / presets.REAL[preset]
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder} is absent")
    assert presets.real_hash(preset, tmp_path) == GOLDEN["real"][preset]


def test_golden_file_covers_every_offline_preset():
    from jaxvae import config

    offline = set(presets.SYNTHETIC) - {"cifar10"}
    assert offline <= set(GOLDEN["synthetic"]) and set(GOLDEN["synthetic"]) <= set(config.PRESETS)
