"""PostgreSQL pool and per-service SQL migrations.

Each service owns one schema. Migrations are plain SQL files named `NNNN_name.sql`
in the service package (and servicekit's own, applied first under the `servicekit`
prefix). Two processes starting at once are safe: the runner holds a transaction-level
advisory lock keyed by the schema while it applies and records files.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

Pool = asyncpg.Pool
# A plain connection or one borrowed from a pool: both run the same queries.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


def quote_ident(name: str) -> str:
    """Quote an identifier that has already been checked against an allow-list pattern."""
    if not _IDENT.match(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return f'"{name}"'


async def create_pool(dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10) -> Pool:
    """A pool whose connections see only the service's schema first."""
    quote_ident(schema)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": f"{schema},public", "application_name": schema},
        command_timeout=30,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def _keep_session(_conn: Any) -> None:
    """Skip asyncpg's reset query when a connection goes back to the pool.

    The default (`RESET ALL`, `UNLISTEN *`, unlock advisory locks, close cursors) costs a
    round trip per acquisition. Linli leaves no session state behind: settings are `SET
    LOCAL`, advisory locks are transaction-level, listeners use their own connections.
    asyncpg still rolls back a transaction left open.
    """


@dataclass(frozen=True)
class Migration:
    """One SQL file to apply once."""

    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str, prefix: str) -> list[Migration]:
    """Read `NNNN_name.sql` files from `package.migrations`, in order."""
    root = resources.files(package).joinpath("migrations")
    found = []
    for entry in root.iterdir():
        if _MIGRATION.match(entry.name):
            found.append(Migration(f"{prefix}:{entry.name[:-4]}", entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def service_migrations(package: str, prefix: str) -> list[Migration]:
    """Servicekit's shared tables (outbox, inbox, dead letters) and then the service's."""
    return load_migrations("linli.servicekit", "servicekit") + load_migrations(package, prefix)


async def migrate(conn: Conn, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply what is missing; return the versions applied by this call."""
    q = quote_ident(schema)
    applied: list[str] = []
    async with conn.transaction():
        # hashtext gives a stable int key per schema; concurrent starters queue here.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"linli-migrate:{schema}")
        # A service role in production owns its schema but may not create schemas.
        if not await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", schema):
            await conn.execute(f"CREATE SCHEMA {q}")
        await conn.execute(f"SET LOCAL search_path TO {q}, public")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        done = {r["version"]: r["checksum"] for r in rows}
        for m in migrations:
            if m.version in done:
                if done[m.version] != m.checksum:
                    log.warning(
                        "migration changed after it was applied", extra={"version": m.version}
                    )
                continue
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                m.version,
                m.checksum,
            )
            applied.append(m.version)
    return applied


async def pending_migrations(conn: Conn, schema: str, migrations: list[Migration]) -> list[str]:
    """Versions not yet applied (readiness fails while any remain)."""
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.schema_migrations"
    )
    if not exists:
        return [m.version for m in migrations]
    rows = await conn.fetch(f"SELECT version FROM {quote_ident(schema)}.schema_migrations")
    done = {r["version"] for r in rows}
    return [m.version for m in migrations if m.version not in done]


TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    # Class 08: the connection failed or went away (ConnectionDoesNotExistError among them).
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.InterfaceError,
)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying later: the database or the network went away for a while."""
    return isinstance(exc, TRANSIENT_ERRORS)


def record_to_dict(record: Any) -> dict[str, Any]:
    """asyncpg Record to a plain dict."""
    return dict(record.items())
