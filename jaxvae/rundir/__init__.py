"""The run directory: its lock and the full-disk guard (:mod:`~jaxvae.rundir.lock`), metric writers,
experiment trackers, checkpoints and reports.

Every name loads on first use (:mod:`jaxvae._lazy`)."""

from __future__ import annotations

from jaxvae._lazy import attach

_EXPORTS = {
    "lock": (
        "LOCK_NAME",
        "clear_except_lock",
        "command_name",
        "disk_full_error",
        "disk_full_guard",
        "is_disk_full",
        "latest_complete_step",
        "lock_for_output",
        "remove_if_only_lock",
        "run_lock",
        "undo_lock_file",
        "writes_into",
    ),
}
_SUBMODULES = ("checkpoint", "lock", "report", "trackers", "writers")

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, _SUBMODULES)
