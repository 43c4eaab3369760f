"""All SQL of the console: staff, street offices, sessions, sign-in failures, and the
reports' read model (ADR 0038)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from linli.servicekit.db import Conn

STAFF_COLUMNS = (
    "s.id, s.login, s.display_name, s.password_hash, s.role, s.street_office, "
    "s.service_token, s.disabled_at, s.created_at, "
    "CASE WHEN s.role = 'street_office' THEN coalesce(o.communities, '{}') "
    "ELSE s.communities END AS communities"
)
_STAFF_FROM = "staff s LEFT JOIN street_offices o ON o.slug = s.street_office"


# --- street offices --------------------------------------------------------------------


async def upsert_street_office(conn: Conn, slug: str, name: str, communities: list[str]) -> None:
    await conn.execute(
        "INSERT INTO street_offices (slug, name, communities) VALUES ($1, $2, $3) "
        "ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name, "
        "communities = EXCLUDED.communities",
        slug,
        name,
        sorted(set(communities)),
    )


async def street_offices(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT slug, name, communities FROM street_offices ORDER BY slug")


async def street_office_exists(conn: Conn, slug: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM street_offices WHERE slug = $1", slug))


# --- staff -----------------------------------------------------------------------------


async def insert_staff(
    conn: Conn,
    *,
    login: str,
    display_name: str,
    password_hash: str,
    role: str,
    communities: list[str],
    street_office: str | None,
    sealed_token: str,
) -> uuid.UUID:
    staff_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO staff (id, login, display_name, password_hash, role, communities, "
        "street_office, service_token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        staff_id,
        login,
        display_name,
        password_hash,
        role,
        sorted(set(communities)),
        street_office,
        sealed_token,
    )
    return staff_id


async def staff_by_login(conn: Conn, login: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {STAFF_COLUMNS} FROM {_STAFF_FROM} WHERE s.login = $1", login
    )


async def list_staff(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {STAFF_COLUMNS} FROM {_STAFF_FROM} ORDER BY s.login")


async def disable_staff(conn: Conn, login: str) -> uuid.UUID | None:
    """Disable an account and end its sessions; its id, or None when unknown."""
    staff_id = await conn.fetchval(
        "UPDATE staff SET disabled_at = coalesce(disabled_at, now()) WHERE login = $1 RETURNING id",
        login,
    )
    if staff_id is not None:
        await conn.execute("DELETE FROM sessions WHERE staff_id = $1", staff_id)
    return staff_id


async def set_password_hash(conn: Conn, staff_id: uuid.UUID, password_hash: str) -> None:
    await conn.execute("UPDATE staff SET password_hash = $2 WHERE id = $1", staff_id, password_hash)


# --- sessions --------------------------------------------------------------------------


async def create_session(
    conn: Conn,
    *,
    id_sha256: bytes,
    staff_id: uuid.UUID,
    csrf_token: str,
    locale: str,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO sessions (id_sha256, staff_id, csrf_token, locale, expires_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        id_sha256,
        staff_id,
        csrf_token,
        locale,
        expires_at,
    )


async def touch_session(conn: Conn, id_sha256: bytes, idle_s: float) -> asyncpg.Record | None:
    """The live session of an enabled account, its last use moved to now; None when the
    session is unknown, idle too long, past its absolute expiry or its account disabled
    (then it is deleted)."""
    row = await conn.fetchrow(
        "UPDATE sessions se SET last_seen_at = now() FROM staff s "
        "WHERE se.id_sha256 = $1 AND s.id = se.staff_id AND s.disabled_at IS NULL "
        "AND se.expires_at > now() "
        "AND se.last_seen_at > now() - make_interval(secs => $2) "
        "RETURNING se.staff_id, se.csrf_token, se.locale",
        id_sha256,
        idle_s,
    )
    if row is None:
        await conn.execute("DELETE FROM sessions WHERE id_sha256 = $1", id_sha256)
    return row


async def staff_by_id(conn: Conn, staff_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {STAFF_COLUMNS} FROM {_STAFF_FROM} WHERE s.id = $1 AND s.disabled_at IS NULL",
        staff_id,
    )


async def set_locale(conn: Conn, id_sha256: bytes, locale: str) -> None:
    await conn.execute("UPDATE sessions SET locale = $2 WHERE id_sha256 = $1", id_sha256, locale)


async def delete_session(conn: Conn, id_sha256: bytes) -> None:
    await conn.execute("DELETE FROM sessions WHERE id_sha256 = $1", id_sha256)


# --- sign-in rate limit ----------------------------------------------------------------


async def failures(conn: Conn, login: str, window_s: float) -> int:
    """Failed sign-ins of `login` in the current window."""
    value = await conn.fetchval(
        "SELECT failures FROM sign_in_failures WHERE login = $1 "
        "AND window_start > now() - make_interval(secs => $2)",
        login,
        window_s,
    )
    return int(value or 0)


async def record_failure(conn: Conn, login: str, window_s: float) -> int:
    """Count one failure (a new window when the last one is over); the count now."""
    value: Any = await conn.fetchval(
        "INSERT INTO sign_in_failures (login, failures, window_start) VALUES ($1, 1, now()) "
        "ON CONFLICT (login) DO UPDATE SET "
        "failures = CASE WHEN sign_in_failures.window_start > now() - make_interval(secs => $2) "
        "THEN sign_in_failures.failures + 1 ELSE 1 END, "
        "window_start = CASE WHEN sign_in_failures.window_start > "
        "now() - make_interval(secs => $2) THEN sign_in_failures.window_start ELSE now() END "
        "RETURNING failures",
        login,
        window_s,
    )
    return int(value)


async def clear_failures(conn: Conn, login: str) -> None:
    await conn.execute("DELETE FROM sign_in_failures WHERE login = $1", login)


async def session_alive(conn: Conn, id_sha256: bytes, idle_s: float) -> bool:
    """The session still holds (without counting as a use: an open live page does not
    keep a session from going idle)."""
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM sessions se JOIN staff s ON s.id = se.staff_id "
            "WHERE se.id_sha256 = $1 AND s.disabled_at IS NULL AND se.expires_at > now() "
            "AND se.last_seen_at > now() - make_interval(secs => $2)",
            id_sha256,
            idle_s,
        )
    )


# --- CSV uploads between the dry run and the import -------------------------------------


async def save_upload(
    conn: Conn, session_sha256: bytes, community: str, kind: str, body: bytes
) -> uuid.UUID:
    upload_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO import_uploads (id, session_sha256, community, kind, body) "
        "VALUES ($1, $2, $3, $4, $5)",
        upload_id,
        session_sha256,
        community,
        kind,
        body,
    )
    return upload_id


async def upload(
    conn: Conn, upload_id: uuid.UUID, session_sha256: bytes, community: str
) -> asyncpg.Record | None:
    """The session's own upload for this community (another session's is not found)."""
    return await conn.fetchrow(
        "SELECT id, kind, body FROM import_uploads "
        "WHERE id = $1 AND session_sha256 = $2 AND community = $3",
        upload_id,
        session_sha256,
        community,
    )


async def delete_upload(conn: Conn, upload_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM import_uploads WHERE id = $1", upload_id)


# --- the reports' read model (ADR 0038) ------------------------------------------------

# How each column of `report_needs` takes a new value: facts of the need keep the first
# value, times keep the earliest one (events can overtake each other after a redelivery).
_NEED_MERGE = {
    "kind": "coalesce(n.kind, EXCLUDED.kind)",
    "urgency": "coalesce(n.urgency, EXCLUDED.urgency)",
    "priority_group": "coalesce(n.priority_group, EXCLUDED.priority_group)",
    "window_earliest": "coalesce(n.window_earliest, EXCLUDED.window_earliest)",
    "window_latest": "coalesce(n.window_latest, EXCLUDED.window_latest)",
    "submitted_at": "least(n.submitted_at, EXCLUDED.submitted_at)",
    "accepted_at": "least(n.accepted_at, EXCLUDED.accepted_at)",
    "arrived_at": "least(n.arrived_at, EXCLUDED.arrived_at)",
    "fulfilled_at": "least(n.fulfilled_at, EXCLUDED.fulfilled_at)",
    "fulfilled_by_kind": "coalesce(n.fulfilled_by_kind, EXCLUDED.fulfilled_by_kind)",
    "fulfilled_by_id": "coalesce(n.fulfilled_by_id, EXCLUDED.fulfilled_by_id)",
    "failed_at": "least(n.failed_at, EXCLUDED.failed_at)",
    "cancelled_at": "least(n.cancelled_at, EXCLUDED.cancelled_at)",
    "escalated_at": "least(n.escalated_at, EXCLUDED.escalated_at)",
}


async def fold_need(conn: Conn, need_id: uuid.UUID, community: str, **facts: Any) -> None:
    """Merge facts into a need's row (created by whichever event comes first). A row
    belongs to the community it was created in: an event of another community naming
    the same need changes nothing."""
    unknown = set(facts) - set(_NEED_MERGE)
    if unknown:
        raise ValueError(f"report_needs has no columns {sorted(unknown)}")
    columns = list(facts)
    # Column names come from _NEED_MERGE only; every value is a parameter.
    names = ", ".join(["need_id", "community", *columns])
    params = ", ".join(f"${i}" for i in range(1, len(columns) + 3))
    updates = ", ".join(f"{c} = {_NEED_MERGE[c]}" for c in columns) or "need_id = n.need_id"
    await conn.execute(
        f"INSERT INTO report_needs AS n ({names}) VALUES ({params}) "
        f"ON CONFLICT (need_id) DO UPDATE SET {updates} WHERE n.community = EXCLUDED.community",
        need_id,
        community,
        *facts.values(),
    )


async def add_report_escalation(
    conn: Conn, event_id: str, community: str, need_id: uuid.UUID, reason: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO report_escalations (event_id, community, need_id, reason, escalated_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        event_id,
        community,
        need_id,
        reason,
        at,
    )


async def add_report_resolution(
    conn: Conn,
    escalation_id: uuid.UUID,
    community: str,
    need_id: uuid.UUID,
    reason: str,
    outcome: str,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO report_resolutions "
        "(escalation_id, community, need_id, reason, outcome, resolved_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        escalation_id,
        community,
        need_id,
        reason,
        outcome,
        at,
    )


async def add_report_failure(
    conn: Conn,
    event_id: str,
    community: str,
    need_id: uuid.UUID,
    party_kind: str,
    reason: str,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO report_failures (event_id, community, need_id, party_kind, reason, "
        "failed_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        event_id,
        community,
        need_id,
        party_kind,
        reason,
        at,
    )


async def add_report_work(
    conn: Conn,
    event_id: str,
    community: str,
    need_id: uuid.UUID,
    kind: str,
    party: tuple[str, uuid.UUID],
    started_at: datetime | None,
    ended_at: datetime,
    cost_option: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO report_work (event_id, community, need_id, kind, party_kind, party_id, "
        "started_at, ended_at, cost_option) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT DO NOTHING",
        event_id,
        community,
        need_id,
        kind,
        party[0],
        party[1],
        started_at,
        ended_at,
        cost_option,
    )


async def add_report_points(
    conn: Conn, event_id: str, community: str, volunteer_id: uuid.UUID, points: int, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO report_points (event_id, community, volunteer_id, points, at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        event_id,
        community,
        volunteer_id,
        points,
        at,
    )


async def street_office(conn: Conn, slug: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT slug, name, communities FROM street_offices WHERE slug = $1", slug
    )


async def report_rows(
    conn: Conn, communities: list[str], start: datetime, end: datetime
) -> dict[str, list[asyncpg.Record]]:
    """Everything a month's report is computed from, for these communities: needs
    submitted in the month; escalations raised in it (with the first resolution of the
    same need and reason after them); failures, work and points dated in it."""
    needs = await conn.fetch(
        "SELECT need_id, community, kind, urgency, priority_group, window_earliest, "
        "window_latest, submitted_at, accepted_at, arrived_at, fulfilled_at, "
        "fulfilled_by_kind, fulfilled_by_id, failed_at, cancelled_at, escalated_at "
        "FROM report_needs WHERE community = ANY($1::text[]) "
        "AND submitted_at >= $2 AND submitted_at < $3",
        communities,
        start,
        end,
    )
    escalations = await conn.fetch(
        "SELECT e.need_id, e.reason, n.kind, r.outcome FROM report_escalations e "
        "LEFT JOIN report_needs n ON n.need_id = e.need_id AND n.community = e.community "
        "LEFT JOIN LATERAL (SELECT outcome FROM report_resolutions r "
        "  WHERE r.need_id = e.need_id AND r.reason = e.reason AND r.community = e.community "
        "  AND r.resolved_at >= e.escalated_at ORDER BY r.resolved_at LIMIT 1) r ON true "
        "WHERE e.community = ANY($1::text[]) AND e.escalated_at >= $2 AND e.escalated_at < $3",
        communities,
        start,
        end,
    )
    failures = await conn.fetch(
        "SELECT f.reason, f.party_kind, n.kind FROM report_failures f "
        "LEFT JOIN report_needs n ON n.need_id = f.need_id AND n.community = f.community "
        "WHERE f.community = ANY($1::text[]) AND f.failed_at >= $2 AND f.failed_at < $3",
        communities,
        start,
        end,
    )
    work = await conn.fetch(
        "SELECT kind, party_kind, party_id, started_at, ended_at, cost_option FROM report_work "
        "WHERE community = ANY($1::text[]) AND ended_at >= $2 AND ended_at < $3",
        communities,
        start,
        end,
    )
    points = await conn.fetch(
        "SELECT volunteer_id, points FROM report_points "
        "WHERE community = ANY($1::text[]) AND at >= $2 AND at < $3",
        communities,
        start,
        end,
    )
    attendance = await conn.fetch(
        "SELECT activity_id, stall_id, session_id, partner_id, attended FROM report_attendance "
        "WHERE community = ANY($1::text[]) AND session_starts_at >= $2 "
        "AND session_starts_at < $3",
        communities,
        start,
        end,
    )
    return {
        "needs": needs,
        "escalations": escalations,
        "failures": failures,
        "work": work,
        "points": points,
        "attendance": attendance,
    }


async def add_report_attendance(conn: Conn, community: str, data: Any) -> None:
    """Fold attendance.recorded: the latest record of a sign-up (by recorded_at) stands."""
    await conn.execute(
        "INSERT INTO report_attendance AS a (signup_id, community, activity_id, stall_id, "
        "session_id, partner_id, session_starts_at, attended, recorded_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT (signup_id) DO UPDATE SET attended = excluded.attended, "
        "recorded_at = excluded.recorded_at WHERE a.recorded_at < excluded.recorded_at",
        data.signup_id,
        community,
        data.activity_id,
        data.stall_id,
        data.session_id,
        data.partner_id,
        data.session_starts_at,
        data.attended,
        data.recorded_at,
    )
