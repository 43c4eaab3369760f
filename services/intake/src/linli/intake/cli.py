"""`python -m linli.intake ...`: serve, migrate, and the operator's routine work."""

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

from . import store
from .app import MIGRATIONS_PACKAGE, build_app, default_settings


async def _connect(settings: ServiceSettings) -> asyncpg.Connection:
    conn = await asyncpg.connect(
        settings.database_url.get_secret_value(),
        server_settings={"search_path": f"{settings.db_schema},public"},
    )
    await migrate(conn, settings.db_schema, service_migrations(MIGRATIONS_PACKAGE, "intake"))
    return conn


async def _run(args: argparse.Namespace) -> int:
    settings = default_settings()
    conn = await _connect(settings)
    try:
        if args.command == "migrate":
            print("migrations applied")
        elif args.command == "communities" and args.action == "add":
            created = await store.add_community(conn, args.slug, args.name)
            print(json.dumps({"community": args.slug, "created": created}))
        elif args.command == "communities" and args.action == "list":
            for row in await store.list_communities(conn):
                print(json.dumps({"slug": row["slug"], "name": row["name"]}, ensure_ascii=False))
        elif args.command == "credentials" and args.action == "issue":
            cred_id, token = await issue_credential(
                conn, role=Role(args.role), communities=args.community, label=args.label
            )
            print(json.dumps({"credential_id": str(cred_id), "token": token}))
        elif args.command == "credentials" and args.action == "revoke":
            ok = await revoke_credential(conn, uuid.UUID(args.id))
            print(json.dumps({"revoked": ok}))
        elif args.command == "dead-letters" and args.action == "list":
            rows = await conn.fetch(
                "SELECT id, consumer, subject, reasons, created_at, replayed_at, replay_count "
                "FROM dead_letters ORDER BY created_at DESC LIMIT $1",
                args.limit,
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
        elif args.command == "dead-letters" and args.action == "replay":
            import nats

            from linli.servicekit.db import create_pool
            from linli.servicekit.messaging import replay_dead_letter

            pool = await create_pool(
                settings.database_url.get_secret_value(), settings.db_schema, min_size=1
            )
            nc = await nats.connect(
                settings.nats_url,
                user=settings.nats_user,
                password=settings.nats_password.get_secret_value()
                if settings.nats_password
                else None,
            )
            try:
                msg_id = await replay_dead_letter(pool, nc, uuid.UUID(args.id))
                print(json.dumps({"replayed": args.id, "msg_id": msg_id}))
            finally:
                await nc.close()
                await pool.close()
        return 0
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linli.intake", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (the default)")
    sub.add_parser("migrate", help="apply migrations and exit")
    com = sub.add_parser("communities", help="known communities")
    com_sub = com.add_subparsers(dest="action", required=True)
    add = com_sub.add_parser("add")
    add.add_argument("slug")
    add.add_argument("name")
    com_sub.add_parser("list")
    cred = sub.add_parser("credentials", help="API credentials")
    cred_sub = cred.add_subparsers(dest="action", required=True)
    issue = cred_sub.add_parser("issue", help="issue a token (printed once)")
    issue.add_argument("--community", action="append", required=True, help="repeatable; * = all")
    issue.add_argument("--role", choices=[r.value for r in Role], required=True)
    issue.add_argument("--label", default="")
    revoke = cred_sub.add_parser("revoke")
    revoke.add_argument("id")
    dlq = sub.add_parser("dead-letters", help="rejected or failed messages")
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
