"""`python -m linli.intake ...`: serve, migrate, and the operator's routine work."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from linli.contracts.types import COMMUNITY_SLUG_PATTERN
from linli.servicekit.cli import ServiceCLI
from linli.servicekit.db import Conn, service_migrations

from . import store
from .app import MIGRATIONS_PACKAGE, build_app, default_settings


def _commands(sub: Any) -> None:
    com = sub.add_parser("communities", help="known communities")
    com_sub = com.add_subparsers(dest="action", required=True)
    add = com_sub.add_parser("add")
    add.add_argument("slug")
    add.add_argument("name")
    com_sub.add_parser("list")


async def _run(args: argparse.Namespace, conn: Conn) -> int | None:
    if args.command != "communities":
        return None
    if args.action == "add":
        import re

        if not re.match(COMMUNITY_SLUG_PATTERN, args.slug):
            print("a community slug is lowercase letters, digits and -", file=sys.stderr)
            return 2
        created = await store.add_community(conn, args.slug, args.name)
        print(json.dumps({"community": args.slug, "created": created}))
    else:
        for row in await store.list_communities(conn):
            print(json.dumps({"slug": row["slug"], "name": row["name"]}, ensure_ascii=False))
    return 0


CLI = ServiceCLI(
    "python -m linli.intake",
    settings=default_settings,
    build_app=build_app,
    migrations=lambda: service_migrations(MIGRATIONS_PACKAGE, "intake"),
    extra_commands=_commands,
    run_extra=_run,
)


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
