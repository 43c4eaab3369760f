"""The AsyncAPI documents tell the truth (ADR 0048).

* `asyncapi validate` (@asyncapi/cli, a third-party parser; `make node-tools`) accepts
  every document, following the payloads' references to the JSON Schema files, and
  rejects broken copies (so the check can fail);
* every message has a payload schema: the whole CloudEvent with its typed `data`;
* what each document says a service sends is what the service's code constructs;
* the drift check covers the payload schemas the documents reference.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from linli.contracts import schemagen
from linli.contracts.registry import REGISTRY
from linli.devstack import asyncapi, nodetools
from linli.devstack.stack import SERVICES

pytestmark = pytest.mark.unit

ROOT = nodetools.repo_root()
DOCS = ROOT / "docs" / "asyncapi"
NAMES = [spec.name for spec in SERVICES]


def _doc(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((DOCS / f"{name}.yaml").read_text()))


@pytest.fixture(scope="module")
def cli() -> Path:
    if not nodetools.installed(ROOT):
        pytest.fail(
            "the AsyncAPI CLI is not installed: run `make node-tools` (make test does), "
            "which installs the pinned @asyncapi/cli into .tools/node (ADR 0048)"
        )
    return nodetools.cli_entry(ROOT)


@pytest.mark.parametrize("name", NAMES)
def test_asyncapi_cli_accepts_the_document(cli: Path, name: str) -> None:
    proc = nodetools.validate(DOCS / f"{name}.yaml", ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "is valid" in output, output


def _copy_docs(tmp_path: Path, name: str) -> Path:
    """A copy of one document where its relative references still resolve."""
    docs = tmp_path / "docs" / "asyncapi"
    docs.mkdir(parents=True)
    (tmp_path / "libs").symlink_to(ROOT / "libs")
    target = docs / f"{name}.yaml"
    shutil.copyfile(DOCS / f"{name}.yaml", target)
    return target


def _break_missing_schema_file(doc: dict[str, Any]) -> None:
    message = doc["components"]["messages"]["need.submitted.v1"]
    message["payload"]["schema"]["$ref"] = "../../libs/contracts/schemas/nothing.v1.json"


def _break_payload_not_a_schema(doc: dict[str, Any]) -> None:
    message = doc["components"]["messages"]["need.submitted.v1"]
    message["payload"]["schema"] = {"type": 12}


def _break_operation_to_unknown_channel(doc: dict[str, Any]) -> None:
    operation = next(iter(doc["operations"].values()))
    operation["channel"] = {"$ref": "#/channels/nowhere"}


def _break_message_of_another_channel(doc: dict[str, Any]) -> None:
    operation = doc["operations"]["intake.send.need.submitted.v1"]
    operation["messages"] = [{"$ref": "#/channels/need.cancelled.v1/messages/need.cancelled.v1"}]


@pytest.mark.parametrize(
    "breakage",
    [
        _break_missing_schema_file,
        _break_payload_not_a_schema,
        _break_operation_to_unknown_channel,
        _break_message_of_another_channel,
    ],
)
def test_asyncapi_cli_rejects_a_broken_copy(cli: Path, tmp_path: Path, breakage: Any) -> None:
    target = _copy_docs(tmp_path, "intake")
    doc = yaml.safe_load(target.read_text())
    breakage(doc)
    target.write_text(yaml.safe_dump(doc, sort_keys=True))
    proc = nodetools.validate(target, ROOT)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_the_cli_leaves_home_alone(cli: Path) -> None:
    env = nodetools.environment(ROOT)
    assert env["ASYNCAPI_METRICS_CONFIG_PATH"].startswith(str(ROOT / ".tools"))
    assert '"analyticsEnabled": "false"' in Path(env["ASYNCAPI_METRICS_CONFIG_PATH"]).read_text()
    assert env["npm_config_cache"].startswith(str(ROOT / ".tools"))
    assert env["npm_config_userconfig"].startswith(str(ROOT / ".tools"))
    assert env["ASYNCAPI_SKIP_NEW_VERSION_CHECK"] == "true"
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        assert env[name].startswith(str(ROOT / ".tools"))


def test_every_service_has_a_document() -> None:
    assert sorted(p.stem for p in DOCS.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_message_has_its_payload_schema(name: str) -> None:
    doc = _doc(name)
    schemas = doc["components"]["schemas"]
    for key, message in doc["components"]["messages"].items():
        payload = message.get("payload")
        assert payload, f"{name}: {key} has no payload"
        if "schemaFormat" in payload:
            ref = payload["schema"]["$ref"]
            file_name, _, pointer = ref.removeprefix(asyncapi.SCHEMAS_FROM_DOCS + "/").partition(
                "#"
            )
            path = ROOT / schemagen.SCHEMAS_DIR / file_name
            assert path.is_file(), f"{name}: {key} refers to a missing {path}"
            schema = yaml.safe_load(path.read_text())
            if pointer:  # binary mode: the data alone
                assert pointer == "/properties/data"
                continue
            # The whole envelope, its type fixed, and a typed data (never an empty object).
            assert schema["properties"]["type"]["const"] == message["name"]
            assert "data" in schema["required"]
            data = schema["properties"]["data"]
            assert data.get("$ref") or data.get("properties") or data.get("oneOf"), key
            headers = (
                "EventHeaders" if message["name"] != "linli.need.submit.v1" else "CommandHeaders"
            )
            assert message["headers"] == {"$ref": f"#/components/schemas/{headers}"}
        elif "$ref" in payload:
            target = payload["$ref"].removeprefix("#/components/schemas/")
            assert schemas[target].get("properties") or schemas[target].get("oneOf"), key
        else:  # the revocations bucket's value
            assert payload == {"type": "string", "format": "date-time"}, key


def _built_models(service: str) -> tuple[set[str], set[str]]:
    """Event types whose data model a service's code calls (`Model(...)`: it builds the
    event) and those it validates (`Model.model_validate(...)`: it builds one or reads a
    received one). `case Model():` patterns only match."""
    names = {spec.model.__name__: spec for spec in REGISTRY if spec.kind == "event"}
    called: set[str] = set()
    validated: set[str] = set()
    pattern = re.compile(r"\b(" + "|".join(names) + r")(\(|\.model_validate\()")
    for path in (ROOT / "services" / service / "src").rglob("*.py"):
        for line in path.read_text().splitlines():
            if line.strip().startswith("case "):
                continue
            for match in pattern.finditer(line):
                (called if match.group(2) == "(" else validated).add(names[match.group(1)].type)
    return called, validated


def _types(doc: dict[str, Any], action: str) -> set[str]:
    messages = doc["components"]["messages"]
    found = set()
    for op in doc["operations"].values():
        if op["action"] != action:
            continue
        channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]
        refs = op.get("messages") or list(channel["messages"].values())
        for ref in refs:
            found.add(messages[ref["$ref"].rsplit("/", 1)[-1]]["name"])
    return found


@pytest.mark.parametrize("name", NAMES)
def test_what_a_document_sends_is_what_the_code_builds(name: str) -> None:
    doc = _doc(name)
    sent = {t for t in _types(doc, "send") if t.startswith("linli.")}  # not the KV bucket
    assert _types(doc, "send") - sent == {"revocation"}
    produced = {spec.type for spec in REGISTRY if spec.producer == name and spec.kind == "event"}
    assert sent == produced
    called, validated = _built_models(name)
    assert called <= produced, "built here but not declared as this service's events"
    assert produced <= called | validated, "declared but never built here"
    assert validated <= produced | _types(doc, "receive")


def test_intake_documents_the_submit_command_both_modes_and_its_reply() -> None:
    doc = _doc("intake")
    channel = doc["channels"]["need.submit.v1"]
    assert set(channel["messages"]) == {"need.submit.v1", "need.submit.v1.binary"}
    replying = [op for op in doc["operations"].values() if "reply" in op]
    assert len(replying) == 1
    assert replying[0]["bindings"]["nats"]["queue"] == "intake"
    binary = doc["components"]["schemas"]["BinaryHeaders"]
    assert {"ce-id", "ce-source", "ce-type", "ce-specversion", "ce-community"} <= set(
        binary["required"]
    )


def test_the_console_documents_its_read_model_consumer() -> None:
    doc = _doc("console")
    ops = [op for key, op in doc["operations"].items() if key.startswith("console-reports.")]
    assert ops
    assert all(op["action"] == "receive" for op in ops)
    sends = [key for key, op in doc["operations"].items() if op["action"] == "send"]
    assert sends == ["revocations.send"]  # no event


def test_notifications_documents_its_ephemeral_event_stream_reader() -> None:
    doc = _doc("notifications")
    op = doc["operations"]["events-stream.receive"]
    assert op["channel"] == {"$ref": "#/channels/every-event"}
    assert len(op["messages"]) == len(REGISTRY.events())


@pytest.mark.parametrize("name", NAMES)
def test_every_document_has_the_revocations_bucket_and_dead_letters(name: str) -> None:
    doc = _doc(name)
    assert doc["channels"]["revocations"]["address"].startswith("$KV.")
    assert {"revocations.receive", "revocations.send", "dead-letters.receive"} <= set(
        doc["operations"]
    )


def test_the_drift_check_covers_the_payload_schemas(tmp_path: Path) -> None:
    text = (DOCS / "intake.yaml").read_text()
    referenced = asyncapi.referenced_schemas(text)
    assert "need.submitted.v1.json" in referenced
    schemas = tmp_path / schemagen.SCHEMAS_DIR
    shutil.copytree(ROOT / schemagen.SCHEMAS_DIR, schemas)
    assert asyncapi.payload_drift(tmp_path, [text]) == []
    changed = schemas / "need.submitted.v1.json"
    changed.write_text(changed.read_text().replace('"Resident', '"A resident', 1))
    (schemas / "need.cancelled.v1.json").unlink()
    assert asyncapi.payload_drift(tmp_path, [text]) == [
        str(schemas / "need.cancelled.v1.json"),
        str(changed),
    ]


def _fake_checkout(tmp_path: Path) -> Path:
    manifests = nodetools.manifest_dir(tmp_path)
    manifests.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(nodetools.manifest_dir(ROOT) / name, manifests / name)
    return tmp_path


def test_a_stamped_install_does_nothing_and_a_new_lock_reinstalls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = _fake_checkout(tmp_path)
    calls: list[list[str]] = []

    def fake_run(args: list[str], **kwargs: Any) -> Any:
        calls.append(args)
        entry = nodetools.cli_entry(root)
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text("")

        class Done:
            returncode = 0

        return Done()

    monkeypatch.setattr(nodetools.subprocess, "run", fake_run)
    assert not nodetools.installed(root)
    nodetools.install(root)
    assert len(calls) == 1
    assert calls[0][2:4] == ["ci", "--prefix"]
    assert "--ignore-scripts" in calls[0]
    assert '"false"' in (nodetools.tools_dir(root) / "asyncapi-analytics.json").read_text()
    assert nodetools.installed(root)
    nodetools.install(root)
    assert len(calls) == 1  # the stamp says it is there
    lock = nodetools.manifest_dir(root) / "package-lock.json"
    lock.write_text(lock.read_text().replace('"lockfileVersion": 3', '"lockfileVersion":3'))
    assert not nodetools.installed(root)
    nodetools.install(root)
    assert len(calls) == 2
