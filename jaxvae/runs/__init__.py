"""Runs: one run (:mod:`~jaxvae.runs.run`: open, fit, restore, load), sweeps, diagnosis and the final
results; the layer that composes the others.

Every name loads on first use (:mod:`jaxvae._lazy`)."""

from __future__ import annotations

from jaxvae._lazy import attach

_EXPORTS = {
    "run": (
        "LoadedRun",
        "RunContext",
        "check_workdir",
        "data_seed",
        "final_report",
        "fit",
        "load_run",
        "load_run_dataset",
        "model_config",
        "open_run",
        "params_sha256",
        "restore_run",
        "run_summary",
        "setup_run",
        "steps_of",
        "validate_data",
        "with_builder",
        "write_run_config",
    ),
}
_SUBMODULES = ("diagnose", "results", "run", "sweep")

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, _SUBMODULES)
