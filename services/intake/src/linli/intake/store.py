"""All of intake's SQL. Values are always bound parameters; identifiers never vary."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from linli.contracts.catalogue import CATALOGUE
from linli.contracts.needs import ResidentSpec
from linli.servicekit.db import Conn

from .rules import AnyNeedSpec

NEED_COLUMNS = (
    "id, community, resident_id, kind, urgency, status, window_earliest, window_latest, "
    "details, notes, source_system, source_reference, priority_group, submitted_at, "
    "updated_at, cancel_reason"
)
RESIDENT_COLUMNS = (
    "id, community, name, phone, address, compound, priority_group, "
    "consent_to_share_contact, locale, created_at"
)


@dataclass(frozen=True)
class ResidentRow:
    id: uuid.UUID
    community: str
    priority_group: str
    compound: str | None


async def community_exists(conn: Conn, community: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM communities WHERE slug = $1", community))


async def add_community(conn: Conn, slug: str, name: str) -> bool:
    result: str = await conn.execute(
        "INSERT INTO communities (slug, name) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING",
        slug,
        name,
    )
    return result.endswith(" 1")


async def list_communities(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT slug, name, created_at FROM communities ORDER BY slug")


async def insert_resident(conn: Conn, community: str, spec: ResidentSpec) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"INSERT INTO residents (id, community, name, phone, address, compound, priority_group, "
        f"consent_to_share_contact, locale) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        f"RETURNING {RESIDENT_COLUMNS}",
        uuid.uuid4(),
        community,
        spec.name,
        spec.phone,
        spec.address,
        spec.compound,
        spec.priority_group.value,
        spec.consent_to_share_contact,
        spec.locale,
    )
    assert row is not None
    return row


async def resident_by_ref(conn: Conn, community: str, external_ref: str) -> asyncpg.Record | None:
    """The resident a CSV import knows by `external_ref`, locked for the import's update."""
    return await conn.fetchrow(
        f"SELECT {RESIDENT_COLUMNS} FROM residents WHERE community = $1 AND external_ref = $2 "
        "FOR UPDATE",
        community,
        external_ref,
    )


async def insert_imported_resident(
    conn: Conn, community: str, spec: ResidentSpec, external_ref: str
) -> None:
    await conn.execute(
        "INSERT INTO residents (id, community, name, phone, address, compound, priority_group, "
        "consent_to_share_contact, locale, external_ref) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        uuid.uuid4(),
        community,
        spec.name,
        spec.phone,
        spec.address,
        spec.compound,
        spec.priority_group.value,
        spec.consent_to_share_contact,
        spec.locale,
        external_ref,
    )


async def update_resident(conn: Conn, resident_id: uuid.UUID, spec: ResidentSpec) -> None:
    await conn.execute(
        "UPDATE residents SET name = $2, phone = $3, address = $4, compound = $5, "
        "priority_group = $6, consent_to_share_contact = $7, locale = $8, updated_at = now() "
        "WHERE id = $1",
        resident_id,
        spec.name,
        spec.phone,
        spec.address,
        spec.compound,
        spec.priority_group.value,
        spec.consent_to_share_contact,
        spec.locale,
    )


async def get_resident(conn: Conn, community: str, resident_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {RESIDENT_COLUMNS} FROM residents WHERE community = $1 AND id = $2",
        community,
        resident_id,
    )


async def list_residents(
    conn: Conn,
    community: str,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    if after is None:
        return await conn.fetch(
            f"SELECT {RESIDENT_COLUMNS} FROM residents WHERE community = $1 "
            "ORDER BY created_at DESC, id DESC LIMIT $2",
            community,
            limit,
        )
    return await conn.fetch(
        f"SELECT {RESIDENT_COLUMNS} FROM residents WHERE community = $1 "
        "AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4",
        community,
        after[0],
        after[1],
        limit,
    )


async def resident_for_need(
    conn: Conn, community: str, resident_id: uuid.UUID
) -> ResidentRow | None:
    row = await conn.fetchrow(
        "SELECT id, community, priority_group, compound FROM residents "
        "WHERE community = $1 AND id = $2",
        community,
        resident_id,
    )
    if row is None:
        return None
    return ResidentRow(row["id"], row["community"], row["priority_group"], row["compound"])


async def submission_context(
    conn: Conn, community: str, resident_id: uuid.UUID
) -> tuple[bool, ResidentRow | None]:
    """Whether the community exists, and the resident a need is for: one round trip."""
    row = await conn.fetchrow(
        "SELECT c.slug IS NOT NULL AS known, r.id, r.community, r.priority_group, r.compound "
        "FROM (SELECT 1) AS one "
        "LEFT JOIN communities c ON c.slug = $1 "
        "LEFT JOIN residents r ON r.community = $1 AND r.id = $2",
        community,
        resident_id,
    )
    assert row is not None
    if row["id"] is None:
        return bool(row["known"]), None
    resident = ResidentRow(row["id"], row["community"], row["priority_group"], row["compound"])
    return bool(row["known"]), resident


async def insert_need(
    conn: Conn,
    *,
    need_id: uuid.UUID,
    community: str,
    spec: AnyNeedSpec,
    priority_group: str,
    submitted_by: str,
    submitted_at: datetime,
    ingress: tuple[str, str] | None,
) -> bool:
    """Insert a need with its first timeline entry ("submitted" by `submitted_by`), in one
    statement; False when the same ingress (source, id) already created one in this
    community."""
    inserted = await conn.fetchval(
        "WITH need AS ("
        "INSERT INTO needs (id, community, resident_id, kind, urgency, status, window_earliest, "
        "window_latest, details, notes, source_system, source_reference, priority_group, "
        "submitted_by, ingress_source, ingress_event_id, submitted_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, 'submitted', $6, $7, $8::jsonb, $9, $10, $11, $12, $13, "
        "$14, $15, $16, $16) "
        "ON CONFLICT (community, ingress_source, ingress_event_id) DO NOTHING RETURNING id) "
        "INSERT INTO need_timeline (need_id, status, actor) "
        "SELECT id, 'submitted', $13 FROM need RETURNING true",
        need_id,
        community,
        spec.resident_id,
        spec.kind,
        spec.urgency.value,
        spec.window.earliest,
        spec.window.latest,
        spec.details.model_dump_json(),
        spec.notes,
        spec.source.system if spec.source else None,
        spec.source.reference if spec.source else None,
        priority_group,
        submitted_by,
        ingress[0] if ingress else None,
        ingress[1] if ingress else None,
        submitted_at,
    )
    return bool(inserted)


async def need_id_for_ingress(conn: Conn, community: str, source: str, event_id: str) -> uuid.UUID:
    value = await conn.fetchval(
        "SELECT id FROM needs "
        "WHERE community = $1 AND ingress_source = $2 AND ingress_event_id = $3",
        community,
        source,
        event_id,
    )
    assert value is not None
    return uuid.UUID(str(value))


async def add_timeline(
    conn: Conn,
    need_id: uuid.UUID,
    status: str,
    actor: str,
    note: str | None = None,
    actor_label: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO need_timeline (need_id, status, actor, note, actor_label) "
        "VALUES ($1, $2, $3, $4, $5)",
        need_id,
        status,
        actor,
        note,
        actor_label,
    )


async def get_need(
    conn: Conn, community: str, need_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {NEED_COLUMNS} FROM needs WHERE community = $1 AND id = $2{lock}",
        community,
        need_id,
    )


async def timeline(conn: Conn, need_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT at, status, actor, actor_label, note FROM need_timeline WHERE need_id = $1 "
        "ORDER BY id",
        need_id,
    )


async def list_needs(
    conn: Conn,
    community: str,
    *,
    status: str | None,
    kind: str | None,
    since: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    # Optional filters are NULL-able parameters, so the query text never varies.
    return await conn.fetch(
        f"SELECT {NEED_COLUMNS} FROM needs WHERE community = $1 "
        "AND ($2::text IS NULL OR status = $2) "
        "AND ($3::text IS NULL OR kind = $3) "
        "AND ($4::timestamptz IS NULL OR submitted_at >= $4) "
        "AND ($5::timestamptz IS NULL OR (submitted_at, id) < ($5, $6::uuid)) "
        "ORDER BY submitted_at DESC, id DESC LIMIT $7",
        community,
        status,
        kind,
        since,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )


async def cancel_need(conn: Conn, need_id: uuid.UUID, reason: str | None, at: datetime) -> None:
    await conn.execute(
        "UPDATE needs SET status = 'cancelled', cancel_reason = $2, updated_at = $3 WHERE id = $1",
        need_id,
        reason,
        at,
    )


async def claim_idempotency_key(
    conn: Conn,
    community: str,
    credential_id: uuid.UUID,
    key: str,
    fingerprint: bytes,
    need_id: uuid.UUID,
) -> asyncpg.Record | None:
    """Claim a key for a new need; returns the earlier claim when the key was used.

    A concurrent request with the same key waits on the primary key until the first
    commits, then sees its row: no check-then-insert race.
    """
    inserted = await conn.fetchval(
        "INSERT INTO idempotency_keys (community, credential_id, key, request_sha256, need_id) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
        community,
        credential_id,
        key,
        fingerprint,
        need_id,
    )
    if inserted:
        return None
    return await conn.fetchrow(
        "SELECT request_sha256, need_id FROM idempotency_keys "
        "WHERE community = $1 AND credential_id = $2 AND key = $3",
        community,
        credential_id,
        key,
    )


def details_of(row: asyncpg.Record) -> dict[str, Any]:
    """A need's or plan's details as shown in its views: without a repair's description,
    which only the audited description route shows (ADR 0031)."""
    value = row["details"]
    details = json.loads(value) if isinstance(value, str) else dict(value)
    details.pop("description", None)
    return details


async def need_state(conn: Conn, community: str, need_id: uuid.UUID) -> asyncpg.Record | None:
    """Status and assignee of a need, locked for the lifecycle update."""
    return await conn.fetchrow(
        "SELECT id, status, status_at, assignee_kind, assignee_id, assignment_id FROM needs "
        "WHERE community = $1 AND id = $2 FOR UPDATE",
        community,
        need_id,
    )


async def update_need_progress(
    conn: Conn,
    need_id: uuid.UUID,
    status: str,
    at: datetime,
    assignee: tuple[str, uuid.UUID] | None,
    assignment_id: uuid.UUID | None,
    *,
    timeline: tuple[str, str, str | None],
    actor_label: str | None = None,
    asserts_status: bool = False,
) -> None:
    """Move a need's status (and assignee) and add its timeline entry (status, actor,
    note), in one statement. `asserts_status`: the event set or confirmed the status."""
    await conn.execute(
        "WITH moved AS (UPDATE needs SET updated_at = $3, "
        # status_at: when the newest event that set or confirmed the status happened
        # (not when it arrived), so a late, older one can be told apart.
        "status_at = CASE WHEN $11 THEN GREATEST(COALESCE(status_at, $3), $3) "
        "ELSE status_at END, "
        "status = $2, "
        "assignee_kind = COALESCE($4, assignee_kind), assignee_id = COALESCE($5, assignee_id), "
        "assignment_id = COALESCE($6, assignment_id) WHERE id = $1) "
        "INSERT INTO need_timeline (need_id, status, actor, note, actor_label) "
        "VALUES ($1, $7, $8, $9, $10)",
        need_id,
        status,
        at,
        assignee[0] if assignee else None,
        assignee[1] if assignee else None,
        assignment_id,
        *timeline,
        actor_label,
        asserts_status,
    )


async def contact_for_assignee(
    conn: Conn, community: str, need_id: uuid.UUID, party_kind: str, party_id: uuid.UUID
) -> asyncpg.Record | None:
    """The resident's contact details, only for the accepted helper and with consent."""
    return await conn.fetchrow(
        "SELECT r.name, r.phone, r.address, r.locale FROM needs n "
        "JOIN residents r ON r.id = n.resident_id "
        "WHERE n.community = $1 AND n.id = $2 AND n.assignee_kind = $3 AND n.assignee_id = $4 "
        "AND n.status = ANY($5::text[]) AND r.consent_to_share_contact",
        community,
        need_id,
        party_kind,
        party_id,
        list(ASSIGNEE_STATUSES),
    )


ASSIGNEE_STATUSES = ("assigned", "fulfilled", "failed", "escalated")
"""Statuses in which a need's assignee may see what the resident asked for."""


async def description_of(
    conn: Conn,
    community: str,
    need_id: uuid.UUID,
    assignee: tuple[str, uuid.UUID] | None = None,
) -> str | None:
    """The requester's description of a kind that keeps one in intake (a repair, goods to
    bring: the catalogue's private fields); with `assignee`, only when that party is the
    accepted assignee (ADR 0031, 0045). None when there is none to show."""
    value = await conn.fetchval(
        "SELECT details->>'description' FROM needs "
        "WHERE community = $1 AND id = $2 AND kind = ANY($6::text[]) "
        "AND ($3::text IS NULL OR (assignee_kind = $3 AND assignee_id = $4 "
        "AND status = ANY($5::text[])))",
        community,
        need_id,
        assignee[0] if assignee else None,
        assignee[1] if assignee else None,
        list(ASSIGNEE_STATUSES),
        DESCRIBED_KINDS,
    )
    return str(value) if value is not None else None


DESCRIBED_KINDS = [k for k, e in CATALOGUE.items() if "description" in e.private_fields]
"""Kinds whose submitted details hold a `description` that stays in intake."""


PLAN_COLUMNS = (
    "id, community, resident_id, kind, urgency, details, notes, weekdays, start_time, "
    "end_time, timezone, starts_on, ends_on, paused, generated_until, created_at"
)


async def insert_plan(
    conn: Conn, plan_id: uuid.UUID, community: str, values: dict[str, Any]
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"INSERT INTO plans (id, community, resident_id, kind, urgency, details, notes, weekdays, "
        f"start_time, end_time, timezone, starts_on, ends_on, created_by) "
        f"VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13, $14) "
        f"RETURNING {PLAN_COLUMNS}",
        plan_id,
        community,
        values["resident_id"],
        values["kind"],
        values["urgency"],
        json.dumps(values["details"]),
        values["notes"],
        values["weekdays"],
        values["start_time"],
        values["end_time"],
        values["timezone"],
        values["starts_on"],
        values["ends_on"],
        values["created_by"],
    )
    assert row is not None
    return row


async def get_plan(
    conn: Conn, community: str, plan_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {PLAN_COLUMNS} FROM plans WHERE community = $1 AND id = $2{lock}",
        community,
        plan_id,
    )


async def list_plans(conn: Conn, community: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {PLAN_COLUMNS} FROM plans WHERE community = $1 "
        "ORDER BY created_at DESC, id DESC LIMIT $2",
        community,
        limit,
    )


async def set_plan_paused(conn: Conn, plan_id: uuid.UUID, paused: bool) -> None:
    await conn.execute("UPDATE plans SET paused = $2 WHERE id = $1", plan_id, paused)


async def plans_due(conn: Conn, horizon: date, limit: int) -> list[asyncpg.Record]:
    """Active plans not yet generated up to `horizon`, locked; other processes skip them."""
    return await conn.fetch(
        f"SELECT {PLAN_COLUMNS} FROM plans WHERE NOT paused "
        "AND (generated_until IS NULL OR generated_until < $1) "
        "AND (ends_on IS NULL OR ends_on >= CURRENT_DATE - 1) "
        "ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        horizon,
        limit,
    )


async def claim_occurrence(conn: Conn, plan_id: uuid.UUID, on_date: date) -> bool:
    inserted = await conn.fetchval(
        "INSERT INTO plan_occurrences (plan_id, on_date) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING RETURNING true",
        plan_id,
        on_date,
    )
    return bool(inserted)


async def set_occurrence_need(
    conn: Conn, plan_id: uuid.UUID, on_date: date, need_id: uuid.UUID
) -> None:
    await conn.execute(
        "UPDATE plan_occurrences SET need_id = $3 WHERE plan_id = $1 AND on_date = $2",
        plan_id,
        on_date,
        need_id,
    )


async def set_generated_until(conn: Conn, plan_id: uuid.UUID, until: date) -> None:
    await conn.execute(
        "UPDATE plans SET generated_until = GREATEST(COALESCE(generated_until, $2), $2) "
        "WHERE id = $1",
        plan_id,
        until,
    )


async def future_plan_needs(conn: Conn, plan_id: uuid.UUID, after: datetime) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT n.id FROM plan_occurrences o JOIN needs n ON n.id = o.need_id "
        "WHERE o.plan_id = $1 AND n.window_earliest > $2 "
        "AND n.status NOT IN ('fulfilled', 'failed', 'cancelled')",
        plan_id,
        after,
    )
    return [r["id"] for r in rows]


async def plan_occurrences(conn: Conn, plan_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT on_date, need_id FROM plan_occurrences WHERE plan_id = $1 ORDER BY on_date",
        plan_id,
    )


async def forget_occurrences(conn: Conn, plan_id: uuid.UUID, need_ids: list[uuid.UUID]) -> None:
    """Free the dates of cancelled occurrences and let the generator look again."""
    await conn.execute(
        "DELETE FROM plan_occurrences WHERE plan_id = $1 AND need_id = ANY($2::uuid[])",
        plan_id,
        need_ids,
    )
    await conn.execute("UPDATE plans SET generated_until = NULL WHERE id = $1", plan_id)


async def close_assignment(conn: Conn, need_id: uuid.UUID, assignment_id: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO closed_assignments (assignment_id, need_id) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING",
        assignment_id,
        need_id,
    )


async def assignment_closed(conn: Conn, assignment_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM closed_assignments WHERE assignment_id = $1", assignment_id
        )
    )


async def clear_assignee(conn: Conn, need_id: uuid.UUID, status: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE needs SET assignee_kind = NULL, assignee_id = NULL, assignment_id = NULL, "
        "status = $2, updated_at = $3 WHERE id = $1",
        need_id,
        status,
        at,
    )


# --- group activities (ADR 0046) ----------------------------------------------------------
# Lock order, everywhere: the activity row, then a session row. A sign-up takes the
# activity FOR SHARE (allocation and cancellation take it FOR UPDATE), then its session
# FOR UPDATE; every change of a session's sign-ups runs under that session lock, and
# `confirmed <= places` is a CHECK, so two replicas cannot overfill a session.

ACTIVITY_COLUMNS = (
    "id, community, title, venue, on_date, start_time, end_time, timezone, starts_at, "
    "ends_at, registration_closes_at, status, allocated_at, published_at, cancelled_at, "
    "held_at, created_at, updated_at"
)
SESSION_COLUMNS = (
    "id, activity_id, stall_id, community, start_time, end_time, starts_at, ends_at, "
    "places, confirmed, cancelled_at"
)
SIGNUP_COLUMNS = (
    "id, community, activity_id, session_id, resident_id, priority_group, status, "
    "signed_up_at, decided_at, cancelled_at, cancel_reason, attended, attendance_at"
)

QUEUE_ORDER = "(priority_group = 'none'), signed_up_at, id"
"""The rule's order (ADR 0046): any priority group before none, then sign-up time."""


async def insert_activity(conn: Conn, values: dict[str, Any]) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO activities (id, community, title, venue, on_date, start_time, end_time, "
        "timezone, starts_at, ends_at, registration_closes_at, created_by) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        f"RETURNING {ACTIVITY_COLUMNS}",
        values["id"],
        values["community"],
        values["title"],
        values["venue"],
        values["on_date"],
        values["start_time"],
        values["end_time"],
        values["timezone"],
        values["starts_at"],
        values["ends_at"],
        values["registration_closes_at"],
        values["created_by"],
    )
    assert row is not None
    return row


async def get_activity(
    conn: Conn, community: str, activity_id: uuid.UUID, *, lock: str | None = None
) -> asyncpg.Record | None:
    """`lock`: None, "share" or "update" (the activity row, first in the lock order)."""
    suffix = {None: "", "share": " FOR SHARE", "update": " FOR UPDATE"}[lock]
    return await conn.fetchrow(
        f"SELECT {ACTIVITY_COLUMNS} FROM activities WHERE community = $1 AND id = $2{suffix}",
        community,
        activity_id,
    )


async def list_activities(
    conn: Conn,
    community: str,
    *,
    status: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {ACTIVITY_COLUMNS} FROM activities WHERE community = $1 "
        "AND ($2::text IS NULL OR status = $2) "
        "AND ($3::timestamptz IS NULL OR (starts_at, id) < ($3, $4)) "
        "ORDER BY starts_at DESC, id DESC LIMIT $5",
        community,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )


async def update_activity(
    conn: Conn, activity_id: uuid.UUID, values: dict[str, Any], now: datetime
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "UPDATE activities SET title = $2, venue = $3, on_date = $4, start_time = $5, "
        "end_time = $6, timezone = $7, starts_at = $8, ends_at = $9, "
        "registration_closes_at = $10, updated_at = $11 "
        f"WHERE id = $1 RETURNING {ACTIVITY_COLUMNS}",
        activity_id,
        values["title"],
        values["venue"],
        values["on_date"],
        values["start_time"],
        values["end_time"],
        values["timezone"],
        values["starts_at"],
        values["ends_at"],
        values["registration_closes_at"],
        now,
    )
    assert row is not None
    return row


async def set_activity_status(
    conn: Conn, activity_id: uuid.UUID, status: str, now: datetime
) -> asyncpg.Record:
    """Move the (locked) activity to `status`, stamping the matching time."""
    column = {"published": "published_at", "cancelled": "cancelled_at", "held": "held_at"}[status]
    row = await conn.fetchrow(
        f"UPDATE activities SET status = $2, {column} = $3, updated_at = $3 "
        f"WHERE id = $1 RETURNING {ACTIVITY_COLUMNS}",
        activity_id,
        status,
        now,
    )
    assert row is not None
    return row


async def mark_allocated(conn: Conn, activity_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE activities SET allocated_at = $2, updated_at = $2 WHERE id = $1", activity_id, now
    )


async def activities_to_allocate(
    conn: Conn, now: datetime, limit: int = 50
) -> list[asyncpg.Record]:
    """Published activities whose registration has closed and whose places are not
    allocated yet (any community: the allocation loop's work)."""
    return await conn.fetch(
        "SELECT id, community FROM activities WHERE status = 'published' "
        "AND allocated_at IS NULL AND registration_closes_at <= $1 "
        "ORDER BY registration_closes_at LIMIT $2",
        now,
        limit,
    )


async def insert_stall(
    conn: Conn,
    stall_id: uuid.UUID,
    activity_id: uuid.UUID,
    community: str,
    partner_id: uuid.UUID,
    offering: str,
) -> None:
    await conn.execute(
        "INSERT INTO activity_stalls (id, activity_id, community, partner_id, offering) "
        "VALUES ($1, $2, $3, $4, $5)",
        stall_id,
        activity_id,
        community,
        partner_id,
        offering,
    )


async def get_stall(
    conn: Conn, activity_id: uuid.UUID, stall_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, activity_id, partner_id, offering, cancelled_at FROM activity_stalls "
        "WHERE activity_id = $1 AND id = $2",
        activity_id,
        stall_id,
    )


async def update_stall(
    conn: Conn, stall_id: uuid.UUID, partner_id: uuid.UUID, offering: str
) -> None:
    await conn.execute(
        "UPDATE activity_stalls SET partner_id = $2, offering = $3 WHERE id = $1",
        stall_id,
        partner_id,
        offering,
    )


async def cancel_stall(conn: Conn, stall_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE activity_stalls SET cancelled_at = $2 WHERE id = $1 AND cancelled_at IS NULL",
        stall_id,
        now,
    )


async def stalls_of(conn: Conn, activity_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, activity_id, partner_id, offering, cancelled_at FROM activity_stalls "
        "WHERE activity_id = $1 ORDER BY created_at, id",
        activity_id,
    )


async def insert_session(conn: Conn, values: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO activity_sessions (id, activity_id, stall_id, community, start_time, "
        "end_time, starts_at, ends_at, places) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        values["id"],
        values["activity_id"],
        values["stall_id"],
        values["community"],
        values["start_time"],
        values["end_time"],
        values["starts_at"],
        values["ends_at"],
        values["places"],
    )


async def get_session(
    conn: Conn, activity_id: uuid.UUID, session_id: uuid.UUID, *, lock: bool = False
) -> asyncpg.Record | None:
    """One session of the activity; `lock`: FOR UPDATE (after the activity's lock)."""
    return await conn.fetchrow(
        f"SELECT {SESSION_COLUMNS} FROM activity_sessions WHERE activity_id = $1 AND id = $2"
        + (" FOR UPDATE" if lock else ""),
        activity_id,
        session_id,
    )


async def update_session(conn: Conn, session_id: uuid.UUID, values: dict[str, Any]) -> None:
    """New times and places; the CHECK refuses places below the confirmed count."""
    await conn.execute(
        "UPDATE activity_sessions SET start_time = $2, end_time = $3, starts_at = $4, "
        "ends_at = $5, places = $6 WHERE id = $1",
        session_id,
        values["start_time"],
        values["end_time"],
        values["starts_at"],
        values["ends_at"],
        values["places"],
    )


async def cancel_session(conn: Conn, session_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE activity_sessions SET cancelled_at = $2, confirmed = 0 "
        "WHERE id = $1 AND cancelled_at IS NULL",
        session_id,
        now,
    )


async def sessions_of(
    conn: Conn, activity_id: uuid.UUID, *, lock: bool = False
) -> list[asyncpg.Record]:
    """The activity's sessions with their sign-up counts (aggregates only)."""
    if lock:
        await conn.execute(
            "SELECT 1 FROM activity_sessions WHERE activity_id = $1 ORDER BY id FOR UPDATE",
            activity_id,
        )
    return await conn.fetch(
        "SELECT s.id, s.activity_id, s.stall_id, s.community, s.start_time, s.end_time, "
        "s.starts_at, s.ends_at, s.places, s.confirmed, s.cancelled_at, "
        "count(*) FILTER (WHERE u.status = 'requested') AS requested, "
        "count(*) FILTER (WHERE u.status = 'waitlisted') AS waitlisted, "
        "count(*) FILTER (WHERE u.status = 'confirmed' AND u.attended) AS attended, "
        "count(*) FILTER (WHERE u.status = 'confirmed' AND NOT u.attended) AS no_show "
        "FROM activity_sessions s LEFT JOIN activity_signups u ON u.session_id = s.id "
        "WHERE s.activity_id = $1 GROUP BY s.id ORDER BY s.starts_at, s.created_at, s.id",
        activity_id,
    )


async def session_times(conn: Conn, activity_id: uuid.UUID) -> list[asyncpg.Record]:
    """Every active session's local times: to re-date them when the activity moves."""
    return await conn.fetch(
        "SELECT id, start_time, end_time FROM activity_sessions "
        "WHERE activity_id = $1 AND cancelled_at IS NULL",
        activity_id,
    )


async def move_session(
    conn: Conn, session_id: uuid.UUID, starts_at: datetime, ends_at: datetime
) -> None:
    await conn.execute(
        "UPDATE activity_sessions SET starts_at = $2, ends_at = $3 WHERE id = $1",
        session_id,
        starts_at,
        ends_at,
    )


async def insert_signup(conn: Conn, values: dict[str, Any]) -> asyncpg.Record | None:
    """The new sign-up, or None when the resident already holds one for the session."""
    return await conn.fetchrow(
        "INSERT INTO activity_signups (id, community, activity_id, session_id, resident_id, "
        "priority_group, status, signed_up_at, signed_up_by, decided_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
        "ON CONFLICT (session_id, resident_id) WHERE status <> 'cancelled' DO NOTHING "
        f"RETURNING {SIGNUP_COLUMNS}",
        values["id"],
        values["community"],
        values["activity_id"],
        values["session_id"],
        values["resident_id"],
        values["priority_group"],
        values["status"],
        values["signed_up_at"],
        values["signed_up_by"],
        values["decided_at"],
    )


async def standing_signup(
    conn: Conn, session_id: uuid.UUID, resident_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {SIGNUP_COLUMNS} FROM activity_signups "
        "WHERE session_id = $1 AND resident_id = $2 AND status <> 'cancelled'",
        session_id,
        resident_id,
    )


async def get_signup(
    conn: Conn, activity_id: uuid.UUID, signup_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {SIGNUP_COLUMNS} FROM activity_signups WHERE activity_id = $1 AND id = $2",
        activity_id,
        signup_id,
    )


async def signups_of_session(conn: Conn, session_id: uuid.UUID) -> list[asyncpg.Record]:
    """A session's sign-ups: holders first, then the waiting list in the rule's order."""
    return await conn.fetch(
        f"SELECT {SIGNUP_COLUMNS} FROM activity_signups WHERE session_id = $1 "
        "ORDER BY CASE status WHEN 'confirmed' THEN 0 WHEN 'waitlisted' THEN 1 "
        f"WHEN 'requested' THEN 2 ELSE 3 END, {QUEUE_ORDER}",
        session_id,
    )


async def waitlist_requested(
    conn: Conn, activity_id: uuid.UUID, now: datetime
) -> list[asyncpg.Record]:
    """Registration closed: every requested sign-up joins its session's waiting list
    (the fill that follows gives places in the rule's order)."""
    return await conn.fetch(
        "UPDATE activity_signups SET status = 'waitlisted', decided_at = $2 "
        f"WHERE activity_id = $1 AND status = 'requested' RETURNING {SIGNUP_COLUMNS}",
        activity_id,
        now,
    )


async def fill_from_waitlist(
    conn: Conn, session_id: uuid.UUID, now: datetime
) -> list[asyncpg.Record]:
    """Give the session's free places to its waiting list, in the rule's order. The
    caller holds the session's row lock; the count moves in the same statement."""
    return await conn.fetch(
        "WITH s AS (SELECT places - confirmed AS free FROM activity_sessions "
        "  WHERE id = $1 AND cancelled_at IS NULL), "
        "pick AS (SELECT id FROM activity_signups WHERE session_id = $1 "
        f"  AND status = 'waitlisted' ORDER BY {QUEUE_ORDER} "
        "  LIMIT (SELECT greatest(coalesce(max(free), 0), 0) FROM s)), "
        "up AS (UPDATE activity_signups u SET status = 'confirmed', decided_at = $2 "
        "  FROM pick WHERE u.id = pick.id "
        "  RETURNING u.id, u.community, u.activity_id, u.session_id, u.resident_id, "
        "  u.priority_group, u.signed_up_at), "
        "counted AS (UPDATE activity_sessions SET confirmed = confirmed + "
        "  (SELECT count(*) FROM up) WHERE id = $1) "
        "SELECT * FROM up ORDER BY (priority_group = 'none'), signed_up_at, id",
        session_id,
        now,
    )


async def waitlist_positions(conn: Conn, session_id: uuid.UUID) -> dict[uuid.UUID, int]:
    rows = await conn.fetch(
        "SELECT id, row_number() OVER (ORDER BY (priority_group = 'none'), signed_up_at, id) "
        "AS position FROM activity_signups WHERE session_id = $1 AND status = 'waitlisted'",
        session_id,
    )
    return {r["id"]: int(r["position"]) for r in rows}


async def cancel_signup(conn: Conn, signup_id: uuid.UUID, reason: str, now: datetime) -> str | None:
    """Cancel a standing sign-up (its session locked); its former status, or None when
    it was already cancelled. A place it held is freed in the same transaction."""
    row = await conn.fetchrow(
        "WITH old AS (SELECT id, status, session_id FROM activity_signups "
        "  WHERE id = $1 AND status <> 'cancelled' FOR UPDATE), "
        "up AS (UPDATE activity_signups u SET status = 'cancelled', cancelled_at = $3, "
        "  cancel_reason = $2 FROM old WHERE u.id = old.id RETURNING old.status, "
        "  old.session_id), "
        "freed AS (UPDATE activity_sessions s SET confirmed = confirmed - 1 FROM up "
        "  WHERE s.id = up.session_id AND up.status = 'confirmed') "
        "SELECT status FROM up",
        signup_id,
        reason,
        now,
    )
    return None if row is None else str(row["status"])


async def cancel_signups_of_session(
    conn: Conn, session_id: uuid.UUID, reason: str, now: datetime
) -> list[asyncpg.Record]:
    """Every standing sign-up of a (locked) session, cancelled: with what they were."""
    return await conn.fetch(
        "WITH old AS (SELECT id, status FROM activity_signups "
        "  WHERE session_id = $1 AND status <> 'cancelled' FOR UPDATE) "
        "UPDATE activity_signups u SET status = 'cancelled', cancelled_at = $3, "
        "cancel_reason = $2 FROM old WHERE u.id = old.id "
        "RETURNING u.id, u.activity_id, u.session_id, u.resident_id, old.status AS was",
        session_id,
        reason,
        now,
    )


async def record_attendance(
    conn: Conn, signup_id: uuid.UUID, attended: bool, by: str, now: datetime
) -> bool:
    """Record attendance of a confirmed sign-up; False when it holds no place."""
    done = await conn.fetchval(
        "UPDATE activity_signups SET attended = $2, attendance_at = $4, attendance_by = $3 "
        "WHERE id = $1 AND status = 'confirmed' RETURNING true",
        signup_id,
        attended,
        by,
        now,
    )
    return bool(done)


async def activity_counts(conn: Conn, activity_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM activity_sessions WHERE activity_id = $1 "
        "  AND cancelled_at IS NULL) AS sessions, "
        "count(*) FILTER (WHERE status = 'confirmed') AS confirmed, "
        "count(*) FILTER (WHERE status = 'confirmed' AND attended) AS attended "
        "FROM activity_signups WHERE activity_id = $1",
        activity_id,
    )
    assert row is not None
    return row


async def claim_activity_key(
    conn: Conn,
    community: str,
    credential_id: uuid.UUID,
    key: str,
    fingerprint: bytes,
    activity_id: uuid.UUID,
) -> asyncpg.Record | None:
    """Claim an Idempotency-Key for a new activity; the earlier claim when it was used
    (a concurrent request with the same key waits on the primary key)."""
    inserted = await conn.fetchval(
        "INSERT INTO activity_idempotency_keys (community, credential_id, key, "
        "request_sha256, activity_id) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT DO NOTHING RETURNING true",
        community,
        credential_id,
        key,
        fingerprint,
        activity_id,
    )
    if inserted:
        return None
    return await conn.fetchrow(
        "SELECT request_sha256, activity_id FROM activity_idempotency_keys "
        "WHERE community = $1 AND credential_id = $2 AND key = $3",
        community,
        credential_id,
        key,
    )


# --- the Open311 facade (ADR 0050) -----------------------------------------------------


async def community_name(conn: Conn, community: str) -> str | None:
    """The community's name, or None when it does not exist."""
    value = await conn.fetchval("SELECT name FROM communities WHERE slug = $1", community)
    return str(value) if value is not None else None


async def open311_needs(
    conn: Conn,
    community: str,
    *,
    ids: list[uuid.UUID] | None,
    kind: str | None,
    start: datetime | None,
    end: datetime | None,
    statuses: list[str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Needs for `GET /open311/v2/requests`, newest first: by id (the other filters then
    do not apply), or by kind, submission time and status."""
    return await conn.fetch(
        f"SELECT {NEED_COLUMNS} FROM needs WHERE community = $1 "
        "AND ($2::uuid[] IS NULL OR id = ANY($2)) "
        "AND ($3::text IS NULL OR kind = $3) "
        "AND ($4::timestamptz IS NULL OR submitted_at >= $4) "
        "AND ($5::timestamptz IS NULL OR submitted_at <= $5) "
        "AND ($6::text[] IS NULL OR status = ANY($6)) "
        "ORDER BY submitted_at DESC, id DESC LIMIT $7",
        community,
        ids,
        kind,
        start,
        end,
        statuses,
        limit,
    )


async def latest_timeline_status(conn: Conn, need_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The status of each need's latest timeline entry."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (need_id) need_id, status FROM need_timeline "
        "WHERE need_id = ANY($1) ORDER BY need_id, id DESC",
        need_ids,
    )
    return {row["need_id"]: row["status"] for row in rows}


async def need_for_key(
    conn: Conn, community: str, credential_id: uuid.UUID, key: str
) -> uuid.UUID | None:
    """The need an `Idempotency-Key` of this credential created in the community."""
    value = await conn.fetchval(
        "SELECT need_id FROM idempotency_keys "
        "WHERE community = $1 AND credential_id = $2 AND key = $3",
        community,
        credential_id,
        key,
    )
    return uuid.UUID(str(value)) if value is not None else None


async def resident_id_by_ref(conn: Conn, community: str, external_ref: str) -> uuid.UUID | None:
    """The resident the community's records know by `external_ref` (no lock: a read)."""
    value = await conn.fetchval(
        "SELECT id FROM residents WHERE community = $1 AND external_ref = $2",
        community,
        external_ref,
    )
    return uuid.UUID(str(value)) if value is not None else None
