"""`python -m linli.notifications ...`: serve, migrate, credentials, dead letters."""

from __future__ import annotations

import sys

from linli.servicekit.cli import ServiceCLI
from linli.servicekit.db import service_migrations

from .app import MIGRATIONS_PACKAGE, build_app, default_settings

CLI = ServiceCLI(
    "python -m linli.notifications",
    settings=default_settings,
    build_app=build_app,
    migrations=lambda: service_migrations(MIGRATIONS_PACKAGE, "notifications"),
)


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
