"""`python -m linli.scheduling ...`: serve, migrate, policies, and the operator's routine work."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from linli.servicekit.cli import ServiceCLI
from linli.servicekit.db import Conn, service_migrations

from . import store
from .app import MIGRATIONS_PACKAGE, build_app, default_settings


def _commands(sub: Any) -> None:
    pol = sub.add_parser("policy", help="per-community offer timeouts and SLA durations")
    pol_sub = pol.add_subparsers(dest="action", required=True)
    pset = pol_sub.add_parser("set", help="set some fields (SLA seconds); others unchanged")
    pset.add_argument("community", help="community slug, or * for every community")
    for column in store.POLICY_COLUMNS:
        pset.add_argument(f"--{column.replace('_', '-')}", dest=column, type=float)
    pshow = pol_sub.add_parser("show", help="the overrides in force (defaults not shown)")
    pshow.add_argument("community")


async def _run(args: argparse.Namespace, conn: Conn) -> int | None:
    if args.command != "policy":
        return None
    if args.action == "set":
        values = {c: getattr(args, c) for c in store.POLICY_COLUMNS}
        await store.set_policy(conn, args.community, values)
    overrides = await store.policy_overrides(conn, args.community)
    print(json.dumps({"community": args.community, **overrides}))
    return 0


CLI = ServiceCLI(
    "python -m linli.scheduling",
    settings=default_settings,
    build_app=build_app,
    migrations=lambda: service_migrations(MIGRATIONS_PACKAGE, "scheduling"),
    extra_commands=_commands,
    run_extra=_run,
)


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
