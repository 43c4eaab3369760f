"""All SQL of the console: staff, street offices, sessions, sign-in failures."""

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
