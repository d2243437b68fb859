"""Layers that only look down: the import rules of docs/architecture.md, checked on the source.

Every ``import`` and ``from ... import`` in a package counts, also the lazy ones
inside functions, because a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "ble_stack", "firmware_sim", "companion")

ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "ble_stack": set(),
    "firmware_sim": {"protocol", "ble_stack"},
    "companion": {"protocol", "ble_stack"},
}
"""Which of our packages each package may import (besides itself)."""

EXCEPTIONS = {
    # The simulator's command line may load a routine file for --load, which is
    # the companion's job; the band itself never imports the companion.
    ROOT / "firmware_sim" / "cli.py": {"companion"},
}


def _our_imports(path: Path) -> set[str]:
    """Top-level names of our packages that ``path`` imports (relative imports resolved)."""
    package = path.relative_to(ROOT).parts[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").partition(".")[0])
    return found & set(PACKAGES)


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package):
    assert len(_modules(package)) > 1, f"no modules found for {package} under {ROOT}"
    wrong = {}
    for path in _modules(package):
        extra = _our_imports(path) - {package} - ALLOWED[package] - EXCEPTIONS.get(path, set())
        if extra:
            wrong[str(path.relative_to(ROOT))] = sorted(extra)
    assert wrong == {}, f"imports that look up or sideways: {wrong}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The rule above can fail: a lazy import inside a function is found."""
    module = ROOT / "firmware_sim" / "_probe_layers.py"
    module.write_text("def f():\n    from companion.client import BandClient\n    from . import band\n")
    try:
        assert _our_imports(module) == {"companion", "firmware_sim"}
    finally:
        module.unlink()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path) -> set[str]:
    """Our modules that ``path`` imports at module level (what can form an import cycle)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.partition(".")[0] in PACKAGES}


def test_no_import_cycles_at_module_level():
    modules = {_module_name(p): p for package in PACKAGES for p in _modules(package)}
    graph = {name: {m for m in _module_imports(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ importing its own submodules is not a cycle of layers.
    for name in graph:
        graph[name] = {m for m in graph[name] if not (modules[name].name == "__init__.py" and m.startswith(name + "."))}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], f"import cycles: {cycles}"
