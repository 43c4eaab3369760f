"""Generate the checked-in JSON Schemas and the event catalogue from the registry.

    uv run python -m linli.contracts.schemagen           # write the files
    uv run python -m linli.contracts.schemagen --check   # exit 1 if they drifted

Outputs, relative to the repository root: `libs/contracts/schemas/<type>.json`
(one per registry entry: the whole CloudEvent envelope with that entry's data) and
`docs/events.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from linli.contracts.envelope import CloudEvent
from linli.contracts.registry import REGISTRY, EventSpec
from linli.contracts.subjects import EVENTS_PREFIX, INGRESS_PREFIX

__all__ = [
    "JSON_SCHEMA_DIALECT",
    "check",
    "find_root",
    "generate",
    "main",
    "render_catalogue",
    "render_schema",
    "write",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS_DIR = Path("libs/contracts/schemas")
CATALOGUE_PATH = Path("docs/events.md")


def find_root(start: Path | None = None) -> Path:
    """The uv workspace root: the nearest directory up whose pyproject.toml has
    `[tool.uv.workspace]`. Searches from `start`, then this file, then the cwd."""
    candidates = [start] if start is not None else [Path(__file__), Path.cwd()]
    for origin in candidates:
        for directory in [origin.resolve(), *origin.resolve().parents]:
            pyproject = directory / "pyproject.toml"
            if not pyproject.is_file():
                continue
            with pyproject.open("rb") as fh:
                config = tomllib.load(fh)
            if "workspace" in config.get("tool", {}).get("uv", {}):
                return directory
    raise FileNotFoundError("no pyproject.toml with [tool.uv.workspace] found")


def _schema_dict(spec: EventSpec) -> dict[str, Any]:
    envelope: Any = cast(Any, CloudEvent)[spec.model]
    schema: dict[str, Any] = envelope.model_json_schema()
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = spec.dataschema
    schema["title"] = spec.type
    schema["description"] = spec.description
    # The generic envelope allows any type; this schema is for exactly one.
    schema["properties"]["type"]["const"] = spec.type
    return schema


def render_schema(spec: EventSpec) -> str:
    """The JSON Schema document for one registry entry, as stable text."""
    return json.dumps(_schema_dict(spec), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _subject_pattern(spec: EventSpec) -> str:
    prefix = EVENTS_PREFIX if spec.kind == "event" else INGRESS_PREFIX
    return f"{prefix}.<community>.{spec.aggregate}.{spec.name}.v{spec.version}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _ref_name(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _type_of(node: dict[str, Any], defs: dict[str, Any]) -> str:
    name = _ref_name(node)
    if name is not None:
        target = defs.get(name, {})
        if "enum" in target:
            return f"[`{name}`](#{name.lower()}) (enum)"
        return f"[`{name}`](#{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in node:
            parts = [p for p in node[key] if p.get("type") != "null"]
            nullable = len(parts) < len(node[key])
            text = " or ".join(_type_of(p, defs) for p in parts)
            return f"{text}, nullable" if nullable else text
    if "const" in node:
        return f"`{json.dumps(node['const'], ensure_ascii=False)}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "any")
    if kind == "string":
        bits = [node["format"]] if "format" in node else []
        if "minLength" in node or "maxLength" in node:
            bits.append(f"{node.get('minLength', 0)}..{node.get('maxLength', '')} chars")
        if "pattern" in node:
            bits.append(f"pattern `{node['pattern']}`")
        return "string" + (f" ({', '.join(bits)})" if bits else "")
    if kind == "integer":
        low = node.get("minimum", node.get("exclusiveMinimum"))
        if "exclusiveMinimum" in node:
            low = node["exclusiveMinimum"] + 1
        high = node.get("maximum", "")
        if low is None and high == "":
            return "integer"
        return f"integer ({'' if low is None else low}..{high})"
    if kind == "array":
        item = _type_of(node.get("items", {}), defs)
        limit = f", at most {node['maxItems']}" if "maxItems" in node else ""
        return f"list of {item}{limit}"
    return str(kind)


def _field_table(model_schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    properties: dict[str, Any] = model_schema.get("properties", {})
    required = set(model_schema.get("required", []))
    lines = [
        "| field | type | required | description |",
        "| --- | --- | --- | --- |",
    ]
    for name, node in properties.items():
        if name in required:
            needed = "yes"
        elif "default" in node and node["default"] not in (None, [], {}):
            needed = f"no (default `{json.dumps(node['default'], ensure_ascii=False)}`)"
        else:
            needed = "no"
        lines.append(
            f"| `{name}` | {_cell(_type_of(node, defs))} | {needed} "
            f"| {_cell(node.get('description', ''))} |"
        )
    return lines


def _data_section(spec: EventSpec, schema: dict[str, Any]) -> list[str]:
    defs: dict[str, Any] = schema.get("$defs", {})
    data_node = schema["properties"]["data"]
    name = _ref_name(data_node)
    model_schema = defs.get(name, data_node) if name else data_node
    if "properties" in model_schema:
        return _field_table(model_schema, defs)
    variants = [_ref_name(v) for v in model_schema.get("oneOf", [])]
    discriminator = model_schema.get("discriminator", {}).get("propertyName", "kind")
    lines = [f"The data is one of the following, selected by `{discriminator}`."]
    for variant in variants:
        if variant is None:
            continue
        lines += ["", f"#### {variant}", ""]
        lines += [_cell(defs[variant].get("description", "")), ""]
        lines += _field_table(defs[variant], defs)
    return lines


def render_catalogue() -> str:
    """The Markdown event catalogue (docs/events.md)."""
    lines = [
        "# Event catalogue",
        "",
        "<!-- Generated by `uv run python -m linli.contracts.schemagen`; do not edit. -->",
        "",
        "Every message is a CloudEvents 1.0 event (`id`, `source`, `type`, "
        "`specversion`, `time`, `subject`, `datacontenttype`) with the extensions "
        "`community` (the community slug) and `traceparent` (W3C Trace Context), "
        "carried over NATS in structured or binary mode. `id` doubles as JetStream's "
        "`Nats-Msg-Id` and as every consumer's inbox key. Events carry no names, "
        "phone numbers or addresses.",
        "",
        "Types are versioned: a breaking change is a new version that lives beside the "
        "old one. Consumers ignore unknown fields; commands reject them. The JSON "
        "Schema of each envelope is in `libs/contracts/schemas/`.",
        "",
        "| type | kind | producer | subject |",
        "| --- | --- | --- | --- |",
    ]
    for spec in REGISTRY:
        lines.append(
            f"| [`{spec.type}`](#{spec.type.replace('.', '')}) | {spec.kind} "
            f"| {_producer(spec)} | `{_subject_pattern(spec)}` |"
        )
    shared: dict[str, Any] = {}
    for spec in REGISTRY:
        schema = _schema_dict(spec)
        lines += ["", f"## {spec.type}", ""]
        lines += [
            f"- **Kind:** {spec.kind}",
            f"- **Producer:** {_producer(spec)}",
            f"- **Subject:** `{_subject_pattern(spec)}`",
            f"- **Schema:** [`{spec.short}.v{spec.version}.json`]"
            f"(../libs/contracts/schemas/{spec.short}.v{spec.version}.json)",
            "",
            _cell(spec.description),
            "",
            "### Data",
            "",
        ]
        lines += _data_section(spec, schema)
        data_ref = _ref_name(schema["properties"]["data"])
        for name, definition in schema.get("$defs", {}).items():
            if name != data_ref and not name.endswith("NeedSpec"):
                shared.setdefault(name, definition)
    lines += ["", "## Shared types"]
    for name in sorted(shared):
        definition = shared[name]
        lines += ["", f"### {name}", "", _cell(definition.get("description", "")), ""]
        if "enum" in definition:
            lines.append("Values: " + ", ".join(f"`{v}`" for v in definition["enum"]))
        else:
            lines += _field_table(definition, shared)
    return "\n".join(lines) + "\n"


def _producer(spec: EventSpec) -> str:
    if spec.kind == "command":
        return f"other systems (consumed by {spec.producer})"
    return spec.producer


def generate(root: Path) -> dict[Path, str]:
    """Every generated file (absolute path) and its expected content."""
    files = {
        root / SCHEMAS_DIR / f"{spec.short}.v{spec.version}.json": render_schema(spec)
        for spec in REGISTRY
    }
    files[root / CATALOGUE_PATH] = render_catalogue()
    return files


def check(root: Path) -> list[Path]:
    """Generated files that are missing, differ, or are stale leftovers."""
    expected = generate(root)
    drifted = [
        path
        for path, content in expected.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != content
    ]
    schemas_dir = root / SCHEMAS_DIR
    if schemas_dir.is_dir():
        drifted += sorted(p for p in schemas_dir.glob("*.json") if p not in expected)
    return drifted


def write(root: Path) -> list[Path]:
    """Write every generated file and delete stale schemas; return what changed."""
    changed = check(root)
    expected = generate(root)
    for path in changed:
        if path in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected[path], encoding="utf-8")
        else:
            path.unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m linli.contracts.schemagen", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if generated files drifted")
    parser.add_argument("--root", type=Path, help="repository root (default: found)")
    args = parser.parse_args(argv)
    root = find_root(args.root) if args.root is None else args.root.resolve()
    if args.check:
        drifted = check(root)
        for path in drifted:
            print(path.relative_to(root))
        if drifted:
            print(
                "generated files are out of date; run `uv run python -m linli.contracts.schemagen`",
                file=sys.stderr,
            )
            return 1
        return 0
    for path in write(root):
        print(f"updated {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
