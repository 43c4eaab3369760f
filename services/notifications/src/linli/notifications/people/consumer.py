"""Consumed events: record one message per (event, recipient) in the inbox transaction."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from linli.contracts.events import NeedSubmitted
from linli.contracts.subjects import SubjectError, parse_subject
from linli.contracts.types import Reason
from linli.servicekit.inbox import claim
from linli.servicekit.messaging import PoisonMessage, decode_event

from . import store
from .plan import CONSUMED_TYPES, intents_for, short_type
from .schedule import due_at, zone
from .templates import render

log = logging.getLogger(__name__)

CONSUMER = "notifications-people"


def consumes(subject: str) -> bool:
    """Whether a message on `subject` matters here (malformed subjects do: to reject)."""
    try:
        return short_type(parse_subject(subject).type) in CONSUMED_TYPES
    except SubjectError:
        return True


def _poison(field: str, message: str, code: str) -> PoisonMessage:
    return PoisonMessage([Reason(field=field, message=message, code=code)])


NEED_WAIT = timedelta(seconds=60)
# Events whose message goes to a resident's family, found through the need.
FAMILY_TYPES = frozenset({"meal.delivered", "visit.completed", "need.fulfilled"})


class NeedNotYetKnown(Exception):
    """The event arrived before the need it is about; retried later, not dead-lettered."""


async def handle_message(
    pool: asyncpg.Pool,
    *,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    tz: ZoneInfo,
    consumer: str = CONSUMER,
    now: datetime | None = None,
) -> int:
    """Apply one event; returns how many messages it added (0 on a redelivery)."""
    try:
        parsed = parse_subject(subject)
    except SubjectError as exc:
        raise _poison("subject", str(exc)[:500], "invalid_subject") from None
    event, data = decode_event(payload, headers)
    if event.type != parsed.type:
        raise _poison("type", "the subject does not carry this type", "subject_mismatch")
    if event.community != parsed.community:
        raise _poison("community", "community differs from the subject's", "community_mismatch")
    short = short_type(event.type)
    if short not in CONSUMED_TYPES:
        return 0
    community = event.community
    added = 0
    async with pool.acquire() as conn, conn.transaction():
        if not await claim(conn, consumer, event.id):
            return 0
        if isinstance(data, NeedSubmitted):
            await store.remember_need(
                conn,
                need_id=data.need_id,
                community=community,
                resident_id=data.resident_id,
                kind=data.kind.value,
                urgency=data.urgency.value,
                submitted_at=data.submitted_at,
            )
            return 0
        need_id = getattr(data, "need_id", None)
        need = await store.need_facts(conn, community, need_id) if need_id else None
        when = now or datetime.now(UTC)
        if need is None and short in FAMILY_TYPES and when - event.time < NEED_WAIT:
            # Events of one pull batch are handled concurrently, so this event may be ahead
            # of its need.submitted; the family is found through it. Rolling back (the
            # inbox claim too) makes the consumer retry after a delay. Events about needs
            # older than that (from before this service knew them) go ahead without it.
            raise NeedNotYetKnown(str(need_id))
        for intent in intents_for(short, data, need, tz):
            for r in await store.recipients_for(conn, community, intent, short):
                subject_text, body = render(intent.template, r["locale"], intent.params)
                due = due_at(
                    when,
                    emergency=intent.emergency,
                    quiet_start=r["quiet_start"],
                    quiet_end=r["quiet_end"],
                    tz=zone(r["timezone"]),
                )
                if await store.add_message(
                    conn,
                    event_id=event.id,
                    event_type=event.type,
                    recipient_id=r["id"],
                    community=community,
                    channel=r["channel"],
                    template=intent.template,
                    locale=r["locale"],
                    subject=subject_text,
                    body=body,
                    emergency=intent.emergency,
                    due=due,
                    traceparent=event.traceparent,
                ):
                    added += 1
    if added:
        log.info(
            "messages recorded",
            extra={"event_id": event.id, "type": event.type, "count": added},
        )
    return added
