"""CloudEvents NATS protocol binding (structured and binary content modes).

The `cloudevents` SDK has no NATS binding, so this follows the CloudEvents NATS
binding: structured mode puts the whole event as JSON in the body with content type
`application/cloudevents+json`; binary mode puts the data in the body and each
attribute in a `ce-<name>` header, percent-encoded like the HTTP binding.

Everything read from the wire is untrusted: size, encoding, nesting depth and
every attribute are checked, and errors carry field paths but never input values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast, overload
from urllib.parse import unquote_to_bytes

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

from linli.contracts.envelope import (
    MAX_EVENT_BYTES,
    SPECVERSION,
    CloudEvent,
    EnvelopeError,
)
from linli.contracts.types import EventData, NeedKind, Reason

__all__ = [
    "CE_HEADER_PREFIX",
    "MAX_JSON_DEPTH",
    "NATS_MSG_ID_HEADER",
    "STRUCTURED_CONTENT_TYPE",
    "from_nats",
    "parse_data",
    "percent_decode",
    "percent_encode",
    "reasons_from_validation_error",
    "to_binary",
    "to_structured",
]

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
JSON_CONTENT_TYPE = "application/json"
CE_HEADER_PREFIX = "ce-"
NATS_MSG_ID_HEADER = "Nats-Msg-Id"
MAX_JSON_DEPTH = 32
MAX_HEADER_BYTES = 16384
_MAX_REASONS = 50

M = TypeVar("M")

# Attributes that may appear as ce- headers, in a stable order.
_ATTRIBUTES = (
    "id",
    "source",
    "type",
    "specversion",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "community",
    "traceparent",
)

# --- percent-encoding ---------------------------------------------------------


def percent_encode(value: str) -> str:
    """Percent-encode a header value per the CloudEvents HTTP binding.

    Space, double quote, percent and every byte outside printable ASCII
    (0x21-0x7E) become %XX of the UTF-8 encoding; everything else is kept.
    """
    out: list[str] = []
    for byte in value.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x22, 0x25):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def percent_decode(value: str) -> str:
    """Undo `percent_encode`; raises UnicodeDecodeError for invalid UTF-8."""
    return unquote_to_bytes(value).decode("utf-8")


# --- encoding -----------------------------------------------------------------


def _check_size(body: bytes) -> None:
    if len(body) > MAX_EVENT_BYTES:
        raise EnvelopeError.single("", f"event is larger than {MAX_EVENT_BYTES} bytes", "too_large")


def _data_json(data: Any) -> bytes:
    if isinstance(data, BaseModel):
        return data.model_dump_json(exclude_none=True).encode("utf-8")
    return pydantic_core.to_json(data)


def to_structured(
    event: CloudEvent[Any], *, with_msg_id: bool = False
) -> tuple[bytes, dict[str, str]]:
    """Encode an event in structured mode: the whole event as JSON in the body.

    With `with_msg_id` the event id is also set as `Nats-Msg-Id`, so JetStream drops
    a republished copy. Raises EnvelopeError (too_large) above MAX_EVENT_BYTES.
    """
    body = event.model_dump_json(exclude_none=True).encode("utf-8")
    _check_size(body)
    headers = {"content-type": STRUCTURED_CONTENT_TYPE}
    if with_msg_id:
        headers[NATS_MSG_ID_HEADER] = event.id
    return body, headers


def to_binary(event: CloudEvent[Any], *, with_msg_id: bool = False) -> tuple[bytes, dict[str, str]]:
    """Encode an event in binary mode: data in the body, attributes in ce- headers.

    Raises EnvelopeError (too_large) above MAX_EVENT_BYTES.
    """
    body = _data_json(event.data)
    _check_size(body)
    attributes = event.model_dump(mode="json", exclude={"data"}, exclude_none=True)
    headers = {
        CE_HEADER_PREFIX + name: percent_encode(str(attributes[name]))
        for name in _ATTRIBUTES
        if name in attributes
    }
    headers["content-type"] = JSON_CONTENT_TYPE
    if with_msg_id:
        headers[NATS_MSG_ID_HEADER] = event.id
    return body, headers


# --- decoding -----------------------------------------------------------------


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Tags of the discriminated unions in the contracts: pydantic puts the chosen tag into
# error locations (body.meal_delivery.details), which is not a path into the request.
_UNION_TAGS = frozenset(kind.value for kind in NeedKind)


def _loc_to_field(loc: tuple[int | str, ...], prefix: str) -> str:
    parts = [prefix] if prefix else []
    segments = [str(part) for part in loc]
    root = 1 if segments[:1] == ["body"] else 0
    if len(segments) > root + 1 and segments[root] in _UNION_TAGS:
        del segments[root]
    parts.extend(segments)
    return _truncate(".".join(parts), 200)


def reasons_from_validation_error(exc: ValidationError, prefix: str = "") -> list[Reason]:
    """Turn a pydantic ValidationError into Reasons without any input values.

    `prefix` is prepended to every field path (e.g. "data" gives "data.window").
    """
    try:
        errors: Sequence[Any] = exc.errors(include_input=False, include_url=False)
    except TypeError:
        # FastAPI's RequestValidationError has the same shape but a bare errors().
        errors = exc.errors()
    reasons: list[Reason] = []
    for error in errors[:_MAX_REASONS]:
        code = str(error.get("type", "invalid"))
        message = str(error.get("msg", "invalid value"))
        loc = tuple(error.get("loc", ()))
        if code == "json_invalid":
            # The location ends in a character offset, which is not a field.
            loc = tuple(p for p in loc if not isinstance(p, int))
        if code in ("union_tag_invalid", "union_tag_not_found"):
            discriminator = str((error.get("ctx") or {}).get("discriminator", "")).strip("'")
            if discriminator:
                loc = (*loc, discriminator)
        if code == "union_tag_invalid":
            # pydantic's message repeats the offending tag, which is input.
            ctx = error.get("ctx") or {}
            message = (
                f"'{ctx.get('discriminator', 'tag')}' must be one of "
                f"{ctx.get('expected_tags', 'the known tags')}"
            )
        reasons.append(
            Reason(
                field=_loc_to_field(loc, prefix),
                message=_truncate(message, 500),
                code=_truncate(code, 64),
            )
        )
    return reasons


def _json_depth(value: Any, limit: int) -> int:
    # Iterative, so a hostile document cannot exhaust the Python stack here.
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_json(body: bytes, field: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError.single(field, "body is not valid UTF-8", "malformed") from None
    too_deep = EnvelopeError.single(
        field, f"JSON is nested deeper than {max_depth} levels", "too_deep"
    )
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        # The C scanner gives up past the interpreter's recursion limit (~1000 levels).
        raise too_deep from None
    except ValueError:
        raise EnvelopeError.single(field, "body is not valid JSON", "malformed") from None
    if _json_depth(value, max_depth) > max_depth:
        raise too_deep
    return value


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _validate_envelope(obj: dict[str, Any]) -> CloudEvent[dict[str, Any]]:
    specversion = obj.get("specversion")
    if specversion is None:
        raise EnvelopeError.single("specversion", "specversion is missing", "missing")
    if specversion != SPECVERSION:
        raise EnvelopeError.single(
            "specversion",
            f"unsupported specversion; only {SPECVERSION} is supported",
            "unsupported_specversion",
        )
    try:
        return CloudEvent[dict[str, Any]].model_validate(obj)
    except ValidationError as exc:
        raise EnvelopeError(reasons_from_validation_error(exc)) from None


def _from_binary(body: bytes, headers: dict[str, str]) -> CloudEvent[dict[str, Any]]:
    obj: dict[str, Any] = {}
    for name, raw in headers.items():
        if not name.startswith(CE_HEADER_PREFIX):
            continue
        attribute = name[len(CE_HEADER_PREFIX) :]
        try:
            obj[attribute] = percent_decode(raw)
        except UnicodeDecodeError:
            raise EnvelopeError.single(
                _truncate(attribute, 200),
                "header value is not valid percent-encoded UTF-8",
                "malformed",
            ) from None
    if "datacontenttype" not in obj and "content-type" in headers:
        obj["datacontenttype"] = headers["content-type"]
    content_type = _media_type(str(obj.get("datacontenttype", JSON_CONTENT_TYPE)))
    if content_type != JSON_CONTENT_TYPE:
        raise EnvelopeError.single(
            "datacontenttype",
            "only application/json data is supported",
            "unsupported_content_type",
        )
    if not body:
        raise EnvelopeError.single("data", "data is missing", "missing")
    obj["data"] = _load_json(body, "data")
    return _validate_envelope(obj)


def _from_structured(body: bytes, headers: dict[str, str]) -> CloudEvent[dict[str, Any]]:
    content_type = _media_type(headers.get("content-type", STRUCTURED_CONTENT_TYPE))
    if content_type not in (STRUCTURED_CONTENT_TYPE, JSON_CONTENT_TYPE):
        raise EnvelopeError.single(
            "",
            f"structured events must be {STRUCTURED_CONTENT_TYPE}",
            "unsupported_content_type",
        )
    # The envelope object is one level, so data gets the same depth as in binary mode.
    obj = _load_json(body, "", MAX_JSON_DEPTH + 1)
    if not isinstance(obj, dict):
        raise EnvelopeError.single("", "event must be a JSON object", "not_object")
    if "data_base64" in obj:
        raise EnvelopeError.single("data_base64", "binary data is not supported", "unsupported")
    return _validate_envelope(obj)


def from_nats(data: bytes, headers: Mapping[str, str] | None) -> CloudEvent[dict[str, Any]]:
    """Decode a NATS message into a CloudEvent whose data is still a plain dict.

    Binary mode when a `ce-specversion` header is present (header names are
    case-insensitive), else structured mode. Raises EnvelopeError with reasons.
    Validate the data afterwards with `parse_data`.
    """
    if len(data) > MAX_EVENT_BYTES:
        raise EnvelopeError.single("", f"event is larger than {MAX_EVENT_BYTES} bytes", "too_large")
    lowered: dict[str, str] = {}
    header_bytes = 0
    for name, value in (headers or {}).items():
        header_bytes += len(name) + len(value)
        lowered[name.lower()] = value
    if header_bytes > MAX_HEADER_BYTES:
        raise EnvelopeError.single(
            "", f"headers are larger than {MAX_HEADER_BYTES} bytes", "too_large"
        )
    if CE_HEADER_PREFIX + "specversion" in lowered:
        return _from_binary(data, lowered)
    return _from_structured(data, lowered)


@overload
def parse_data(event: CloudEvent[dict[str, Any]], model: type[M]) -> M: ...


@overload
def parse_data(event: CloudEvent[dict[str, Any]], model: TypeAdapter[M]) -> M: ...


def parse_data(event: CloudEvent[dict[str, Any]], model: type[M] | TypeAdapter[M]) -> M:
    """Validate an event's data against a model class or a TypeAdapter.

    Event models (EventData) are read tolerantly: unknown fields are ignored at every
    level, so a producer may add optional fields within a version. Commands are read
    strictly. Raises EnvelopeError with field paths prefixed `data.`.
    """
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(event.data)
        if isinstance(model, type) and issubclass(model, EventData):
            return cast(M, model.model_validate(event.data, extra="ignore"))
        if isinstance(model, type) and issubclass(model, BaseModel):
            return cast(M, model.model_validate(event.data))
        return TypeAdapter(model).validate_python(event.data)
    except ValidationError as exc:
        raise EnvelopeError(reasons_from_validation_error(exc, "data")) from None
