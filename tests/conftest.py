"""Test-suite plumbing shared by every test module."""

import os

import pytest

# The default tier (`make test`, marker expression "not slow") compiles at LLVM -O0 (XLA's backend optimization
# level 0). Most of a default test's time on a CPU is XLA compiling small programs that then run for milliseconds,
# and -O0 compiles them in about two thirds of the time (`make test`: 682 s against 1,096 s on 2 cores). The slow
# tier runs in two passes (`make test-slow`): most of it at -O0 too (JAXVAE_TEST_OPT_LEVEL=0; 58 of its longest
# tests took 1,407 s of worker time at -O0 against 1,963 s at -O3), and the tests marked `shipped_level` at XLA's
# default: execution-bound runs (the 8-device sharding fixture took 679 s at -O0 against 85 s) and comparisons of
# two differently compiled programs (a sweep member against a separate run moved by 1e-4 relative at -O0). Results
# at -O0 are not bitwise those of -O3 (LLVM contracts multiply-adds there), so the golden hashes (tests/golden) are
# computed in a subprocess at the shipped level (tests.golden.presets.shipped_env); comparisons within a test (a
# resumed run against an uninterrupted one) compare -O0 with -O0. Set from the environment before JAX starts, so
# CLI subprocesses inherit it. JAXVAE_TEST_OPT_LEVEL=default keeps XLA's default, JAXVAE_TEST_OPT_LEVEL=0 asks for
# -O0 in any tier; unset, the tier decides.
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"


def pytest_configure(config):
    level = os.environ.get("JAXVAE_TEST_OPT_LEVEL", "")
    if level not in ("", "0", "default"):
        raise pytest.UsageError(
            f"JAXVAE_TEST_OPT_LEVEL={level!r}: expected 0 (LLVM -O0) or default (XLA's own level)")
    if not level:  # the tier decides: -O0 for the default tier
        level = "0" if (config.getoption("markexpr", "") or "").strip() == "not slow" else "default"
    if level == "default" or FAST_COMPILE_FLAG in os.environ.get("XLA_FLAGS", ""):
        return
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}".strip()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keeps each ``xdist_group`` on one pytest-xdist worker under ``--dist loadgroup`` (what `make test` uses).

    pytest-xdist marks a grouped test by appending ``@group`` to its node id, which its scheduler reads; it writes
    the id to ``Node._nodeid``, which pytest 9 no longer reads (the id lives in ``Node._id``), so every group was
    split across the workers and module fixtures meant to be built once (the 8-device run of test_sharding.py,
    the tracked run of test_trackers.py) were built on each worker. This writes the suffix where pytest keeps the
    id; with a pytest where xdist's own suffix arrives it does nothing.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:  # an older pytest: xdist's own suffix works
        return
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(groups)}")
