"""intake, partners, scheduling (and notifications) as separate processes for one test.

`Lifecycle` runs the services on the session's NATS and PostgreSQL the way `make run`
wires them (libs/devstack/src/linli/devstack/stack.py), isolated per test:

* each service has its own schema (`names.schema("intake")`, …); all share the test's
  streams (`names.stream("events")`, `names.stream("ingress")`) and communities
  (`names.community("home")`, `names.community("other")`);
* one operator token, registered in every service; partners asks intake for contact
  details with a `service` token issued in intake (LINLI_INTAKE_URL / LINLI_INTAKE_TOKEN);
* free HTTP ports, fast outbox and timer polling, and `LINLI_TIME_SCALE` for scheduling
  chosen per test;
* notifications only when asked for (`notifications=True`), with a Fernet
  `LINLI_SECRETS_KEY` and plain-http receivers on 127.0.0.1 allowed;
* any number of replicas of every service (`start(replicas={...})`): each replica is its
  own process with its own HTTP port (its "slot"), all sharing the service's durables,
  schema and outbox. A replica is stopped with SIGTERM (`terminate`, its exit code is
  kept) or SIGKILL (`kill`), and `restart` starts it again on the same port.

* the console only when asked for (`console=True`, which brings notifications): staff
  accounts are added with `add_staff`, each with its own operator token registered in
  the four services, as `make run` does for its demo accounts.

`lc.http` reaches a service through `lc.url(service, path)` / `lc.c(...)`, which name the
service, not a replica (`http://intake.linli/...`): a routing transport spreads requests
over the service's slots round-robin and, like a Kubernetes Service whose endpoint is
gone, tries the next slot only when a connection is refused (the replica is not
listening: stopped, or not started yet). Any other failure (a reset, a response cut off,
a timeout) is the test's to see: a request a replica accepted must be answered.

Everything a test does goes through the services' HTTP APIs, except reading the truth
afterwards: the events stream (`events`) and the services' tables (`sql`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import nats
from nats.aio.client import Client as NatsClient

from linli.console.accounts import StaffRole, add_staff
from linli.console.settings import ConsoleSettings
from linli.console.store import upsert_street_office
from linli.contracts.binding import from_nats
from linli.contracts.envelope import CloudEvent, EnvelopeError
from linli.contracts.types import Role
from linli.devstack.servers import free_port
from linli.intake.app import IntakeSettings
from linli.notifications.settings import NotificationsSettings
from linli.partners.app import PartnersSettings
from linli.scheduling.app import SchedulingSettings
from linli.servicekit.auth import issue_credential
from linli.servicekit.db import create_pool, migrate, service_migrations
from linli.servicekit.messaging import provision_streams
from linli.servicekit.outbox import OutboxRelay
from linli.servicekit.sealing import SecretBox
from linli.servicekit.settings import ServiceSettings

from .intake import settings_env
from .names import Names
from .procs import ProcessGroup, ServiceProcess

SERVICES = ("intake", "partners", "scheduling")
"""The services every lifecycle runs; notifications joins when asked for."""
ALL_SERVICES = (*SERVICES, "notifications")
MODULES = {name: f"linli.{name}" for name in (*ALL_SERVICES, "console")}


def new_token() -> str:
    return "lnl_" + secrets.token_urlsafe(32)


def window(start_in_min: float, minutes: float) -> dict[str, str]:
    """A time window as the HTTP APIs take it, relative to now."""
    start = datetime.now(UTC) + timedelta(minutes=start_in_min)
    return {
        "earliest": start.isoformat(),
        "latest": (start + timedelta(minutes=minutes)).isoformat(),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


# --- the events stream -------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvent:
    """One message of the test's events stream, decoded."""

    seq: int
    subject: str
    msg_id: str | None
    event: CloudEvent[dict[str, Any]]

    @property
    def short(self) -> str:
        """`slot.reserved` for `linli.slot.reserved.v1`."""
        return self.event.type.removeprefix("linli.").rsplit(".v", 1)[0]

    @property
    def data(self) -> dict[str, Any]:
        return self.event.data or {}

    @property
    def need_id(self) -> str | None:
        value = self.data.get("need_id")
        return str(value) if value is not None else None


class EventLog:
    """Reads the test's events stream incrementally (everything ever published)."""

    def __init__(self, nc: NatsClient, stream: str) -> None:
        self._js = nc.jetstream()
        self.stream = stream
        self._next = 1
        self.items: list[StreamEvent] = []
        self._lock = asyncio.Lock()

    async def refresh(self) -> list[StreamEvent]:
        async with self._lock:
            info = await self._js.stream_info(self.stream)
            first = max(self._next, info.state.first_seq)
            last = info.state.last_seq
            for start in range(first, last + 1, 100):
                seqs = range(start, min(start + 100, last + 1))
                msgs = await asyncio.gather(
                    *(self._js.get_msg(self.stream, s) for s in seqs), return_exceptions=True
                )
                for seq, msg in zip(seqs, msgs, strict=True):
                    if isinstance(msg, BaseException):
                        continue  # deleted; we never delete, but do not trip over it
                    headers = dict(msg.headers or {})
                    try:
                        event = from_nats(msg.data or b"", headers)
                    except EnvelopeError:
                        continue  # poison a test published on purpose: not an event
                    self.items.append(
                        StreamEvent(seq, msg.subject, headers.get("Nats-Msg-Id"), event)
                    )
            self._next = max(self._next, last + 1)
            return self.items

    def of(self, short: str | None = None, **match: Any) -> list[StreamEvent]:
        """Events of one short type (e.g. "slot.reserved"; None for all) whose data
        matches `match` (values compared as strings)."""
        found = []
        for item in self.items:
            if short is not None and item.short != short:
                continue
            if all(str(item.data.get(k)) == str(v) for k, v in match.items()):
                found.append(item)
        return found


# --- one service process (or several replicas) --------------------------------------------


@dataclass
class Replica:
    """One process of a service and where it listens (its slot's port)."""

    proc: ServiceProcess
    url: str
    slot: int
    metrics_url: str | None = None
    """Its Prometheus endpoint, when the lifecycle serves metrics."""


@dataclass
class Service:
    name: str
    settings: ServiceSettings
    env: dict[str, str]
    port: int
    replicas: list[Replica] = field(default_factory=list)
    """Every process ever started for the service, in order (stopped ones included)."""
    ports: list[int] = field(default_factory=list)
    """The HTTP port of each slot; slot 0 is `port`."""

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports.append(self.port)

    @property
    def url(self) -> str:
        """A running replica's base URL (the first one's port when none runs)."""
        running = [r.url for r in self.replicas if r.proc.running]
        return running[0] if running else f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.proc.running]

    def free_slot(self) -> int:
        """The first slot no running replica holds (a new one when all are held)."""
        held = {r.slot for r in self.running}
        for slot in range(len(self.ports)):
            if slot not in held:
                return slot
        self.ports.append(free_port())
        return len(self.ports) - 1


class ServiceDown(AssertionError):
    """A service process died although the test did not stop it."""


ROUTE_HOST_SUFFIX = ".linli"
"""`http://<service>.linli/...` names a service; the routing transport picks a replica."""


class ReplicaRouter(httpx.AsyncBaseTransport):
    """Spreads requests over a service's slots; fails over only on a refused connection.

    A refused connection means nobody listens on that port (the replica stopped, has not
    started yet, or is draining and closed its socket): the request was never accepted, so
    sending it elsewhere is safe even when it is not idempotent. Everything else (a reset,
    a response cut off, a read timeout) is raised: the replica had the request.
    While every slot refuses (a lone replica restarting), it waits and tries again, for a
    bounded while.
    """

    def __init__(self, services: Mapping[str, Service], *, patience_s: float = 30.0) -> None:
        self._services = services
        # Idle connections are dropped before uvicorn's 5 s keep-alive closes them: at the
        # same 5 s a request could go out on a connection the server was closing (httpx
        # ReadError in test_two_replicas under load).
        self._inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(keepalive_expiry=2.0))
        self._turn: dict[str, int] = {}
        self._patience_s = patience_s
        self.refused = 0
        """Connections refused (and sent to another slot or tried again)."""
        self.answered: dict[str, int] = {}
        """Answers per slot URL, to show that requests were spread."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if not host.endswith(ROUTE_HOST_SUFFIX):
            return await self._inner.handle_async_request(request)
        service = self._services[host.removesuffix(ROUTE_HOST_SUFFIX)]
        deadline = time.monotonic() + self._patience_s
        while True:
            ports = list(service.ports)
            start = self._turn.get(service.name, 0)
            self._turn[service.name] = start + 1
            for i in range(len(ports)):
                port = ports[(start + i) % len(ports)]
                request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=port)
                request.headers["host"] = f"127.0.0.1:{port}"
                try:
                    response = await self._inner.handle_async_request(request)
                except httpx.ConnectError:
                    self.refused += 1
                    continue
                key = f"{service.name}:{port}"
                self.answered[key] = self.answered.get(key, 0) + 1
                return response
            if time.monotonic() > deadline:
                raise httpx.ConnectError(f"no replica of {service.name} accepts connections")
            await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        await self._inner.aclose()


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class Lifecycle:
    """The services for one test; `await prepare()`, then `await start()`."""

    def __init__(
        self,
        names: Names,
        nats_url: str,
        database_url: str,
        procs: ProcessGroup,
        *,
        time_scale: float = 1.0,
        scheduling_env: Mapping[str, str] | None = None,
        partners_env: Mapping[str, str] | None = None,
        intake_env: Mapping[str, str] | None = None,
        notifications: bool = False,
        notifications_env: Mapping[str, str] | None = None,
        console: bool = False,
        console_env: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        nats_users: Mapping[str, tuple[str, str]] | None = None,
        metrics: bool = False,
    ) -> None:
        """`env` goes to every service (OTEL_* for instance); `<service>_env` to one.

        `nats_users`: on a nats-server with authorization, the (user, password) of each
        service and of the harness itself (`"admin"`, which provisions the streams and
        reads the truth). `metrics`: every replica serves /metrics on a port of its own
        (`Replica.metrics_url`)."""
        self.names = names
        self.nats_url = nats_url
        self.nats_users = dict(nats_users or {})
        self.metrics = metrics
        self.database_url = database_url
        self.procs = procs
        self.home = names.community("home")
        self.other = names.community("other")
        self.events_stream = names.stream("events")
        self.ingress_stream = names.stream("ingress")
        self.operator_token = new_token()
        self.service_token = new_token()
        self.app_token = new_token()
        """A community app's token in notifications (role system, the home community)."""
        notifications = notifications or console
        self.active: tuple[str, ...] = ALL_SERVICES if notifications else SERVICES
        if console:
            self.active = (*self.active, "console")
        common: dict[str, Any] = {
            "environment": "test",
            "database_url": database_url,
            "nats_url": nats_url,
            "events_stream": self.events_stream,
            "ingress_stream": self.ingress_stream,
            "stream_communities": f"{self.home},{self.other}",
            "outbox_poll_interval_s": 0.2,
            "retry_base_delay_s": 0.1,
            "consumer_ack_wait_s": 5.0,
            "db_pool_max": 6,
            "log_json": False,
        }
        ports = {name: free_port() for name in self.active}
        self.offer_link_key = secrets.token_urlsafe(40)
        """The key of signed offer links, shared by partners and notifications (ADR 0043)."""
        settings: dict[str, ServiceSettings] = {
            "intake": IntakeSettings(
                **common, db_schema=names.schema("intake"), http_port=ports["intake"]
            ),
            "partners": PartnersSettings(
                **common,
                db_schema=names.schema("partners"),
                http_port=ports["partners"],
                intake_url=f"http://127.0.0.1:{ports['intake']}",
                intake_token=self.service_token,
                offer_link_key=self.offer_link_key,
            ),
            "scheduling": SchedulingSettings(
                **common,
                db_schema=names.schema("scheduling"),
                http_port=ports["scheduling"],
                time_scale=time_scale,
                timer_poll_interval_s=0.2,
                rematch_delay_s=0.2,
            ),
        }
        if notifications:
            settings["notifications"] = NotificationsSettings(
                **common,
                service_name="notifications",
                db_schema=names.schema("notifications"),
                http_port=ports["notifications"],
                secrets_key=fernet_key(),
                allow_insecure_endpoints=True,
                webhook_timeout_s=2.0,
                retry_schedule_s=[0.3, 0.6, 1.0, 2.0],
                retry_jitter=0.1,
                delivery_poll_interval_s=0.2,
                people_poll_interval_s=0.5,
                sms_provider="console",
                offer_link_key=self.offer_link_key,
                offer_link_base_url=f"http://127.0.0.1:{ports['partners']}",
            )
        if console:
            settings["console"] = ConsoleSettings(
                **common,
                service_name="console",
                db_schema=names.schema("console"),
                http_port=ports["console"],
                intake_url=f"http://127.0.0.1:{ports['intake']}",
                partners_url=f"http://127.0.0.1:{ports['partners']}",
                scheduling_url=f"http://127.0.0.1:{ports['scheduling']}",
                notifications_url=f"http://127.0.0.1:{ports['notifications']}",
                secrets_key=fernet_key(),
                live_settle_s=0.5,
            )
        extra = {
            "console": console_env,
            "intake": intake_env,
            "partners": partners_env,
            "scheduling": scheduling_env,
            "notifications": notifications_env,
        }

        def auth(name: str) -> dict[str, str]:
            if name not in self.nats_users:
                return {}
            user, password = self.nats_users[name]
            # Least privilege: the harness (admin) made the streams in `prepare`.
            return {
                "LINLI_NATS_USER": user,
                "LINLI_NATS_PASSWORD": password,
                "LINLI_PROVISION_STREAMS": "false",
            }

        self.services = {
            name: Service(
                name,
                settings[name],
                {
                    **settings_env(settings[name]),
                    **auth(name),
                    **dict(env or {}),
                    **dict(extra[name] or {}),
                },
                ports[name],
            )
            for name in self.active
        }
        self._nc: NatsClient | None = None
        self._events: EventLog | None = None
        self._pools: dict[str, asyncpg.Pool] = {}
        self._stopped: set[int] = set()
        self.exit_codes: dict[str, int | None] = {}
        """Exit code of every replica the test stopped with SIGTERM, by process name."""
        self.router = ReplicaRouter(self.services)
        self.http = httpx.AsyncClient(
            timeout=15,
            headers={"Authorization": f"Bearer {self.operator_token}"},
            transport=self.router,
        )

    # --- set-up and tear-down ----------------------------------------------------------

    def schema(self, service: str) -> str:
        return self.services[service].settings.db_schema

    async def _connect(self, service: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.database_url, server_settings={"search_path": f"{self.schema(service)},public"}
        )

    async def prepare(self) -> None:
        """Migrate the schemas, add the communities, register the tokens, make the streams
        (what `make run` does with the CLIs before it starts the services)."""

        async def one(service: str) -> None:
            conn = await self._connect(service)
            try:
                await migrate(
                    conn, self.schema(service), service_migrations(MODULES[service], service)
                )
                if service == "intake":
                    for slug in (self.home, self.other):
                        await conn.execute(
                            "INSERT INTO communities (slug, name) VALUES ($1, $2) "
                            "ON CONFLICT DO NOTHING",
                            slug,
                            f"Community {slug}",
                        )
                    await issue_credential(
                        conn,
                        role=Role.SERVICE,
                        communities=["*"],
                        label="partners service",
                        token=self.service_token,
                    )
                if service == "notifications":
                    await issue_credential(
                        conn,
                        role=Role.SYSTEM,
                        communities=[self.home],
                        label="community app",
                        token=self.app_token,
                    )
                await issue_credential(
                    conn,
                    role=Role.OPERATOR,
                    communities=[self.home],
                    label="test operator",
                    token=self.operator_token,
                )
            finally:
                await conn.close()

        await asyncio.gather(*(one(s) for s in self.active))
        self._nc = await self.connect_nats()
        await provision_streams(self._nc.jetstream(), self.services["intake"].settings)
        self._events = EventLog(self._nc, self.events_stream)

    async def start(
        self, *, scheduling_replicas: int = 1, replicas: int | Mapping[str, int] | None = None
    ) -> None:
        """Start the services (in parallel) and wait for every replica's /readyz.

        `replicas`: how many processes of each service (one number for all, or per
        service); `scheduling_replicas` is the older spelling for scheduling alone.
        """
        wanted = {name: 1 for name in self.active}
        wanted["scheduling"] = scheduling_replicas
        if isinstance(replicas, int):
            wanted = dict.fromkeys(self.active, replicas)
        elif replicas is not None:
            wanted.update(replicas)
        started = [self._spawn(name) for name in self.active for _ in range(wanted[name])]
        await asyncio.gather(*(r.proc.wait_http_async(r.url, 60) for r in started))

    def _spawn(self, service: str, slot: int | None = None) -> Replica:
        svc = self.services[service]
        slot = svc.free_slot() if slot is None else slot
        generation = sum(1 for r in svc.replicas if r.slot == slot)
        name = service if slot == 0 else f"{service}-{slot}"
        if generation:
            name = f"{name}.{generation}"  # a restart: its own log file
        env = dict(svc.env)
        env["LINLI_HTTP_PORT"] = str(svc.ports[slot])
        env.setdefault("LINLI_INSTANCE_ID", name)
        # Spans say which replica made them (OTel's own resource attribute).
        resource = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
        env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(
            a for a in (resource, f"service.instance.id={name}") if a
        )
        metrics_url = None
        if self.metrics:
            metrics_port = free_port()
            env["LINLI_METRICS_PORT"] = str(metrics_port)
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        proc = self.procs.start(MODULES[service], "serve", env=env, name=name)
        replica = Replica(proc, f"http://127.0.0.1:{svc.ports[slot]}", slot, metrics_url)
        svc.replicas.append(replica)
        return replica

    async def start_replica(
        self, service: str = "scheduling", slot: int | None = None
    ) -> ServiceProcess:
        """One more process of a service (a replica, or a restart after a kill); by default
        in the first slot no running replica holds."""
        replica = self._spawn(service, slot)
        await replica.proc.wait_http_async(replica.url, 60)
        return replica.proc

    def processes(self, service: str) -> list[ServiceProcess]:
        return [r.proc for r in self.services[service].replicas]

    def running(self, service: str) -> list[Replica]:
        """The service's replicas that run now, by slot."""
        return sorted(self.services[service].running, key=lambda r: r.slot)

    def replica_of(self, proc: ServiceProcess) -> tuple[str, Replica]:
        for name, svc in self.services.items():
            for replica in svc.replicas:
                if replica.proc is proc:
                    return name, replica
        raise KeyError(proc.name)

    def expect_exit(self, proc: ServiceProcess) -> None:
        """The test means this process to die (an armed failpoint): not a ServiceDown."""
        self._stopped.add(id(proc))

    def kill(self, proc: ServiceProcess) -> None:
        """SIGKILL a service process: a crash, not a shutdown."""
        self._stopped.add(id(proc))
        proc.kill()

    async def terminate(self, proc: ServiceProcess, grace_s: float = 30.0) -> int | None:
        """SIGTERM a service process, as Kubernetes does, and wait for it to exit (SIGKILL
        after `grace_s`, as the kubelet does); returns and records its exit code."""
        self._stopped.add(id(proc))
        code = await asyncio.to_thread(proc.terminate, grace_s)
        self.exit_codes[proc.name] = code
        return code

    async def restart(
        self, proc: ServiceProcess, *, signal: str = "TERM", grace_s: float = 30.0
    ) -> ServiceProcess:
        """Stop one replica (SIGTERM, or SIGKILL with signal="KILL") and start it again in
        the same slot (same port); returns the new process once it is ready."""
        service, replica = self.replica_of(proc)
        if signal == "KILL":
            self.kill(proc)
        else:
            await self.terminate(proc, grace_s)
        return await self.start_replica(service, replica.slot)

    async def stop(self) -> None:
        """SIGTERM every running process and wait for them (before a test takes down
        something they talk to, such as its OTLP receiver)."""
        running = [p for p in self.procs.processes if p.running]
        for proc in running:
            self._stopped.add(id(proc))
        await asyncio.gather(*(asyncio.to_thread(p.terminate, 15.0) for p in running))

    async def close(self) -> None:
        """Stop every process, drop the schemas, delete the streams."""
        running = [p for p in self.procs.processes if p.running]
        await asyncio.gather(*(asyncio.to_thread(p.terminate, 8.0) for p in running))
        await self.http.aclose()
        for pool in self._pools.values():
            with contextlib.suppress(Exception):
                await pool.close()
        conn = await asyncpg.connect(self.database_url)
        try:
            for service in self.active:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema(service)}" CASCADE')
        finally:
            await conn.close()
        if self._nc is None:
            with contextlib.suppress(Exception):
                self._nc = await self.connect_nats()
        if self._nc is not None:
            js = self._nc.jetstream()
            # Servicekit's advisories stream is named after the events stream.
            advisories = f"{self.events_stream}_ADVISORIES"
            for stream in (self.events_stream, self.ingress_stream, advisories):
                with contextlib.suppress(Exception):
                    await js.delete_stream(stream)
            await self._nc.close()

    async def connect_nats(self, user: str = "admin", **options: Any) -> NatsClient:
        """A NATS connection as `user` of `nats_users` (anonymous when it has none)."""
        if user in self.nats_users:
            name, password = self.nats_users[user]
            options.update(user=name, password=password)
        return await nats.connect(self.nats_url, **options)

    def check_alive(self) -> None:
        """Fail at once, with the log, when a process died that the test did not stop."""
        for svc in self.services.values():
            for proc in (r.proc for r in svc.replicas):
                if id(proc) not in self._stopped and not proc.running:
                    raise ServiceDown(
                        f"{proc.name} exited with {proc.returncode}\n{proc.log_tail(80)}"
                    )

    # --- reading the truth -----------------------------------------------------------------

    async def events(self, short: str | None = None, **match: Any) -> list[StreamEvent]:
        """Every event on the test's stream so far, of one short type, matching `match`."""
        assert self._events is not None, "prepare() first"
        await self._events.refresh()
        return self._events.of(short, **match)

    @property
    def nats(self) -> NatsClient:
        assert self._nc is not None, "prepare() first"
        return self._nc

    async def outbox_relay(self, service: str) -> OutboxRelay:
        """A relay for a service's outbox that the test starts and stops itself (run the
        service with LINLI_RUN_RELAY=false), to hold its events back like a NATS outage."""
        return OutboxRelay(
            await self.pool(service),
            self.nats.jetstream(),
            self.schema(service),
            dsn=self.database_url,
            poll_interval=0.1,
        )

    async def pool(self, service: str) -> asyncpg.Pool:
        if service not in self._pools:
            self._pools[service] = await create_pool(
                self.database_url, self.schema(service), min_size=1, max_size=3
            )
        return self._pools[service]

    async def sql(self, service: str, query: str, *args: Any) -> list[asyncpg.Record]:
        """Read a service's own tables (the checks of RELIABILITY.md)."""
        return list(await (await self.pool(service)).fetch(query, *args))

    async def sql_value(self, service: str, query: str, *args: Any) -> Any:
        return await (await self.pool(service)).fetchval(query, *args)

    async def wait_for(
        self,
        predicate: Callable[[], Awaitable[Any] | Any],
        timeout: float = 15.0,
        *,
        what: str = "condition",
        interval: float = 0.1,
    ) -> Any:
        """Poll `predicate` until it returns something truthy; that value is returned.

        Fails after `timeout` seconds, or at once when a service died unexpectedly.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            self.check_alive()
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")
            await asyncio.sleep(interval)

    async def wait_slots(self, count: int, timeout: float = 15.0) -> None:
        """Wait until scheduling holds `count` slots (each committed with its matching)."""
        await self.wait_for(
            lambda: self.sql_value("scheduling", "SELECT count(*) >= $1 FROM slots", count),
            timeout,
            what=f"{count} slots in scheduling",
        )

    async def wait_events(
        self, short: str, count: int = 1, *, timeout: float = 15.0, **match: Any
    ) -> list[StreamEvent]:
        """Wait until at least `count` events of a type (matching `match`) are on the stream."""

        async def enough() -> list[StreamEvent] | None:
            found = await self.events(short, **match)
            return found if len(found) >= count else None

        result: list[StreamEvent] = await self.wait_for(
            enough, timeout, what=f"{count} x {short} {match}"
        )
        return result

    # --- HTTP ------------------------------------------------------------------------------

    def url(self, service: str, path: str) -> str:
        """A URL naming the service; `lc.http` routes it to one of its replicas."""
        return f"http://{service}{ROUTE_HOST_SUFFIX}{path}"

    def c(self, service: str, path: str = "", community: str | None = None) -> str:
        """URL of a community-scoped route: /v1/communities/<home><path>."""
        return self.url(service, f"/v1/communities/{community or self.home}{path}")

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @staticmethod
    def ok(response: httpx.Response, *expected: int) -> Any:
        codes = expected or (200, 201)
        assert response.status_code in codes, (
            f"{response.request.method} {response.request.url} -> "
            f"{response.status_code}: {response.text[:2000]}"
        )
        return response.json() if response.content else None

    # intake

    async def create_resident(self, **overrides: Any) -> str:
        from .intake import resident_body

        body = resident_body(**overrides)
        created = self.ok(await self.http.post(self.c("intake", "/residents"), json=body), 201)
        return str(created["id"])

    async def submit_need(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.ok(
            await self.http.post(self.c("intake", "/needs"), json=body), 201
        )
        return created

    async def need(self, need_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.ok(await self.http.get(self.c("intake", f"/needs/{need_id}")))
        return view

    async def need_status(self, need_id: str) -> str:
        return str((await self.need(need_id))["status"])

    async def wait_status(
        self, need_id: str, *statuses: str, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Intake's view of a need once its status is one of `statuses`."""

        async def reached() -> dict[str, Any] | None:
            view = await self.need(need_id)
            return view if view["status"] in statuses else None

        view: dict[str, Any] = await self.wait_for(
            reached, timeout, what=f"need {need_id} in intake to be {'/'.join(statuses)}"
        )
        return view

    # partners

    async def create_partner(
        self, name: str, kind: str, need_kinds: list[str], **extra: Any
    ) -> str:
        body = {
            "name": name,
            "kind": kind,
            "services": [
                {"name": f"{k} service", "need_kind": k, "cost_option": "free"} for k in need_kinds
            ],
            **extra,
        }
        created = self.ok(await self.http.post(self.c("partners", "/partners"), json=body), 201)
        return str(created["id"])

    async def create_volunteer(self, display_name: str, skills: list[str], **extra: Any) -> str:
        body = {"display_name": display_name, "skills": skills, **extra}
        created = self.ok(await self.http.post(self.c("partners", "/volunteers"), json=body), 201)
        return str(created["id"])

    async def party_token(self, kind: str, party_id: str) -> str:
        """A partner's or volunteer's own token (as `credentials issue --subject-id`)."""
        conn = await self._connect("partners")
        try:
            _, token = await issue_credential(
                conn,
                role=Role(kind),
                communities=[self.home],
                label=f"{kind} {party_id}",
                subject_id=uuid.UUID(party_id),
            )
        finally:
            await conn.close()
        return token

    async def publish_slot(
        self,
        kind: str,
        *,
        provider: tuple[str, str] | None = None,
        window: dict[str, str],
        capacity: int = 1,
        token: str | None = None,
        compounds: list[str] | None = None,
    ) -> dict[str, Any]:
        """Publish capacity through partners (as an operator, or as the party itself)."""
        body: dict[str, Any] = {"kind": kind, "window": window, "capacity": capacity}
        if provider is not None:
            body["provider"] = {"kind": provider[0], "id": provider[1]}
        if compounds:
            body["compounds"] = compounds
        headers = self.bearer(token) if token else None
        slot: dict[str, Any] = self.ok(
            await self.http.post(self.c("partners", "/slots"), json=body, headers=headers), 201
        )
        return slot

    async def offers(self, token: str, status: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 200}
        if status:
            params["status"] = status
        page = self.ok(
            await self.http.get(
                self.url("partners", "/v1/me/offers"), params=params, headers=self.bearer(token)
            )
        )
        items: list[dict[str, Any]] = page["items"]
        return items

    async def offer(self, token: str, assignment_id: str) -> httpx.Response:
        return await self.http.get(
            self.url("partners", f"/v1/me/offers/{assignment_id}"), headers=self.bearer(token)
        )

    async def answer(
        self, token: str, assignment_id: str, action: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        """`accept` or `decline` an offer in the party's inbox."""
        return await self.http.post(
            self.url("partners", f"/v1/me/offers/{assignment_id}/{action}"),
            json=body,
            headers=self.bearer(token),
        )

    async def report(self, token: str, assignment_id: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(
            self.url("partners", f"/v1/me/offers/{assignment_id}/report"),
            json=body,
            headers=self.bearer(token),
        )

    async def my_points(self, token: str) -> dict[str, Any]:
        points: dict[str, Any] = self.ok(
            await self.http.get(self.url("partners", "/v1/me/points"), headers=self.bearer(token))
        )
        return points

    async def wait_offer(
        self, token: str, need_id: str, *, status: str = "open", timeout: float = 15.0
    ) -> dict[str, Any]:
        """The party's offer for a need, once it shows up in its inbox."""

        async def find() -> dict[str, Any] | None:
            for item in await self.offers(token):
                if item["need_id"] == need_id and item["status"] == status:
                    return item
            return None

        found: dict[str, Any] = await self.wait_for(
            find, timeout, what=f"a {status} offer for need {need_id}"
        )
        return found

    # notifications

    async def subscribe_webhook(self, url: str, **body: Any) -> dict[str, Any]:
        """A community app's webhook subscription (every event of the home community by
        default); the answer holds the signing secret."""
        wanted = {"url": url, "communities": [self.home], **body}
        created: dict[str, Any] = self.ok(
            await self.http.post(
                self.url("notifications", "/v1/subscriptions"),
                json=wanted,
                headers=self.bearer(self.app_token),
            ),
            201,
        )
        return created

    # console

    async def add_staff(
        self,
        login: str,
        password: str,
        *,
        communities: list[str] | None = None,
        street_office: tuple[str, list[str]] | None = None,
    ) -> str:
        """A console account: a community operator of `communities`, or (with
        `street_office=(slug, communities)`) a street-office account. Its operator token is
        registered in the four services for exactly those communities, as an `operator`
        credential or, for a street office, a `street_office` one (ADR 0040); returns the
        token."""
        held = list(street_office[1]) if street_office else list(communities or [])
        token = new_token()
        for service in ALL_SERVICES:
            conn = await self._connect(service)
            try:
                await issue_credential(
                    conn,
                    role=Role.STREET_OFFICE if street_office else Role.OPERATOR,
                    communities=held,
                    label=f"console:{login}",
                    token=token,
                )
            finally:
                await conn.close()
        settings = self.services["console"].settings
        assert isinstance(settings, ConsoleSettings)
        assert settings.secrets_key is not None
        conn = await self._connect("console")
        try:
            if street_office is not None:
                await upsert_street_office(conn, street_office[0], "Street office", held)
            await add_staff(
                conn,
                SecretBox(settings.secrets_key.get_secret_value()),
                login=login,
                display_name=login,
                password=password,
                role=StaffRole.STREET_OFFICE if street_office else StaffRole.COMMUNITY_OPERATOR,
                communities=[] if street_office else held,
                street_office=street_office[0] if street_office else None,
                service_token=token,
            )
        finally:
            await conn.close()
        return token

    # CLIs

    async def cli(self, service: str, *args: str) -> str:
        """`python -m linli.<service> <args>` with the service's settings."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            MODULES[service],
            *args,
            env={**os.environ, **self.services[service].env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, f"{service} {' '.join(args)}: {err.decode()[-2000:]}"
        return out.decode()
