"""Generate each service's AsyncAPI 3.0 document from what the service declares.

`python -m linli.devstack.asyncapi` writes `docs/asyncapi/<service>.yaml`; with
`--check` it writes nothing and exits 1 when a committed document, or a payload schema
one of them references, has drifted.

The documents are built from the same declarations the services run on, so they
cannot say something else than the code (ADR 0048):

* what a service **receives**: the `Subscriptions` of its consumers (one channel per
  declared event type, or every event); for intake the `need.submit` command, on both
  of its paths (the request/reply queue group, whose reply is `NeedSubmitReply`, and
  the durable ingress consumer); and for every durable consumer, the server's
  MAX_DELIVERIES advisory that turns a message into a dead letter; the ephemeral
  readers of a community's events (`ServiceRuntime.read_events`); the revocations
  key-value bucket every process watches (and `credentials revoke` writes);
* what it **sends**: every event of the contract registry that names it as producer
  (they all leave through its transactional outbox; `tests/unit/test_asyncapi.py`
  checks the registry's producers against the services' code);
* each message's payload: the checked-in JSON Schema of the whole CloudEvent
  (`libs/contracts/schemas/`, generated from the pydantic models: the envelope with the
  typed `data`), by relative reference, declared as JSON Schema (`schemaFormat`);
* each message's NATS headers: `content-type`, `Nats-Msg-Id` (the event id, JetStream's
  deduplication key) and `traceparent`; a command may also come in binary mode (the
  data as body, every attribute as a `ce-` header), a message of its own.

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

from linli.contracts import schemagen
from linli.contracts.envelope import CloudEvent
from linli.contracts.needs import NeedSubmitReply
from linli.contracts.registry import REGISTRY, EventSpec
from linli.contracts.subjects import EVENTS_PREFIX, INGRESS_PREFIX

from .paths import repo_root
from .stack import SERVICES

SCHEMAS_FROM_DOCS = "../../libs/contracts/schemas"
"""Where the JSON Schemas are, relative to docs/asyncapi/."""

JSON_SCHEMA_FORMAT = "application/schema+json;version=draft-07"
"""How the payloads are declared. AsyncAPI 3.0 names JSON Schema draft-07; pydantic's
schemas (dialect 2020-12) use no keyword whose meaning differs there, and their OpenAPI
style `discriminator` object is not the AsyncAPI Schema's string (ADR 0048)."""

STRUCTURED = "application/cloudevents+json"
BINARY_DATA = "application/json"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
"""The server's subject (servicekit `messaging.MAX_DELIVERIES_ADVISORY`)."""

SUBMIT_TYPE = "linli.need.submit.v1"


def _message_name(spec: EventSpec) -> str:
    return f"{spec.short}.v{spec.version}"


def _address(spec: EventSpec) -> str:
    prefix = EVENTS_PREFIX if spec.kind == "event" else INGRESS_PREFIX
    return f"{prefix}.{{community}}.{spec.aggregate}.{spec.name}.v{spec.version}"


def schema_file(spec: EventSpec) -> str:
    """The payload schema's file name in libs/contracts/schemas/."""
    return f"{_message_name(spec)}.json"


def _payload(ref: str) -> dict[str, Any]:
    return {"schemaFormat": JSON_SCHEMA_FORMAT, "schema": {"$ref": ref}}


def _message(spec: EventSpec) -> dict[str, Any]:
    headers = "EventHeaders" if spec.kind == "event" else "CommandHeaders"
    return {
        "name": spec.type,
        "title": _message_name(spec),
        "summary": spec.description,
        "contentType": STRUCTURED,
        "headers": {"$ref": f"#/components/schemas/{headers}"},
        "payload": _payload(f"{SCHEMAS_FROM_DOCS}/{schema_file(spec)}"),
    }


def _binary_message(spec: EventSpec) -> dict[str, Any]:
    return {
        "name": spec.type,
        "title": f"{_message_name(spec)} (binary mode)",
        "summary": f"{spec.description} The same command in binary content mode: the data "
        "as the body, every CloudEvent attribute in a `ce-` header (percent-encoded).",
        "contentType": BINARY_DATA,
        "headers": {"$ref": "#/components/schemas/BinaryHeaders"},
        "payload": _payload(f"{SCHEMAS_FROM_DOCS}/{schema_file(spec)}#/properties/data"),
    }


def _event_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "NATS headers of an event as the outbox relay publishes it "
        "(structured content mode).",
        "properties": {
            "content-type": {
                "type": "string",
                "const": STRUCTURED,
                "description": "Structured content mode: the whole event is the body.",
            },
            "Nats-Msg-Id": {
                "type": "string",
                "maxLength": 256,
                "description": "The event's `id`: JetStream drops a second publish of it "
                "within the duplicate window. A dead letter replayed by an operator carries "
                "`<letter id>:replay:<n>` instead.",
            },
            "traceparent": {
                "type": "string",
                "description": "W3C Trace Context of the publish span, when tracing is on.",
            },
        },
        "required": ["content-type", "Nats-Msg-Id"],
    }


def _command_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "NATS headers of a command in structured content mode (no `ce-` "
        "header; with one, the message is read in binary mode). None is required.",
        "properties": {
            "content-type": {
                "type": "string",
                "enum": [STRUCTURED, BINARY_DATA],
                "description": f"The whole event is the body; absent means {STRUCTURED}.",
            },
            "Nats-Msg-Id": {
                "type": "string",
                "maxLength": 256,
                "description": "Optional: the event's id, so JetStream drops a second "
                "publish within the duplicate window (intake deduplicates on (source, id) "
                "anyway).",
            },
            "traceparent": {
                "type": "string",
                "description": "W3C Trace Context of the sender's span, if any.",
            },
        },
    }


def _binary_headers() -> dict[str, Any]:
    """The ce- headers of binary mode, from the envelope model itself."""
    envelope = CloudEvent[dict[str, Any]].model_json_schema()
    attributes = {k: v for k, v in envelope["properties"].items() if k != "data"}
    properties: dict[str, Any] = {
        "content-type": {
            "type": "string",
            "const": BINARY_DATA,
            "description": "The data's media type (absent means application/json); "
            "binary content mode: the body is the event's data.",
        },
        "Nats-Msg-Id": {
            "type": "string",
            "maxLength": 256,
            "description": "Optional: set it to the event's id to have JetStream drop a "
            "second publish within the duplicate window.",
        },
    }
    for name, node in attributes.items():
        properties[f"ce-{name}"] = {
            "type": "string",
            "description": f"CloudEvent attribute `{name}`, percent-encoded. "
            + str(node.get("description", "")).strip(),
        }
    required = [f"ce-{name}" for name in envelope.get("required", []) if name != "data"]
    return {
        "type": "object",
        "description": "NATS headers of a CloudEvent in binary content mode.",
        "properties": properties,
        "required": required,
    }


def _advisory_payload() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The NATS server's advisory `io.nats.jetstream.advisory.v1.max_deliver`"
        " (fields the service reads; the server may send more).",
        "properties": {
            "type": {"type": "string", "const": "io.nats.jetstream.advisory.v1.max_deliver"},
            "id": {"type": "string", "description": "The advisory's id."},
            "timestamp": {"type": "string", "format": "date-time"},
            "stream": {"type": "string", "description": "The stream of the message."},
            "consumer": {"type": "string", "description": "The durable that gave up."},
            "stream_seq": {
                "type": "integer",
                "minimum": 1,
                "description": "The message's sequence: the service fetches it from the "
                "stream and stores it whole as a dead letter.",
            },
            "deliveries": {"type": "integer", "description": "How often it was delivered."},
        },
        "required": ["stream_seq"],
    }


_COMMUNITY = {
    "description": "The community's slug ([a-z0-9-]); permissions can be written per community."
}


def _asyncapi_schema(node: Any) -> Any:
    """A pydantic JSON Schema as an AsyncAPI Schema: its `discriminator` is the property
    name (a string), not OpenAPI's object with a mapping."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def _reply_schemas() -> dict[str, Any]:
    """`NeedSubmitReply` and the models it uses, under components/schemas."""
    schema = NeedSubmitReply.model_json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema.pop("$defs", {})
    defs["NeedSubmitReply"] = schema
    return {name: _asyncapi_schema(node) for name, node in defs.items()}


def document(name: str, app: Any) -> dict[str, Any]:
    """The AsyncAPI document of one built service app."""
    runtime = app.state.runtime
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {"EventHeaders": _event_headers()}

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

    def operation(op_id: str, action: str, key: str, description: str) -> dict[str, Any]:
        operations[op_id] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [
                {"$ref": f"#/channels/{key}/messages/{mkey}"} for mkey in channels[key]["messages"]
            ],
            "description": description,
        }
        return operations[op_id]

    for consumer in runtime.consumers:
        subs = consumer.subs
        if subs.every_event:
            key = _every_event_channel(channels, messages)
            operation(
                f"{subs.name}.receive",
                "receive",
                key,
                f"Durable consumer `{subs.name}`: {subs.description}",
            )
            continue
        for spec in subs.specs:
            key = channel_for(spec)
            operation(
                f"{subs.name}.receive.{key}",
                "receive",
                key,
                f"Durable consumer `{subs.name}`: {subs.description}",
            )
    for reader, description in runtime.event_readers:
        key = _every_event_channel(channels, messages)
        operation(
            f"{reader}.receive", "receive", key, f"Ephemeral reader `{reader}`: {description}"
        )
    for spec in REGISTRY:
        if spec.producer != name:
            continue
        key = channel_for(spec)
        if spec.kind == "command":
            _command(name, app, spec, key, channels, messages, schemas, operation)
        else:
            operation(
                f"{name}.send.{key}", "send", key, "Published through the transactional outbox."
            )
    _dead_letters(runtime, channels, messages, schemas, operation)
    _revocations(runtime, channels, messages, operation)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"Linli {name}",
            "version": "1",
            "description": f"The NATS subjects the {name} service receives and sends. "
            "Every event is a structured CloudEvent (CloudEvents NATS binding); its payload "
            "schema is the whole envelope with the typed `data`. Generated by "
            "`make schemas` from the service's declarations (ADR 0048).",
        },
        "defaultContentType": STRUCTURED,
        "servers": {
            "development": {
                "host": "127.0.0.1:14222",
                "protocol": "nats",
                "description": "`make run`",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _every_event_channel(channels: dict[str, Any], messages: dict[str, Any]) -> str:
    key = "every-event"
    if key not in channels:
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
    return key


def _revocations(
    runtime: Any, channels: dict[str, Any], messages: dict[str, Any], operation: Any
) -> None:
    """The revoked credentials' key-value bucket every service shares (ADR 0030)."""
    key = "revocations"
    bucket = runtime.settings.revocations_bucket
    messages[key] = {
        "name": "revocation",
        "title": "credential revoked",
        "summary": "A key-value entry: the key is the SHA-256 digest (hex) of a revoked "
        "credential's token, the value when it was revoked. Never the token itself.",
        "contentType": "text/plain",
        "payload": {"type": "string", "format": "date-time"},
    }
    channels[key] = {
        "address": f"$KV.{bucket}.{{digest}}",
        "parameters": {
            "digest": {"description": "SHA-256 of the revoked token, 64 hexadecimal digits."}
        },
        "description": f"The JetStream key-value bucket `{bucket}` (stream `KV_{bucket}`).",
        "messages": {key: {"$ref": f"#/components/messages/{key}"}},
    }
    operation(
        "revocations.receive",
        "receive",
        key,
        "Every process watches the bucket (an ordered consumer, last value per key), "
        "refuses the revoked credentials and marks its own rows revoked.",
    )
    operation(
        "revocations.send",
        "send",
        key,
        "`python -m linli.<service> credentials revoke <id>` puts the digest.",
    )


def _queue_groups(app: Any) -> list[str]:
    """The queue groups of the app's core (non-JetStream) subscribers."""
    return sorted(
        {
            str(sub.queue)
            for sub in app.state.runtime.broker.subscribers
            if getattr(sub, "queue", None) and getattr(sub, "stream", None) is None
        }
    )


def _command(
    name: str,
    app: Any,
    spec: EventSpec,
    key: str,
    channels: dict[str, Any],
    messages: dict[str, Any],
    schemas: dict[str, Any],
    operation: Any,
) -> None:
    """A command's two paths: request/reply (answered after commit) and the durable."""
    binary = f"{key}.binary"
    messages[binary] = _binary_message(spec)
    channels[key]["messages"][binary] = {"$ref": f"#/components/messages/{binary}"}
    schemas["CommandHeaders"] = _command_headers()
    schemas["BinaryHeaders"] = _binary_headers()
    ingress = app.state.runtime.settings.ingress_stream
    durables = [d for stream, d in app.state.runtime.durables if stream == ingress]
    operation(
        f"{name}.receive.{key}",
        "receive",
        key,
        "Commands from other systems, structured or binary mode, kept by the ingress "
        f"stream and consumed by the durable consumer{'s' if len(durables) > 1 else ''} "
        + ", ".join(f"`{d}`" for d in durables)
        + " (a command published while the service was down is processed when it is back; "
        "a repeated (source, id) changes nothing). Refused commands become dead letters.",
    )
    if spec.type != SUBMIT_TYPE:
        return
    reply_key = f"{key}.reply"
    schemas.update(_reply_schemas())
    messages[reply_key] = {
        "name": f"{spec.type}.reply",
        "title": f"{_message_name(spec)} reply",
        "summary": "Intake's answer to a need.submit request, after commit: accepted (the "
        "need id) or rejected (field-level reasons and the dead letter's id). Plain JSON.",
        "contentType": BINARY_DATA,
        "payload": {"$ref": "#/components/schemas/NeedSubmitReply"},
    }
    channels[reply_key] = {
        "address": None,
        "description": "The requester's reply subject (a NATS inbox, given with the request).",
        "messages": {reply_key: {"$ref": f"#/components/messages/{reply_key}"}},
    }
    for queue in _queue_groups(app):
        op = operation(
            f"{name}.reply.{key}.{queue}",
            "receive",
            key,
            f"Requests (a reply subject given) taken by the queue group `{queue}`: "
            "answered on the reply subject once the need is committed, so `accepted` means "
            "stored. Without a reply subject the command is left to the durable consumer.",
        )
        op["reply"] = {
            "channel": {"$ref": f"#/channels/{reply_key}"},
            "messages": [{"$ref": f"#/channels/{reply_key}/messages/{reply_key}"}],
        }
        op["bindings"] = {"nats": {"queue": queue, "bindingVersion": "0.1.0"}}


def _dead_letters(
    runtime: Any,
    channels: dict[str, Any],
    messages: dict[str, Any],
    schemas: dict[str, Any],
    operation: Any,
) -> None:
    """The MAX_DELIVERIES advisories of the service's durables (dead-letter capture)."""
    if not runtime.durables:
        return
    key = "dead-letter-advisories"
    schemas["MaxDeliveriesAdvisory"] = _advisory_payload()
    messages[key] = {
        "name": "io.nats.jetstream.advisory.v1.max_deliver",
        "title": "MAX_DELIVERIES advisory",
        "summary": "The NATS server gave up delivering a message to a durable consumer.",
        "contentType": BINARY_DATA,
        "payload": {"$ref": "#/components/schemas/MaxDeliveriesAdvisory"},
    }
    streams = sorted({stream for stream, _ in runtime.durables})
    durables = sorted({durable for _, durable in runtime.durables})
    channels[key] = {
        "address": f"{MAX_DELIVERIES_ADVISORY}.{{stream}}.{{durable}}",
        "parameters": {
            "stream": {"enum": streams, "description": "The stream the durable reads."},
            "durable": {"enum": durables, "description": "This service's durable consumer."},
        },
        "description": "Kept by the advisories stream until the service has stored the "
        "message it names as a dead letter.",
        "messages": {key: {"$ref": f"#/components/messages/{key}"}},
    }
    operation(
        "dead-letters.receive",
        "receive",
        key,
        "Each advisory of one of the service's durables: the message it names is fetched "
        "from its stream and stored whole as a dead letter. An operator's replay "
        "republishes it on its own subject (`Nats-Msg-Id` `<letter id>:replay:<n>`).",
    )


def render(module: str, name: str) -> str:
    """The AsyncAPI YAML of one service."""
    app_module = importlib.import_module(f"{module}.app")
    app = app_module.build_app(app_module.default_settings())
    return str(yaml.safe_dump(document(name, app), sort_keys=True, allow_unicode=True))


def referenced_schemas(text: str) -> set[str]:
    """The schema files (names in libs/contracts/schemas/) a document references."""
    names = set()
    for line in text.splitlines():
        marker = f"$ref: {SCHEMAS_FROM_DOCS}/"
        if marker in line:
            names.add(line.split(marker, 1)[1].split("#", 1)[0].strip())
    return names


def payload_drift(root: Path, texts: list[str]) -> list[str]:
    """Referenced payload schemas that are missing or differ from the registry's."""
    expected = {schema_file(spec): schemagen.render_schema(spec) for spec in REGISTRY}
    drifted = []
    for file_name in sorted(set().union(*(referenced_schemas(t) for t in texts))):
        path = root / schemagen.SCHEMAS_DIR / file_name
        want = expected.get(file_name)
        if want is None or not path.is_file() or path.read_text(encoding="utf-8") != want:
            drifted.append(str(path))
    return drifted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linli.devstack.asyncapi")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    root = repo_root()
    out_dir = root / "docs" / "asyncapi"
    drifted = []
    texts = []
    for spec in SERVICES:
        text = render(spec.module, spec.name)
        texts.append(text)
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
    if args.check:
        drifted += payload_drift(root, texts)
    for name in drifted:
        print(f"drifted: {name} (run make schemas)")
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
