"""The package's layout, read from the modules' source (no import runs): no import circle, no import upward
through the layers, the 0.1 import paths still resolving (to the same module objects), and no module much longer
than 600 lines without a reason in docs/architecture.md.

An import circle (modules that import each other, directly or through others) means neither side can be
understood, tested or moved alone; an upward import means a lower layer knows a higher one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxvae"

# Each open circle, as the sorted tuple of its modules, with the change that removes it. None is open.
KNOWN_CIRCLES: set[tuple[str, ...]] = set()

# The layers, bottom first (docs/architecture.md draws them): a module imports its own package and the layers
# below, never a unit of its own layer or above. The last layer holds the faces: the CLI, the contract checks for
# users' components, the 0.1 factory module and the package's own lazy __init__.
LAYERS = (
    ("errors", "_lazy", "_moved"),
    ("meshspec", "catalog"),
    ("config",),
    ("data", "rundir", "sharding"),
    ("distributions",),
    ("models",),
    ("objectives",),
    ("evaluation",),
    ("training",),
    ("runs",),
    ("cli", "testing", "builders", "jaxvae"),
    ("__main__",),
)
# Modules above this many lines must be listed, with the reason, in docs/architecture.md ("Long modules").
LONG_MODULE_LINES = 650


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, at module level or inside functions; imports under
    ``if TYPE_CHECKING:`` are left out (they never run)."""
    modules = _modules(root)
    package = root.name

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
                   for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [[alias.name] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                # `from pkg import sub` imports the submodule `pkg.sub` when there is one, else `pkg` itself.
                targets = [[f"{base}.{alias.name}", base] for alias in node.names]
            else:
                continue
            for candidates in targets:
                for target in candidates:
                    if target == package or target.startswith(package + "."):
                        resolved = resolve(target)
                        if resolved and resolved != name:
                            graph[name].add(resolved)
                            break
    return graph


def circles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_circles_and_leaves_type_checking_imports_out(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import a\nfrom typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from pkg import d\n")
    (pkg / "d.py").write_text("from pkg.sub.c import x\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a"}
    assert circles(graph) == {("pkg.a", "pkg.b", "pkg.sub.c")}  # d -> c only: c's import of d never runs


def test_no_import_circles_beyond_the_known_ones():
    found = circles(import_graph())
    new = found - KNOWN_CIRCLES
    assert not new, f"new import circles: {sorted(new)}; break them (move the shared piece down a layer)"
    gone = KNOWN_CIRCLES - found
    assert not gone, f"these circles are gone: {sorted(gone)}; remove them from KNOWN_CIRCLES"


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_unit_has_a_layer_and_no_import_goes_up():
    layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    graph = import_graph()
    missing = sorted({_unit(m) for m in graph} - set(layer))
    assert not missing, f"give these a layer in LAYERS: {missing}"
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                    if _unit(a) != _unit(b) and layer[_unit(b)] >= layer[_unit(a)])
    assert not upward, f"imports that go up (or sideways) through the layers: {upward}"


def test_the_library_imports_no_path_of_0_1():
    """Inside jaxvae every import names where the code lives now (the 0.1 paths are for users, one release)."""
    from jaxvae._moved import MOVED

    old = {f"jaxvae.{name}" for name in MOVED} | {"jaxvae.builders"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "builders.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module else [])
            found += [f"{path.relative_to(PACKAGE.parent)}: {n}" for n in names if n in old]
    assert not found, found


def test_the_import_paths_of_0_1_resolve_to_the_modules_that_hold_the_code_now():
    import importlib

    from jaxvae._moved import ALSO, MOVED

    for old, new in MOVED.items():
        module = importlib.import_module(f"jaxvae.{old}")
        if old not in ALSO:
            assert module is importlib.import_module(f"jaxvae.{new}"), old
    from jaxvae import builders, catalog, train
    from jaxvae.training import optimizers

    assert train.TrainState is importlib.import_module("jaxvae.training.state").TrainState
    assert builders.OBJECTIVES is catalog.OBJECTIVES and builders.build_optimizer is optimizers.build_optimizer
    from jaxvae.model import VAE  # noqa: F401  (a from-import of an old path)


def test_long_modules_are_explained():
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    explained = text.split("### Long modules", 1)[1].split("\n## ", 1)[0] if "### Long modules" in text else ""
    long = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    unexplained = sorted(f"{path} ({n} lines)" for path, n in long.items()
                         if n > LONG_MODULE_LINES and f"`{path}`" not in explained)
    assert not unexplained, f"split these or give the reason under 'Long modules' in docs/architecture.md: " \
                            f"{unexplained}"


def test_every_package_face_lists_all_its_modules():
    """A package's lazy ``__init__`` names its submodules (``jv.models.factory`` must resolve)."""
    import importlib

    for init in sorted(PACKAGE.glob("*/__init__.py")):
        package = importlib.import_module(f"jaxvae.{init.parent.name}")
        files = {p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"}
        missing = sorted(name for name in files if not hasattr(package, name))
        assert not missing, f"jaxvae.{init.parent.name} does not list {missing}"
