"""Consumed events: every domain event becomes one delivery per matching subscription,
written in the consumer's inbox transaction (so a redelivered event adds nothing).

The durable `notifications` takes every event of any type and version
(`on_every_event`), so a producer's new version still reaches the apps."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from linli.contracts.binding import CE_HEADER_PREFIX, to_structured
from linli.contracts.envelope import CloudEvent
from linli.notifications.reach import push
from linli.servicekit.consume import Received, Subscriptions
from linli.servicekit.db import Conn

from . import store

CONSUMER = "notifications"
NOTIFICATION_FAILED = "linli.notification.failed.v1"


def structured_body(data: bytes, headers: Mapping[str, str], event: CloudEvent[Any]) -> bytes:
    """The structured CloudEvent JSON: the message body as on the stream, or built from
    a binary-mode message's ce- headers."""
    if any(k.lower().startswith(CE_HEADER_PREFIX) for k in headers):
        body, _ = to_structured(event)
        return body
    return data


def need_kind_in(data: Any) -> tuple[uuid.UUID | None, str | None]:
    """(need id, need kind) when the event data says them."""
    if not isinstance(data, dict):
        return None, None
    need_id: uuid.UUID | None = None
    raw_id = data.get("need_id")
    if raw_id is not None:
        try:
            need_id = uuid.UUID(str(raw_id))
        except ValueError:
            need_id = None
    kind = data.get("kind")
    return need_id, kind if isinstance(kind, str) else None


def _failed_subscription(ce_type: str, data: Any) -> uuid.UUID | None:
    if ce_type != NOTIFICATION_FAILED or not isinstance(data, dict):
        return None
    try:
        return uuid.UUID(str(data.get("subscription_id")))
    except ValueError:
        return None


def subscriptions(
    on_commit: Callable[[], None], maker: push.LinkMaker | None = None
) -> Subscriptions:
    """Every domain event, of any type or version, fanned out to matching subscriptions
    (and, with a link `maker`, pushed to the partner it is for: ADR 0043)."""
    subs = Subscriptions(
        CONSUMER,
        description="every domain event; one webhook delivery per matching subscription",
        on_commit=on_commit,
    )

    async def use_case(conn: Conn, received: Received[Any]) -> int:
        return await record_deliveries(conn, received, maker=maker)

    subs.on_every_event(use_case)
    return subs


async def record_deliveries(
    conn: Conn, received: Received[Any], *, maker: push.LinkMaker | None = None
) -> int:
    """Record the deliveries of one event; returns how many were added.

    Subscriptions filtering on need kinds need the kind of events that do not carry it
    (meal.delivered, need.cancelled, ...): it is remembered from the need's events that
    do. An event that arrives before its need's kind is known is parked and fanned out
    to those subscriptions when the kind arrives; a per-need advisory lock orders the
    two transactions.
    """
    event = received.event
    body = structured_body(received.body, received.headers, event)
    data = received.data
    need_id, kind = need_kind_in(data)
    about = _failed_subscription(event.type, data)
    fields: store.DeliveryFields = (event.id, event.type, event.community, event.time, body)
    added = 0
    if need_id is not None:
        await store.lock_need(conn, need_id)
        if kind is not None:
            added += await _remember_kind(conn, need_id, kind)
        else:
            kind = await store.need_kind(conn, need_id)
    added += await store.fan_out(conn, fields, kind, about, only_kind_filtered=False)
    if need_id is not None and kind is None:
        await store.park(conn, need_id, fields)
    if maker is not None:
        added += await push.push_to_partner(conn, fields, data, maker)
    # The deliveries table's trigger wakes the delivery workers at commit.
    return added


async def _remember_kind(conn: Conn, need_id: uuid.UUID, kind: str) -> int:
    """Record a need's kind and release the events parked waiting for it."""
    added = 0
    for fields in await store.remember_need_kind(conn, need_id, kind):
        added += await store.fan_out(conn, fields, kind, None, only_kind_filtered=True)
    return added
