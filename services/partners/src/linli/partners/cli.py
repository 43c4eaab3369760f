"""`python -m linli.partners ...`: serve, migrate, and the operator's routine work."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

import asyncpg
import uvicorn

from linli.contracts.types import Role
from linli.servicekit.auth import issue_credential, revoke_credential
from linli.servicekit.db import migrate, service_migrations
from linli.servicekit.settings import ServiceSettings

from .app import MIGRATIONS_PACKAGE, build_app, default_settings

PARTY_ROLES = (Role.PARTNER, Role.VOLUNTEER)


async def _connect(settings: ServiceSettings) -> asyncpg.Connection:
    conn = await asyncpg.connect(
        settings.database_url.get_secret_value(),
        server_settings={"search_path": f"{settings.db_schema},public"},
    )
    await migrate(conn, settings.db_schema, service_migrations(MIGRATIONS_PACKAGE, "partners"))
    return conn


async def _subject_exists(conn: asyncpg.Connection, role: Role, subject_id: uuid.UUID) -> bool:
    if role is Role.PARTNER:
        query = "SELECT true FROM partners WHERE id = $1"
    else:
        query = "SELECT true FROM volunteers WHERE id = $1"
    return bool(await conn.fetchval(query, subject_id))


async def _issue(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    role = Role(args.role)
    subject_id = uuid.UUID(args.subject_id) if args.subject_id else None
    if role in PARTY_ROLES:
        if subject_id is None:
            print("--subject-id (the partner or volunteer id) is required", file=sys.stderr)
            return 2
        if not await _subject_exists(conn, role, subject_id):
            print(f"no {role.value} with id {subject_id}", file=sys.stderr)
            return 2
    cred_id, token = await issue_credential(
        conn, role=role, communities=args.community, label=args.label, subject_id=subject_id
    )
    print(json.dumps({"credential_id": str(cred_id), "token": token}))
    return 0


async def _dead_letters(conn: asyncpg.Connection, limit: int) -> None:
    rows = await conn.fetch(
        "SELECT id, consumer, subject, reasons, created_at, replayed_at, replay_count "
        "FROM dead_letters ORDER BY created_at DESC LIMIT $1",
        limit,
    )
    for r in rows:
        print(
            json.dumps(
                {
                    "id": str(r["id"]),
                    "consumer": r["consumer"],
                    "subject": r["subject"],
                    "reasons": json.loads(r["reasons"]),
                    "created_at": r["created_at"].isoformat(),
                    "replay_count": r["replay_count"],
                },
                ensure_ascii=False,
            )
        )


async def _replay(settings: ServiceSettings, letter_id: uuid.UUID) -> None:
    import nats

    from linli.servicekit.db import create_pool
    from linli.servicekit.messaging import replay_dead_letter

    pool = await create_pool(
        settings.database_url.get_secret_value(), settings.db_schema, min_size=1
    )
    nc = await nats.connect(
        settings.nats_url,
        user=settings.nats_user,
        password=settings.nats_password.get_secret_value() if settings.nats_password else None,
    )
    try:
        msg_id = await replay_dead_letter(pool, nc, letter_id)
        print(json.dumps({"replayed": str(letter_id), "msg_id": msg_id}))
    finally:
        await nc.close()
        await pool.close()


async def _run(args: argparse.Namespace) -> int:
    settings = default_settings()
    conn = await _connect(settings)
    try:
        if args.command == "migrate":
            print("migrations applied")
        elif args.command == "credentials" and args.action == "issue":
            return await _issue(conn, args)
        elif args.command == "credentials" and args.action == "revoke":
            ok = await revoke_credential(conn, uuid.UUID(args.id))
            print(json.dumps({"revoked": ok}))
        elif args.command == "dead-letters" and args.action == "list":
            await _dead_letters(conn, args.limit)
        elif args.command == "dead-letters" and args.action == "replay":
            await _replay(settings, uuid.UUID(args.id))
        return 0
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linli.partners", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (the default)")
    sub.add_parser("migrate", help="apply migrations and exit")
    cred = sub.add_parser("credentials", help="API credentials")
    cred_sub = cred.add_subparsers(dest="action", required=True)
    issue = cred_sub.add_parser("issue", help="issue a token (printed once)")
    issue.add_argument("--community", action="append", required=True, help="repeatable; * = all")
    issue.add_argument("--role", choices=[r.value for r in Role], required=True)
    issue.add_argument(
        "--subject-id", help="partner or volunteer id (required for those roles)", default=None
    )
    issue.add_argument("--label", default="")
    revoke = cred_sub.add_parser("revoke")
    revoke.add_argument("id")
    dlq = sub.add_parser("dead-letters", help="messages the consumer gave up on")
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    lst = dlq_sub.add_parser("list")
    lst.add_argument("--limit", type=int, default=50)
    rep = dlq_sub.add_parser("replay")
    rep.add_argument("id")
    args = parser.parse_args(argv)
    if args.command in (None, "serve"):
        settings = default_settings()
        uvicorn.run(
            build_app(settings),
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        return 0
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
