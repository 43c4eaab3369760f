"""Linli's envelope over the CloudEvents NATS protocol binding (ADR 0002, ADR 0049).

The binding itself (structured and binary content modes, `ce-` headers, percent-encoding,
size and depth limits) is the generic library `cloudevents_nats`; this module adapts it
to Linli's typed envelope: `CloudEvent` models in, `CloudEvent[dict]` out, Linli's limits
(64 KiB, 16 KiB of headers, depth 32), JSON data only, and errors as `EnvelopeError`
with `Reason`s that carry field paths but never input values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast, overload

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

import cloudevents_nats as cenats
from cloudevents_nats import (
    CE_PREFIX as CE_HEADER_PREFIX,
)
from cloudevents_nats import (
    NATS_MSG_ID_HEADER,
    STRUCTURED_CONTENT_TYPE,
    percent_decode,
    percent_encode,
)
from linli.contracts.envelope import (
    MAX_EVENT_BYTES,
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

JSON_CONTENT_TYPE = "application/json"
MAX_JSON_DEPTH = 32
MAX_HEADER_BYTES = 16384
_MAX_REASONS = 50
LIMITS = cenats.Limits(
    max_body_bytes=MAX_EVENT_BYTES, max_header_bytes=MAX_HEADER_BYTES, max_json_depth=MAX_JSON_DEPTH
)

M = TypeVar("M")


def _dumps(value: Any) -> bytes:
    # pydantic's serialiser takes the event's models (data) as they are; None fields are
    # left out, as the envelope's own JSON does.
    return pydantic_core.to_json(value, exclude_none=True)


def _envelope_error(exc: cenats.BindingError) -> EnvelopeError:
    return EnvelopeError(
        [Reason(field=p.field, message=p.message, code=p.code) for p in exc.problems]
    )


def _as_binding_event(event: CloudEvent[Any]) -> cenats.Event:
    attributes = event.model_dump(mode="json", exclude={"data"}, exclude_none=True)
    return cenats.Event(attributes, event.data)


# --- encoding -----------------------------------------------------------------


def to_structured(
    event: CloudEvent[Any], *, with_msg_id: bool = False
) -> tuple[bytes, dict[str, str]]:
    """Encode an event in structured mode: the whole event as JSON in the body.

    With `with_msg_id` the event id is also set as `Nats-Msg-Id`, so JetStream drops
    a republished copy. Raises EnvelopeError (too_large) above MAX_EVENT_BYTES.
    """
    try:
        return cenats.to_structured(
            _as_binding_event(event), with_msg_id=with_msg_id, dumps=_dumps, limits=LIMITS
        )
    except cenats.BindingError as exc:
        raise _envelope_error(exc) from None


def to_binary(event: CloudEvent[Any], *, with_msg_id: bool = False) -> tuple[bytes, dict[str, str]]:
    """Encode an event in binary mode: data in the body, attributes in ce- headers.

    Raises EnvelopeError (too_large) above MAX_EVENT_BYTES.
    """
    try:
        return cenats.to_binary(
            _as_binding_event(event), with_msg_id=with_msg_id, dumps=_dumps, limits=LIMITS
        )
    except cenats.BindingError as exc:
        raise _envelope_error(exc) from None


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


def _validate_envelope(obj: dict[str, Any]) -> CloudEvent[dict[str, Any]]:
    # The binding has checked specversion; the model checks every other attribute.
    try:
        return CloudEvent[dict[str, Any]].model_validate(obj)
    except ValidationError as exc:
        raise EnvelopeError(reasons_from_validation_error(exc)) from None


def from_nats(data: bytes, headers: Mapping[str, str] | None) -> CloudEvent[dict[str, Any]]:
    """Decode a NATS message into a CloudEvent whose data is still a plain dict.

    Structured or binary mode as the binding tells them apart (header names are
    case-insensitive). Raises EnvelopeError with reasons; Linli takes JSON data only
    (`application/json`, no `data_base64`). Validate the data afterwards with
    `parse_data`.
    """
    try:
        # The envelope model checks the attributes, with Linli's stricter rules.
        decoded = cenats.from_nats(data, headers, limits=LIMITS, check_attributes=False)
    except cenats.BindingError as exc:
        raise _envelope_error(exc) from None
    obj = dict(decoded.attributes)
    if cenats.media_type(str(obj.get("datacontenttype", JSON_CONTENT_TYPE))) != JSON_CONTENT_TYPE:
        raise EnvelopeError.single(
            "datacontenttype",
            "only application/json data is supported",
            "unsupported_content_type",
        )
    if isinstance(decoded.data, bytes):
        raise EnvelopeError.single("data_base64", "binary data is not supported", "unsupported")
    if decoded.data is not None:
        obj["data"] = decoded.data
    return _validate_envelope(obj)


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
