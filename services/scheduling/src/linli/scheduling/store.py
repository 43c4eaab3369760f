"""All of scheduling's SQL. Values are always bound parameters; identifiers never vary.

Concurrency (ADR: reservation without overselling). Several replicas run these
statements at once, under READ COMMITTED:

* A unit of capacity is taken only by `UPDATE slots SET reserved = reserved + 1 ...
  WHERE reserved < capacity`; the row lock and the re-checked condition make it
  impossible to oversell, and the CHECK constraint would refuse it anyway.
* A need is changed only while its row is locked (`FOR UPDATE`), and at most one
  assignment per need can be active (a partial unique index).
* Lock order is need, then slot. Matching skips slots and needs another transaction
  holds (`SKIP LOCKED`) instead of waiting, so two replicas never deadlock on them.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from linli.contracts.events import SlotPublished
from linli.contracts.types import NeedKind, PriorityGroup, Urgency
from linli.servicekit.db import Conn

from .rules import NeedFacts, SlotFacts

NEED_COLUMNS = (
    "id, community, resident_id, kind, urgency, priority_group, rank, window_earliest, "
    "window_latest, compound, details, submitted_at, state, current_assignment, attempts, "
    "received_at, updated_at, traceparent, two_leg, prepare_assignment"
)
SLOT_COLUMNS = (
    "id, community, kind, provider_kind, provider_id, window_earliest, window_latest, "
    "capacity, compounds, reserved, published_at, updated_at, directed_need, withdrawn_at, leg"
)
ASSIGNMENT_COLUMNS = (
    "id, reservation_id, need_id, slot_id, provider_kind, provider_id, attempt, state, "
    "offered_at, expires_at, answered_at, closed_at, release_reason, leg"
)
TIMER_COLUMNS = (
    "id, kind, need_id, assignment_id, clock, deadline, due_at, traceparent, created_at, "
    "fired_at, outcome, attempts"
)
POLICY_COLUMNS = (
    "offer_timeout_s",
    "offer_timeout_emergency_s",
    "emergency_accept_s",
    "emergency_onsite_s",
    "priority_repair_s",
    "routine_repair_s",
    "at_risk_fraction",
)

# The slot a need may take (rules.slot_fits); $1 community, $2 kind, $3 need window
# earliest, $4 need window latest, $5 need compound, $6 need id, $7 now, $8 the legs the
# slot may serve ('whole' for a slot without a leg; ADR 0044).
_SLOT_FITS = """
    s.community = $1 AND s.kind = $2 AND s.reserved < s.capacity AND s.directed_need IS NULL
    AND s.withdrawn_at IS NULL
    AND provider_available(s.provider_kind, s.provider_id, GREATEST(s.window_earliest, $3),
                           LEAST(s.window_latest, $4))
    AND COALESCE(s.leg, 'whole') = ANY ($8::text[])
    AND s.window_earliest < $4 AND s.window_latest > $3 AND s.window_latest > $7 AND $4 > $7
    AND (cardinality(s.compounds) = 0 OR $5::text = ANY (s.compounds))
    AND NOT EXISTS (
        SELECT 1 FROM need_exclusions x
        WHERE x.need_id = $6 AND x.provider_kind = s.provider_kind
          AND x.provider_id = s.provider_id)
"""


def need_facts(row: asyncpg.Record) -> NeedFacts:
    return NeedFacts(
        id=row["id"],
        kind=NeedKind(row["kind"]),
        urgency=Urgency(row["urgency"]),
        priority_group=PriorityGroup(row["priority_group"]),
        window_earliest=row["window_earliest"],
        window_latest=row["window_latest"],
        compound=row["compound"],
        submitted_at=row["submitted_at"],
    )


def slot_facts(row: asyncpg.Record) -> SlotFacts:
    return SlotFacts(
        id=row["id"],
        kind=NeedKind(row["kind"]),
        provider_kind=row["provider_kind"],
        provider_id=row["provider_id"],
        window_earliest=row["window_earliest"],
        window_latest=row["window_latest"],
        capacity=row["capacity"],
        reserved=row["reserved"],
        compounds=tuple(row["compounds"]),
        published_at=row["published_at"],
    )


def details_of(row: asyncpg.Record) -> dict[str, Any]:
    value = row["details"]
    return json.loads(value) if isinstance(value, str) else dict(value)


# --- slots --------------------------------------------------------------------


async def upsert_slot(conn: Conn, community: str, slot: SlotPublished) -> asyncpg.Record | None:
    """Insert a slot, or take a re-publication's window and capacity.

    Capacity never drops below what is already reserved: reservations made in good
    faith stand, and the slot is simply full. None when the id belongs to a slot of
    another community.
    """
    row = await conn.fetchrow(
        f"INSERT INTO slots (id, community, kind, provider_kind, provider_id, window_earliest, "
        f"window_latest, capacity, compounds, published_at, leg) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
        f"ON CONFLICT (id) DO UPDATE SET window_earliest = EXCLUDED.window_earliest, "
        f"window_latest = EXCLUDED.window_latest, "
        f"capacity = GREATEST(EXCLUDED.capacity, slots.reserved, 1), "
        f"compounds = EXCLUDED.compounds, published_at = EXCLUDED.published_at, "
        f"updated_at = now() "
        f"WHERE slots.community = EXCLUDED.community "
        f"RETURNING {SLOT_COLUMNS}",
        slot.slot_id,
        community,
        slot.kind.value,
        slot.provider.kind.value,
        slot.provider.id,
        slot.window.earliest,
        slot.window.latest,
        slot.capacity,
        list(slot.compounds),
        slot.published_at,
        slot.leg.value if slot.leg else None,
    )
    return row


async def lock_slot(conn: Conn, slot_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE id = $1 FOR UPDATE", slot_id
    )


MAIN_LEGS = ("whole", "prepare")
"""What a need not (yet) served in two legs may take: a slot serving the whole need, or
a canteen's `prepare` slot, which makes it a two-leg need (ADR 0044)."""


async def reserve_best_slot(
    conn: Conn, need: asyncpg.Record, now: datetime, *, legs: tuple[str, ...] = MAIN_LEGS
) -> asyncpg.Record | None:
    """Take one unit of the earliest-starting slot that fits the need, or None.

    Slots another transaction holds are skipped (`candidate_exists` tells a busy
    slot from none at all). `legs`: which slots may serve (ADR 0044).
    """
    return await conn.fetchrow(
        f"WITH candidate AS ("
        f"  SELECT s.id FROM slots s WHERE {_SLOT_FITS}"
        f"  ORDER BY s.window_earliest, s.published_at, s.id LIMIT 1"
        f"  FOR UPDATE SKIP LOCKED) "
        f"UPDATE slots SET reserved = reserved + 1, updated_at = now() FROM candidate "
        f"WHERE slots.id = candidate.id AND slots.reserved < slots.capacity "
        f"RETURNING {', '.join('slots.' + c.strip() for c in SLOT_COLUMNS.split(','))}",
        need["community"],
        need["kind"],
        need["window_earliest"],
        need["window_latest"],
        need["compound"],
        need["id"],
        now,
        list(legs),
    )


async def candidate_exists(
    conn: Conn, need: asyncpg.Record, now: datetime, *, legs: tuple[str, ...] = MAIN_LEGS
) -> bool:
    """Whether a fitting slot with capacity exists as last committed (maybe locked)."""
    return bool(
        await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM slots s WHERE {_SLOT_FITS})",
            need["community"],
            need["kind"],
            need["window_earliest"],
            need["window_latest"],
            need["compound"],
            need["id"],
            now,
            list(legs),
        )
    )


async def reserve_slot(conn: Conn, slot_id: uuid.UUID) -> asyncpg.Record | None:
    """Take one unit of a given slot; None when it is full."""
    return await conn.fetchrow(
        f"UPDATE slots SET reserved = reserved + 1, updated_at = now() "
        f"WHERE id = $1 AND reserved < capacity RETURNING {SLOT_COLUMNS}",
        slot_id,
    )


async def release_slot(conn: Conn, slot_id: uuid.UUID) -> asyncpg.Record | None:
    """Give one unit back."""
    return await conn.fetchrow(
        f"UPDATE slots SET reserved = reserved - 1, updated_at = now() "
        f"WHERE id = $1 AND reserved > 0 RETURNING {SLOT_COLUMNS}",
        slot_id,
    )


async def needs_for_slot(
    conn: Conn, slot: asyncpg.Record, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Queued needs this slot can serve, in priority order (rules.queue_key), locked.

    Needs another transaction holds are skipped: that transaction is deciding them. A
    carry slot serves only two-leg needs, any other slot only needs not served in two
    legs (ADR 0044).
    """
    return await conn.fetch(
        f"SELECT {NEED_COLUMNS} FROM needs n "
        "WHERE n.community = $1 AND n.kind = $2 AND n.state IN ('waiting', 'escalated') "
        "AND n.two_leg = ($10::text IS NOT DISTINCT FROM 'carry') "
        "AND n.window_earliest < $4 AND n.window_latest > $3 AND n.window_latest > $8 "
        "AND (cardinality($5::text[]) = 0 OR n.compound = ANY ($5::text[])) "
        "AND provider_available($6, $7, GREATEST(n.window_earliest, $3), "
        "  LEAST(n.window_latest, $4)) "
        "AND NOT EXISTS (SELECT 1 FROM need_exclusions x WHERE x.need_id = n.id "
        "  AND x.provider_kind = $6 AND x.provider_id = $7) "
        "ORDER BY n.rank, n.submitted_at, n.id LIMIT $9 FOR UPDATE SKIP LOCKED",
        slot["community"],
        slot["kind"],
        slot["window_earliest"],
        slot["window_latest"],
        list(slot["compounds"]),
        slot["provider_kind"],
        slot["provider_id"],
        now,
        limit,
        slot["leg"],
    )


async def needs_for_prepare_leg(
    conn: Conn, slot: asyncpg.Record, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Two-leg needs whose prepare leg has no canteen, that this prepare slot can serve,
    in priority order, locked (skipping needs another transaction holds)."""
    return await conn.fetch(
        f"SELECT {NEED_COLUMNS} FROM needs n "
        "WHERE n.community = $1 AND n.kind = $2 AND n.two_leg AND n.prepare_assignment IS NULL "
        "AND n.state NOT IN ('fulfilled', 'cancelled', 'failed') "
        "AND n.window_earliest < $4 AND n.window_latest > $3 AND n.window_latest > $8 "
        "AND (cardinality($5::text[]) = 0 OR n.compound = ANY ($5::text[])) "
        "AND NOT EXISTS (SELECT 1 FROM need_exclusions x WHERE x.need_id = n.id "
        "  AND x.provider_kind = $6 AND x.provider_id = $7) "
        "ORDER BY n.rank, n.submitted_at, n.id LIMIT $9 FOR UPDATE SKIP LOCKED",
        slot["community"],
        slot["kind"],
        slot["window_earliest"],
        slot["window_latest"],
        list(slot["compounds"]),
        slot["provider_kind"],
        slot["provider_id"],
        now,
        limit,
    )


async def set_prepare_leg(
    conn: Conn, need_id: uuid.UUID, assignment_id: uuid.UUID | None
) -> asyncpg.Record:
    """Make the need two-leg (for good) and set its prepare leg's current assignment."""
    row = await conn.fetchrow(
        "UPDATE needs SET two_leg = true, prepare_assignment = $2, updated_at = now() "
        f"WHERE id = $1 RETURNING {NEED_COLUMNS}",
        need_id,
        assignment_id,
    )
    assert row is not None  # the caller holds the need's row lock
    return row


async def leg_attempts(conn: Conn, need_id: uuid.UUID, leg: str) -> int:
    """How many offers of this leg the need has had."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM assignments WHERE need_id = $1 AND leg = $2", need_id, leg
        )
    )


# --- needs --------------------------------------------------------------------


async def insert_need(
    conn: Conn,
    *,
    community: str,
    facts: NeedFacts,
    resident_id: uuid.UUID,
    details: dict[str, Any],
    traceparent: str | None = None,
) -> asyncpg.Record | None:
    """Insert a need in state waiting and return it (locked by the insert); None when it
    is known already."""
    return await conn.fetchrow(
        "INSERT INTO needs (id, community, resident_id, kind, urgency, priority_group, rank, "
        "window_earliest, window_latest, compound, details, submitted_at, state, traceparent) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, 'waiting', $13) "
        f"ON CONFLICT (id) DO NOTHING RETURNING {NEED_COLUMNS}",
        facts.id,
        community,
        resident_id,
        facts.kind.value,
        facts.urgency.value,
        facts.priority_group.value,
        facts.rank,
        facts.window_earliest,
        facts.window_latest,
        facts.compound,
        json.dumps(details),
        facts.submitted_at,
        traceparent,
    )


async def lock_need(conn: Conn, need_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {NEED_COLUMNS} FROM needs WHERE id = $1 FOR UPDATE", need_id
    )


async def move_need(
    conn: Conn,
    need_id: uuid.UUID,
    src: str,
    dst: str,
    *,
    assignment_id: uuid.UUID | None,
    attempts: int | None = None,
) -> asyncpg.Record | None:
    """Move a need from `src` to `dst` (checked by the caller against rules.TRANSITIONS);
    the need as it is now, or None when it was not in `src`."""
    return await conn.fetchrow(
        "UPDATE needs SET state = $3, current_assignment = $4, "
        "attempts = COALESCE($5, attempts), updated_at = now() WHERE id = $1 AND state = $2 "
        f"RETURNING {NEED_COLUMNS}",
        need_id,
        src,
        dst,
        assignment_id,
        attempts,
    )


async def add_exclusion(
    conn: Conn, need_id: uuid.UUID, provider_kind: str, provider_id: uuid.UUID, reason: str
) -> None:
    await conn.execute(
        "INSERT INTO need_exclusions (need_id, provider_kind, provider_id, reason) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        need_id,
        provider_kind,
        provider_id,
        reason,
    )


async def has_exclusions(conn: Conn, need_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM need_exclusions WHERE need_id = $1)", need_id
        )
    )


# --- assignments --------------------------------------------------------------


async def insert_assignment(
    conn: Conn,
    *,
    assignment_id: uuid.UUID,
    reservation_id: uuid.UUID,
    need_id: uuid.UUID,
    slot: asyncpg.Record,
    attempt: int,
    offered_at: datetime,
    expires_at: datetime,
    leg: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO assignments (id, reservation_id, need_id, slot_id, provider_kind, "
        "provider_id, attempt, state, offered_at, expires_at, leg) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, 'offered', $8, $9, $10)",
        assignment_id,
        reservation_id,
        need_id,
        slot["id"],
        slot["provider_kind"],
        slot["provider_id"],
        attempt,
        offered_at,
        expires_at,
        leg,
    )


async def get_assignment(conn: Conn, assignment_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE id = $1", assignment_id
    )


async def answer_assignment(conn: Conn, assignment_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE assignments SET state = 'accepted', answered_at = $2 WHERE id = $1",
        assignment_id,
        at,
    )


async def close_assignment(
    conn: Conn,
    assignment_id: uuid.UUID,
    state: str,
    at: datetime,
    release_reason: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE assignments SET state = $2, closed_at = $3, release_reason = $4, "
        "answered_at = COALESCE(answered_at, $3) WHERE id = $1",
        assignment_id,
        state,
        at,
        release_reason,
    )


# --- escalations --------------------------------------------------------------


async def add_escalation(
    conn: Conn,
    need_id: uuid.UUID,
    *,
    community: str,
    key: str,
    reason: str,
    detail: str | None,
    sla_deadline: datetime | None,
    at: datetime,
) -> bool:
    """Record an escalation; False when this one was made before (so: once each)."""
    inserted = await conn.fetchval(
        "INSERT INTO escalations (need_id, key, reason, detail, sla_deadline, escalated_at, "
        "community) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id",
        need_id,
        key,
        reason,
        detail,
        sla_deadline,
        at,
        community,
    )
    return bool(inserted)


# --- timers -------------------------------------------------------------------


async def add_timer(
    conn: Conn,
    *,
    kind: str,
    need_id: uuid.UUID,
    due_at: datetime,
    assignment_id: uuid.UUID | None = None,
    clock: str | None = None,
    deadline: datetime | None = None,
    traceparent: str | None = None,
) -> None:
    await add_timers(
        conn,
        [(kind, need_id, assignment_id, clock, deadline, due_at)],
        traceparent=traceparent,
    )


TimerRow = tuple[str, uuid.UUID, uuid.UUID | None, str | None, datetime | None, datetime]
"""(kind, need id, assignment id, clock, deadline, due at)."""


async def add_timers(conn: Conn, timers: list[TimerRow], *, traceparent: str | None) -> None:
    """Several timers in one statement (the table's trigger wakes the timer loops at commit)."""
    if not timers:
        return
    kinds, needs, assignments, clocks, deadlines, dues = (
        list(c) for c in zip(*timers, strict=True)
    )
    await conn.execute(
        "INSERT INTO timers (kind, need_id, assignment_id, clock, deadline, due_at, traceparent) "
        "SELECT k, n, a, c, d, u, $7 FROM unnest($1::text[], $2::uuid[], $3::uuid[], "
        "$4::text[], $5::timestamptz[], $6::timestamptz[]) AS t(k, n, a, c, d, u)",
        kinds,
        needs,
        assignments,
        clocks,
        deadlines,
        dues,
        traceparent,
    )


async def cancel_timers(
    conn: Conn,
    need_id: uuid.UUID,
    *,
    kinds: list[str] | None = None,
    clock: str | None = None,
    outcome: str = "cancelled",
    assignment_id: uuid.UUID | None = None,
) -> None:
    """Cancel a need's pending timers.

    Timers a loop is firing right now are skipped, not waited for: the firing
    transaction locks the need after us and finds the timer no longer applies.
    """
    await conn.execute(
        "UPDATE timers SET fired_at = now(), outcome = $4 WHERE id IN ("
        "  SELECT id FROM timers WHERE need_id = $1 AND fired_at IS NULL "
        "  AND ($2::text[] IS NULL OR kind = ANY ($2::text[])) "
        "  AND ($3::text IS NULL OR clock = $3) "
        "  AND ($5::uuid IS NULL OR assignment_id = $5) FOR UPDATE SKIP LOCKED)",
        need_id,
        kinds,
        clock,
        outcome,
        assignment_id,
    )


async def claim_due_timer(conn: Conn, now: datetime) -> asyncpg.Record | None:
    """Lock the most overdue timer no other replica holds (call inside a transaction)."""
    return await conn.fetchrow(
        f"SELECT {TIMER_COLUMNS} FROM timers WHERE fired_at IS NULL AND due_at <= $1 "
        "ORDER BY due_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
        now,
    )


async def finish_timer(conn: Conn, timer_id: int, outcome: str) -> None:
    await conn.execute(
        "UPDATE timers SET fired_at = now(), outcome = $2 WHERE id = $1", timer_id, outcome
    )


async def postpone_timer(
    conn: Conn, timer_id: int, *, delay_s: float, error: str, give_up_after: int
) -> bool:
    """Record a failed attempt and try again later; True when it was given up."""
    outcome = await conn.fetchval(
        "UPDATE timers SET attempts = attempts + 1, last_error = $3, "
        "due_at = now() + make_interval(secs => $2), "
        "fired_at = CASE WHEN attempts + 1 >= $4 THEN now() END, "
        "outcome = CASE WHEN attempts + 1 >= $4 THEN 'error' END "
        "WHERE id = $1 AND fired_at IS NULL RETURNING outcome",
        timer_id,
        delay_s,
        error,
        give_up_after,
    )
    return outcome == "error"


async def next_due(conn: Conn) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT min(due_at) FROM timers WHERE fired_at IS NULL"
    )
    return value


# --- policy -------------------------------------------------------------------


async def policy_overrides(conn: Conn, community: str) -> dict[str, float | None]:
    """The community's row over the '*' row (column by column)."""
    rows = await conn.fetch(
        f"SELECT community, {', '.join(POLICY_COLUMNS)} FROM sla_policies "
        "WHERE community = $1 OR community = '*' ORDER BY (community = '*') DESC",
        community,
    )
    merged: dict[str, float | None] = {}
    for row in rows:  # '*' first, then the community's own row wins
        for column in POLICY_COLUMNS:
            if row[column] is not None:
                merged[column] = row[column]
    return merged


async def set_policy(conn: Conn, community: str, values: dict[str, float | None]) -> None:
    """Insert or update a community's policy row ('*' for every community)."""
    unknown = set(values) - set(POLICY_COLUMNS)
    if unknown:
        raise ValueError(f"unknown policy fields: {sorted(unknown)}")
    params = [values.get(c) for c in POLICY_COLUMNS]
    await conn.execute(
        f"INSERT INTO sla_policies (community, {', '.join(POLICY_COLUMNS)}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (community) DO UPDATE SET "
        + ", ".join(f"{c} = COALESCE(EXCLUDED.{c}, sla_policies.{c})" for c in POLICY_COLUMNS)
        + ", updated_at = now()",
        community,
        *params,
    )


# --- reads for the API --------------------------------------------------------


async def list_needs(
    conn: Conn, community: str, *, state: str | None, limit: int
) -> list[asyncpg.Record]:
    """Open needs first by priority; with a state, only that state."""
    return await conn.fetch(
        f"SELECT {NEED_COLUMNS} FROM needs WHERE community = $1 "
        "AND (($2::text IS NULL AND state NOT IN ('fulfilled', 'cancelled', 'failed')) "
        "     OR state = $2) "
        "ORDER BY rank, submitted_at, id LIMIT $3",
        community,
        state,
        limit,
    )


async def get_need(conn: Conn, community: str, need_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {NEED_COLUMNS} FROM needs WHERE community = $1 AND id = $2", community, need_id
    )


async def assignments_for(conn: Conn, need_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE need_id = $1 ORDER BY offered_at, id",
        need_id,
    )


async def timers_for(conn: Conn, need_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {TIMER_COLUMNS} FROM timers WHERE need_id = ANY ($1::uuid[]) ORDER BY due_at, id",
        need_ids,
    )


async def escalations_for(conn: Conn, need_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, need_id, key, reason, detail, sla_deadline, escalated_at, state "
        "FROM escalations WHERE need_id = ANY ($1::uuid[]) ORDER BY escalated_at",
        need_ids,
    )


async def list_slots(
    conn: Conn, community: str, *, kind: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE community = $1 "
        "AND ($2::text IS NULL OR kind = $2) ORDER BY window_earliest, id LIMIT $3",
        community,
        kind,
        limit,
    )


async def sla_open_counts(conn: Conn) -> list[asyncpg.Record]:
    """Open needs whose SLA clock was escalated at risk or breached, per community and kind."""
    return await conn.fetch(
        "SELECT community, kind, count(*) FILTER (WHERE breached) AS breached, "
        "count(*) FILTER (WHERE NOT breached) AS at_risk FROM ("
        "  SELECT n.community, n.kind, bool_or(e.key LIKE 'sla_breached:%') AS breached"
        "  FROM escalations e JOIN needs n ON n.id = e.need_id"
        "  WHERE (e.key LIKE 'sla_at_risk:%' OR e.key LIKE 'sla_breached:%')"
        "    AND n.state IN ('waiting', 'offered', 'assigned', 'escalated')"
        "  GROUP BY n.id, n.community, n.kind) per_need "
        "GROUP BY community, kind"
    )


# --- staff actions (ADR 0034) -------------------------------------------------

ESCALATION_COLUMNS = (
    "id, need_id, community, key, reason, detail, sla_deadline, escalated_at, state, "
    "acknowledged_at, assigned_at, assignee, assignee_ref, resolved_at, outcome, note, "
    "updated_at"
)


async def list_escalations(
    conn: Conn,
    community: str,
    *,
    state: str | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """A community's escalations, newest first, after a (escalated_at, id) cursor."""
    return await conn.fetch(
        f"SELECT {ESCALATION_COLUMNS} FROM escalations WHERE community = $1 "
        "AND ($2::text IS NULL OR state = $2) "
        "AND ($3::timestamptz IS NULL OR (escalated_at, id) < ($3, $4::uuid)) "
        "ORDER BY escalated_at DESC, id DESC LIMIT $5",
        community,
        state,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )


async def get_escalation(
    conn: Conn, community: str, escalation_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {ESCALATION_COLUMNS} FROM escalations WHERE community = $1 AND id = $2{lock}",
        community,
        escalation_id,
    )


async def update_escalation(
    conn: Conn,
    escalation_id: uuid.UUID,
    *,
    state: str,
    acknowledged_at: datetime | None = None,
    assigned_at: datetime | None = None,
    assignee: str | None = None,
    assignee_ref: str | None = None,
    resolved_at: datetime | None = None,
    outcome: str | None = None,
    note: str | None = None,
) -> None:
    """Set an escalation's state; the other columns change only when given (a resolve
    keeps the assignee, an assignment the acknowledgement)."""
    await conn.execute(
        "UPDATE escalations SET state = $2, "
        "acknowledged_at = COALESCE(acknowledged_at, $3), "
        "assigned_at = COALESCE($4, assigned_at), "
        "assignee = CASE WHEN $4::timestamptz IS NULL THEN assignee ELSE $5 END, "
        "assignee_ref = CASE WHEN $4::timestamptz IS NULL THEN assignee_ref ELSE $6 END, "
        "resolved_at = COALESCE($7, resolved_at), outcome = COALESCE($8, outcome), "
        "note = COALESCE($9, note), updated_at = now() WHERE id = $1",
        escalation_id,
        state,
        acknowledged_at,
        assigned_at,
        assignee,
        assignee_ref,
        resolved_at,
        outcome,
        note,
    )


async def add_escalation_action(
    conn: Conn,
    escalation_id: uuid.UUID,
    action: str,
    actor: tuple[uuid.UUID, str, str],
    at: datetime,
    *,
    assignee: str | None = None,
    assignee_ref: str | None = None,
    outcome: str | None = None,
    note_recorded: bool | None = None,
) -> None:
    """One line of an escalation's history; `actor` is (credential id, role, label)."""
    await conn.execute(
        "INSERT INTO escalation_actions (escalation_id, action, actor_credential, actor_role, "
        "actor_label, at, assignee, assignee_ref, outcome, note_recorded) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        escalation_id,
        action,
        *actor,
        at,
        assignee,
        assignee_ref,
        outcome,
        note_recorded,
    )


async def escalation_actions(conn: Conn, escalation_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT action, actor_credential, actor_role, actor_label, at, assignee, assignee_ref, "
        "outcome, note_recorded FROM escalation_actions WHERE escalation_id = $1 ORDER BY id",
        escalation_id,
    )


async def lock_need_in(conn: Conn, community: str, need_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {NEED_COLUMNS} FROM needs WHERE id = $1 AND community = $2 FOR UPDATE",
        need_id,
        community,
    )


async def party_serves(
    conn: Conn, community: str, kind: str, provider_kind: str, provider_id: uuid.UUID
) -> bool:
    """Whether the party has published capacity of this kind in this community (the only
    way scheduling knows a partner or volunteer serves here)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM slots WHERE community = $1 AND kind = $2 "
            "AND provider_kind = $3 AND provider_id = $4 AND directed_need IS NULL)",
            community,
            kind,
            provider_kind,
            provider_id,
        )
    )


async def lock_party_slot(conn: Conn, community: str, slot_id: uuid.UUID) -> asyncpg.Record | None:
    """A published slot of the community, locked (a directed offer on a named slot)."""
    return await conn.fetchrow(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE id = $1 AND community = $2 "
        "AND directed_need IS NULL FOR UPDATE",
        slot_id,
        community,
    )


async def reserve_party_slot(
    conn: Conn, need: asyncpg.Record, provider_kind: str, provider_id: uuid.UUID, now: datetime
) -> asyncpg.Record | None:
    """Take one unit of the party's earliest published slot that fits the need, or None.

    Like `reserve_best_slot` but for one provider and regardless of exclusions (the
    operator chose this party); it waits for a slot another transaction holds rather than
    skipping it, so a directed offer never passes over the party's own capacity.
    """
    return await conn.fetchrow(
        f"WITH candidate AS ("
        f"  SELECT s.id FROM slots s WHERE s.community = $1 AND s.kind = $2 "
        f"  AND s.provider_kind = $6 AND s.provider_id = $7 AND s.directed_need IS NULL "
        f"  AND s.reserved < s.capacity AND s.window_earliest < $4 AND s.window_latest > $3 "
        f"  AND s.window_latest > $8 "
        f"  AND (cardinality(s.compounds) = 0 OR $5::text = ANY (s.compounds)) "
        f"  ORDER BY s.window_earliest, s.published_at, s.id LIMIT 1 FOR UPDATE) "
        f"UPDATE slots SET reserved = reserved + 1, updated_at = now() FROM candidate "
        f"WHERE slots.id = candidate.id AND slots.reserved < slots.capacity "
        f"RETURNING {', '.join('slots.' + c.strip() for c in SLOT_COLUMNS.split(','))}",
        need["community"],
        need["kind"],
        need["window_earliest"],
        need["window_latest"],
        need["compound"],
        provider_kind,
        provider_id,
        now,
    )


async def insert_directed_slot(
    conn: Conn, need: asyncpg.Record, provider_kind: str, provider_id: uuid.UUID, now: datetime
) -> asyncpg.Record:
    """A one-off slot (capacity 1, reserved) for a directed offer without capacity.

    `directed_need` keeps matching away from it: when the offer ends its unit goes back
    but no other need is ever offered on it.
    """
    row = await conn.fetchrow(
        "INSERT INTO slots (id, community, kind, provider_kind, provider_id, window_earliest, "
        "window_latest, capacity, compounds, reserved, published_at, directed_need) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, 1, '{}', 1, $8, $9) "
        f"RETURNING {SLOT_COLUMNS}",
        uuid.uuid4(),
        need["community"],
        need["kind"],
        provider_kind,
        provider_id,
        need["window_earliest"],
        need["window_latest"],
        now,
        need["id"],
    )
    assert row is not None
    return row


async def remove_exclusions(
    conn: Conn, need_id: uuid.UUID, parties: list[tuple[str, uuid.UUID]]
) -> None:
    if not parties:
        return
    await conn.execute(
        "DELETE FROM need_exclusions WHERE need_id = $1 AND (provider_kind, provider_id) IN ("
        "  SELECT * FROM unnest($2::text[], $3::uuid[]))",
        need_id,
        [p[0] for p in parties],
        [p[1] for p in parties],
    )


async def add_need_action(
    conn: Conn,
    need_id: uuid.UUID,
    action: str,
    actor: tuple[uuid.UUID, str, str],
    at: datetime,
    *,
    assignment_id: uuid.UUID | None = None,
    withdrawn_assignment_id: uuid.UUID | None = None,
    without_capacity: bool | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO need_actions (need_id, action, actor_credential, actor_role, actor_label, "
        "at, assignment_id, withdrawn_assignment_id, without_capacity) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        need_id,
        action,
        *actor,
        at,
        assignment_id,
        withdrawn_assignment_id,
        without_capacity,
    )


async def need_actions_for(conn: Conn, need_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT action, actor_credential, actor_role, actor_label, at, assignment_id, "
        "withdrawn_assignment_id, without_capacity FROM need_actions WHERE need_id = $1 "
        "ORDER BY id",
        need_id,
    )


async def claim_idempotency_key(
    conn: Conn, community: str, credential_id: uuid.UUID, key: str, fingerprint: bytes
) -> asyncpg.Record | None:
    """Claim a key in the caller's transaction; the earlier claim when it was made before."""
    inserted = await conn.fetchval(
        "INSERT INTO idempotency_keys (community, credential_id, key, request_sha256) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
        community,
        credential_id,
        key,
        fingerprint,
    )
    if inserted:
        return None
    return await conn.fetchrow(
        "SELECT request_sha256, response FROM idempotency_keys "
        "WHERE community = $1 AND credential_id = $2 AND key = $3",
        community,
        credential_id,
        key,
    )


async def set_idempotent_response(
    conn: Conn, community: str, credential_id: uuid.UUID, key: str, response: dict[str, Any]
) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET response = $4::jsonb "
        "WHERE community = $1 AND credential_id = $2 AND key = $3",
        community,
        credential_id,
        key,
        json.dumps(response, default=str),
    )


# --- slot revisions and withdrawals (ADR 0042) ----------------------------------------


async def get_slot_in(conn: Conn, community: str, slot_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {SLOT_COLUMNS}, revision FROM slots WHERE id = $1 AND community = $2",
        slot_id,
        community,
    )


async def active_assignments_on(conn: Conn, slot_id: uuid.UUID) -> list[asyncpg.Record]:
    """The slot's offered and accepted assignments: accepted first, then oldest offer."""
    return await conn.fetch(
        f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE slot_id = $1 "
        "AND state IN ('offered', 'accepted') "
        "ORDER BY (state = 'accepted') DESC, offered_at, id",
        slot_id,
    )


async def mark_slot_withdrawn(conn: Conn, slot_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE slots SET withdrawn_at = $2, updated_at = now() "
        "WHERE id = $1 AND withdrawn_at IS NULL",
        slot_id,
        at,
    )


async def apply_slot_revision(
    conn: Conn,
    slot_id: uuid.UUID,
    revision: int,
    earliest: datetime,
    latest: datetime,
    capacity: int,
    compounds: list[str],
) -> asyncpg.Record | None:
    """Take a revision's terms unless a later one was applied; capacity never below
    what stays reserved (the caller released the excess first)."""
    return await conn.fetchrow(
        "UPDATE slots SET window_earliest = $3, window_latest = $4, "
        "capacity = GREATEST($5, reserved, 1), compounds = $6, revision = $2, "
        f"updated_at = now() WHERE id = $1 AND revision < $2 RETURNING {SLOT_COLUMNS}",
        slot_id,
        revision,
        earliest,
        latest,
        capacity,
        compounds,
    )


async def set_volunteer_availability(
    conn: Conn,
    volunteer_id: uuid.UUID,
    active: bool,
    timezone: str,
    periods: list[tuple[int, Any, Any]],
    changed_at: datetime,
) -> bool:
    """Take a volunteer's availability unless a later one was taken; True if taken."""
    taken = await conn.fetchval(
        "INSERT INTO volunteers (id, active, timezone, changed_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (id) DO UPDATE SET active = EXCLUDED.active, "
        "timezone = EXCLUDED.timezone, changed_at = EXCLUDED.changed_at "
        "WHERE volunteers.changed_at < EXCLUDED.changed_at RETURNING true",
        volunteer_id,
        active,
        timezone,
        changed_at,
    )
    if not taken:
        return False
    await conn.execute("DELETE FROM volunteer_periods WHERE volunteer_id = $1", volunteer_id)
    await conn.executemany(
        "INSERT INTO volunteer_periods (volunteer_id, weekday, start_time, end_time) "
        "VALUES ($1, $2, $3, $4)",
        [(volunteer_id, *p) for p in periods],
    )
    return True
