"""The lazy public face of jaxvae's packages (PEP 562).

Each package's ``__init__`` lists its public names and the module that defines each, and calls :func:`attach`;
a name is imported on first use. So ``import jaxvae`` and the CLI's commands that do not train start without
JAX, and importing one module of a package never imports its siblings (no package imports another through its
``__init__``, which keeps the layers free of circles).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def attach(package: str, exports: Mapping[str, Sequence[str]], submodules: Sequence[str] = ()
           ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``: ``exports`` maps a submodule (relative dotted path) to
    the names it defines; ``submodules`` are importable as attributes too."""
    where = {name: module for module, names in exports.items() for name in names}
    public = sorted({*where, *submodules})

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *public})

    return __getattr__, __dir__, public
