"""Open311 GeoReport v2 helpers for tests: the specification's JSON Schemas (copied
unchanged into tests/standards/open311-georeport-v2/) and XML reading."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS = Path(__file__).resolve().parents[1] / "standards" / "open311-georeport-v2"
PREFIX = "/open311/v2"


@cache
def _registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.json"):
        if path.name == "swagger.json":
            continue
        contents = json.loads(path.read_text())
        resources.append(
            (path.name, Resource.from_contents(contents, default_specification=DRAFT202012))
        )
    registry: Registry = Registry().with_resources(resources)
    return registry


def validate(document: Any, schema_file: str) -> None:
    """Raise jsonschema.ValidationError unless `document` fits the named schema file
    (`services.json`, `service-definition.json`, `requests.json`, ...)."""
    schema = json.loads((SCHEMAS / schema_file).read_text())
    validator = Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    if errors:
        raise errors[0]


def xml_items(text: str, root: str, item: str) -> list[dict[str, Any]]:
    """`<root><item><field>…</field>…</item>…</root>` as a list of dicts of text (nested
    elements as lists of dicts)."""
    tree = ElementTree.fromstring(text)  # noqa: S314 - our own server's answer
    assert tree.tag == root, tree.tag
    return [_as_dict(node) for node in tree.findall(item)]


def _as_dict(node: ElementTree.Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in node:
        if len(child):
            out[child.tag] = [_as_dict(grand) for grand in child]
        else:
            out[child.tag] = child.text
    return out


def xml_root(text: str) -> ElementTree.Element:
    return ElementTree.fromstring(text)  # noqa: S314 - our own server's answer
