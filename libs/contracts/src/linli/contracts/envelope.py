"""The CloudEvents 1.0 envelope with Linli's `community` and `traceparent` extensions."""

from __future__ import annotations

import os
import time as _time
import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from linli.contracts.registry import spec_for
from linli.contracts.types import CommunitySlug, Reason

__all__ = [
    "MAX_EVENT_BYTES",
    "SPECVERSION",
    "TRACEPARENT_PATTERN",
    "CloudEvent",
    "DataT",
    "EnvelopeError",
    "Reason",
    "new_event",
    "new_event_id",
]

SPECVERSION = "1.0"
MAX_EVENT_BYTES = 65536
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
# Printable ASCII without space: ids and types end up in NATS headers (Nats-Msg-Id)
# and log fields, where control characters or spaces would be trouble.
_TOKEN_PATTERN = r"^[!-~]+$"

DataT = TypeVar("DataT", bound=BaseModel | dict[str, Any])


class EnvelopeError(ValueError):
    """A message that is not a valid Linli CloudEvent, with field-level reasons."""

    def __init__(self, reasons: list[Reason], message: str | None = None) -> None:
        self.reasons = list(reasons)
        if message is None:
            message = "invalid event: " + "; ".join(
                f"{r.field or '<message>'}: {r.message}" for r in self.reasons[:10]
            )
        super().__init__(message)

    @classmethod
    def single(cls, field: str, message: str, code: str) -> EnvelopeError:
        """An error with exactly one reason."""
        return cls([Reason(field=field, message=message, code=code)])


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 event with the `community` and `traceparent` extensions.

    Unknown extension attributes are accepted but dropped (`extra="ignore"`):
    CloudEvents lets intermediaries add extensions, and rejecting them would break
    interoperability, while keeping them would let arbitrary input ride along.
    """

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True, frozen=True)

    id: str = Field(
        min_length=1,
        max_length=256,
        pattern=_TOKEN_PATTERN,
        description="Event id, unique per source; also the JetStream Nats-Msg-Id "
        "and every consumer's inbox key.",
    )
    source: str = Field(
        min_length=1,
        max_length=256,
        pattern=_TOKEN_PATTERN,
        description="URI-reference of the producer, e.g. /linli/intake or urn:city-hotline.",
    )
    type: str = Field(
        min_length=1,
        max_length=128,
        pattern=_TOKEN_PATTERN,
        description="Versioned event type, e.g. linli.need.submitted.v1.",
    )
    specversion: Literal["1.0"] = Field(description="CloudEvents version: 1.0.")
    time: AwareDatetime = Field(description="When the occurrence happened (RFC 3339).")
    subject: str | None = Field(
        default=None,
        max_length=256,
        description="Subject of the event within the source, e.g. a need id.",
    )
    datacontenttype: Literal["application/json"] = Field(
        default="application/json", description="Media type of data."
    )
    dataschema: str | None = Field(
        default=None,
        max_length=512,
        pattern=_TOKEN_PATTERN,
        description="URI of the JSON Schema the event adheres to.",
    )
    community: CommunitySlug
    traceparent: str | None = Field(
        default=None,
        pattern=TRACEPARENT_PATTERN,
        description="W3C Trace Context traceparent of the producing span.",
    )
    data: DataT = Field(description="Event payload.")

    @field_validator("datacontenttype", mode="before")
    @classmethod
    def _strip_media_type_params(cls, value: Any) -> Any:
        # "application/json; charset=utf-8" is the same thing; JSON is always UTF-8.
        if isinstance(value, str):
            return value.split(";", 1)[0].strip().lower()
        return value

    @field_validator("traceparent")
    @classmethod
    def _check_traceparent(cls, value: str | None) -> str | None:
        if value is None:
            return None
        version, trace_id, parent_id, _ = value.split("-")
        if version == "ff" or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
            raise ValueError("traceparent has an invalid version or an all-zero id")
        return value


def new_event_id() -> str:
    """A UUIDv7 string: random enough to be unique, time-ordered for index locality."""
    ms = _time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def new_event(
    data: BaseModel,
    *,
    community: str,
    source: str,
    subject: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
    traceparent: str | None = None,
) -> CloudEvent[Any]:
    """Wrap registered event or command data in an envelope.

    `type` and `dataschema` come from the registry; `id` defaults to a new UUIDv7 and
    `time` to now (UTC). Raises UnregisteredModel for unregistered data and
    pydantic.ValidationError for invalid attributes (e.g. a bad community slug).
    """
    spec = spec_for(type(data))
    return CloudEvent[Any](
        id=id if id is not None else new_event_id(),
        source=source,
        type=spec.type,
        specversion=SPECVERSION,
        time=time if time is not None else datetime.now(UTC),
        subject=subject,
        datacontenttype="application/json",
        dataschema=spec.dataschema,
        community=community,
        traceparent=traceparent,
        data=data,
    )
