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
