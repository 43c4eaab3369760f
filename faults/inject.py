"""The faults, one coroutine each, and the seeded schedule that fires them.

Each fault ends with the system whole again (the replica restarted, the server back),
so the next one starts from a running stack. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tests.harness.lifecycle import Lifecycle
from tests.harness.procs import ServiceNotReady

from .world import Servers

KINDS = (
    "kill9",
    "sigterm",
    "failpoint_outbox",
    "failpoint_inbox",
    "nats_restart",
    "pg_outage",
    "pause",
    "dup_same_id",
    "dup_new_id",
    "poison",
)
"""Every kind of fault; a schedule of at least len(KINDS) faults has each at least once."""

INJECTED_MSG_ID = "faults-"
DUPLICATE_WINDOW_S = 120.0
"""The events stream's duplicate window (servicekit's default, the harness keeps it)."""


class NothingToRepublish(RuntimeError):
    """No stored event fits."""


"""Nats-Msg-Id prefix of every message the driver itself publishes (duplicates, poison)."""
POISON_MSG_ID = "faults-poison-"

CONSUMERS = ("intake", "partners", "scheduling", "notifications")


@dataclass
class Injector:
    lc: Lifecycle
    servers: Servers
    rng: random.Random
    pg_outage_s: float
    """How long PostgreSQL stays down (the long run: 300 s; the short one: a few)."""
    pause_s: float
    """How long a paused consumer stays stopped (beyond its ack_wait)."""
    done: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    republished_new_id: Counter[str] = field(default_factory=Counter)
    stored_again: set[str] = field(default_factory=set)
    """Event ids the driver republished with their own message id that JetStream stored
    again (the window had passed): duplicates on the stream of the driver's making."""
    """CloudEvent id -> copies the driver put on the stream under a new Nats-Msg-Id."""
    poison_ids: list[str] = field(default_factory=list)
    long_outage_done: bool = False

    def schedule(self, count: int) -> list[str]:
        """`count` kinds: each kind once (shuffled) first, then random ones."""
        kinds = list(KINDS)
        self.rng.shuffle(kinds)
        plan = kinds[:count]
        plan += [self.rng.choice(KINDS) for _ in range(count - len(plan))]
        return plan

    async def run(self, plan: list[str], over_s: float) -> None:
        """Fire `plan` at seeded random moments spread over `over_s` seconds, one at a time."""
        moments = sorted(self.rng.uniform(0, over_s) for _ in plan)
        started = time.monotonic()
        for at, kind in zip(moments, plan, strict=True):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            began = time.monotonic()
            try:
                await asyncio.wait_for(self.fire(kind), self.pg_outage_s + 180)
            except Exception as exc:  # a fault that could not be injected is reported
                self.notes.append(f"{kind}: could not inject: {type(exc).__name__}: {exc}"[:400])
                await self.heal()
                continue
            self.done[kind] += 1
            took = time.monotonic() - began
            self.notes.append(f"{kind} at t={began - started:.1f}s took {took:.1f}s")

    def fire(self, kind: str) -> Awaitable[None]:
        table: dict[str, Callable[[], Awaitable[None]]] = {
            "kill9": lambda: self.restart_random("KILL"),
            "sigterm": lambda: self.restart_random("TERM"),
            "failpoint_outbox": lambda: self.failpoint("outbox.after_publish_before_mark"),
            "failpoint_inbox": lambda: self.failpoint("inbox.after_commit_before_ack"),
            "nats_restart": self.nats_restart,
            "pg_outage": self.pg_outage,
            "pause": self.pause,
            "dup_same_id": lambda: self.duplicate(new_id=False),
            "dup_new_id": lambda: self.duplicate(new_id=True),
            "poison": self.poison,
        }
        return table[kind]()

    # --- processes -----------------------------------------------------------------------

    def _pick(self, services: tuple[str, ...] | None = None) -> tuple[str, int]:
        service = self.rng.choice([s for s in (services or tuple(self.lc.active))])
        replica = self.rng.choice(self.lc.running(service))
        return service, replica.slot

    async def restart_random(self, signal: str) -> None:
        service, slot = self._pick()
        proc = next(r.proc for r in self.lc.running(service) if r.slot == slot)
        await self.lc.restart(proc, signal=signal)

    async def failpoint(self, name: str) -> None:
        """SIGTERM a replica and start it again with `name` armed; once it has crashed there
        (or after a bounded wait, noted), start it again unarmed."""
        service, slot = self._pick(("intake", "partners", "scheduling"))
        proc = next(r.proc for r in self.lc.running(service) if r.slot == slot)
        await self.lc.terminate(proc, 30)
        svc = self.lc.services[service]
        svc.env["LINLI_FAILPOINT"] = name
        try:
            # It may hit the failpoint before it is ready.
            with contextlib.suppress(ServiceNotReady):
                await self.lc.start_replica(service, slot)
        finally:
            svc.env.pop("LINLI_FAILPOINT", None)
        armed = svc.replicas[-1].proc
        self.lc.expect_exit(armed)
        deadline = time.monotonic() + 60
        while armed.running and time.monotonic() < deadline:  # noqa: ASYNC110 (a process)
            await asyncio.sleep(0.2)
        if armed.running:
            self.notes.append(f"{name} on {armed.name}: not hit within 60 s; stopped")
            await self.lc.terminate(armed, 30)
        else:
            self.notes.append(f"{name} hit by {armed.name} (exit {armed.returncode})")
        await self.lc.start_replica(service, slot)

    async def pause(self) -> None:
        service, slot = self._pick(CONSUMERS if "notifications" in self.lc.active else None)
        proc = next(r.proc for r in self.lc.running(service) if r.slot == slot)
        proc.pause()
        try:
            await asyncio.sleep(self.pause_s)
        finally:
            proc.resume()

    async def heal(self) -> None:
        """After a fault that failed half-way: servers up, every slot running again."""
        if not self.servers.nats.running:
            await asyncio.to_thread(self.servers.nats.start, 60)
        if not self.servers.pg.running:
            await asyncio.to_thread(self.servers.pg.start, 120)
        for name, svc in self.lc.services.items():
            held = {r.slot for r in svc.running}
            for slot in range(len(svc.ports)):
                if slot not in held:
                    try:
                        await self.lc.start_replica(name, slot)
                    except ServiceNotReady as exc:
                        self.notes.append(f"heal: {name} slot {slot}: {str(exc)[:200]}")

    # --- servers -------------------------------------------------------------------------

    async def nats_restart(self) -> None:
        await asyncio.to_thread(self.servers.nats.kill)
        await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        await asyncio.to_thread(self.servers.nats.start, 60)

    async def pg_outage(self) -> None:
        """PostgreSQL stopped hard (immediate: crash recovery on start) and started again;
        the first outage of a run lasts `pg_outage_s`, later ones a few seconds."""
        seconds = self.pg_outage_s if not self.long_outage_done else self.rng.uniform(2.0, 5.0)
        self.long_outage_done = True
        await asyncio.to_thread(self.servers.pg.stop, "immediate", 30)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.servers.pg.start, 120)
        self.notes.append(f"pg_outage: PostgreSQL down {seconds:.0f} s")

    # --- messages ------------------------------------------------------------------------

    async def _stored(self, *, within_s: float | None = None) -> tuple[str, bytes, dict[str, str]]:
        """A random event already on the stream: (subject, body, headers); with
        `within_s`, one stored less than that many seconds ago (among the last 200)."""
        js = self.lc.nats.jetstream()
        info = await js.stream_info(self.lc.events_stream)
        first, last = info.state.first_seq, info.state.last_seq
        if within_s is not None:
            first = max(first, last - 200)
        for _ in range(40):
            seq = self.rng.randint(first, max(first, last))
            msg = await js.get_msg(self.lc.events_stream, seq)
            headers = dict(msg.headers or {})
            if str(headers.get("Nats-Msg-Id", "")).startswith(INJECTED_MSG_ID):
                continue
            age = (datetime.now(UTC) - msg.time).total_seconds() if msg.time else 0.0
            if within_s is not None and age > within_s:
                continue
            return str(msg.subject), msg.data or b"", headers
        raise NothingToRepublish("no stored event found to republish")

    async def duplicate(self, *, new_id: bool) -> None:
        """Republish stored events: with the same Nats-Msg-Id (inside the duplicate window:
        JetStream drops it) or with a new one (as if outside the window: stored again, and
        the consumers' inboxes must absorb it)."""
        js = self.lc.nats.jetstream()
        for _ in range(self.rng.randint(1, 5)):
            try:
                # Same id: an event stored well inside the window (a stalled stream has
                # none, and then nothing is republished).
                subject, body, headers = await self._stored(
                    within_s=None if new_id else DUPLICATE_WINDOW_S / 2
                )
            except NothingToRepublish:
                self.notes.append("dup_same_id: no event inside the window to republish")
                return
            if new_id:
                event_id = headers.get("ce-id") or headers.get("Nats-Msg-Id", "")
                headers["Nats-Msg-Id"] = f"{INJECTED_MSG_ID}dup-{uuid.uuid4()}"
                ack = await js.publish(subject, body, headers=headers)
                if not ack.duplicate:
                    self.republished_new_id[event_id] += 1
            else:
                ack = await js.publish(subject, body, headers=headers)
                if not ack.duplicate:
                    # Stored again after all: an outside-the-window duplicate, made by the
                    # driver; the consumers' inboxes must absorb it like dup_new_id's.
                    event_id = headers.get("ce-id") or headers.get("Nats-Msg-Id", "")
                    self.stored_again.add(str(event_id))
                    self.notes.append(f"dup_same_id: {subject} stored again (window passed)")

    async def poison(self) -> None:
        """Malformed bytes and an event on another type's subject, as the admin user."""
        js = self.lc.nats.jetstream()
        subject = f"linli.events.{self.lc.home}.need.submitted.v1"
        msg_id = f"{POISON_MSG_ID}{uuid.uuid4()}"
        await js.publish(subject, b"\x00not json{", headers={"Nats-Msg-Id": msg_id})
        self.poison_ids.append(msg_id)
        stored_subject, body, headers = await self._stored()
        wrong = f"linli.events.{self.lc.home}.need.submitted.v1"
        if stored_subject == wrong:
            wrong = f"linli.events.{self.lc.home}.need.cancelled.v1"
        msg_id = f"{POISON_MSG_ID}{uuid.uuid4()}"
        headers["Nats-Msg-Id"] = msg_id
        await js.publish(wrong, body, headers=headers)
        self.poison_ids.append(msg_id)
