"""All SQL of webhooks (tables from migration 0001_notifications): subscriptions, their
deliveries and attempts, need kinds and parked events. Values are always bound
parameters; identifiers never vary."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from linli.servicekit.db import Conn

DeliveryFields = tuple[str, str, str, datetime | None, bytes]
"""(event id, event type, community, event time, structured body) of one event."""


def _count(status: str) -> int:
    """Rows touched, from a command status such as `UPDATE 3`."""
    return int(status.split()[-1])


# --- subscriptions (the API) ------------------------------------------------------------


async def insert_subscription(
    conn: Conn,
    *,
    owner: uuid.UUID,
    url: str,
    communities: list[str],
    event_types: list[str],
    need_kinds: list[str],
    description: str,
    secret_sealed: str,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """INSERT INTO subscriptions
               (id, owner_credential, url, communities, event_types, need_kinds, description,
                secret_sealed)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
        uuid.uuid4(),
        owner,
        url,
        communities,
        event_types,
        need_kinds,
        description,
        secret_sealed,
    )
    assert row is not None
    return row


async def owned_subscription(
    conn: Conn, sub_id: uuid.UUID, owner: uuid.UUID
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM subscriptions WHERE id = $1 AND owner_credential = $2", sub_id, owner
    )
    return row


async def subscriptions_of(conn: Conn, owner: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM subscriptions WHERE owner_credential = $1 ORDER BY created_at", owner
    )
    return rows


async def subscriptions_in(conn: Conn, community: str) -> list[asyncpg.Record]:
    """Every subscription that covers a community, whoever owns it (the operator view)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM subscriptions WHERE $1 = ANY(communities) AND partner_id IS NULL "
        "ORDER BY created_at",
        community,
    )
    return rows


REVOKED_REASON = "credential revoked"


async def disable_revoked(conn: Conn, owners: list[uuid.UUID]) -> int:
    """Disable the subscriptions of revoked credentials (ADR 0030); how many changed.

    Their rows still pending stay as they are (the attempts log keeps what was sent), and
    nothing new is queued for them: fan-out takes active and paused subscriptions only.
    """
    status: str = await conn.execute(
        "UPDATE subscriptions SET state = 'disabled', disabled_reason = $2, updated_at = now() "
        "WHERE owner_credential = ANY($1::uuid[]) "
        "AND (state <> 'disabled' OR disabled_reason IS DISTINCT FROM $2)",
        owners,
        REVOKED_REASON,
    )
    return _count(status)


async def set_state(conn: Conn, sub_id: uuid.UUID, state: str) -> asyncpg.Record:
    """A new state; becoming active also clears why it was disabled or failing."""
    row = await conn.fetchrow(
        "UPDATE subscriptions SET state = $2, updated_at = now(), "
        "disabled_reason = CASE WHEN $2 = 'active' THEN NULL ELSE disabled_reason END, "
        "failing_since = CASE WHEN $2 = 'active' THEN NULL ELSE failing_since END "
        "WHERE id = $1 RETURNING *",
        sub_id,
        state,
    )
    assert row is not None
    return row


async def rotate_secret(
    conn: Conn, sub_id: uuid.UUID, secret_sealed: str, previous_until: datetime
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "UPDATE subscriptions SET previous_secret_sealed = secret_sealed, "
        "previous_secret_until = $3, secret_sealed = $2, updated_at = now() "
        "WHERE id = $1 RETURNING *",
        sub_id,
        secret_sealed,
        previous_until,
    )
    assert row is not None
    return row


async def delete_subscription(conn: Conn, sub_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM subscriptions WHERE id = $1", sub_id)


async def attempts(
    conn: Conn, sub_id: uuid.UUID, limit: int, event_id: str | None
) -> list[asyncpg.Record]:
    """The attempts log of one endpoint, newest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT event_id, attempt, started_at, status, latency_ms, error, outcome "
        "FROM delivery_attempts WHERE subscription_id = $1 "
        "AND ($3::text IS NULL OR event_id = $3) ORDER BY id DESC LIMIT $2",
        sub_id,
        limit,
        event_id,
    )
    return rows


async def pending_count(conn: Conn, sub_id: uuid.UUID) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM deliveries WHERE subscription_id = $1 AND state = 'pending'",
        sub_id,
    )
    return int(value or 0)


async def send_pending_now(conn: Conn, sub_id: uuid.UUID) -> None:
    """Pending rows waiting for a later attempt become due at once (on resume)."""
    await conn.execute(
        "UPDATE deliveries SET next_attempt_at = now() "
        "WHERE subscription_id = $1 AND state = 'pending' AND next_attempt_at > now()",
        sub_id,
    )


async def replay(
    conn: Conn,
    sub_id: uuid.UUID,
    *,
    event_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> int:
    """Make recorded deliveries pending again (one event, or by event time); how many."""
    status: str = await conn.execute(
        """UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),
               locked_until = NULL, finished_at = NULL
           WHERE subscription_id = $1
             AND ($2::text IS NULL OR event_id = $2)
             AND ($3::timestamptz IS NULL OR event_time >= $3)
             AND ($4::timestamptz IS NULL OR event_time < $4)""",
        sub_id,
        event_id,
        since,
        until,
    )
    return _count(status)


# --- fan-out (the consumer) -------------------------------------------------------------


async def lock_need(conn: Conn, need_id: uuid.UUID) -> None:
    """Order the transactions that learn and use one need's kind (until commit)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('linli-need-kind:' || $1::text))", str(need_id)
    )


async def need_kind(conn: Conn, need_id: uuid.UUID) -> str | None:
    kind: str | None = await conn.fetchval(
        "SELECT kind FROM need_kinds WHERE need_id = $1", need_id
    )
    return kind


async def remember_need_kind(conn: Conn, need_id: uuid.UUID, kind: str) -> list[DeliveryFields]:
    """Record a need's kind and take the events parked waiting for it, in one statement."""
    rows = await conn.fetch(
        "WITH remembered AS ("
        "INSERT INTO need_kinds (need_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING) "
        "DELETE FROM parked_events WHERE need_id = $1 "
        "RETURNING event_id, event_type, community, event_time, payload",
        need_id,
        kind,
    )
    return [
        (r["event_id"], r["event_type"], r["community"], r["event_time"], bytes(r["payload"]))
        for r in rows
    ]


async def park(conn: Conn, need_id: uuid.UUID, fields: DeliveryFields) -> None:
    """Keep an event until its need's kind is known."""
    await conn.execute(
        "INSERT INTO parked_events "
        "(need_id, event_id, event_type, community, event_time, payload) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        need_id,
        *fields,
    )


async def fan_out(
    conn: Conn,
    fields: DeliveryFields,
    kind: str | None,
    about: uuid.UUID | None,
    *,
    only_kind_filtered: bool,
) -> int:
    """One delivery per matching subscription (active or paused); how many were added.

    `about`: the subscription a `notification.failed` is about. Its owner is told through
    its other subscriptions; no other app learns about it.
    """
    status: str = await conn.execute(
        """INSERT INTO deliveries
               (subscription_id, event_id, event_type, community, event_time, payload)
           SELECT id, $1, $2, $3, $4, $5 FROM subscriptions
           WHERE state IN ('active', 'paused') AND partner_id IS NULL
             AND $3 = ANY(communities)
             AND (cardinality(event_types) = 0 OR $2 = ANY(event_types))
             AND ((cardinality(need_kinds) = 0 AND NOT $8) OR $6::text = ANY(need_kinds))
             AND ($7::uuid IS NULL OR (id <> $7 AND owner_credential =
                  (SELECT owner_credential FROM subscriptions WHERE id = $7)))
           ON CONFLICT (subscription_id, event_id) DO NOTHING""",
        *fields,
        kind,
        about,
        only_kind_filtered,
    )
    return _count(status)


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes the delivery worker of one schema."""
    return f"{schema}_deliveries"


# --- sending (the delivery worker) ------------------------------------------------------


async def endpoints_due(conn: Conn, limit: int) -> list[uuid.UUID]:
    """Active endpoints with rows due and not leased, the longest waiting first."""
    rows = await conn.fetch(
        """SELECT d.subscription_id FROM deliveries d
           JOIN subscriptions s ON s.id = d.subscription_id AND s.state = 'active'
           WHERE d.state = 'pending' AND d.next_attempt_at <= now()
             AND (d.locked_until IS NULL OR d.locked_until < now())
           GROUP BY d.subscription_id
           ORDER BY min(d.next_attempt_at)
           LIMIT $1""",
        limit,
    )
    return [r["subscription_id"] for r in rows]


async def lock_endpoint(conn: Conn, sub_id: uuid.UUID) -> asyncpg.Record | None:
    """The active subscription, locked for claiming; None when another replica has it."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, url, secret_sealed, previous_secret_sealed, previous_secret_until "
        "FROM subscriptions WHERE id = $1 AND state = 'active' "
        "FOR UPDATE SKIP LOCKED",
        sub_id,
    )
    return row


async def leased_count(conn: Conn, sub_id: uuid.UUID) -> int:
    """Rows of an endpoint in flight anywhere (an unexpired lease)."""
    value = await conn.fetchval(
        "SELECT count(*) FROM deliveries WHERE subscription_id = $1 "
        "AND state = 'pending' AND locked_until > now()",
        sub_id,
    )
    return int(value or 0)


async def lease_due(
    conn: Conn, sub_id: uuid.UUID, take: int, lease_s: float
) -> list[asyncpg.Record]:
    """Lease up to `take` due rows of one endpoint, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """UPDATE deliveries SET locked_until = now() + make_interval(secs => $3)
           WHERE id IN (
               SELECT id FROM deliveries
               WHERE subscription_id = $1 AND state = 'pending'
                 AND next_attempt_at <= now()
                 AND (locked_until IS NULL OR locked_until < now())
               ORDER BY next_attempt_at, id LIMIT $2
               FOR UPDATE SKIP LOCKED)
           RETURNING id, event_id, event_type, community, payload, attempts""",
        sub_id,
        take,
        lease_s,
    )
    return rows


async def record_attempt(
    conn: Conn,
    *,
    delivery_id: int,
    sub_id: uuid.UUID,
    event_id: str,
    attempt: int,
    status: int | None,
    latency_ms: int,
    error: str | None,
    outcome: str,
) -> None:
    """One line of the attempts log (never a body); it started `latency_ms` ago."""
    await conn.execute(
        """INSERT INTO delivery_attempts
               (delivery_id, subscription_id, event_id, attempt, started_at, status,
                latency_ms, error, outcome)
           VALUES ($1, $2, $3, $4,
                   now() - make_interval(secs => $6::float8 / 1000), $5, $6, $7, $8)""",
        delivery_id,
        sub_id,
        event_id,
        attempt,
        status,
        latency_ms,
        error,
        outcome,
    )


async def mark_delivered(conn: Conn, delivery_id: int, attempts: int, status: int | None) -> None:
    await conn.execute(
        "UPDATE deliveries SET state = 'delivered', attempts = $2, last_status = $3, "
        "last_error = NULL, locked_until = NULL, finished_at = now() WHERE id = $1",
        delivery_id,
        attempts,
        status,
    )


async def mark_gone(conn: Conn, delivery_id: int, attempts: int, error: str | None) -> None:
    """410: the row stays pending, so resuming the endpoint sends it again."""
    await conn.execute(
        "UPDATE deliveries SET attempts = $2, last_status = 410, last_error = $3, "
        "locked_until = NULL WHERE id = $1",
        delivery_id,
        attempts,
        error,
    )


async def mark_failed(
    conn: Conn, delivery_id: int, attempts: int, status: int | None, error: str | None
) -> None:
    """The retry schedule is spent."""
    await conn.execute(
        "UPDATE deliveries SET state = 'failed', attempts = $2, last_status = $3, "
        "last_error = $4, locked_until = NULL, finished_at = now() WHERE id = $1",
        delivery_id,
        attempts,
        status,
        error,
    )


async def schedule_retry(
    conn: Conn,
    delivery_id: int,
    attempts: int,
    status: int | None,
    error: str | None,
    delay_s: float,
) -> None:
    await conn.execute(
        "UPDATE deliveries SET attempts = $2, last_status = $3, last_error = $4, "
        "locked_until = NULL, "
        "next_attempt_at = now() + make_interval(secs => $5) WHERE id = $1",
        delivery_id,
        attempts,
        status,
        error,
        delay_s,
    )


async def clear_failing(conn: Conn, sub_id: uuid.UUID) -> None:
    """A success ends the endpoint's failing streak."""
    await conn.execute(
        "UPDATE subscriptions SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
        sub_id,
    )


async def note_failing(conn: Conn, sub_id: uuid.UUID) -> float | None:
    """Start (or continue) the endpoint's failing streak; seconds it has lasted."""
    value: float | None = await conn.fetchval(
        "UPDATE subscriptions SET failing_since = coalesce(failing_since, now()) "
        "WHERE id = $1 RETURNING extract(epoch FROM now() - failing_since)::float8",
        sub_id,
    )
    return value


async def disable(conn: Conn, sub_id: uuid.UUID, reason: str) -> bool:
    """Disable an endpoint; False when it already was."""
    status: str = await conn.execute(
        "UPDATE subscriptions SET state = 'disabled', disabled_reason = $2, "
        "updated_at = now() WHERE id = $1 AND state <> 'disabled'",
        sub_id,
        reason,
    )
    return _count(status) == 1


# --- a partner's own endpoint (ADR 0043) -------------------------------------------------


async def partner_subscription(
    conn: Conn, community: str, partner_id: uuid.UUID
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM subscriptions WHERE partner_id = $1 AND communities = ARRAY[$2]::text[]",
        partner_id,
        community,
    )
    return row


async def insert_partner_subscription(
    conn: Conn,
    *,
    owner: uuid.UUID,
    partner_id: uuid.UUID,
    community: str,
    url: str,
    secret_sealed: str,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """INSERT INTO subscriptions
               (id, owner_credential, url, communities, description, secret_sealed, partner_id)
           VALUES ($1, $2, $3, ARRAY[$4]::text[], 'partner delivery', $5, $6) RETURNING *""",
        uuid.uuid4(),
        owner,
        url,
        community,
        secret_sealed,
        partner_id,
    )
    assert row is not None
    return row


async def delete_partner_subscription(conn: Conn, community: str, partner_id: uuid.UUID) -> int:
    status: str = await conn.execute(
        "DELETE FROM subscriptions WHERE partner_id = $1 AND communities = ARRAY[$2]::text[]",
        partner_id,
        community,
    )
    return _count(status)


async def push_to_partner(conn: Conn, fields: DeliveryFields, partner_id: uuid.UUID) -> int:
    """One delivery of a partner-specific body to that partner's endpoint, if any."""
    status: str = await conn.execute(
        """INSERT INTO deliveries
               (subscription_id, event_id, event_type, community, event_time, payload)
           SELECT id, $1, $2, $3, $4, $5 FROM subscriptions
           WHERE partner_id = $6 AND state IN ('active', 'paused') AND $3 = ANY(communities)
           ON CONFLICT (subscription_id, event_id) DO NOTHING""",
        *fields,
        partner_id,
    )
    return _count(status)
