from __future__ import annotations

import json
from typing import Any

import pytest
from harness.contract_samples import NOW, meal_spec, repair_spec, sample_events
from pydantic import BaseModel, ValidationError

from linli.contracts.binding import (
    MAX_JSON_DEPTH,
    from_nats,
    parse_data,
    percent_decode,
    percent_encode,
    reasons_from_validation_error,
    to_binary,
    to_structured,
)
from linli.contracts.envelope import (
    MAX_EVENT_BYTES,
    CloudEvent,
    EnvelopeError,
    new_event,
)
from linli.contracts.events import NeedSubmitted
from linli.contracts.needs import NeedSpecAdapter, NeedSubmitData, ResidentSpec
from linli.contracts.registry import lookup

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SUBJECT = 'need 100% "好"\tok'


def _event(data: BaseModel, **kwargs: Any) -> CloudEvent[Any]:
    return new_event(
        data,
        community="taian-zhiyuan",
        source="/linli/test",
        subject=SUBJECT,
        traceparent=TRACEPARENT,
        **kwargs,
    )


@pytest.mark.parametrize("encode", [to_structured, to_binary])
@pytest.mark.parametrize("data", sample_events(), ids=lambda d: type(d).__name__)
def test_events_round_trip(encode: Any, data: BaseModel) -> None:
    event = _event(data)
    body, headers = encode(event)
    decoded = from_nats(body, headers)
    assert decoded.id == event.id
    assert decoded.type == event.type
    assert decoded.time == event.time
    assert decoded.subject == SUBJECT
    assert decoded.community == "taian-zhiyuan"
    assert decoded.traceparent == TRACEPARENT
    assert decoded.dataschema == event.dataschema
    spec = lookup(decoded.type)
    assert parse_data(decoded, spec.model) == data
    assert parse_data(decoded, spec.adapter) == data


@pytest.mark.parametrize("encode", [to_structured, to_binary])
def test_command_round_trip(encode: Any) -> None:
    for spec in (meal_spec(), repair_spec()):
        event = _event(spec)
        assert event.type == "linli.need.submit.v1"
        decoded = from_nats(*encode(event))
        assert parse_data(decoded, NeedSpecAdapter) == spec
        assert parse_data(decoded, NeedSubmitData).root == spec


def test_structured_encoding() -> None:
    event = _event(meal_spec(), id="evt-1")
    body, headers = to_structured(event)
    assert headers == {"content-type": "application/cloudevents+json"}
    obj = json.loads(body)
    assert obj["specversion"] == "1.0"
    assert obj["id"] == "evt-1"
    assert obj["subject"] == SUBJECT
    assert obj["data"]["details"]["diet_needs"] == ["少盐", "软食"]
    assert "少盐".encode() in body  # raw UTF-8, not \\u escapes
    _, with_id = to_structured(event, with_msg_id=True)
    assert with_id["Nats-Msg-Id"] == "evt-1"


def test_binary_encoding_headers() -> None:
    event = _event(meal_spec(), id="evt-2")
    body, headers = to_binary(event)
    assert json.loads(body)["kind"] == "meal_delivery"
    assert "content-type" not in headers  # the binding maps datacontenttype to ce-datacontenttype
    assert headers["ce-id"] == "evt-2"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "linli.need.submit.v1"
    assert headers["ce-community"] == "taian-zhiyuan"
    assert headers["ce-traceparent"] == TRACEPARENT
    assert headers["ce-datacontenttype"] == "application/json"
    assert headers["ce-time"] == event.time.isoformat().replace("+00:00", "Z")
    assert headers["ce-subject"] == "need%20100%25%20%22%E5%A5%BD%22%09ok"
    assert all(v.isascii() and " " not in v for v in headers.values())


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("plain-ASCII_~!", "plain-ASCII_~!"),
        ("a b", "a%20b"),
        ('say "hi"', "say%20%22hi%22"),
        ("100%", "100%25"),
        ("泰安", "%E6%B3%B0%E5%AE%89"),
        ("tab\there\n", "tab%09here%0A"),
        ("\x7f", "%7F"),
        ("€", "%E2%82%AC"),
    ],
)
def test_percent_encoding(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded
    assert percent_decode(encoded) == raw


def test_binary_headers_are_case_insensitive_and_decoded() -> None:
    body, headers = to_binary(_event(meal_spec()))
    shouted = {k.upper(): v for k, v in headers.items()}
    decoded = from_nats(body, shouted)
    assert decoded.subject == SUBJECT


def test_structured_content_type_wins_over_ce_headers() -> None:
    # The NATS binding: application/cloudevents+json means structured, whatever else is there.
    event = _event(meal_spec())
    body, headers = to_structured(event)
    headers |= {"ce-specversion": "1.0", "ce-id": "copied-into-headers"}
    assert from_nats(body, headers).id == event.id


def test_quoted_binary_header_values_are_read() -> None:
    body, headers = to_binary(_event(meal_spec()))
    headers["ce-subject"] = '"need \\"q\\""'
    assert from_nats(body, headers).subject == 'need "q"'


def test_unknown_extensions_are_dropped() -> None:
    body, headers = to_binary(_event(meal_spec()))
    headers["ce-partitionkey"] = "x"
    assert "partitionkey" not in from_nats(body, headers).model_dump()
    obj = json.loads(to_structured(_event(meal_spec()))[0])
    obj["somext"] = "y"
    assert "somext" not in from_nats(json.dumps(obj).encode(), None).model_dump()


def test_charset_parameter_is_accepted() -> None:
    body, headers = to_binary(_event(meal_spec()))
    del headers["ce-datacontenttype"]
    headers["content-type"] = "application/json; charset=utf-8"
    assert from_nats(body, headers).datacontenttype == "application/json"


def _structured(**changes: Any) -> bytes:
    obj = json.loads(to_structured(_event(meal_spec()))[0])
    for key, value in changes.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _deep(levels: int) -> bytes:
    inner = "[" * levels + "]" * levels
    return _structured().replace(b'"data":{', b'"data":{"deep":' + inner.encode() + b",", 1)


ZERO_TRACEPARENT = "00-" + "0" * 32 + "-" + "1" * 16 + "-01"
BINARY = {"ce-specversion": "1.0"}
BATCH = {"content-type": "application/cloudevents-batch+json"}
OCTETS = {"content-type": "application/octet-stream"}

BAD_MESSAGES: list[tuple[str, bytes, dict[str, str] | None, str]] = [
    ("garbage", b"\x00\x01garbage\xff", None, "malformed"),
    ("invalid-utf8", b'{"id": "\xc3\x28"}', None, "malformed"),
    ("not-json", b"{id: 1,}", None, "malformed"),
    ("empty", b"", None, "malformed"),
    ("nan", _structured().replace(b'"portions":1', b'"portions":NaN'), None, "malformed"),
    ("array", b"[1, 2, 3]", None, "not_object"),
    ("string", b'"hello"', None, "not_object"),
    ("deep", _deep(40), None, "too_deep"),
    ("deep-100k", b"[" * 60000, None, "too_deep"),
    ("too-large", b'{"id":"' + b"x" * (70 * 1024) + b'"}', None, "too_large"),
    ("missing-id", _structured(id=None), None, "missing"),
    ("empty-id", _structured(id=""), None, "string_too_short"),
    ("missing-specversion", _structured(specversion=None), None, "missing"),
    ("wrong-specversion", _structured(specversion="0.3"), None, "unsupported_specversion"),
    ("numeric-specversion", _structured(specversion=1.0), None, "unsupported_specversion"),
    ("bad-community", _structured(community="Other Community"), None, "string_pattern_mismatch"),
    ("naive-time", _structured(time="2025-01-01T10:00:00"), None, "timezone_aware"),
    ("bad-traceparent", _structured(traceparent="00-xyz"), None, "string_pattern_mismatch"),
    ("zero-traceparent", _structured(traceparent=ZERO_TRACEPARENT), None, "value_error"),
    ("data-not-object", _structured(data=[1, 2]), None, "dict_type"),
    ("missing-data", _structured(data=None), None, "missing"),
    ("xml-data", _structured(datacontenttype="application/xml"), None, "unsupported_content_type"),
    ("data-base64", _structured(data=None, data_base64="AAAA"), None, "unsupported"),
    ("data-and-data-base64", _structured(data_base64="AAAA"), None, "conflict"),
    ("bad-base64", _structured(data=None, data_base64="!!"), None, "malformed"),
    ("batch", _structured(), BATCH, "unsupported_content_type"),
    ("binary-wrong-specversion", b"{}", {"ce-specversion": "0.3"}, "unsupported_specversion"),
    ("binary-missing-attrs", b"{}", {"ce-specversion": "1.0"}, "missing"),
    ("binary-empty-body", b"", {"ce-specversion": "1.0", "ce-id": "x"}, "missing"),
    ("binary-bad-json", b"{", {"ce-specversion": "1.0"}, "malformed"),
    ("binary-bad-percent", b"{}", {"ce-specversion": "1.0", "ce-subject": "%C3%28"}, "malformed"),
    ("binary-octet-stream", b"{}", BINARY | OCTETS, "unsupported_content_type"),
    ("huge-headers", b"{}", {"ce-specversion": "1.0", "ce-x": "a" * 20000}, "too_large"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [case[1:] for case in BAD_MESSAGES],
    ids=[case[0] for case in BAD_MESSAGES],
)
def test_from_nats_rejects_bad_input(
    body: bytes, headers: dict[str, str] | None, code: str
) -> None:
    with pytest.raises(EnvelopeError) as info:
        from_nats(body, headers)
    reasons = info.value.reasons
    assert reasons
    assert code in {r.code for r in reasons}, reasons
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("encode", [to_structured, to_binary])
def test_data_nesting_limit_is_the_same_in_both_modes(encode: Any) -> None:
    event = from_nats(*to_structured(_event(meal_spec())))
    nested: Any = {}
    for _ in range(MAX_JSON_DEPTH - 1):
        nested = {"n": nested}
    ok = event.model_copy(update={"data": nested})
    assert from_nats(*encode(ok)).data == nested
    too_deep = event.model_copy(update={"data": {"n": nested}})
    with pytest.raises(EnvelopeError) as info:
        from_nats(*encode(too_deep))
    assert info.value.reasons[0].code == "too_deep"


def test_too_large_is_also_enforced_when_encoding() -> None:
    spec = repair_spec()
    big = spec.model_copy(update={"notes": "字" * 30000})
    with pytest.raises(EnvelopeError) as info:
        to_structured(_event(big))
    assert info.value.reasons[0].code == "too_large"
    assert MAX_EVENT_BYTES == 65536


def test_attribute_errors_name_fields_without_values() -> None:
    secret = "Bad Community With Secret"
    with pytest.raises(EnvelopeError) as info:
        from_nats(_structured(community=secret, id=None), None)
    fields = {r.field for r in info.value.reasons}
    assert fields == {"id", "community"}
    assert secret not in str(info.value)
    assert all(secret not in r.message for r in info.value.reasons)


def test_parse_data_prefixes_fields_and_hides_values() -> None:
    event = from_nats(*to_structured(_event(meal_spec())))
    raw = event.data | {
        "window": {"earliest": "2025-03-14T12:00:00Z", "latest": "2025-03-14T11:00:00Z"}
    }
    raw["notes"] = "秘密" * 600
    bad = event.model_copy(update={"data": raw})
    with pytest.raises(EnvelopeError) as info:
        parse_data(bad, NeedSpecAdapter)
    fields = {r.field for r in info.value.reasons}
    assert "data.window" in fields
    assert "data.notes" in fields
    assert "秘密" not in str(info.value)
    assert all(f.startswith("data.") for f in fields)


def test_parse_data_unknown_kind_message_omits_tag() -> None:
    event = from_nats(*to_structured(_event(meal_spec())))
    bad = event.model_copy(update={"data": event.data | {"kind": "secret-kind"}})
    with pytest.raises(EnvelopeError) as info:
        parse_data(bad, NeedSpecAdapter)
    assert info.value.reasons[0].code == "union_tag_invalid"
    assert "secret-kind" not in str(info.value)


def test_events_are_tolerant_and_commands_strict() -> None:
    submitted = sample_events()[0]
    event = from_nats(*to_structured(_event(submitted)))
    data = event.data | {"new_field": 1, "window": event.data["window"] | {"tz": "x"}}
    data["details"] = data["details"] | {"future": True}
    newer = event.model_copy(update={"data": data})
    assert parse_data(newer, NeedSubmitted) == submitted

    command = from_nats(*to_structured(_event(meal_spec())))
    with pytest.raises(EnvelopeError) as info:
        parse_data(
            command.model_copy(update={"data": command.data | {"extra": 1}}), NeedSpecAdapter
        )
    assert info.value.reasons[0].code == "extra_forbidden"


def test_need_submitted_details_follow_kind() -> None:
    submitted = sample_events()[0]
    raw = json.loads(submitted.model_dump_json())  # type: ignore[attr-defined]
    assert NeedSubmitted.model_validate(raw) == submitted
    with pytest.raises(ValidationError) as info:
        NeedSubmitted.model_validate(raw | {"kind": "meal_delivery"})
    assert {e["loc"][:2] for e in info.value.errors()} == {("details", "meal_delivery")}


def test_reasons_from_validation_error_directly() -> None:
    with pytest.raises(ValidationError) as info:
        ResidentSpec.model_validate({"name": "", "phone": "13800138000-leak", "address": "x"})
    reasons = reasons_from_validation_error(info.value, prefix="body")
    assert {r.field for r in reasons} == {"body.name", "body.phone"}
    assert all("leak" not in r.message for r in reasons)
    assert NOW.tzinfo is not None
