"""Dependencies point one way: core <- builders <- tools <- tests and benchmarks.

Every module's imports are read with :mod:`ast` (imports inside functions and
under ``TYPE_CHECKING`` included) and sorted into packages:

- ``parity.core``: schema, presets, weights catalog, name map, layouts, file
  formats, errors. Imports no other package of this repository.
- ``vgg_keras`` and ``vgg_torch``: the builders. Import ``parity.core`` only,
  never each other.
- ``parity`` (everything outside ``parity.core``): the tools (convert,
  compare, report, training, to_torch). Import the core and the builders.
- ``tests`` and ``benchmarks``: on top; import anything but each other.

The package graph must have no cycle and no import that points up, and the
graph of modules no cycle either. Privates stay private: no module imports a
private name (``_x``, dunders aside) of another repository module, whether a
function, a constant or a submodule (``from a import _b``, ``import a._b``);
only a package's own modules may use its ``__init__``'s private names, and a
package's ``__init__`` may re-export its own modules' private names. Modules
from outside the repository (``numpy._core``, ``torchvision.models._utils``)
are not checked. The checkers are run on small made-up sets of modules too, to
show that they report what they should.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

from tests.conftest import ROOT

#: Package -> the packages it may import (itself always allowed).
ALLOWED: dict[str, frozenset[str]] = {
    "parity.core": frozenset(),
    "vgg_keras": frozenset({"parity.core"}),
    "vgg_torch": frozenset({"parity.core"}),
    "parity": frozenset({"parity.core", "vgg_keras", "vgg_torch"}),
    "tests": frozenset({"parity.core", "vgg_keras", "vgg_torch", "parity"}),
    "benchmarks": frozenset({"parity.core", "vgg_keras", "vgg_torch", "parity"}),
}
TOP_LEVEL = ("parity", "vgg_keras", "vgg_torch", "tests", "benchmarks")


def package_of(module: str) -> str | None:
    """The package a module belongs to, or ``None`` for a module from outside the repository."""
    if module == "parity.core" or module.startswith("parity.core."):
        return "parity.core"
    top = module.split(".")[0]
    return top if top in TOP_LEVEL else None


def repository_modules(root: Path = ROOT) -> dict[str, str]:
    """Module name -> source of every ``.py`` file of the repository's packages."""
    found = {}
    for top in TOP_LEVEL:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path.read_text()
    return found


def imports_of(module: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """The repository modules a module imports, wherever in the file the import is.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module,
    else ``a.b``; the packages' ``__init__`` files that Python runs on the way
    are not counted (importing ``a.b`` runs ``a``, whatever ``a`` imports).

    Args:
        module: The importing module's name.
        source: Its source.
        known: Names of all the repository's modules.
        is_package: Whether ``module`` is a package (``__init__.py``), for relative imports.

    Returns:
        Names of the imported repository modules (outside modules left out).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node, is_package)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if package_of(name) is not None and name != module}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The module a ``from ... import`` reads from, relative imports resolved."""
    base = node.module or ""
    if not node.level:
        return base
    anchor = module.split(".") if is_package else module.split(".")[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, *([base] if base else [])])


def private_imports(modules: Mapping[str, str], packages: frozenset[str] = frozenset()) -> list[str]:
    """Every import of another repository module's private name, wherever in the file it is.

    A dotted name ``a.b._c.d`` (from ``import a.b._c.d`` or ``from a.b import
    _c`` ...) names ``_c``, a private name of ``a.b``. That is allowed only
    inside ``a.b`` itself: in ``a.b`` or, when ``a.b`` is a package, in its
    modules (``a.b.x``, which may use ``a/b/__init__.py``'s privates), and in
    the ``__init__`` of a package that contains ``a.b`` (a re-export).

    Args:
        modules: Module name -> source.
        packages: Which of ``modules`` are packages (``__init__.py``).

    Returns:
        One line per private import; empty when none.
    """
    problems = []
    for module, source in sorted(modules.items()):
        is_package = module in packages
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node, is_package)
                names = [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
            else:
                continue
            for name in names:
                parts = name.split(".")
                first = next((i for i, part in enumerate(parts) if _is_private(part)), None)
                if first is None or first == 0:
                    continue
                owner = ".".join(parts[:first])
                if package_of(owner) is None:
                    continue  # outside the repository
                inside_owner = module == owner or (owner in packages and module.startswith(f"{owner}."))
                reexport = is_package and owner.startswith(f"{module}.")
                if not (inside_owner or reexport):
                    problems.append(
                        f"{module} (line {node.lineno}) imports {parts[first]}, a private name of {owner}: "
                        "give it a public name in a shared module"
                    )
    return problems


def violations(modules: Mapping[str, str], packages: frozenset[str] = frozenset()) -> list[str]:
    """Every upward import and every cycle, of packages and of modules.

    Args:
        modules: Module name -> source.
        packages: Which of ``modules`` are packages (``__init__.py``).

    Returns:
        One line per problem; empty when the layering holds.
    """
    known = set(modules)
    edges = {m: imports_of(m, src, known, m in packages) for m, src in modules.items()}
    problems = []
    package_edges: dict[str, set[str]] = {}
    for module, targets in sorted(edges.items()):
        source_package = package_of(module)
        for target in sorted(targets):
            target_package = package_of(target)
            if source_package is None or target_package is None or target_package == source_package:
                continue
            package_edges.setdefault(source_package, set()).add(target_package)
            if target_package not in ALLOWED[source_package]:
                problems.append(
                    f"{module} ({source_package}) imports {target} ({target_package}): it points up or sideways"
                )
    problems += [f"package cycle: {' -> '.join(c)}" for c in _cycles(package_edges)]
    module_edges = {m: {t for t in targets if t in known} for m, targets in edges.items()}
    problems += [f"module cycle: {' -> '.join(c)}" for c in _cycles(module_edges)]
    return problems


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) through each strongly connected part with more than one node or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
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
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1 or v in graph.get(v, ()):
                parts.append(part)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for part in parts:
        members = set(part)
        start = min(part)
        path, seen = [start], {start}
        while True:
            step = min(w for w in graph[path[-1]] if w in members)
            if step in seen:
                cycles.append([*path[path.index(step) :], step])
                break
            path.append(step)
            seen.add(step)
    return cycles


def package_graph(modules: Mapping[str, str]) -> dict[str, set[str]]:
    """Package -> the other packages its modules import."""
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, source in modules.items():
        for target in imports_of(module, source, known):
            a, b = package_of(module), package_of(target)
            if a is not None and b is not None and a != b:
                graph.setdefault(a, set()).add(b)
    return graph


def test_repository_imports_point_one_way() -> None:
    modules = repository_modules()
    packages = frozenset(m for m in modules if (ROOT / m.replace(".", "/") / "__init__.py").exists())
    assert "parity.core.config" in modules and "vgg_keras.weights" in modules
    assert violations(modules, packages) == []


def test_no_module_imports_another_modules_private_name() -> None:
    modules = repository_modules()
    packages = frozenset(m for m in modules if (ROOT / m.replace(".", "/") / "__init__.py").exists())
    assert private_imports(modules, packages) == []


def test_the_tools_subpackages_belong_to_parity_and_the_core_stays_apart() -> None:
    modules = repository_modules()
    for sub in ("convert", "export", "train", "cifar", "report"):
        assert any(m.startswith(f"parity.{sub}.") for m in modules), sub
        assert all(package_of(m) == "parity" for m in modules if m.startswith(f"parity.{sub}")), sub
    assert {package_of(m) for m in modules if m.startswith("parity.core")} == {"parity.core"}


def test_core_and_builders_import_what_the_layers_allow() -> None:
    graph = package_graph(repository_modules())
    assert graph.get("parity.core", set()) == set()
    assert graph["vgg_keras"] == {"parity.core"}
    assert graph["vgg_torch"] == {"parity.core"}


def test_checker_reports_an_upward_import_inside_a_function() -> None:
    modules = {
        "parity.core.config": "def f():\n    import vgg_keras.model\n",
        "vgg_keras.model": "from parity.core.config import X\n",
    }
    found = violations(modules)
    assert any("parity.core.config (parity.core) imports vgg_keras.model (vgg_keras)" in p for p in found), found
    assert any(p.startswith("package cycle: parity.core -> vgg_keras -> parity.core") for p in found), found
    assert any(
        p.startswith("module cycle: parity.core.config -> vgg_keras.model -> parity.core.config") for p in found
    ), found


def test_checker_reports_builders_importing_tools_or_each_other() -> None:
    modules = {
        "vgg_keras.weights": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from parity.convert.weight_arrays import f\n"
        ),
        "vgg_torch.model": "from vgg_keras import layers\n",
        "parity.convert.weight_arrays": "import numpy\n",
        "vgg_keras": "",
        "vgg_keras.layers": "",
    }
    found = violations(modules, frozenset({"vgg_keras"}))
    assert (
        "vgg_keras.weights (vgg_keras) imports parity.convert.weight_arrays (parity): it points up or sideways" in found
    )
    assert "vgg_torch.model (vgg_torch) imports vgg_keras.layers (vgg_keras): it points up or sideways" in found


def test_checker_accepts_a_clean_set_and_relative_imports() -> None:
    modules = {
        "parity.core": "",
        "parity.core.config": "import numpy as np\n",
        "parity.core.names": "from .config import X\n",
        "vgg_torch.model": "from parity.core.names import Y\n",
        "parity.compare": "import vgg_torch.model\nfrom parity.core import config\n",
    }
    assert violations(modules, frozenset({"parity.core"})) == []
    assert imports_of("parity.core.names", modules["parity.core.names"], set(modules)) == {"parity.core.config"}


def test_private_import_checker_bites() -> None:
    modules = {
        "parity.core": "",
        "parity.core.weights_file": "_ATTR = 'x'\n",
        "parity.core.names": "def f():\n    from parity.core.weights_file import _ATTR\n",
        "parity.core._helpers": "",
        "vgg_keras": "from vgg_keras.layers import _impl as _impl\n",  # re-export of its own module's private
        "vgg_keras.layers": "_impl = 1\n",
        "vgg_keras.model": "import parity.core._helpers\nfrom . import layers\nfrom .layers import _impl\n",
        "vgg_torch": "_shared = 1\n",
        "vgg_torch.model": "from vgg_torch import _shared\nfrom parity.core import __all__\n",  # own package; dunder
        "parity.compare": "from numpy._core.multiarray import _reconstruct\nimport torchvision.models._utils\n",
    }
    found = private_imports(modules, frozenset({"parity.core", "vgg_keras", "vgg_torch"}))
    assert found == [
        "parity.core.names (line 2) imports _ATTR, a private name of parity.core.weights_file: "
        "give it a public name in a shared module",
        "vgg_keras.model (line 1) imports _helpers, a private name of parity.core: "
        "give it a public name in a shared module",
        "vgg_keras.model (line 3) imports _impl, a private name of vgg_keras.layers: "
        "give it a public name in a shared module",
    ], found
