"""Sphinx configuration of the jaxvae documentation (`make docs`; CI builds it with warnings as errors)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import jaxvae  # noqa: E402

project = "jaxvae"
author = "jaxvae developers"
release = version = jaxvae.__version__
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "jaxvae_reference",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = f"jaxvae {release}"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"  # types in the signature; the docstrings say what each argument means
# ignore-module-all: each name is documented once, in the module that defines it (some re-export others).
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# The README (the user guide) links to files of the repository (benchmarks/RESULTS.md, notebooks, ...), which are
# not pages of this site; those links stay plain text.
suppress_warnings = ["myst.xref_missing"]
nitpicky = False
napoleon_use_ivar = True  # "Attributes:" sections as fields, so NamedTuple fields are described once


def _skip_namedtuple_aliases(app, what, name, obj, skip, options):
    """NamedTuple fields are described in their class's "Attributes:"; skip the generated "Alias for field
    number N" entries."""
    doc = getattr(obj, "__doc__", None) or ""
    return True if doc.startswith("Alias for field number") else None


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_aliases)
