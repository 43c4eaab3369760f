"""Validation of HSDS 3.1 documents against the copied schemas (tests/standards/hsds-3.1)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS = Path(__file__).resolve().parents[1] / "standards" / "hsds-3.1"
BASE = "https://hsds.linli.test/schema/"


@cache
def _registry() -> Registry:
    resources = [
        (BASE + path.name, Resource.from_contents(json.loads(path.read_text()), DRAFT202012))
        for path in SCHEMAS.glob("*.json")
    ]
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    """A validator of one HSDS object schema (`service_with_definitions`, `organization`,
    ...), with formats (uuid, date-time, email) checked."""
    if name == "service_with_definitions":
        schema = json.loads((SCHEMAS / f"{name}.json").read_text())
        return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return Draft202012Validator(
        {"$ref": f"{BASE}{name}.json"},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def errors(document: Any, name: str) -> list[str]:
    """Every reason `document` fails the schema `name`, as readable lines (empty: valid)."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator(name).iter_errors(document)
    ]


def assert_valid(document: Any, name: str) -> None:
    problems = errors(document, name)
    assert not problems, (name, problems[:10])
