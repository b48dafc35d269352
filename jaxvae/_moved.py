"""Import paths of jaxvae 0.1's flat modules, kept for one release after the move into packages.

``import jaxvae.kl`` (or ``from jaxvae.train import TrainState``) still works: a finder on ``sys.meta_path``,
installed by ``jaxvae/__init__.py``, answers each old name with the module that now holds the code, as the SAME
module object (``jaxvae.kl is jaxvae.distributions.kl``), so attributes set through either name (a test's
monkeypatch) are seen by the code. Nothing inside jaxvae imports an old name (``tests/test_layout.py`` checks);
the documentation uses the new paths. To be removed in the release after next.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

# old module (under jaxvae) -> the module that holds its code now
MOVED: dict[str, str] = {
    "kl": "distributions.kl", "likelihoods": "distributions.likelihoods",
    "model": "models.protocol", "nets": "models.nets", "nn": "models.nn", "convops": "models.convops",
    "priors": "models.priors", "posteriors": "models.posteriors", "flows": "models.flows",
    "hierarchy": "models.hierarchy", "topdown": "models.topdown", "autoregressive": "models.autoregressive",
    "recurrent": "models.recurrent", "conditional": "models.conditional", "inits": "models.inits",
    "estimators": "objectives.estimators", "schedules": "objectives.schedules",
    "controllers": "objectives.controllers", "regularizers": "objectives.regularizers",
    "discrepancy": "objectives.discrepancy",
    "evaluate": "evaluation.likelihood", "diagnostics": "evaluation.diagnostics", "monitor": "evaluation.monitor",
    "samplers": "evaluation.samplers", "expost": "evaluation.expost",
    "disentanglement": "evaluation.disentanglement", "frechet": "evaluation.frechet",
    "writers": "rundir.writers", "trackers": "rundir.trackers", "checkpoint": "rundir.checkpoint",
    "report": "rundir.report",
    "train": "training.step", "chunks": "training.chunks", "loop": "training.loop",
    "early_stopping": "training.early_stopping", "aggressive": "training.aggressive",
    "progress": "training.progress",
    "sweep": "runs.sweep", "diagnose": "runs.diagnose", "results": "runs.results",
}

# Names an old module answered for code that had moved on before (jaxvae.loop's run-directory functions).
ALSO: dict[str, dict[str, str]] = {
    "loop": {name: "runs.run" for name in ("fit", "setup_run", "restore_run", "load_run", "LoadedRun",
                                           "RunContext", "params_sha256", "load_run_dataset", "final_report",
                                           "data_seed")},
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``jaxvae.<old name>`` (after every regular finder has not) and loads it as the new module."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        package, _, name = fullname.partition(".")
        if package == "jaxvae" and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> None:
        return None  # a placeholder module; exec_module puts the real one in its place

    def exec_module(self, module: Any) -> None:
        old = module.__name__.partition(".")[2]
        target = importlib.import_module(f"jaxvae.{MOVED[old]}")
        if old not in ALSO:
            # The import system returns what sys.modules holds under the name once this returns.
            sys.modules[module.__name__] = target
            return
        also = ALSO[old]

        def __getattr__(name: str) -> Any:  # the placeholder stays: the new module's names, then the older ones
            if name in also:
                return getattr(importlib.import_module(f"jaxvae.{also[name]}"), name)
            return getattr(target, name)

        module.__getattr__ = __getattr__


def install() -> None:
    """Puts the finder on ``sys.meta_path`` once (after the regular finders)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
