"""The CloudEvents NATS protocol binding: events to NATS messages and back.

Structured mode: the whole event in the JSON event format as the payload, header
`content-type: application/cloudevents+json`. Binary mode: the data as the payload and
every attribute (extensions included) in its own `ce-<name>` header, percent-encoded.

Everything read from the wire is untrusted: sizes, JSON nesting, header encoding and
(unless told otherwise) the attributes are checked, and errors name fields, never values.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .errors import BindingError, Problem
from .headers import canonical_string, percent_decode, percent_encode, unquote_header_value

__all__ = [
    "BATCH_CONTENT_TYPE",
    "CE_PREFIX",
    "CONTENT_TYPE_HEADER",
    "DEFAULT_LIMITS",
    "NATS_MSG_ID_HEADER",
    "SPECVERSION",
    "STRUCTURED_CONTENT_TYPE",
    "Dumps",
    "Event",
    "Limits",
    "Message",
    "Mode",
    "SupportsCloudEvent",
    "content_mode",
    "from_msg",
    "from_nats",
    "is_json_media_type",
    "media_type",
    "to_binary",
    "to_structured",
    "validate_attributes",
]

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
CE_PREFIX = "ce-"
CONTENT_TYPE_HEADER = "content-type"
NATS_MSG_ID_HEADER = "Nats-Msg-Id"

_REQUIRED = ("id", "source", "specversion", "type")
_OPTIONAL_STRINGS = ("datacontenttype", "dataschema", "subject")
_RESERVED_MEMBERS = frozenset({"data", "data_base64"})
_NAME = re.compile(r"^[a-z0-9]+$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_INT32 = (-(2**31), 2**31 - 1)
_MAX_FIELD = 64

#: Serialises a JSON-ready value (the structured event object, or JSON data) to bytes.
Dumps = Callable[[Any], bytes]


@dataclass(frozen=True)
class Limits:
    """Bounds on what `from_nats` reads (and the encoders write); None means unbounded.

    The defaults follow nats-server's default `max_payload` (1 MiB). Nesting is counted
    in the data, so the same document passes or fails in both modes.
    """

    max_body_bytes: int | None = 1_048_576
    max_header_bytes: int | None = 65_536
    max_json_depth: int = 64


DEFAULT_LIMITS = Limits()


class Mode(StrEnum):
    """The binding's two content modes."""

    STRUCTURED = "structured"
    BINARY = "binary"


@dataclass(frozen=True)
class Event:
    """A CloudEvent as plain data.

    `attributes` holds the context attributes and extensions by name (`specversion`,
    `id`, `source`, `type`, `time`, ...). Values written may be str, bool, int,
    datetime (aware) or bytes; values read are what the wire carried: JSON strings,
    numbers and booleans in structured mode, strings in binary mode (headers have no
    types; `time` is always its RFC 3339 string).

    `data` is None (no data), a JSON value when `datacontenttype` is JSON or absent,
    a str for other text, or bytes.
    """

    attributes: Mapping[str, Any]
    data: Any = field(default=None)

    def __getitem__(self, name: str) -> Any:
        return self.attributes[name]

    def get(self, name: str, default: Any = None) -> Any:
        """An attribute's value, or `default` when the event does not have it."""
        return self.attributes.get(name, default)


class Message(NamedTuple):
    """A NATS message: payload and headers (as nats-py's `publish` takes them)."""

    body: bytes
    headers: dict[str, str]


@runtime_checkable
class SupportsCloudEvent(Protocol):
    """Anything shaped like the `cloudevents` SDK's event (2.x `cloudevents.core`)."""

    def get_attributes(self) -> Mapping[str, Any]: ...

    def get_data(self) -> Any: ...


# --- media types --------------------------------------------------------------


def media_type(value: str | None) -> str:
    """The media type without parameters, lower-cased (RFC 2045: case-insensitive)."""
    return (value or "").split(";", 1)[0].strip().lower()


def is_json_media_type(value: str | None) -> bool:
    """Whether data of this content type is JSON (absent means application/json)."""
    kind = media_type(value) or "application/json"
    return kind in ("application/json", "text/json") or kind.endswith("+json")


# --- encoding -----------------------------------------------------------------


def _default_dumps(value: Any) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
    ).encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return canonical_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _parts(event: Event | SupportsCloudEvent) -> tuple[dict[str, Any], Any]:
    if isinstance(event, Event):
        attributes, data = dict(event.attributes), event.data
    elif isinstance(event, SupportsCloudEvent):
        attributes, data = dict(event.get_attributes()), event.get_data()
    else:
        raise TypeError("expected a cloudevents_nats.Event or an SDK CloudEvent")
    attributes = {name: value for name, value in attributes.items() if value is not None}
    problems: list[Problem] = []
    for name in _REQUIRED:
        if name not in attributes:
            problems.append(Problem(name, f"{name} is required", "missing"))
    if attributes.get("specversion", SPECVERSION) != SPECVERSION:
        problems.append(
            Problem(
                "specversion",
                f"only specversion {SPECVERSION} is supported",
                "unsupported_specversion",
            )
        )
    for name, value in attributes.items():
        if not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED_MEMBERS:
            problems.append(
                Problem(
                    _field(str(name)), "attribute names are lower-case a-z and 0-9", "invalid_name"
                )
            )
            continue
        try:
            canonical_string(value)
        except (TypeError, ValueError) as exc:
            problems.append(Problem(name, str(exc), "invalid_attribute"))
    if problems:
        raise BindingError(problems)
    return attributes, data


def _json_attribute(value: Any) -> Any:
    # JSON event format: String, URI and Integer and Boolean keep their JSON types;
    # Timestamp and Binary become their canonical strings.
    if isinstance(value, (str, bool, int)):
        return value
    return canonical_string(value)


def _check_size(body: bytes, limits: Limits) -> None:
    if limits.max_body_bytes is not None and len(body) > limits.max_body_bytes:
        raise BindingError.single(
            "", f"event is larger than {limits.max_body_bytes} bytes", "too_large"
        )


def _with_msg_id(headers: dict[str, str], attributes: Mapping[str, Any], wanted: bool) -> None:
    if wanted:
        headers[NATS_MSG_ID_HEADER] = percent_encode(canonical_string(attributes["id"]))


def to_structured(
    event: Event | SupportsCloudEvent,
    *,
    with_msg_id: bool = False,
    dumps: Dumps | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Message:
    """Encode an event in structured mode (the JSON event format as the payload).

    Bytes data goes to `data_base64`; other data goes to `data` as JSON when the
    `datacontenttype` is JSON (or absent), else it must be a str. With `with_msg_id`
    the event id is also the `Nats-Msg-Id` header, so JetStream drops a republished
    copy. `dumps` replaces the JSON serialiser (e.g. orjson, pydantic_core.to_json).
    Raises BindingError (missing/invalid attributes, too_large).
    """
    attributes, data = _parts(event)
    obj: dict[str, Any] = {name: _json_attribute(value) for name, value in attributes.items()}
    if data is not None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            obj["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
        elif is_json_media_type(attributes.get("datacontenttype")) or isinstance(data, str):
            obj["data"] = data
        else:
            raise BindingError.single(
                "data", "data of a non-JSON content type must be str or bytes", "invalid_data"
            )
    body = (dumps or _default_dumps)(obj)
    _check_size(body, limits)
    headers = {CONTENT_TYPE_HEADER: STRUCTURED_CONTENT_TYPE}
    _with_msg_id(headers, attributes, with_msg_id)
    return Message(body, headers)


def to_binary(
    event: Event | SupportsCloudEvent,
    *,
    with_msg_id: bool = False,
    dumps: Dumps | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Message:
    """Encode an event in binary mode: data as the payload, attributes as `ce-` headers.

    Every attribute, `datacontenttype` included, becomes `ce-<name>` with its canonical
    string percent-encoded. The payload is the bytes as given, JSON for a JSON content
    type (or none), UTF-8 for a str, empty for no data. Raises BindingError.
    """
    attributes, data = _parts(event)
    headers = {
        CE_PREFIX + name: percent_encode(canonical_string(value))
        for name, value in attributes.items()
    }
    if data is None:
        body = b""
    elif isinstance(data, (bytes, bytearray, memoryview)):
        body = bytes(data)
    elif is_json_media_type(attributes.get("datacontenttype")):
        body = (dumps or _default_dumps)(data)
    elif isinstance(data, str):
        body = data.encode("utf-8")
    else:
        raise BindingError.single(
            "data", "data of a non-JSON content type must be str or bytes", "invalid_data"
        )
    _check_size(body, limits)
    _with_msg_id(headers, attributes, with_msg_id)
    return Message(body, headers)


# --- decoding -----------------------------------------------------------------


def _field(name: str) -> str:
    return name if len(name) <= _MAX_FIELD else name[: _MAX_FIELD - 3] + "..."


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


def _load_json(body: bytes, where: str, max_depth: int) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BindingError.single(where, "body is not valid UTF-8", "malformed") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        # The C scanner gives up past the interpreter's recursion limit (~1000 levels).
        raise _too_deep(where, max_depth) from None
    except ValueError:
        raise BindingError.single(where, "body is not valid JSON", "malformed") from None
    if _json_depth(value, max_depth) > max_depth:
        raise _too_deep(where, max_depth)
    return value


def _too_deep(where: str, max_depth: int) -> BindingError:
    return BindingError.single(where, f"JSON is nested deeper than {max_depth} levels", "too_deep")


def _lowered(headers: Mapping[str, str] | None, limits: Limits) -> dict[str, str]:
    lowered: dict[str, str] = {}
    size = 0
    for name, value in (headers or {}).items():
        size += len(name) + len(value)
        key = name.lower()
        if key in lowered and lowered[key] != value:
            raise BindingError.single(
                _field(key), "header is repeated with different values", "duplicate"
            )
        lowered[key] = value
    if limits.max_header_bytes is not None and size > limits.max_header_bytes:
        raise BindingError.single(
            "", f"headers are larger than {limits.max_header_bytes} bytes", "too_large"
        )
    return lowered


def _mode(lowered: Mapping[str, str]) -> Mode:
    kind = media_type(lowered.get(CONTENT_TYPE_HEADER))
    if kind.startswith("application/cloudevents"):
        if kind == STRUCTURED_CONTENT_TYPE:
            return Mode.STRUCTURED
        message = (
            "the NATS binding has no batch mode"
            if kind.startswith("application/cloudevents-batch")
            else f"structured events must be {STRUCTURED_CONTENT_TYPE}"
        )
        raise BindingError.single("", message, "unsupported_content_type")
    if CE_PREFIX + "specversion" in lowered:
        return Mode.BINARY
    # No CloudEvents headers at all: a publisher from before NATS 2.2 headers (or a
    # plain `nats pub`); read the payload as a structured event, as the binding's
    # earlier versions required. Any other content type is binary mode per the spec.
    if kind in ("", "application/json"):
        return Mode.STRUCTURED
    return Mode.BINARY


def content_mode(headers: Mapping[str, str] | None) -> Mode:
    """Which content mode a message with these headers uses.

    Structured when `content-type` is `application/cloudevents+json`; binary when a
    `ce-specversion` header is present; structured when there are neither a content
    type nor CloudEvents headers (senders without headers); binary otherwise. Raises
    BindingError (unsupported_content_type) for batches and other event formats.
    """
    return _mode(_lowered(headers, Limits(max_header_bytes=None)))


def _check_specversion(attributes: Mapping[str, Any]) -> None:
    specversion = attributes.get("specversion")
    if specversion is None:
        raise BindingError.single("specversion", "specversion is missing", "missing")
    if specversion != SPECVERSION:
        raise BindingError.single(
            "specversion",
            f"unsupported specversion; only {SPECVERSION} is supported",
            "unsupported_specversion",
        )


def _read_data(body: bytes, content_type: Any, limits: Limits) -> Any:
    if not body:
        return None
    declared = content_type if isinstance(content_type, str) else None
    if is_json_media_type(declared):
        return _load_json(body, "data", limits.max_json_depth)
    if media_type(declared).startswith("text/"):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise BindingError.single("data", "text data is not valid UTF-8", "malformed") from None
    return bytes(body)


def _from_binary(body: bytes, lowered: Mapping[str, str], limits: Limits) -> Event:
    attributes: dict[str, Any] = {}
    for name, raw in lowered.items():
        if not name.startswith(CE_PREFIX):
            continue
        attribute = name[len(CE_PREFIX) :]
        try:
            attributes[attribute] = percent_decode(unquote_header_value(raw))
        except ValueError:
            raise BindingError.single(
                _field(attribute),
                "header value is not valid percent-encoded UTF-8",
                "malformed",
            ) from None
    _check_specversion(attributes)
    # ce-datacontenttype is the binding's header; a bare content-type (HTTP bridges,
    # sdk-go's JetStream protocol) is read when it is missing.
    if "datacontenttype" not in attributes and CONTENT_TYPE_HEADER in lowered:
        attributes["datacontenttype"] = lowered[CONTENT_TYPE_HEADER]
    return Event(attributes, _read_data(body, attributes.get("datacontenttype"), limits))


def _from_structured(body: bytes, limits: Limits) -> Event:
    # The event object is one level, so data gets the same depth as in binary mode.
    obj = _load_json(body, "", limits.max_json_depth + 1)
    if not isinstance(obj, dict):
        raise BindingError.single("", "event must be a JSON object", "not_object")
    _check_specversion(obj)
    if "data_base64" in obj:
        if "data" in obj:
            raise BindingError.single(
                "data_base64", "data and data_base64 are mutually exclusive", "conflict"
            )
        encoded = obj.pop("data_base64")
        try:
            if not isinstance(encoded, str):
                raise TypeError
            data: Any = base64.b64decode(encoded, validate=True)
        except (TypeError, binascii.Error):
            raise BindingError.single(
                "data_base64", "data_base64 is not base64", "malformed"
            ) from None
    else:
        data = obj.pop("data", None)
    attributes = {name: value for name, value in obj.items() if value is not None}
    return Event(attributes, data)


def validate_attributes(attributes: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with decoded attributes under CloudEvents 1.0, one problem per field.

    Required `id`, `source`, `type` are non-empty strings; names are lower-case
    alphanumerics; `time` is RFC 3339; `datacontenttype`, `dataschema`, `subject` are
    non-empty strings; extension values are strings, booleans or 32-bit integers.
    """
    problems: list[Problem] = []
    for name in ("id", "source", "type"):
        value = attributes.get(name)
        if value is None:
            problems.append(Problem(name, f"{name} is required", "missing"))
        elif not isinstance(value, str):
            problems.append(Problem(name, f"{name} must be a string", "invalid_type"))
        elif not value:
            problems.append(Problem(name, f"{name} must not be empty", "empty"))
    for name, value in attributes.items():
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(
                Problem(
                    _field(str(name)), "attribute names are lower-case a-z and 0-9", "invalid_name"
                )
            )
        elif name in ("id", "source", "type", "specversion"):
            continue
        elif name == "time":
            if not isinstance(value, str) or not _valid_time(value):
                problems.append(Problem(name, "time must be an RFC 3339 timestamp", "invalid_time"))
        elif name in _OPTIONAL_STRINGS:
            if not isinstance(value, str) or not value:
                problems.append(Problem(name, f"{name} must be a non-empty string", "invalid_type"))
        elif isinstance(value, (bool, str)):
            continue
        elif not isinstance(value, int) or not _INT32[0] <= value <= _INT32[1]:
            problems.append(
                Problem(name, "extension values are strings, booleans or integers", "invalid_type")
            )
    return problems


def _valid_time(value: str) -> bool:
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


def from_nats(
    body: bytes,
    headers: Mapping[str, str] | None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    check_attributes: bool = True,
) -> Event:
    """Decode a NATS message (payload and headers) into an Event, in either mode.

    The mode comes from the headers (see `content_mode`); header names are
    case-insensitive. With `check_attributes` (the default) the attributes are also
    checked by `validate_attributes`; turn it off when a stricter model of your own
    validates them. Raises BindingError with every problem found.
    """
    if limits.max_body_bytes is not None and len(body) > limits.max_body_bytes:
        raise BindingError.single(
            "", f"event is larger than {limits.max_body_bytes} bytes", "too_large"
        )
    lowered = _lowered(headers, limits)
    if _mode(lowered) is Mode.BINARY:
        event = _from_binary(body, lowered, limits)
    else:
        event = _from_structured(body, limits)
    if check_attributes:
        problems = validate_attributes(event.attributes)
        if problems:
            raise BindingError(problems)
    return event


class _NatsMsg(Protocol):
    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...


def from_msg(
    msg: _NatsMsg, *, limits: Limits = DEFAULT_LIMITS, check_attributes: bool = True
) -> Event:
    """`from_nats(msg.data, msg.headers)` for a nats-py `Msg` (core or JetStream)."""
    return from_nats(msg.data, msg.headers, limits=limits, check_attributes=check_attributes)
