"""The command line every service shares: serve, migrate, streams, credentials, dead
letters, the outbox's quarantine.

A service adds its own commands (intake: communities) through `extra_commands` and
`run_extra`; everything else is the same in every service, so an operator learns it once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import asyncpg
import uvicorn

from linli.contracts.types import Role

from .auth import issue_credential, revoke_credential, scope_problem
from .db import Conn, Migration, create_pool, migrate
from .messaging import provision_streams, replay_dead_letter, stream_configs
from .outbox import notify_channel as outbox_channel
from .revocations import publish_revocation
from .settings import ServiceSettings

REVOKE_PUBLISH_TIMEOUT_S = 15.0
"""How long `credentials revoke` tries to reach NATS before it reports a local revocation."""

SubjectCheck = Callable[[Conn, Role, uuid.UUID | None], Awaitable[str | None]]


class ServiceCLI:
    """`python -m linli.<service> ...` for one service."""

    def __init__(
        self,
        prog: str,
        *,
        settings: Callable[[], ServiceSettings],
        build_app: Callable[[Any], Any],
        migrations: Callable[[], list[Migration]],
        check_subject: SubjectCheck | None = None,
        extra_commands: Callable[[Any], None] | None = None,
        run_extra: Callable[[argparse.Namespace, Conn], Awaitable[int | None]] | None = None,
    ) -> None:
        self.prog = prog
        self.settings = settings
        self.build_app = build_app
        self.migrations = migrations
        self.check_subject = check_subject
        self.extra_commands = extra_commands
        self.run_extra = run_extra

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog)
        sub = parser.add_subparsers(dest="command")
        sub.add_parser("serve", help="run the service (the default)")
        sub.add_parser("migrate", help="apply migrations and exit")
        sub.add_parser(
            "streams",
            help="create or update the JetStream streams and exit (a Kubernetes Job; "
            "the services then run with LINLI_PROVISION_STREAMS=false)",
        )
        cred = sub.add_parser("credentials", help="API credentials")
        cred_sub = cred.add_subparsers(dest="action", required=True)
        issue = cred_sub.add_parser("issue", help="issue a token (printed once)")
        issue.add_argument(
            "--community", action="append", required=True, help="repeatable; * = all"
        )
        issue.add_argument("--role", choices=[r.value for r in Role], required=True)
        issue.add_argument("--label", default="")
        issue.add_argument("--subject-id", help="the partner or volunteer a token speaks for")
        issue.add_argument(
            "--token",
            help="register this token instead of generating one (provisioning the same "
            "operator token in several services)",
        )
        cred_sub.add_parser(
            "import",
            help="register several given tokens at once, one JSON object a line on stdin: "
            '{"role", "communities", "token", "label", "subject_id"} (provisioning)',
        )
        revoke = cred_sub.add_parser("revoke")
        revoke.add_argument("id")
        dlq = sub.add_parser("dead-letters", help="messages that could not be processed")
        dlq_sub = dlq.add_subparsers(dest="action", required=True)
        lst = dlq_sub.add_parser("list")
        lst.add_argument("--limit", type=int, default=50)
        lst.add_argument("--open", action="store_true", help="only those not replayed")
        rep = dlq_sub.add_parser("replay")
        rep.add_argument("id")
        box = sub.add_parser("outbox", help="outbox rows the server refused (ADR 0029)")
        box_sub = box.add_subparsers(dest="action", required=True)
        box_list = box_sub.add_parser(
            "list", help="quarantined rows, and rows being refused that are not yet quarantined"
        )
        box_list.add_argument("--limit", type=int, default=50)
        retry = box_sub.add_parser(
            "retry", help="re-queue quarantined rows (after fixing the cause); all or none"
        )
        retry.add_argument("ids", nargs="*", type=int, metavar="ID", help="outbox row ids")
        retry.add_argument("--all", action="store_true", help="every quarantined row")
        if self.extra_commands is not None:
            self.extra_commands(sub)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        args = self.parser().parse_args(argv)
        if args.command in (None, "serve"):
            settings = self.settings()
            _exit_zero_after_drain()
            uvicorn.run(
                self.build_app(settings),
                host=settings.http_host,
                port=settings.http_port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=10,
            )
            return 0
        return asyncio.run(self._run(args))

    async def _run(self, args: argparse.Namespace) -> int:
        settings = self.settings()
        if args.command == "streams":
            nc = await connect_nats(settings)
            try:
                await provision_streams(nc.jetstream(), settings)
            finally:
                await nc.close()
            print(json.dumps({"streams": [c.name for c in stream_configs(settings)]}))
            return 0
        conn = await asyncpg.connect(
            settings.database_url.get_secret_value(),
            server_settings={"search_path": f"{settings.db_schema},public"},
        )
        try:
            await migrate(conn, settings.db_schema, self.migrations())
            if args.command == "migrate":
                print("migrations applied")
                return 0
            if args.command == "credentials":
                return await self._credentials(args, conn)
            if args.command == "dead-letters" and args.action == "list":
                await _list_dead_letters(conn, args.limit, only_open=args.open)
                return 0
            if args.command == "dead-letters" and args.action == "replay":
                await _replay(settings, uuid.UUID(args.id))
                return 0
            if args.command == "outbox" and args.action == "list":
                await _list_outbox(conn, args.limit)
                return 0
            if args.command == "outbox" and args.action == "retry":
                return await _retry_outbox(conn, settings.db_schema, args.ids, every=args.all)
            if self.run_extra is not None:
                result = await self.run_extra(args, conn)
                if result is not None:
                    return result
            print(f"unknown command {args.command}", file=sys.stderr)
            return 2
        finally:
            await conn.close()

    async def _credentials(self, args: argparse.Namespace, conn: Conn) -> int:
        if args.action == "revoke":
            return await self._revoke(args.id, conn)
        if args.action == "import":
            # One process and one transaction for many tokens: `make run` provisions a
            # dozen, and a Python start per token was most of its start-up time.
            wanted = [json.loads(line) for line in sys.stdin if line.strip()]
            async with conn.transaction():
                for item in wanted:
                    issued = await self._issue(
                        conn,
                        Role(item["role"]),
                        list(item["communities"]),
                        item.get("label", ""),
                        item.get("subject_id"),
                        item["token"],
                    )
                    if issued is None:
                        return 2
            return 0
        issued = await self._issue(
            conn, Role(args.role), args.community, args.label, args.subject_id, args.token
        )
        return 0 if issued is not None else 2

    async def _revoke(self, given: str, conn: Conn) -> int:
        """Revoke here, then tell every service through the revocations bucket (ADR 0030).

        Safe to run again: a credential already revoked here is published again, which is
        how an operator finishes a revocation whose publication failed (NATS down).
        """
        try:
            cred_id = uuid.UUID(given)
        except ValueError:
            print(f"not a credential id: {given!r}", file=sys.stderr)
            return 2
        fresh, digest = await revoke_credential(conn, cred_id)
        if digest is None:
            print(f"no credential {cred_id} in this service", file=sys.stderr)
            return 2
        settings = self.settings()

        async def publish() -> None:
            nc = await connect_nats(settings)
            try:
                await publish_revocation(nc.jetstream(), settings.revocations_bucket, digest)
            finally:
                await nc.close()

        try:
            await asyncio.wait_for(publish(), REVOKE_PUBLISH_TIMEOUT_S)
        except Exception as exc:
            print(
                json.dumps({"revoked": fresh, "credential_id": str(cred_id), "everywhere": False}),
            )
            print(
                f"revoked in this service only: publishing the revocation failed "
                f"({type(exc).__name__}); run the same command again",
                file=sys.stderr,
            )
            return 1
        print(json.dumps({"revoked": fresh, "credential_id": str(cred_id), "everywhere": True}))
        return 0

    async def _issue(
        self,
        conn: Conn,
        role: Role,
        communities: list[str],
        label: str,
        subject: str | None,
        token: str | None,
    ) -> uuid.UUID | None:
        """Issue one credential and print it; None (and why, on stderr) when refused."""
        subject_id = uuid.UUID(subject) if subject else None
        problem = scope_problem(role, communities)
        if problem:
            print(problem, file=sys.stderr)
            return None
        if self.check_subject is not None:
            problem = await self.check_subject(conn, role, subject_id)
            if problem:
                print(problem, file=sys.stderr)
                return None
        cred_id, issued = await issue_credential(
            conn,
            role=role,
            communities=communities,
            label=label,
            subject_id=subject_id,
            token=token,
        )
        print(json.dumps({"credential_id": str(cred_id), "token": issued}))
        return cred_id


async def connect_nats(settings: ServiceSettings) -> Any:
    """A plain nats-py connection with the service's credentials (operator commands)."""
    import nats

    options: dict[str, Any] = {}
    if settings.nats_creds_file:
        options["user_credentials"] = settings.nats_creds_file
    elif settings.nats_user and settings.nats_password:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password.get_secret_value()
    return await nats.connect(settings.nats_url, **options)


def _exit_zero_after_drain() -> None:
    """SIGTERM ends `serve` with exit status 0 once uvicorn has drained.

    uvicorn handles SIGTERM itself (stops accepting, finishes the requests in hand within
    `timeout_graceful_shutdown`, then the lifespan stops consuming, relaying and the
    background loops), and afterwards raises the signal again against the handler that
    was there before it: with the default one the process dies by the signal (status
    143), and a drain that went as planned looks like a crash to Kubernetes and to
    supervisors. This handler is that "one before": a SIGTERM that arrives before uvicorn
    serves (nothing held yet) or that uvicorn passes on after its drain exits 0.
    """

    def exit_zero(_sig: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_zero)


async def _list_dead_letters(conn: Conn, limit: int, *, only_open: bool) -> None:
    rows = await conn.fetch(
        "SELECT id, consumer, subject, reasons, created_at, replayed_at, replay_count "
        "FROM dead_letters WHERE NOT $2 OR replayed_at IS NULL "
        "ORDER BY created_at DESC LIMIT $1",
        limit,
        only_open,
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
                    "replayed_at": r["replayed_at"].isoformat() if r["replayed_at"] else None,
                    "replay_count": r["replay_count"],
                },
                ensure_ascii=False,
            )
        )


async def _list_outbox(conn: Conn, limit: int) -> None:
    rows = await conn.fetch(
        "SELECT id, event_id, subject, attempts, refusals, last_error, created_at, "
        "next_attempt_at, quarantined_at FROM outbox "
        "WHERE sent_at IS NULL AND (quarantined_at IS NOT NULL OR refusals > 0) "
        "ORDER BY id LIMIT $1",
        limit,
    )
    for r in rows:
        print(
            json.dumps(
                {
                    "id": r["id"],
                    "state": "quarantined" if r["quarantined_at"] else "refused",
                    "event_id": r["event_id"],
                    "subject": r["subject"],
                    "attempts": r["attempts"],
                    "refusals": r["refusals"],
                    "last_error": r["last_error"],
                    "created_at": r["created_at"].isoformat(),
                    "quarantined_at": _iso(r["quarantined_at"]),
                    "next_attempt_at": _iso(r["next_attempt_at"]),
                }
            )
        )


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def _retry_outbox(conn: Conn, schema: str, ids: list[int], *, every: bool) -> int:
    """Put quarantined rows back in the relay's queue, as if never refused; all or none."""
    if every == bool(ids):
        print("give outbox row ids or --all (not both)", file=sys.stderr)
        return 2
    async with conn.transaction():
        if not every:
            found = await conn.fetch(
                "SELECT id, quarantined_at FROM outbox WHERE id = ANY($1::bigint[]) FOR UPDATE",
                ids,
            )
            known = {r["id"]: r["quarantined_at"] for r in found}
            missing = [i for i in ids if i not in known]
            if missing:
                print(f"no outbox rows {missing}", file=sys.stderr)
                return 2
            waiting = [i for i in ids if known[i] is None]
            if waiting:
                print(f"outbox rows {waiting} are not quarantined", file=sys.stderr)
                return 2
        requeued = await conn.fetch(
            "UPDATE outbox SET quarantined_at = NULL, refusals = 0, next_attempt_at = NULL "
            "WHERE quarantined_at IS NOT NULL AND ($2 OR id = ANY($1::bigint[])) "
            "RETURNING id",
            ids,
            every,
        )
        # Wake the relays now rather than at their next poll.
        await conn.execute("SELECT pg_notify($1, '')", outbox_channel(schema))
    print(json.dumps({"requeued": sorted(r["id"] for r in requeued)}))
    return 0


async def _replay(settings: ServiceSettings, letter_id: uuid.UUID) -> None:
    pool = await create_pool(
        settings.database_url.get_secret_value(), settings.db_schema, min_size=1
    )
    nc = await connect_nats(settings)
    try:
        msg_id = await replay_dead_letter(pool, nc, letter_id)
        print(json.dumps({"replayed": str(letter_id), "msg_id": msg_id}))
    finally:
        await nc.close()
        await pool.close()
