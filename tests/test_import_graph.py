"""The package's import graph: no circles, the layering of docs/architecture.md, and no
private name imported across a module line."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: folder -> the package it is imported as
FOLDERS = {
    "hyplex": "hyplex",
    "optics": "hyplex.optics",
    "simulation": "hyplex.simulation",
    "models": "hyplex.models",
    "devices": "hyplex.devices",
    "calibration": "hyplex.calibration",
}
#: the face: only it wires the wings together, and no wing imports it
FACE = ("hyplex.cli", "hyplex.pipeline", "hyplex.hil", "hyplex.viewer")
#: wing -> the wings it must never import (at module level or inside a function)
FORBIDDEN = {
    "hyplex.optics": ("hyplex.simulation", "hyplex.models", "hyplex.devices", "hyplex.calibration"),
    "hyplex.simulation": ("hyplex.models", "hyplex.devices", "hyplex.calibration"),
    "hyplex.models": ("hyplex.devices", "hyplex.calibration"),
    "hyplex.devices": ("hyplex.models", "hyplex.calibration"),
    "hyplex.calibration": ("hyplex.models",),
}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str, module_level_only: bool) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` for every hyplex import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "hyplex"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "hyplex":
                found.append((module, [a.name for a in node.names]))
    return found


def _targets(module: str, names: list[str]) -> list[str]:
    """The hyplex modules an import statement loads: submodules named in ``from P import m``
    count as edges to ``P.m``."""
    out = [module] if module in MODULES else []
    out += [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return out


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    return {
        name: {
            target
            for module, names in _imports(name, module_level_only)
            for target in _targets(module, names)
            if target != name
        }
        for name in MODULES
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_module_list_covers_the_face_and_the_wings():
    assert len(MODULES) > 120
    for package in (*FOLDERS.values(), *FACE):
        assert package in MODULES and _is_package(package), package


def _parents_dropped(graph):
    """Drop edges from a package's ``__init__`` to its own submodules and back: Python
    imports a package before its submodules, so those are not circles."""
    return {
        v: {w for w in ws if not (w.startswith(v + ".") or v.startswith(w + "."))}
        for v, ws in graph.items()
    }


def test_no_import_circles_at_module_level():
    assert _cycles(_parents_dropped(_graph(module_level_only=True))) == []


def test_the_cycle_finder_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("wing", sorted(FORBIDDEN))
def test_wings_respect_the_layering(wing):
    graph = _graph(module_level_only=False)
    for name, targets in graph.items():
        if name != wing and not name.startswith(wing + "."):
            continue
        for target in targets:
            assert not target.startswith(FORBIDDEN[wing] + FACE), f"{name} imports {target}"


def test_no_private_name_crosses_a_module_line():
    offenders = []
    for name in MODULES:
        for module, names in _imports(name, module_level_only=False):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and module != name:
                offenders.append(f"{name} imports {private} from {module}")
    assert offenders == []
