"""Consumed events: record one message per (event, recipient) in the inbox transaction.

The durable `notifications-people` (its name predates the package's; durables and inbox
rows keep it) is filtered to the types in `plan.CONSUMED`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from linli.contracts.events import NeedSubmitted
from linli.contracts.registry import spec_for
from linli.notifications.reach import push
from linli.servicekit.clock import Clock
from linli.servicekit.consume import Received, Subscriptions
from linli.servicekit.db import Conn

from . import store
from .plan import CONSUMED, intents_for
from .schedule import due_at, zone
from .templates import render

log = logging.getLogger(__name__)

CONSUMER = "notifications-people"


NEED_WAIT = timedelta(seconds=60)
# Events whose message goes to a resident's family, found through the need.
FAMILY_TYPES = frozenset({"meal.delivered", "visit.completed", "need.fulfilled"})


class NeedNotYetKnown(Exception):
    """The event arrived before the need it is about; retried later, not dead-lettered."""


def subscriptions(
    tz: ZoneInfo,
    clock: Clock,
    on_commit: Callable[[], None],
    maker: push.LinkMaker | None = None,
) -> Subscriptions:
    """The events that people are told about (and need.submitted, to find the family)."""
    subs = Subscriptions(
        CONSUMER,
        description="events that people are told about; one message per event and person",
        on_commit=on_commit,
    )

    async def use_case(conn: Conn, received: Received[Any]) -> int:
        return await record_messages(conn, received, tz=tz, clock=clock, maker=maker)

    for model in CONSUMED:
        subs.on(model, use_case)
    return subs


async def record_messages(
    conn: Conn,
    received: Received[Any],
    *,
    tz: ZoneInfo,
    clock: Clock,
    maker: push.LinkMaker | None = None,
) -> int:
    """Record one message per (event, recipient); returns how many were added.

    Runs in the consumer's transaction, which claimed the event's inbox row, so a
    redelivered event adds nothing.
    """
    event, data, community = received.event, received.data, received.community
    short = spec_for(type(data)).short
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
    when = clock.now()
    if need is None and short in FAMILY_TYPES and when - event.time < NEED_WAIT:
        # This event overtook its need.submitted (a redelivery after a failure); the
        # family is found through the need. Rolling back (the inbox claim too) makes the
        # consumer retry after a delay. Events about needs older than that (from before
        # this service knew them) go ahead without it.
        raise NeedNotYetKnown(str(need_id))
    added = 0
    for intent in [*intents_for(short, data, need, tz), *push.intents(data, tz, maker)]:
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
        log.debug("messages recorded", extra={"event_id": event.id, "count": added})
    return added
