"""The README's examples are true: its event encodes to the wire it shows, its SDK snippet runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cloudevents_nats import to_binary

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)


def _block(language: str, containing: str) -> str:
    return next(code for lang, code in BLOCKS if lang == language and containing in code)


def test_the_binary_wire_example_is_what_the_example_event_encodes_to() -> None:
    example = _block("python", "nc = await nats.connect")
    namespace: dict[str, Any] = {}
    # Up to the connection: the part that needs no server.
    exec(example.split("nc = await")[0], namespace)  # noqa: S102
    body, headers = to_binary(namespace["event"])
    wire = _block("text", "ce-specversion")
    shown_headers, shown_body = wire.strip().split("\n\n")
    assert [f"{k}: {v}" for k, v in headers.items()] == shown_headers.splitlines()
    assert body.decode() == shown_body


def test_the_sdk_example_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(_block("python", "from cloudevents.core"), namespace)  # noqa: S102
    assert namespace["sdk_event"].get_attributes()["type"] == "com.example.t"
    assert namespace["sdk_event"].get_data() == {"k": "v"}
