"""Linli event and command contracts.

The CloudEvents envelope, the event catalogue, the registry of versioned types,
NATS subjects and the NATS binding. Services depend on this package and on nothing
of each other.
"""

from linli.contracts.binding import (
    from_nats,
    parse_data,
    reasons_from_validation_error,
    to_binary,
    to_structured,
)
from linli.contracts.envelope import (
    MAX_EVENT_BYTES,
    SPECVERSION,
    CloudEvent,
    EnvelopeError,
    new_event,
    new_event_id,
)
from linli.contracts.registry import (
    REGISTRY,
    EventSpec,
    UnknownEventType,
    UnregisteredModel,
    lookup,
    spec_for,
)
from linli.contracts.subjects import (
    EVENTS_PREFIX,
    INGRESS_PREFIX,
    ParsedSubject,
    SubjectError,
    event_subject,
    ingress_subject,
    parse_subject,
    subject_for,
)
from linli.contracts.types import Reason

__all__ = [
    "EVENTS_PREFIX",
    "INGRESS_PREFIX",
    "MAX_EVENT_BYTES",
    "REGISTRY",
    "SPECVERSION",
    "CloudEvent",
    "EnvelopeError",
    "EventSpec",
    "ParsedSubject",
    "Reason",
    "SubjectError",
    "UnknownEventType",
    "UnregisteredModel",
    "event_subject",
    "from_nats",
    "ingress_subject",
    "lookup",
    "new_event",
    "new_event_id",
    "parse_data",
    "parse_subject",
    "reasons_from_validation_error",
    "spec_for",
    "subject_for",
    "to_binary",
    "to_structured",
]
