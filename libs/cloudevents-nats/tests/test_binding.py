"""Both content modes, both ways, and bad input of every kind (no server needed)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from cloudevents_nats import (
    BindingError,
    Event,
    Limits,
    Mode,
    content_mode,
    from_msg,
    from_nats,
    to_binary,
    to_structured,
    validate_attributes,
)

REQUIRED = {"specversion": "1.0", "id": "evt-1", "source": "/orders", "type": "com.example.t.v1"}
SUBJECT = '订单 42: 100% "hot"'
ENCODE = [to_structured, to_binary]


def _event(data: Any = None, **attributes: Any) -> Event:
    return Event(REQUIRED | attributes, data)


def _encoded_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """What a receiver gets back in binary mode: every value as its canonical string."""
    out = {}
    for name, value in attributes.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, datetime):
            out[name] = value.isoformat().replace("+00:00", "Z")
        else:
            out[name] = str(value)
    return out


# --- round trips ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"items": 3, "note": "少盐", "nested": {"list": [1, 2.5, None, True]}},
        [1, "two", {"three": 3}],
        "a JSON string",
        0,
        None,
    ],
    ids=["object", "array", "string", "number", "no-data"],
)
@pytest.mark.parametrize("encode", ENCODE)
def test_json_data_round_trips(encode: Any, data: Any) -> None:
    event = _event(data, subject=SUBJECT, datacontenttype="application/json")
    decoded = from_nats(*encode(event))
    assert decoded.data == data
    assert decoded["subject"] == SUBJECT
    assert decoded.attributes == event.attributes


@pytest.mark.parametrize("encode", ENCODE)
def test_extension_attributes_round_trip(encode: Any) -> None:
    attributes = {
        "time": datetime(2025, 3, 14, 11, 0, 5, tzinfo=UTC),
        "tenant": "north-东",
        "priority": 7,
        "urgent": True,
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    decoded = from_nats(*encode(_event({"k": "v"}, **attributes)))
    assert decoded["time"] == "2025-03-14T11:00:05Z"
    assert decoded["tenant"] == "north-东"
    assert decoded["traceparent"] == attributes["traceparent"]
    if encode is to_structured:
        # JSON keeps Integer and Boolean types ...
        assert decoded["priority"] == 7
        assert decoded["urgent"] is True
    else:
        # ... headers carry canonical strings only.
        assert decoded.attributes == REQUIRED | _encoded_attributes(attributes)


@pytest.mark.parametrize("encode", ENCODE)
def test_binary_data_round_trips(encode: Any) -> None:
    payload = bytes(range(256))
    event = _event(payload, datacontenttype="application/octet-stream")
    body, headers = encode(event)
    if encode is to_structured:
        assert json.loads(body)["data_base64"] == base64.b64encode(payload).decode()
        assert "data" not in json.loads(body)
    else:
        assert body == payload
    decoded = from_nats(body, headers)
    assert decoded.data == payload
    assert decoded["datacontenttype"] == "application/octet-stream"


@pytest.mark.parametrize("encode", ENCODE)
def test_text_data_round_trips(encode: Any) -> None:
    event = _event("第一行\nline two ✓", datacontenttype="text/plain; charset=utf-8")
    body, headers = encode(event)
    if encode is to_binary:
        assert body == "第一行\nline two ✓".encode()
    assert from_nats(body, headers).data == "第一行\nline two ✓"


@pytest.mark.parametrize("encode", ENCODE)
def test_json_suffix_types_are_json(encode: Any) -> None:
    event = _event({"a": 1}, datacontenttype="application/vnd.example+json")
    assert from_nats(*encode(event)).data == {"a": 1}


# --- the wire format ------------------------------------------------------------


def test_structured_message_is_the_json_event_format() -> None:
    event = _event({"note": "少盐"}, subject=SUBJECT, time=datetime(2025, 3, 14, 11, tzinfo=UTC))
    body, headers = to_structured(event)
    assert headers == {"content-type": "application/cloudevents+json"}
    obj = json.loads(body)
    assert obj == REQUIRED | {
        "subject": SUBJECT,
        "time": "2025-03-14T11:00:00Z",
        "data": {"note": "少盐"},
    }
    assert "少盐".encode() in body  # UTF-8 as is, not \u escapes


def test_binary_message_matches_the_spec_example() -> None:
    # The binding's example (3.1.4), with a Unicode subject to show the encoding.
    event = Event(
        {
            "specversion": "1.0",
            "type": "com.example.someevent",
            "time": "2018-04-05T03:56:24Z",
            "id": "1234-1234-1234",
            "source": "/mycontext/subcontext",
            "datacontenttype": "application/json",
            "subject": "Euro € 😀",
        },
        {"k": "v"},
    )
    body, headers = to_binary(event)
    assert headers == {
        "ce-specversion": "1.0",
        "ce-type": "com.example.someevent",
        "ce-time": "2018-04-05T03:56:24Z",
        "ce-id": "1234-1234-1234",
        "ce-source": "/mycontext/subcontext",
        "ce-datacontenttype": "application/json",
        "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80",
    }
    assert body == b'{"k":"v"}'
    assert all(v.isascii() and " " not in v for v in headers.values())


@pytest.mark.parametrize("encode", ENCODE)
def test_msg_id_is_the_event_id(encode: Any) -> None:
    assert encode(_event({}), with_msg_id=True).headers["Nats-Msg-Id"] == "evt-1"
    assert "Nats-Msg-Id" not in encode(_event({})).headers


def test_a_custom_serialiser_is_used() -> None:
    calls: list[Any] = []

    def dumps(value: Any) -> bytes:
        calls.append(value)
        return json.dumps(value, sort_keys=True).encode()

    to_structured(_event({"b": 1, "a": 2}), dumps=dumps)
    to_binary(_event({"b": 1, "a": 2}), dumps=dumps)
    assert calls[0] == REQUIRED | {"data": {"b": 1, "a": 2}}
    assert calls[1] == {"b": 1, "a": 2}


def test_sdk_shaped_events_are_accepted() -> None:
    class Shaped:
        def get_attributes(self) -> dict[str, Any]:
            return REQUIRED | {"subject": None}  # None means absent

        def get_data(self) -> Any:
            return {"x": 1}

    body, headers = to_binary(Shaped())
    assert "ce-subject" not in headers
    assert from_nats(body, headers).data == {"x": 1}


def test_from_msg_reads_a_nats_py_message() -> None:
    body, headers = to_binary(_event({"x": 1}))
    assert from_msg(SimpleNamespace(data=body, headers=headers)).data == {"x": 1}


# --- telling the modes apart ----------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "mode"),
    [
        ({"content-type": "application/cloudevents+json"}, Mode.STRUCTURED),
        ({"Content-Type": "Application/CloudEvents+JSON; charset=utf-8"}, Mode.STRUCTURED),
        # The spec: a structured content type wins over ce- headers.
        (
            {"content-type": "application/cloudevents+json", "ce-specversion": "1.0"},
            Mode.STRUCTURED,
        ),
        ({"ce-specversion": "1.0"}, Mode.BINARY),
        ({"CE-SpecVersion": "1.0", "content-type": "application/json"}, Mode.BINARY),
        ({"content-type": "text/plain"}, Mode.BINARY),
        # Leniency: no CloudEvents headers at all is a structured event.
        (None, Mode.STRUCTURED),
        ({}, Mode.STRUCTURED),
        ({"content-type": "application/json"}, Mode.STRUCTURED),
    ],
)
def test_content_mode(headers: dict[str, str] | None, mode: Mode) -> None:
    assert content_mode(headers) is mode


def test_header_names_are_case_insensitive() -> None:
    body, headers = to_binary(_event({"x": 1}, subject=SUBJECT))
    shouted = {name.upper(): value for name, value in headers.items()}
    assert from_nats(body, shouted)["subject"] == SUBJECT


def test_quoted_header_values_from_older_senders_are_read() -> None:
    headers = {f"ce-{k}": v for k, v in REQUIRED.items()} | {"ce-subject": '"a \\"quoted\\" one"'}
    assert from_nats(b"{}", headers)["subject"] == 'a "quoted" one'


def test_bare_content_type_stands_in_for_datacontenttype() -> None:
    headers = {f"ce-{k}": v for k, v in REQUIRED.items()} | {"content-type": "text/plain"}
    decoded = from_nats(b"hello", headers)
    assert decoded["datacontenttype"] == "text/plain"
    assert decoded.data == "hello"
    headers["ce-datacontenttype"] = "application/json"
    assert from_nats(b'"hello"', headers).data == "hello"  # ce-datacontenttype wins


def test_a_headerless_structured_event_is_read() -> None:
    body, _ = to_structured(_event({"x": 1}))
    assert from_nats(body, None).data == {"x": 1}


# --- attributes -----------------------------------------------------------------


def test_validate_attributes_names_every_problem() -> None:
    problems = validate_attributes(
        {
            "specversion": "1.0",
            "source": 5,
            "type": "",
            "time": "2025-03-14 11:00",
            "subject": "",
            "Bad-Name": "x",
            "ext": 1.5,
            "big": 2**40,
        }
    )
    assert {(p.field, p.code) for p in problems} == {
        ("id", "missing"),
        ("source", "invalid_type"),
        ("type", "empty"),
        ("time", "invalid_time"),
        ("subject", "invalid_type"),
        ("Bad-Name", "invalid_name"),
        ("ext", "invalid_type"),
        ("big", "invalid_type"),
    }
    assert validate_attributes(REQUIRED | {"time": "2025-03-14T11:00:00.123+08:00"}) == []


def test_attribute_checks_can_be_left_to_the_caller() -> None:
    body = json.dumps({"specversion": "1.0", "data": {}}).encode()
    with pytest.raises(BindingError) as info:
        from_nats(body, None)
    assert {p.field for p in info.value.problems} == {"id", "source", "type"}
    assert from_nats(body, None, check_attributes=False).attributes == {"specversion": "1.0"}


@pytest.mark.parametrize(
    ("event", "field", "code"),
    [
        (Event({"specversion": "1.0", "id": "1", "source": "/s"}), "type", "missing"),
        (_event(None, specversion="0.3"), "specversion", "unsupported_specversion"),
        (_event(None, **{"Bad_Name": "x"}), "Bad_Name", "invalid_name"),
        (_event(None, data_base64="x"), "data_base64", "invalid_name"),
        (_event(None, time=datetime(2025, 1, 1)), "time", "invalid_attribute"),
        (_event(None, weight=1.5), "weight", "invalid_attribute"),
        (_event({"a": 1}, datacontenttype="application/xml"), "data", "invalid_data"),
    ],
    ids=[
        "missing-type",
        "old-specversion",
        "bad-name",
        "reserved-name",
        "naive-time",
        "float",
        "dict-as-xml",
    ],
)
@pytest.mark.parametrize("encode", ENCODE)
def test_encoders_refuse_what_is_not_a_cloudevent(
    encode: Any, event: Event, field: str, code: str
) -> None:
    with pytest.raises(BindingError) as info:
        encode(event)
    assert (field, code) in {(p.field, p.code) for p in info.value.problems}


@pytest.mark.parametrize("encode", ENCODE)
def test_encoders_enforce_the_size_limit(encode: Any) -> None:
    with pytest.raises(BindingError) as info:
        encode(_event("x" * 2000, datacontenttype="text/plain"), limits=Limits(max_body_bytes=1024))
    assert info.value.problems[0].code == "too_large"


def test_only_events_are_encoded() -> None:
    with pytest.raises(TypeError):
        to_structured({"specversion": "1.0"})  # type: ignore[arg-type]


# --- bad input ------------------------------------------------------------------

BINARY = {f"ce-{k}": v for k, v in REQUIRED.items()}
BATCH = {"content-type": "application/cloudevents-batch+json"}
AVRO = {"content-type": "application/cloudevents+avro"}
OLD = {"ce-specversion": "0.3"}


def _structured(**changes: Any) -> bytes:
    obj: dict[str, Any] = REQUIRED | {"data": {"x": 1}}
    for key, value in changes.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return json.dumps(obj, ensure_ascii=False).encode()


def _deep(levels: int) -> bytes:
    return _structured(data={"deep": json.loads("[" * levels + "]" * levels)})


BAD_MESSAGES: list[tuple[str, bytes, dict[str, str] | None, str]] = [
    ("garbage", b"\x00\x01garbage\xff", None, "malformed"),
    ("invalid-utf8", b'{"id": "\xc3\x28"}', None, "malformed"),
    ("not-json", b"{id: 1,}", None, "malformed"),
    ("empty", b"", None, "malformed"),
    ("nan", _structured(data=None).replace(b"}", b', "data": NaN}'), None, "malformed"),
    ("array", b"[1, 2, 3]", None, "not_object"),
    ("string", b'"hello"', None, "not_object"),
    ("deep", _deep(70), None, "too_deep"),
    ("deep-100k", b"[" * 60000, None, "too_deep"),
    ("too-large", b'{"id":"' + b"x" * (1100 * 1024) + b'"}', None, "too_large"),
    ("missing-specversion", _structured(specversion=None), None, "missing"),
    ("wrong-specversion", _structured(specversion="0.3"), None, "unsupported_specversion"),
    ("numeric-specversion", _structured(specversion=1.0), None, "unsupported_specversion"),
    ("missing-id", _structured(id=None), None, "missing"),
    ("empty-source", _structured(source=""), None, "empty"),
    ("numeric-type", _structured(type=7), None, "invalid_type"),
    ("both-data", _structured(data_base64="AAAA"), None, "conflict"),
    ("bad-base64", _structured(data=None, data_base64="!!"), None, "malformed"),
    ("base64-not-string", _structured(data=None, data_base64=5), None, "malformed"),
    ("batch", b"[]", BATCH, "unsupported_content_type"),
    ("avro", b"{}", AVRO, "unsupported_content_type"),
    ("binary-wrong-specversion", b"{}", BINARY | OLD, "unsupported_specversion"),
    ("binary-without-specversion", b"{}", {"content-type": "text/plain", "ce-id": "1"}, "missing"),
    ("binary-missing-type", b"{}", {k: v for k, v in BINARY.items() if k != "ce-type"}, "missing"),
    ("binary-bad-json", b"{", BINARY, "malformed"),
    ("binary-bad-text", b"\xff", BINARY | {"ce-datacontenttype": "text/plain"}, "malformed"),
    ("binary-bad-percent", b"{}", BINARY | {"ce-subject": "%C0%A0"}, "malformed"),
    ("binary-bad-quote", b"{}", BINARY | {"ce-subject": '"open'}, "malformed"),
    ("binary-bad-name", b"{}", BINARY | {"ce-bad_name": "x"}, "invalid_name"),
    ("binary-deep", b"[" * 70 + b"]" * 70, BINARY, "too_deep"),
    ("duplicate-header", b"{}", BINARY | {"CE-ID": "other"}, "duplicate"),
    ("huge-headers", b"{}", BINARY | {"ce-x": "a" * 70000}, "too_large"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [case[1:] for case in BAD_MESSAGES],
    ids=[case[0] for case in BAD_MESSAGES],
)
def test_bad_messages_are_refused_with_a_code(
    body: bytes, headers: dict[str, str] | None, code: str
) -> None:
    with pytest.raises(BindingError) as info:
        from_nats(body, headers)
    assert code in {p.code for p in info.value.problems}, info.value.problems
    assert isinstance(info.value, ValueError)


def test_problems_never_repeat_the_input() -> None:
    secret = "13800138000 秘密"
    cases = [
        (_structured(id=None, source="", type=secret, ext=[secret]), None),
        (b"{}", BINARY | {"ce-subject": "%C0%A0" + secret, "ce-" + "x" * 100: secret}),
    ]
    for body, headers in cases:
        with pytest.raises(BindingError) as info:
            from_nats(body, headers)
        text = str(info.value) + repr(info.value.problems)
        assert secret not in text
        assert "x" * 100 not in text  # long names are truncated


@pytest.mark.parametrize("encode", ENCODE)
def test_the_depth_limit_is_the_same_in_both_modes(encode: Any) -> None:
    limits = Limits(max_json_depth=8)
    nested: Any = {}
    for _ in range(7):
        nested = {"n": nested}
    assert from_nats(*encode(_event(nested)), limits=limits).data == nested
    with pytest.raises(BindingError) as info:
        from_nats(*encode(_event({"n": nested})), limits=limits)
    assert info.value.problems[0].code == "too_deep"


def test_limits_can_be_lifted() -> None:
    big = _event("x" * (2 * 1024 * 1024), datacontenttype="text/plain")
    unbounded = Limits(max_body_bytes=None, max_header_bytes=None)
    assert (
        len(from_nats(*to_binary(big, limits=unbounded), limits=unbounded).data) == 2 * 1024 * 1024
    )
