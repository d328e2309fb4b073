"""Imports flow one way (DESIGN.md section 2): schemas <- engine <- consumers and
schemas <- producers. The engine and the schemas never load confluent_kafka."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "engine", "producers", "consumers")
# What each top-level package may import from the project (itself included).
ALLOWED = {
    "schemas": {"schemas"},
    "engine": {"schemas", "engine"},
    "producers": {"schemas", "producers"},
    "consumers": set(PACKAGES),
}


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every project import in a file, at any depth (imports
    inside functions count: they run too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in PACKAGES]
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {target}"
             for path in files for line, target in project_imports(path)
             if target not in ALLOWED[package]]
    assert wrong == []


def test_the_scanner_sees_nested_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\nfrom schemas import codec\n\ndef f():\n"
                      "    from engine.processor import Output\n    import consumers.cli\n")
    assert project_imports(source) == [(2, "schemas"), (5, "engine"), (6, "consumers")]


_CHECK = """
import importlib, pkgutil, sys
for package in ("schemas", "engine"):
    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    for name in names:
        importlib.import_module(name)
        if "confluent_kafka" in sys.modules:
            sys.exit(f"importing {name} loaded confluent_kafka")
    print(package, len(names))
"""


def test_engine_and_schemas_never_load_confluent_kafka() -> None:
    result = subprocess.run([sys.executable, "-c", _CHECK], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    counts = dict(line.split() for line in result.stdout.splitlines())
    assert int(counts["schemas"]) > 5 and int(counts["engine"]) > 3
