"""`python -m linli.console ...`: servicekit's commands plus staff accounts and street
offices.

    staff add --login L --name N --role community_operator --community C [--community ...]
              [--token lnl_...] [--password-stdin]
    staff add --login L --role street_office --street-office S ...
    staff list
    staff disable L
    street-office add --slug S --name N --community C [--community ...]

`staff add` prints the account, the role its service token must be registered with
(`service_role`: `operator` for a community operator, `street_office` for a street
office's staff, ADR 0040) and, once, the token the console will call the services with;
register it in each of the four services with
`python -m linli.<service> credentials issue --role R --community C ... --token T`, for
a street office with each of its communities (`street-office list`). `make run` does
this for its demo accounts. Without `--password-stdin` a password is
generated and printed once.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any

from linli.servicekit.cli import ServiceCLI
from linli.servicekit.db import Conn, service_migrations
from linli.servicekit.sealing import SecretBox

from . import accounts, store
from .app import MIGRATIONS_PACKAGE, build_app, default_settings


def _commands(sub: Any) -> None:
    staff = sub.add_parser("staff", help="staff accounts of the console")
    staff_sub = staff.add_subparsers(dest="action", required=True)
    add = staff_sub.add_parser("add", help="create an account (password and token printed once)")
    add.add_argument("--login", required=True)
    add.add_argument("--name", default="", help="display name")
    add.add_argument("--role", choices=[r.value for r in accounts.StaffRole], required=True)
    add.add_argument("--community", action="append", default=[], help="repeatable")
    add.add_argument("--street-office", default=None)
    add.add_argument("--token", help="the service token to keep (default: a new one)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    staff_sub.add_parser("list", help="accounts (never a password hash or token)")
    disable = staff_sub.add_parser("disable", help="disable an account and end its sessions")
    disable.add_argument("login")
    office = sub.add_parser("street-office", help="street offices (街道) and their communities")
    office_sub = office.add_subparsers(dest="action", required=True)
    office_add = office_sub.add_parser("add", help="create or change a street office")
    office_add.add_argument("--slug", required=True)
    office_add.add_argument("--name", required=True)
    office_add.add_argument("--community", action="append", required=True)
    office_sub.add_parser("list")


async def _run(args: argparse.Namespace, conn: Conn) -> int | None:
    if args.command == "staff":
        return await _staff(args, conn)
    if args.command == "street-office":
        if args.action == "add":
            bad = [c for c in args.community if not accounts.COMMUNITY.match(c)]
            if bad or not accounts.COMMUNITY.match(args.slug):
                print(f"not slugs: {bad or [args.slug]}", file=sys.stderr)
                return 2
            await store.upsert_street_office(conn, args.slug, args.name, args.community)
        for row in await store.street_offices(conn):
            print(json.dumps({**dict(row), "communities": list(row["communities"])}))
        return 0
    return None


async def _staff(args: argparse.Namespace, conn: Conn) -> int:
    if args.action == "list":
        for account in await accounts.list_accounts(conn):
            print(json.dumps(account, ensure_ascii=False))
        return 0
    if args.action == "disable":
        staff_id = await store.disable_staff(conn, args.login)
        if staff_id is None:
            print(f"no account {args.login!r}", file=sys.stderr)
            return 2
        print(json.dumps({"disabled": args.login}))
        return 0
    settings = default_settings()
    box = SecretBox(settings.secrets_key.get_secret_value() if settings.secrets_key else None)
    generated = not args.password_stdin
    password = secrets.token_urlsafe(12) if generated else sys.stdin.readline().rstrip("\n")
    token = args.token or "lnl_" + secrets.token_urlsafe(32)
    try:
        staff_id = await accounts.add_staff(
            conn,
            box,
            login=args.login,
            display_name=args.name,
            password=password,
            role=accounts.StaffRole(args.role),
            communities=args.community,
            street_office=args.street_office,
            service_token=token,
        )
    except accounts.AccountError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    role = accounts.StaffRole(args.role)
    out: dict[str, Any] = {
        "id": str(staff_id),
        "login": args.login,
        "role": args.role,
        "service_role": accounts.service_role(role).value,
    }
    if generated:
        out["password"] = password
    if not args.token:
        out["service_token"] = token
    print(json.dumps(out))
    return 0


CLI = ServiceCLI(
    "python -m linli.console",
    settings=default_settings,
    build_app=build_app,
    migrations=lambda: service_migrations(MIGRATIONS_PACKAGE, "console"),
    extra_commands=_commands,
    run_extra=_run,
)


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
