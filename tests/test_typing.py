"""A typed public API: py.typed markers, exports a type checker sees, and mypy clean.

mypy runs as part of the suite (strict on protocol/, pyproject.toml's settings
on the rest); it skips only when mypy is not installed.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import companion

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "companion", "firmware_sim", "ble_stack")
HEAVY = ("construct", "bleak", "bumble", "matplotlib", "serial", "rich", "companion.client", "companion.compiler")


def _lazy_imports_for_type_checkers() -> dict[str, str]:
    """Name -> "module:attribute" of every import in companion/__init__.py's TYPE_CHECKING block."""
    tree = ast.parse((ROOT / "companion" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    found = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        module = "." * node.level + (node.module or "")
        module = "companion" + module if module.startswith(".") else module
        for alias in node.names:
            found[alias.asname or alias.name] = f"{module}:{alias.name}"
    return found


def test_every_lazy_export_is_declared_for_type_checkers_as_the_same_object():
    declared = _lazy_imports_for_type_checkers()
    lazy = {name: target if ":" in target else f"{target}:{name}" for name, target in companion._LAZY.items()}
    assert declared == lazy
    for name, target in declared.items():
        module, _, attribute = target.partition(":")
        assert getattr(companion, name) is getattr(importlib.import_module(module), attribute), name


def test_all_names_every_export_and_nothing_else():
    assert len(companion.__all__) == len(set(companion.__all__))
    eager = {name for name in companion.__all__ if name not in companion._LAZY}
    assert eager == set(importlib.import_module("companion.errors").__all__)
    for name in companion.__all__:
        assert getattr(companion, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = companion.nonexistent  # type: ignore[attr-defined]


def test_importing_the_cli_loads_no_heavy_library():
    """`handcue --help` stays fast: the package and the CLI import only light modules."""
    code = "import sys, companion, companion.cli; print(' '.join(sorted(m for m in sys.modules if m in " + repr(HEAVY) + ")))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    assert loaded == []


@pytest.mark.parametrize("package", PACKAGES)
def test_package_is_marked_typed_and_installs_the_marker(package):
    assert (ROOT / package / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data[package]


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip('mypy is not installed: pip install -e ".[dev]"')
    return subprocess.run([sys.executable, "-m", "mypy", *args], capture_output=True, text=True, cwd=ROOT)


def test_mypy_is_clean_strict_on_protocol_normal_on_the_rest():
    """pyproject.toml's [tool.mypy]: every package, with the strict flags on protocol/."""
    result = _mypy()
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_flag_agrees_on_protocol():
    """The strict flags spelled out in pyproject.toml are all of `--strict`."""
    result = _mypy("--strict", "-p", "protocol")
    assert result.returncode == 0, result.stdout + result.stderr


def test_companion_exports_have_their_real_types(tmp_path):
    """What `from companion import X` gives a type checker: the real type, never Any."""
    names = ["load_routine", "compile_routine", "read_table", "table_timeline", "BandClient", "open_transport", "HandCueError", "TransportError"]
    probe = tmp_path / "probe.py"
    probe.write_text("import companion\n" + "".join(f"reveal_type(companion.{name})\n" for name in names))
    result = _mypy("--follow-imports=silent", str(probe))
    revealed = [line for line in result.stdout.splitlines() if "Revealed type" in line]
    assert len(revealed) == len(names), result.stdout + result.stderr
    for name, line in zip(names, revealed, strict=True):
        assert "Any" not in line.split("Revealed type is", 1)[1], f"{name}: {line}"
