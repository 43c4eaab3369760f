"""The library stands alone: standard library only, nothing of the application using it."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import cloudevents_nats

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_imports_only_the_standard_library() -> None:
    sources = sorted((ROOT / "src" / "cloudevents_nats").glob("*.py"))
    assert sources
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names, f"{source.name} imports {name}"


def test_no_dependencies_are_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["dependencies"] == []
    assert project["version"] == cloudevents_nats.__version__


def test_the_public_names_are_exported() -> None:
    for name in cloudevents_nats.__all__:
        assert hasattr(cloudevents_nats, name), name
