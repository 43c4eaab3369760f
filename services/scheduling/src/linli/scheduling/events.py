"""Consumed events: decode a JetStream message, check it, hand it to the use cases.

Anything that can never be processed (not a CloudEvent, a subject that disagrees with
the type or the community, data that does not validate) is a `PoisonMessage`: it is
kept whole in the dead letters at once. Events of types scheduling does not consume
(including its own) are acknowledged without touching the database.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from pydantic import BaseModel

from linli.contracts.binding import from_nats, parse_data
from linli.contracts.envelope import EnvelopeError
from linli.contracts.events import (
    DeliveryFailed,
    MealDelivered,
    NeedCancelled,
    NeedSubmitted,
    PartnerAccepted,
    PartnerDeclined,
    RepairCompleted,
    SlotPublished,
    VisitCompleted,
    VolunteerConfirmed,
    VolunteerDeclined,
)
from linli.contracts.registry import spec_for
from linli.contracts.subjects import SubjectError, parse_subject
from linli.contracts.types import Reason
from linli.servicekit.messaging import PoisonMessage

from .service import Scheduler

log = logging.getLogger(__name__)

CONSUMER = "scheduling"

CONSUMED: dict[str, type[BaseModel]] = {
    spec_for(model).type: model
    for model in (
        NeedSubmitted,
        NeedCancelled,
        SlotPublished,
        PartnerAccepted,
        PartnerDeclined,
        VolunteerConfirmed,
        VolunteerDeclined,
        MealDelivered,
        VisitCompleted,
        RepairCompleted,
        DeliveryFailed,
    )
}
"""CloudEvents type → data model of every event scheduling consumes."""


def consumes(subject: str) -> bool:
    """Whether a message on `subject` is for scheduling (malformed ones are: to reject)."""
    try:
        return parse_subject(subject).type in CONSUMED
    except SubjectError:
        return True


def _poison(field: str, message: str, code: str) -> PoisonMessage:
    return PoisonMessage([Reason(field=field, message=message, code=code)])


async def handle_message(
    pool: asyncpg.Pool,
    scheduler: Scheduler,
    *,
    consumer: str,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
) -> bool:
    """Decode and apply one event; False when it had been applied before."""
    try:
        parsed = parse_subject(subject)
    except SubjectError as exc:
        raise _poison("subject", str(exc)[:500], "invalid_subject") from None
    try:
        event = from_nats(payload, headers)
    except EnvelopeError as exc:
        raise PoisonMessage(list(exc.reasons)) from None
    if event.type != parsed.type:
        raise _poison("type", "the subject does not carry this type", "subject_mismatch")
    if event.community != parsed.community:
        raise _poison("community", "community differs from the subject's", "community_mismatch")
    model = CONSUMED[event.type]
    try:
        data: Any = parse_data(event, model)
    except EnvelopeError as exc:
        raise PoisonMessage(list(exc.reasons)) from None
    applied = await scheduler.handle(pool, consumer, event, data)
    log.debug("event handled", extra={"type": event.type, "applied": applied})
    return applied
