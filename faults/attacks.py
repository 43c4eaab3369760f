"""The attacks of issue #10 in the fault run (RELIABILITY.md rows 11, 13 and 15).

* **PII canaries** (row 15): every resident of the run carries canary values
  (`ZZCANARY-<run>-...` in name and address, a phone number unique to the run). After the
  drain, they are searched for, as raw bytes, in every log line of every process (the
  services, nats-server, PostgreSQL), every span the services exported (an OTLP/HTTP sink
  that keeps only what matched), every metric of every replica, the subject, headers and
  payload of every message on every stream, every webhook request (headers and body), and
  every row of every table outside intake's schema (intake owns residents, ADR 0009).
* **NATS permissions** (row 11): publishes and subscriptions outside each user's
  permissions, made as the services' own users, a community's system and app users; each
  must draw the server's permissions violation and leave nothing on the streams.
* **SSRF** (row 13): a notifications replica started as in production (no insecure
  endpoints) is asked to register every URL of a corpus aimed at a canary TCP listener and
  at internal addresses; a subscription already stored with an internal address (what a
  name rebound to 127.0.0.1 after registration amounts to) is given an event to deliver.
  The canary listener must see no connection at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from linli.contracts.subjects import event_subject, ingress_subject
from linli.devstack.natsconf import NatsUser
from tests.harness.intake import meal_need, repair_need
from tests.harness.lifecycle import Lifecycle, now_iso, window
from tests.harness.natsclient import connect_as
from tests.harness.notifications import Receiver, serve

# --- canaries ------------------------------------------------------------------------


@dataclass
class Canaries:
    """Personal data no one may see outside intake: unique to the run, easy to find."""

    token: str = field(default_factory=lambda: secrets.token_hex(5))

    @property
    def marker(self) -> str:
        return f"ZZCANARY-{self.token}"

    def phone(self, i: int) -> str:
        return f"139{int(self.token, 16) % 10**5:05d}{i % 1000:03d}"

    def resident(self, i: int, **extra: Any) -> dict[str, Any]:
        """Fields of `resident_body` for resident `i`."""
        return {
            "name": f"{self.marker}-name-{i}",
            "phone": self.phone(i),
            "address": f"{self.marker}-address-{i} 致远小区 3号楼",
            **extra,
        }

    def needles(self, residents: int) -> list[bytes]:
        return [self.marker.encode(), *(self.phone(i).encode() for i in range(residents))]


@dataclass
class Finds:
    """Where canaries were found: place -> count, with a few examples."""

    places: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    searched: dict[str, int] = field(default_factory=dict)
    """How much was searched, by kind of place (lines, spans requests, messages, ...)."""
    belong: dict[str, int] = field(default_factory=dict)
    """Rows holding canaries where they belong (the control: the search finds them)."""

    def hit(self, place: str, data: bytes, needle: bytes | None = None) -> None:
        """A canary in `place`; the example shows it with what surrounds it."""
        self.places[place] = self.places.get(place, 0) + 1
        if len(self.examples) < 20:
            at = max(0, data.find(needle) - 80) if needle else 0
            text = data[at : at + 200].decode(errors="replace")
            self.examples.append(f"{place}: {text}")

    def count(self, kind: str, n: int = 1) -> None:
        self.searched[kind] = self.searched.get(kind, 0) + n

    @property
    def total(self) -> int:
        return sum(self.places.values())


def _contains(data: bytes, needles: Iterable[bytes]) -> bytes | None:
    for needle in needles:
        if needle in data:
            return needle
    return None


BELONG: dict[str, tuple[str, ...]] = {"partners": ("completion_reports",)}
"""Tables outside intake where free text with canaries is kept on purpose: a report's
notes stay with partners, which received them (ADR 0031)."""


@dataclass
class SpanSink:
    """An OTLP/HTTP trace receiver that keeps only the requests holding a canary.

    Protobuf carries strings as raw UTF-8, so a byte search of each (decompressed) export
    request finds a canary in any span name, attribute, event or resource."""

    needles: list[bytes]
    requests: int = 0
    bytes_seen: int = 0
    hits: list[bytes] = field(default_factory=list)
    endpoint: str = ""

    def app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            self.requests += 1
            self.bytes_seen += len(body)
            if _contains(body, self.needles) is not None:
                self.hits.append(body)
            return Response(b"", media_type="application/x-protobuf")

        return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])


@contextlib.asynccontextmanager
async def span_sink(needles: list[bytes]) -> AsyncIterator[SpanSink]:
    sink = SpanSink(needles)
    async with serve(sink.app()) as base:
        sink.endpoint = base
        yield sink


async def search_canaries(
    lc: Lifecycle,
    canaries: Canaries,
    residents: int,
    *,
    log_files: list[Path],
    spans: SpanSink,
    webhooks: Receiver,
    metrics: list[tuple[str, bytes]],
) -> Finds:
    """Every place a canary must not be, searched after the drain (and after the services
    stopped, so every span is exported and every log line written)."""
    needles = canaries.needles(residents)
    finds = Finds()
    # Log lines of every process: the services' (their stdout and stderr), nats-server's
    # and PostgreSQL's.
    for path in log_files:
        with path.open("rb") as lines:
            for line in lines:
                finds.count("log lines")
                if (needle := _contains(line, needles)) is not None:
                    finds.hit(f"log {path.name}", line, needle)
    # Spans.
    finds.count("span export requests", spans.requests)
    for body in spans.hits:
        finds.hit("spans", body, _contains(body, needles))
    # Metrics of every replica (scraped before the services stopped).
    for service, text in metrics:
        finds.count("metrics lines", text.count(b"\n"))
        for line in text.splitlines():
            if (needle := _contains(line, needles)) is not None:
                finds.hit(f"metrics {service}", line, needle)
    # Every message on every stream: subject, headers and payload.
    js = lc.nats.jetstream()
    for info in await js.streams_info():
        stream = info.config.name
        if stream is None or info.state.messages == 0:
            continue
        first, last = info.state.first_seq, info.state.last_seq
        for start in range(first, last + 1, 200):
            seqs = range(start, min(start + 200, last + 1))
            msgs = await asyncio.gather(
                *(js.get_msg(stream, s) for s in seqs), return_exceptions=True
            )
            for msg in msgs:
                if isinstance(msg, BaseException):
                    continue
                finds.count("stream messages")
                headers = json.dumps(dict(msg.headers or {}), ensure_ascii=False).encode()
                for part, data in (
                    ("subject", str(msg.subject).encode()),
                    ("headers", headers),
                    ("payload", msg.data or b""),
                ):
                    if (needle := _contains(data, needles)) is not None:
                        finds.hit(f"stream {stream} {part}", data, needle)
    # Webhook requests as the community app received them.
    for received in webhooks.received:
        finds.count("webhook requests")
        headers = json.dumps(received.headers, ensure_ascii=False).encode()
        for part, data in (("headers", headers), ("body", received.body)):
            if (needle := _contains(data, needles)) is not None:
                finds.hit(f"webhook {part}", data, needle)
    # Every table of every service. Canaries belong in intake's (it owns residents, ADR
    # 0009) and in the free-text tables of BELONG; found there, they are the control.
    for service in lc.active:
        columns = await lc.sql(
            service,
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "JOIN information_schema.tables USING (table_schema, table_name) "
            "WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
            lc.schema(service),
        )
        bytea: dict[str, list[str]] = {}
        for c in columns:
            cols = bytea.setdefault(c["table_name"], [])
            if c["data_type"] == "bytea":
                cols.append(c["column_name"])
        for table, binary in bytea.items():
            finds.count("tables")
            # Text as the row reads; bytea columns (payloads) as their bytes. The names
            # come from the catalogue, the needle is a parameter.
            where = " OR ".join(
                ["strpos(t::text, $1) > 0"]
                + [f"position(convert_to($1, 'UTF8') in t.\"{b}\") > 0" for b in binary]
            )
            for needle in needles:
                hits = await lc.sql_value(
                    service,
                    f'SELECT count(*) FROM "{table}" t WHERE {where}',  # noqa: S608
                    needle.decode(),
                )
                if hits and (service == "intake" or table in BELONG.get(service, ())):
                    place = f"{service}.{table}"
                    finds.belong[place] = finds.belong.get(place, 0) + hits
                elif hits:
                    finds.hit(f"table {service}.{table}", f"{hits} rows hold ".encode() + needle)
    return finds


async def scrape_metrics(lc: Lifecycle) -> list[tuple[str, bytes]]:
    """Every running replica's /metrics, as text."""
    out = []
    for service in lc.active:
        for replica in lc.running(service):
            if replica.metrics_url is not None:
                out.append((service, (await lc.http.get(replica.metrics_url)).content))
    return out


@dataclass
class RepairProbe:
    """One repair need carried through partners with canaries in its free text."""

    contact_shown: bool = False
    """The assignee saw the resident's contact (canaries passed through partners)."""
    fulfilled: bool = False


async def repair_with_canaries(
    lc: Lifecycle, canaries: Canaries, resident: str, *, timeout_s: float = 60.0
) -> RepairProbe:
    """A repair firm of its own takes a repair whose description is a canary, reads the
    resident's contact (partners asks intake, ADR 0009) and reports with a canary summary:
    the canaries take the paths free text and contacts take, and must stay where they
    belong (issue #10, item 5)."""
    probe = RepairProbe()
    firm = await lc.create_partner("faults repair firm", "repair_firm", ["repair"])
    token = await lc.party_token("partner", firm)
    await lc.publish_slot("repair", provider=("partner", firm), window=window(0, 240))
    body = repair_need(resident)
    body["details"]["description"] = f"{canaries.marker}-description burst radiator"
    need = await lc.submit_need(body)
    offer = await lc.wait_offer(token, str(need["id"]), timeout=timeout_s)
    assignment = str(offer["assignment_id"])
    lc.ok(await lc.answer(token, assignment, "accept"), 200)
    # The contact comes from intake once intake has the acceptance (an event away): ask
    # until it is there (bounded).
    for _ in range(int(timeout_s * 2)):
        view = await lc.offer(token, assignment)
        probe.contact_shown = canaries.marker in json.dumps(view.json(), ensure_ascii=False)
        if probe.contact_shown:
            break
        await asyncio.sleep(0.5)
    arrived = datetime.now(UTC) - timedelta(minutes=2)
    report = {
        "outcome": "repair_completed",
        "arrived_at": arrived.isoformat(),
        "completed_at": now_iso(),
        "fixed": True,
        "summary": f"{canaries.marker}-summary valve replaced",
    }
    lc.ok(await lc.report(token, assignment, report), 201)
    probe.fulfilled = (await lc.wait_status(str(need["id"]), "fulfilled"))["status"] == "fulfilled"
    return probe


# --- NATS permissions ----------------------------------------------------------------


@dataclass
class NatsProbe:
    """Attempts outside a user's permissions, and what the server did with them."""

    attempts: int = 0
    denied: int = 0
    allowed: list[str] = field(default_factory=list)


async def nats_attack(
    lc: Lifecycle, users: dict[str, NatsUser], *, wait_s: float = 3.0
) -> NatsProbe:
    """Forbidden publishes and subscriptions by the services' own users and the two
    communities' system and app users; each must be refused, and nothing it tried to
    publish may reach a stream."""
    home, other = lc.home, lc.other
    marker = f"faults-attack-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"attack": marker}).encode()
    tries: list[tuple[str, str, str]] = [
        # (user key, "pub" or "sub", subject)
        ("app-home", "pub", event_subject(home, "need", "submitted", 1)),
        ("app-home", "sub", f"linli.events.{other}.>"),
        ("app-home", "sub", f"linli.ingress.{home}.>"),
        ("app-other", "sub", f"linli.events.{home}.>"),
        ("system-home", "pub", ingress_subject(other, "need", "submit", 1)),
        ("system-home", "pub", event_subject(home, "need", "submitted", 1)),
        ("system-home", "sub", f"linli.events.{home}.>"),
        ("system-other", "pub", ingress_subject(home, "need", "submit", 1)),
        ("partners", "pub", event_subject(home, "need", "submitted", 1)),
        ("partners", "pub", f"$JS.API.STREAM.DELETE.{lc.events_stream}"),
        ("scheduling", "pub", event_subject(home, "points", "awarded", 1)),
        ("scheduling", "pub", f"$JS.API.CONSUMER.DURABLE.CREATE.{lc.events_stream}.partners"),
        ("notifications", "pub", event_subject(home, "need", "cancelled", 1)),
        ("notifications", "pub", f"$JS.API.STREAM.PURGE.{lc.events_stream}"),
        ("intake", "pub", event_subject(home, "slot", "published", 1)),
        ("intake", "pub", f"$JS.API.CONSUMER.MSG.NEXT.{lc.events_stream}.scheduling"),
    ]
    probe = NatsProbe()
    js = lc.nats.jetstream()
    before = {s: (await js.stream_info(s)).state.last_seq for s in (lc.events_stream,)}
    for key, action, subject in tries:
        user = users[key]
        probe.attempts += 1
        async with connect_as(lc.nats_url, user.name, str(user.password)) as client:
            if action == "pub":
                await client.nc.publish(subject, body, headers={"Nats-Msg-Id": marker})
            else:
                await client.nc.subscribe(subject)
            if await client.violations(subject, timeout=wait_s):
                probe.denied += 1
            else:
                probe.allowed.append(f"{key} {action} {subject}")
    # Nothing published reached the events stream.
    info = await js.stream_info(lc.events_stream)
    for seq in range(before[lc.events_stream] + 1, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            msg = await js.get_msg(lc.events_stream, seq)
            if marker.encode() in (msg.data or b""):
                probe.allowed.append(f"on the stream: {msg.subject}")
    return probe


# --- SSRF ------------------------------------------------------------------------------


@dataclass
class Canary:
    """A TCP listener on 127.0.0.1 that counts who connects and keeps what they sent
    first (a TLS hello or an HTTP request line), to tell whose request it was."""

    port: int = 0
    connections: int = 0
    first_bytes: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            self.first_bytes.append(await asyncio.wait_for(reader.read(200), 2.0))
        writer.close()


CANARY_PORTS = range(20000, 32000)
"""Below the kernel's ephemeral range (32768-60999 here), which every free port of the
harness comes from: a port of a stopped replica can never be the canary's, so nothing of
the harness's own (its router tries every slot's port) reaches it by accident."""


@contextlib.asynccontextmanager
async def canary_listener() -> AsyncIterator[Canary]:
    canary = Canary()
    server = None
    for port in random.sample(CANARY_PORTS, 50):
        try:
            server = await asyncio.start_server(canary.handle, "127.0.0.1", port)
            break
        except OSError:
            continue
    if server is None:
        raise RuntimeError("no free port for the canary listener")
    canary.port = server.sockets[0].getsockname()[1]
    try:
        yield canary
    finally:
        server.close()
        await server.wait_closed()


def ssrf_corpus(port: int) -> list[str]:
    """URLs a community app might register to reach inside: the canary listener in every
    spelling of 127.0.0.1, and the usual internal targets."""
    p = port
    return [
        f"http://127.0.0.1:{p}/hook",
        f"https://127.0.0.1:{p}/hook",
        f"https://[::1]:{p}/hook",
        f"https://[::ffff:127.0.0.1]:{p}/hook",
        f"https://[::ffff:7f00:1]:{p}/hook",
        f"https://0x7f000001:{p}/hook",
        f"https://2130706433:{p}/hook",
        f"https://0177.0.0.1:{p}/hook",
        f"https://127.1:{p}/hook",
        f"https://0.0.0.0:{p}/hook",
        f"https://localhost:{p}/hook",
        f"https://app.localhost:{p}/hook",
        f"https://user:pass@127.0.0.1:{p}/hook",
        f"https://127.0.0.1.nip.io:{p}/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://10.0.0.5/hook",
        "https://172.16.3.4/hook",
        "https://192.168.1.1/hook",
        "https://100.64.0.1/hook",
        "https://[fe80::1]/hook",
        "https://224.0.0.1/hook",
    ]


@dataclass
class SsrfProbe:
    registrations: int = 0
    refused: int = 0
    accepted: list[str] = field(default_factory=list)
    stored_blocked: bool = False
    """The stored internal subscription's delivery was blocked at connect."""
    connect_error: str = ""
    canary_connections: int = 0
    canary_heard: list[str] = field(default_factory=list)


async def ssrf_attack(lc: Lifecycle, resident: str, *, timeout_s: float = 60.0) -> SsrfProbe:
    """Run against notifications as in production: its replicas are replaced by one that
    refuses insecure endpoints (and put back afterwards)."""
    probe = SsrfProbe()
    svc = lc.services["notifications"]
    async with canary_listener() as canary:
        # The development replicas go first: they accept 127.0.0.1 (the harness's own
        # receivers), so one that saw the rogue row below would deliver to the canary
        # (make test under load once counted 2 TLS connections: a delivery made in the
        # moment between the row's insert and the replicas' stop).
        for replica in lc.running("notifications"):
            await lc.terminate(replica.proc)
        # A subscription stored with an internal address: a copy of the run's own
        # subscription, pointed at the canary (as a name rebound after registration).
        rogue = uuid.uuid4()
        columns = [
            r["column_name"]
            for r in await lc.sql(
                "notifications",
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = $1 AND table_name = 'subscriptions' "
                "ORDER BY ordinal_position",
                lc.schema("notifications"),
            )
        ]
        copied = ", ".join(f'"{c}"' for c in columns if c not in ("id", "url"))
        await lc.sql(
            "notifications",
            f"INSERT INTO subscriptions (id, url, {copied}) SELECT $1, $2, {copied} "  # noqa: S608 (catalogue names)
            "FROM subscriptions WHERE state = 'active' ORDER BY created_at LIMIT 1",
            rogue,
            f"https://127.0.0.1:{canary.port}/hook",
        )
        saved = svc.env.get("LINLI_ALLOW_INSECURE_ENDPOINTS")
        svc.env["LINLI_ALLOW_INSECURE_ENDPOINTS"] = "false"
        try:
            hardened = await lc.start_replica("notifications")
            for url in ssrf_corpus(canary.port):
                probe.registrations += 1
                response = await lc.http.post(
                    lc.url("notifications", "/v1/subscriptions"),
                    json={"url": url, "communities": [lc.home]},
                    headers=lc.bearer(lc.app_token),
                )
                if response.status_code == 422:
                    probe.refused += 1
                else:
                    probe.accepted.append(f"{url}: {response.status_code}")
            # An event for the stored subscription to deliver.
            await lc.submit_need(meal_need(resident, hours_ahead=3))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                rows = await lc.sql(
                    "notifications",
                    "SELECT error FROM delivery_attempts WHERE subscription_id = $1",
                    rogue,
                )
                if rows:
                    probe.connect_error = str(rows[0]["error"] or "")
                    probe.stored_blocked = probe.connect_error.startswith("blocked")
                    break
                await asyncio.sleep(0.5)
            await lc.terminate(hardened)
        finally:
            if saved is None:
                svc.env.pop("LINLI_ALLOW_INSECURE_ENDPOINTS", None)
            else:
                svc.env["LINLI_ALLOW_INSECURE_ENDPOINTS"] = saved
            await lc.sql("notifications", "DELETE FROM subscriptions WHERE id = $1", rogue)
        probe.canary_connections = canary.connections
        probe.canary_heard = [repr(b[:120]) for b in canary.first_bytes]
    await lc.start_replica("notifications")
    return probe


__all__ = [
    "Canaries",
    "Finds",
    "NatsProbe",
    "SpanSink",
    "SsrfProbe",
    "nats_attack",
    "repair_with_canaries",
    "scrape_metrics",
    "search_canaries",
    "span_sink",
    "ssrf_attack",
]
