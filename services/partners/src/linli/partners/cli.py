"""`python -m linli.partners ...`: serve, migrate, and the operator's routine work."""

from __future__ import annotations

import sys
import uuid

from linli.contracts.types import Role
from linli.servicekit.cli import ServiceCLI
from linli.servicekit.db import Conn, service_migrations

from .app import MIGRATIONS_PACKAGE, build_app, default_settings

PARTY_ROLES = (Role.PARTNER, Role.VOLUNTEER)


async def _check_subject(conn: Conn, role: Role, subject_id: uuid.UUID | None) -> str | None:
    """A partner or volunteer token must name an existing partner or volunteer."""
    if role not in PARTY_ROLES:
        return None
    if subject_id is None:
        return "--subject-id (the partner or volunteer id) is required"
    table = "partners" if role is Role.PARTNER else "volunteers"
    exists = await conn.fetchval(f"SELECT true FROM {table} WHERE id = $1", subject_id)  # noqa: S608
    return None if exists else f"no {role.value} with id {subject_id}"


CLI = ServiceCLI(
    "python -m linli.partners",
    settings=default_settings,
    build_app=build_app,
    migrations=lambda: service_migrations(MIGRATIONS_PACKAGE, "partners"),
    check_subject=_check_subject,
)


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
