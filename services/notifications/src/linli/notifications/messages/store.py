"""SQL of messages to people (tables from migration 0002_people)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from linli.servicekit.db import Conn

from .plan import Audience, Intent, NeedFacts, NewRecipient

_RECIPIENT_COLUMNS = (
    "id, community, role, resident_id, volunteer_id, channel, address, locale, "
    "quiet_start, quiet_end, timezone, events, created_at, partner_id"
)


async def remember_need(
    conn: Conn,
    *,
    need_id: uuid.UUID,
    community: str,
    resident_id: uuid.UUID,
    kind: str,
    urgency: str,
    submitted_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO people_needs (need_id, community, resident_id, kind, urgency, submitted_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (need_id) DO NOTHING",
        need_id,
        community,
        resident_id,
        kind,
        urgency,
        submitted_at,
    )


async def need_facts(conn: Conn, community: str, need_id: uuid.UUID) -> NeedFacts | None:
    row = await conn.fetchrow(
        "SELECT need_id, resident_id, kind, urgency, submitted_at FROM people_needs "
        "WHERE need_id = $1 AND community = $2",
        need_id,
        community,
    )
    if row is None:
        return None
    return NeedFacts(
        row["need_id"], row["resident_id"], row["kind"], row["urgency"], row["submitted_at"]
    )


async def recipients_for(
    conn: Conn, community: str, intent: Intent, event_short: str
) -> list[asyncpg.Record]:
    """Recipients of one intent who want this kind of event (empty `events` = all)."""
    sql = (
        "SELECT id, channel, locale, quiet_start, quiet_end, timezone FROM people_recipients "
        "WHERE community = $1 AND role = $2 AND (cardinality(events) = 0 OR $3 = ANY(events))"
    )
    args: list[Any] = [community, intent.audience.value, event_short]
    if intent.audience is Audience.FAMILY:
        sql += " AND resident_id = $4"
        args.append(intent.resident_id)
    elif intent.audience is Audience.VOLUNTEER:
        sql += " AND volunteer_id = $4"
        args.append(intent.volunteer_id)
    elif intent.audience is Audience.PARTNER:
        sql += " AND partner_id = $4"
        args.append(intent.partner_id)
    rows: list[asyncpg.Record] = await conn.fetch(sql + " ORDER BY id", *args)
    return rows


async def add_message(
    conn: Conn,
    *,
    event_id: str,
    event_type: str,
    recipient_id: uuid.UUID,
    community: str,
    channel: str,
    template: str,
    locale: str,
    subject: str,
    body: str,
    emergency: bool,
    due: datetime,
    traceparent: str | None,
) -> bool:
    """One message per (event, recipient); False when it existed already."""
    inserted = await conn.fetchval(
        """INSERT INTO people_messages
               (id, event_id, event_type, recipient_id, community, channel, template,
                locale, subject, body, emergency, next_attempt_at, traceparent)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           ON CONFLICT (event_id, recipient_id) DO NOTHING RETURNING true""",
        uuid.uuid4(),
        event_id,
        event_type,
        recipient_id,
        community,
        channel,
        template,
        locale,
        subject,
        body,
        emergency,
        due,
        traceparent,
    )
    return bool(inserted)


async def claim_due(pool: asyncpg.Pool, batch: int, lease_s: float) -> list[asyncpg.Record]:
    """Lease due messages to this sender; replicas never lease the same row."""
    rows: list[asyncpg.Record] = await pool.fetch(
        """WITH due AS (
               SELECT id FROM people_messages
               WHERE status = 'pending' AND next_attempt_at <= now()
                 AND (locked_until IS NULL OR locked_until < now())
               ORDER BY emergency DESC, next_attempt_at
               LIMIT $1
               FOR UPDATE SKIP LOCKED)
           UPDATE people_messages m
              SET locked_until = now() + make_interval(secs => $2)
             FROM due, people_recipients r
            WHERE m.id = due.id AND r.id = m.recipient_id
        RETURNING m.id, m.event_id, m.event_type, m.recipient_id, m.community, m.channel,
                  m.locale, m.subject, m.body, m.emergency, m.attempts, m.traceparent,
                  r.address, r.quiet_start, r.quiet_end, r.timezone""",
        batch,
        lease_s,
    )
    return rows


async def mark_sent(conn: Conn, message_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE people_messages SET status = 'sent', sent_at = now(), attempts = attempts + 1, "
        "locked_until = NULL, last_error = NULL WHERE id = $1",
        message_id,
    )


async def mark_retry(conn: Conn, message_id: uuid.UUID, error: str, due: datetime) -> None:
    await conn.execute(
        "UPDATE people_messages SET attempts = attempts + 1, last_error = $2, "
        "next_attempt_at = $3, locked_until = NULL WHERE id = $1",
        message_id,
        error,
        due,
    )


async def mark_postponed(conn: Conn, message_id: uuid.UUID, due: datetime) -> None:
    await conn.execute(
        "UPDATE people_messages SET next_attempt_at = $2, locked_until = NULL WHERE id = $1",
        message_id,
        due,
    )


async def mark_failed(conn: Conn, message_id: uuid.UUID, error: str) -> None:
    await conn.execute(
        "UPDATE people_messages SET status = 'failed', attempts = attempts + 1, "
        "last_error = $2, locked_until = NULL WHERE id = $1",
        message_id,
        error,
    )


# --- recipients (HTTP API) ------------------------------------------------------


async def add_recipient(conn: Conn, community: str, new: NewRecipient) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"""INSERT INTO people_recipients
               (id, community, role, resident_id, volunteer_id, channel, address, locale,
                quiet_start, quiet_end, timezone, events)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            RETURNING {_RECIPIENT_COLUMNS}""",
        uuid.uuid4(),
        community,
        new.role,
        new.resident_id,
        new.volunteer_id,
        new.channel,
        new.address,
        new.locale,
        new.quiet_start,
        new.quiet_end,
        new.timezone,
        new.events,
    )
    assert row is not None
    return row


async def list_recipients(conn: Conn, community: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_RECIPIENT_COLUMNS} FROM people_recipients WHERE community = $1 "
        "ORDER BY created_at, id",
        community,
    )
    return rows


async def delete_recipient(conn: Conn, community: str, recipient_id: uuid.UUID) -> bool:
    result: str = await conn.execute(
        "DELETE FROM people_recipients WHERE id = $1 AND community = $2",
        recipient_id,
        community,
    )
    return result.endswith(" 1")


# --- a partner's duty contacts (ADR 0043) -----------------------------------------------


async def partner_recipients(
    conn: Conn, community: str, partner_id: uuid.UUID
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_RECIPIENT_COLUMNS} FROM people_recipients "
        "WHERE community = $1 AND role = 'partner' AND partner_id = $2 ORDER BY created_at, id",
        community,
        partner_id,
    )
    return rows


async def replace_partner_recipients(
    conn: Conn, community: str, partner_id: uuid.UUID, contacts: list[NewRecipient]
) -> None:
    """The partner's duty contacts become `contacts` (their pending messages go with the
    old rows)."""
    await conn.execute(
        "DELETE FROM people_recipients WHERE community = $1 AND role = 'partner' "
        "AND partner_id = $2",
        community,
        partner_id,
    )
    for new in contacts:
        await conn.execute(
            """INSERT INTO people_recipients
                   (id, community, role, partner_id, channel, address, locale,
                    quiet_start, quiet_end, timezone, events)
               VALUES ($1, $2, 'partner', $3, $4, $5, $6, $7, $8, $9, $10)""",
            uuid.uuid4(),
            community,
            partner_id,
            new.channel,
            new.address,
            new.locale,
            new.quiet_start,
            new.quiet_end,
            new.timezone,
            new.events,
        )
