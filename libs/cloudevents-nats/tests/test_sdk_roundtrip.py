"""Round trips with the `cloudevents` SDK (2.x, `cloudevents.core`), both ways, both modes.

The SDK has no NATS binding. Its JSON event format reads and writes structured
payloads as they are; for binary mode its HTTP binding is the reference, since the NATS
binding copies the HTTP header rules (ce- prefix, percent-encoding) with one difference:
`datacontenttype` travels as `ce-datacontenttype`, where HTTP uses `Content-Type`. The
two helpers below do that mapping and nothing else.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from cloudevents_nats import Message, from_nats, to_binary, to_structured

TIME = datetime(2025, 3, 14, 11, 0, 5, 250000, tzinfo=UTC)
SUBJECT = 'Euro € 😀 订单 "42" 100%'

CASES: list[tuple[str, str | None, Any]] = [
    ("json-object", "application/json", {"note": "少盐", "items": [1, 2.5, None, True], "n": {}}),
    ("json-absent-type", None, {"k": "値"}),
    ("text", "text/plain", "第一行\nline two ✓"),
    ("bytes", "application/octet-stream", bytes(range(255, -1, -1))),
    ("no-data", "application/json", None),
]


def _sdk_event(datacontenttype: str | None, data: Any) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": "a1b2-c3",
        "source": "urn:city-hotline/东城",
        "type": "com.example.need.submitted.v1",
        "specversion": "1.0",
        "time": TIME,
        "subject": SUBJECT,
        "dataschema": "https://example.org/schemas/need.json",
        "community": "taian-zhiyuan",
        "partitionkey": "p 7/东",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    if datacontenttype is not None:
        attributes["datacontenttype"] = datacontenttype
    return CloudEvent(attributes, data)


def _nats_to_http(message: Message) -> http.HTTPMessage:
    headers = {
        ("content-type" if name == "ce-datacontenttype" else name): value
        for name, value in message.headers.items()
    }
    return http.HTTPMessage(headers=headers, body=message.body)


def _http_to_nats(message: http.HTTPMessage) -> tuple[bytes, dict[str, str]]:
    headers = {
        ("ce-datacontenttype" if name.lower() == "content-type" else name): value
        for name, value in message.headers.items()
    }
    return message.body, headers


def _wire_attributes(event: CloudEvent) -> dict[str, Any]:
    """The SDK event's attributes as this library reads them (time as its RFC 3339 string)."""
    attributes = dict(event.get_attributes())
    attributes["time"] = "2025-03-14T11:00:05.250000Z"
    return attributes


IDS = [case[0] for case in CASES]
PARAMS = [case[1:] for case in CASES]


# --- SDK event -> this library -> SDK -------------------------------------------


@pytest.mark.parametrize(("datacontenttype", "data"), PARAMS, ids=IDS)
def test_structured_from_sdk_event_is_read_by_the_sdk(
    datacontenttype: str | None, data: Any
) -> None:
    original = _sdk_event(datacontenttype, data)
    message = to_structured(original)
    assert message.headers["content-type"] == JSONFormat.CONTENT_TYPE
    back = http.from_structured(http.HTTPMessage(message.headers, message.body), JSONFormat())
    assert back.get_attributes() == original.get_attributes()
    assert back.get_data() == data


@pytest.mark.parametrize(("datacontenttype", "data"), PARAMS, ids=IDS)
def test_binary_from_sdk_event_is_read_by_the_sdk(datacontenttype: str | None, data: Any) -> None:
    original = _sdk_event(datacontenttype, data)
    message = to_binary(original)
    back = http.from_binary(_nats_to_http(message), JSONFormat())
    assert back.get_attributes() == original.get_attributes()
    assert back.get_data() == data


@pytest.mark.parametrize(("datacontenttype", "data"), PARAMS, ids=IDS)
def test_binary_headers_are_the_sdks_http_headers_but_for_datacontenttype(
    datacontenttype: str | None, data: Any
) -> None:
    event = _sdk_event(datacontenttype, data)
    ours = to_binary(event)
    sdks = http.to_binary_event(event)
    if isinstance(data, (str, bytes)) or data is None:
        assert ours.body == sdks.body
    else:  # the same JSON; the SDK puts spaces after separators
        assert json.loads(ours.body) == json.loads(sdks.body)
    assert {k: v for k, v in ours.headers.items() if k != "ce-datacontenttype"} == {
        k: v for k, v in sdks.headers.items() if k != "content-type"
    }
    assert ours.headers.get("ce-datacontenttype") == sdks.headers.get("content-type")


# --- SDK-made messages -> this library ------------------------------------------


@pytest.mark.parametrize(("datacontenttype", "data"), PARAMS, ids=IDS)
def test_sdk_structured_json_is_read(datacontenttype: str | None, data: Any) -> None:
    event = _sdk_event(datacontenttype, data)
    sdk_message = http.to_structured_event(event)
    decoded = from_nats(sdk_message.body, sdk_message.headers)
    assert dict(decoded.attributes) == _wire_attributes(event)
    assert decoded.data == data


@pytest.mark.parametrize(("datacontenttype", "data"), PARAMS, ids=IDS)
def test_sdk_binary_headers_are_read(datacontenttype: str | None, data: Any) -> None:
    event = _sdk_event(datacontenttype, data)
    sdk_message = http.to_binary_event(event)
    decoded = from_nats(*_http_to_nats(sdk_message))
    assert dict(decoded.attributes) == _wire_attributes(event)
    assert decoded.data == data


def test_sdk_binary_with_a_bare_content_type_is_read() -> None:
    # Unmapped, as sdk-go's JetStream protocol sends it: content-type stands in.
    event = _sdk_event("application/json", {"k": "v"})
    sdk_message = http.to_binary_event(event)
    decoded = from_nats(sdk_message.body, sdk_message.headers)
    assert decoded["datacontenttype"] == "application/json"
    assert decoded.data == {"k": "v"}


# --- types that only structured mode keeps ---------------------------------------


def test_integer_and_boolean_extensions_survive_structured_mode_both_ways() -> None:
    event = CloudEvent(
        {"id": "1", "source": "/s", "type": "t", "time": TIME, "priority": 7, "urgent": True},
        {"k": "v"},
    )
    back = JSONFormat().read(None, to_structured(event).body)
    assert back.get_attributes()["priority"] == 7
    assert back.get_attributes()["urgent"] is True
    sdk_message = http.to_structured_event(event)
    decoded = from_nats(sdk_message.body, sdk_message.headers)
    assert decoded["priority"] == 7
    assert decoded["urgent"] is True
    # Binary mode carries strings. This library writes the canonical `true`; the SDK
    # (2.2.0) writes Python's `True`, which arrives here as the string it is.
    assert to_binary(event).headers["ce-urgent"] == "true"
    assert from_nats(*_http_to_nats(http.to_binary_event(event)))["urgent"] == "True"
    assert (
        http.from_binary(_nats_to_http(to_binary(event)), JSONFormat()).get_attributes()["priority"]
        == "7"
    )
