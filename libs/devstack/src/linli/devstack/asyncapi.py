"""Generate each service's AsyncAPI 3.0 document from what the service declares.

`python -m linli.devstack.asyncapi` writes `docs/asyncapi/<service>.yaml`; with
`--check` it writes nothing and exits 1 when a committed document has drifted.

The documents are built from the same declarations the services run on, so they
cannot say something else than the code:

* what a service **receives**: the `Subscriptions` of its consumers (one channel per
  declared event type, or every event), and for intake the `need.submit` command;
* what it **sends**: every event of the contract registry that names it as producer
  (they all leave through its outbox);
* each message's payload: the checked-in JSON Schema of the whole CloudEvent
  (`libs/contracts/schemas/`, generated from the pydantic models), by reference.

Building an app connects to nothing, so this runs without servers.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from pathlib import Path
from typing import Any

import yaml

from linli.contracts.registry import REGISTRY, EventSpec
from linli.contracts.subjects import EVENTS_PREFIX, INGRESS_PREFIX

from .stack import API_SERVICES

SCHEMAS_FROM_DOCS = "../../libs/contracts/schemas"
"""Where the JSON Schemas are, relative to docs/asyncapi/."""


def _root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "services").is_dir():
            return parent
    raise RuntimeError("repository root not found")


def _message_name(spec: EventSpec) -> str:
    return f"{spec.short}.v{spec.version}"


def _address(spec: EventSpec) -> str:
    prefix = EVENTS_PREFIX if spec.kind == "event" else INGRESS_PREFIX
    return f"{prefix}.{{community}}.{spec.aggregate}.{spec.name}.v{spec.version}"


def _message(spec: EventSpec) -> dict[str, Any]:
    return {
        "name": spec.type,
        "title": _message_name(spec),
        "summary": spec.description,
        "contentType": "application/cloudevents+json",
        "payload": {"$ref": f"{SCHEMAS_FROM_DOCS}/{_message_name(spec)}.json"},
    }


_COMMUNITY = {
    "description": "The community's slug ([a-z0-9-]); permissions can be written per community."
}


def document(name: str, app: Any) -> dict[str, Any]:
    """The AsyncAPI document of one built service app."""
    runtime = app.state.runtime
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    def channel_for(spec: EventSpec) -> str:
        key = _message_name(spec)
        messages[key] = _message(spec)
        channels.setdefault(
            key,
            {
                "address": _address(spec),
                "parameters": {"community": dict(_COMMUNITY)},
                "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            },
        )
        return key

    def operation(op_id: str, action: str, key: str, description: str) -> None:
        operations[op_id] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
            "description": description,
        }

    for consumer in runtime.consumers:
        subs = consumer.subs
        if subs.every_event:
            key = "every-event"
            channels[key] = {
                "address": f"{EVENTS_PREFIX}.{{community}}.>",
                "parameters": {"community": dict(_COMMUNITY)},
                "description": "Every domain event of the community, of any type and version.",
                "messages": {},
            }
            for spec in REGISTRY.events():
                mkey = _message_name(spec)
                messages[mkey] = _message(spec)
                channels[key]["messages"][mkey] = {"$ref": f"#/components/messages/{mkey}"}
            operations[f"{subs.name}.receive"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{key}"},
                "description": f"Durable consumer `{subs.name}`: {subs.description}",
            }
            continue
        for spec in subs.specs:
            key = channel_for(spec)
            operation(
                f"{subs.name}.receive.{key}",
                "receive",
                key,
                f"Durable consumer `{subs.name}`: {subs.description}",
            )
    for spec in REGISTRY:
        if spec.producer != name:
            continue
        key = channel_for(spec)
        if spec.kind == "command":
            operation(
                f"{name}.receive.{key}",
                "receive",
                key,
                "Commands from other systems: answered on the reply subject after commit "
                "(accepted or rejected with reasons), and kept in the ingress stream.",
            )
        else:
            operation(
                f"{name}.send.{key}", "send", key, "Published through the transactional outbox."
            )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"Linli {name}",
            "version": "1",
            "description": f"The NATS subjects the {name} service receives and sends. "
            "Every message is a structured CloudEvent (CloudEvents NATS binding).",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "development": {
                "host": "127.0.0.1:14222",
                "protocol": "nats",
                "description": "`make run`",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render(module: str, name: str) -> str:
    """The AsyncAPI YAML of one service."""
    app_module = importlib.import_module(f"{module}.app")
    app = app_module.build_app(app_module.default_settings())
    return str(yaml.safe_dump(document(name, app), sort_keys=True, allow_unicode=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linli.devstack.asyncapi")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    out_dir = _root() / "docs" / "asyncapi"
    drifted = []
    for spec in API_SERVICES:
        text = render(spec.module, spec.name)
        path = out_dir / f"{spec.name}.yaml"
        if args.check:
            old = path.read_text() if path.exists() else ""
            if old != text:
                drifted.append(str(path))
                diff = difflib.unified_diff(
                    old.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "now"
                )
                print("".join(list(diff)[:40]))
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for name in drifted:
        print(f"drifted: {name} (run make schemas)")
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
