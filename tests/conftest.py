"""Test-suite plumbing shared by every test module."""

import pytest


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
