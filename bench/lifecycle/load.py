"""Open-loop load, the NATS observer and the simulated canteen and volunteers.

Open loop: the i-th need of a rung is due at start + i / rate, whatever happened to
the ones before, so a slow system meets the same offered load as a fast one (a closed
loop would wait for answers and flatter it). Latencies are measured from the time a
submission was due, not from when it actually started, so time spent queueing in the
load generator counts too; how late submissions started is reported beside them. A cap
on submissions in flight keeps a collapsing system from piling up unbounded tasks;
a submission due while the cap is reached is not sent and counts as not fulfilled.

The observer is one core NATS subscription on `linli.events.>` (the stack's admin
user). It records, per need id, the first arrival of each lifecycle stage. The helpers
take `assignment.offered` for one of the bench's parties as the push a partner's app
gets: they read that party's inbox and accept and report every open offer there
through the partners API, with the party's own token and no think time, so the stage
times are the system's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
from nats.aio.msg import Msg

from .world import KIND, Party, World

# Stage name in the report → event types that mark it (first arrival wins).
STAGES: dict[str, tuple[str, ...]] = {
    "need.submitted": ("need.submitted",),
    "slot.reserved": ("slot.reserved",),
    "assignment.offered": ("assignment.offered",),
    "accepted": ("partner.accepted", "volunteer.confirmed"),
    "delivered": ("meal.delivered",),
    "need.fulfilled": ("need.fulfilled",),
}
STAGE_OF = {event: stage for stage, events in STAGES.items() for event in events}
# Events that say a need left the happy path; counted per rung.
TROUBLE = ("need.escalated", "assignment.expired", "delivery.failed", "slot.released")


class Observer:
    """Arrival times of every need's lifecycle events, seen on NATS."""

    def __init__(self) -> None:
        self.arrivals: dict[str, dict[str, float]] = {}
        self.events_per_need: Counter[str] = Counter()
        self.trouble: Counter[tuple[str, str]] = Counter()  # (event, need id)
        self.escalation_reasons: Counter[tuple[str, str]] = Counter()  # (reason, need id)
        self.events_seen = 0
        self.undecodable = 0
        self.errors: Counter[str] = Counter()
        self.helpers: Helpers | None = None
        self._nc: nats.NATS | None = None

    async def start(self, url: str, user: str, password: str) -> None:
        self._nc = await nats.connect(
            url,
            user=user,
            password=password,
            name="linli-bench-observer",
            max_reconnect_attempts=5,
            error_cb=self._on_error,
        )
        # The client's default buffer (512k messages, 128 MB) outlasts any rung.
        await self._nc.subscribe("linli.events.>", cb=self._on_event)
        await self._nc.flush()

    async def _on_error(self, exc: Exception) -> None:
        # A slow consumer would silently lose arrivals: count it, the report shows it.
        self.errors[type(exc).__name__] += 1

    async def stop(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    async def _on_event(self, msg: Msg) -> None:
        now = time.perf_counter()
        self.events_seen += 1
        # linli.events.<community>.<aggregate>.<event>.v<N>
        parts = msg.subject.split(".")
        if len(parts) < 6:
            return
        event = f"{parts[3]}.{parts[4]}"
        try:
            data = json.loads(msg.data)["data"]
            need_id = data["need_id"]
        except (ValueError, KeyError, TypeError):
            self.undecodable += 1
            return
        self.events_per_need[need_id] += 1
        stage = STAGE_OF.get(event)
        if stage is not None:
            self.arrivals.setdefault(need_id, {}).setdefault(stage, now)
        elif event in TROUBLE:
            self.trouble[(event, need_id)] += 1
            if event == "need.escalated":
                self.escalation_reasons[(str(data.get("reason")), need_id)] += 1
        if event == "assignment.offered" and self.helpers is not None:
            self.helpers.offered(
                str(data["assignment_id"]), str(data["offered_to"]["id"]), str(data.get("kind"))
            )

    def fulfilled(self, need_ids: list[str]) -> int:
        return sum(1 for n in need_ids if "need.fulfilled" in self.arrivals.get(n, {}))


@dataclass
class HelperStats:
    polls: int = 0
    accepted: int = 0
    reported: int = 0
    gave_up: int = 0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Inbox:
    """One party's view of its offers, as its app keeps it."""

    party: Party
    waiting: dict[str, float] = field(default_factory=dict)  # seen on NATS, not answered
    answered: set[str] = field(default_factory=set)  # being answered or done
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Helpers:
    """The canteen and volunteers: accept every offer, report the meal delivered.

    `assignment.offered` on NATS is the push that tells a party it has an offer. The
    party's app then reads its inbox (`GET /v1/me/offers?status=open`) and answers
    every open offer there: accept, then report the meal delivered. Partners stores an
    offer when its own consumer reads the same event, so the first read may come too
    early; the app reads again (at most every `poll_interval_s`) while an offer it was
    told about is not in the inbox yet. Reading the inbox, rather than accepting the
    pushed id blindly and retrying 404s, keeps the requests per need near one read,
    one accept and one report even when partners runs seconds behind.
    """

    def __init__(
        self,
        world: World,
        *,
        concurrency: int = 16,
        poll_interval_s: float = 0.05,
        give_up_after_s: float = 120.0,
    ) -> None:
        self.inboxes = {p.id: Inbox(p) for p in world.parties}
        self.stats = HelperStats()
        self.poll_interval_s = poll_interval_s
        self.give_up_after_s = give_up_after_s
        self._slots = asyncio.Semaphore(concurrency)
        self._pollers: list[asyncio.Task[None]] = []
        self._answers: set[asyncio.Task[None]] = set()
        self._client = httpx.AsyncClient(
            base_url=world.partners_url,
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(
                max_connections=concurrency + len(world.parties),
                max_keepalive_connections=concurrency + len(world.parties),
            ),
        )

    def start(self) -> None:
        self._pollers = [asyncio.create_task(self._poll(i)) for i in self.inboxes.values()]

    async def stop(self) -> None:
        tasks = [*self._pollers, *self._answers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    def offered(self, assignment_id: str, party_id: str, kind: str) -> None:
        inbox = self.inboxes.get(party_id)
        if inbox is None or kind != KIND or assignment_id in inbox.answered:
            # Not one of the bench's parties, not a meal (a demo volunteer also visits),
            # or already read from the inbox.
            return
        inbox.waiting.setdefault(assignment_id, time.perf_counter())
        inbox.wake.set()

    async def _poll(self, inbox: Inbox) -> None:
        headers = inbox.party.headers
        while True:
            await inbox.wake.wait()
            began = time.perf_counter()
            try:
                r = await self._client.get(
                    "/v1/me/offers", params={"status": "open", "limit": 200}, headers=headers
                )
                self.stats.polls += 1
                if r.status_code == 200:
                    for item in r.json()["items"]:
                        if item["kind"] == KIND:
                            self._answer_later(inbox, str(item["assignment_id"]))
                else:
                    self.stats.errors[f"inbox_{r.status_code}"] += 1
            except httpx.HTTPError as exc:
                self.stats.errors[type(exc).__name__] += 1
            # An offer withdrawn before partners listed it never shows up: stop waiting.
            cutoff = time.perf_counter() - self.give_up_after_s
            for assignment_id, seen in list(inbox.waiting.items()):
                if seen < cutoff:
                    del inbox.waiting[assignment_id]
                    self.stats.gave_up += 1
            if not inbox.waiting:
                inbox.wake.clear()
            await asyncio.sleep(max(0.0, self.poll_interval_s - (time.perf_counter() - began)))

    def _answer_later(self, inbox: Inbox, assignment_id: str) -> None:
        if assignment_id in inbox.answered:
            return
        inbox.answered.add(assignment_id)
        inbox.waiting.pop(assignment_id, None)
        task = asyncio.create_task(self._answer(inbox.party, assignment_id))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, party: Party, assignment_id: str) -> None:
        path = f"/v1/me/offers/{assignment_id}"
        body: dict[str, Any] = {}
        if party.kind == "partner":
            body["eta"] = (datetime.now(UTC) + timedelta(minutes=20)).isoformat()
        async with self._slots:
            try:
                r = await self._client.post(f"{path}/accept", json=body, headers=party.headers)
                if r.status_code != 200:
                    self.stats.errors[f"accept_{r.status_code}"] += 1
                    return
                self.stats.accepted += 1
                report = {
                    "outcome": "meal_delivered",
                    "delivered_at": datetime.now(UTC).isoformat(),
                    "handed_to": "resident",
                    "hot_on_arrival": True,
                }
                r = await self._client.post(f"{path}/report", json=report, headers=party.headers)
                if r.status_code != 201:
                    self.stats.errors[f"report_{r.status_code}"] += 1
                    return
                self.stats.reported += 1
            except httpx.HTTPError as exc:
                self.stats.errors[type(exc).__name__] += 1


@dataclass
class Submission:
    due: float  # perf_counter time the submission was due
    started: float
    finished: float | None = None
    status: int | None = None  # HTTP status, None for a transport error
    need_id: str | None = None


@dataclass
class RungRun:
    """Raw observations of one rung; `report.summarise_rung` turns them into figures."""

    rate: float
    duration_s: float
    planned: int
    submissions: list[Submission] = field(default_factory=list)
    skipped_at_cap: int = 0
    abandoned: int = 0  # still in flight when the drain ended
    errors: Counter[str] = field(default_factory=Counter)
    submit_began: float = 0.0
    submit_ended: float = 0.0
    drain_ended: float = 0.0


async def run_rung(
    world: World,
    observer: Observer,
    *,
    rate: float,
    duration_s: float,
    drain_s: float,
    max_in_flight: int,
) -> RungRun:
    """Submit at `rate` for `duration_s`, then wait (at most `drain_s`) for fulfilments."""
    planned = max(1, round(rate * duration_s))
    run = RungRun(rate=rate, duration_s=duration_s, planned=planned)
    in_flight: set[asyncio.Task[None]] = set()
    url = f"{world.intake_url}/v1/communities/{world.community}/needs"
    headers = {
        "Authorization": f"Bearer {world.operator_token}",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=5.0),
        limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=64),
    ) as client:

        async def submit(index: int, due: float) -> None:
            sub = Submission(due=due, started=time.perf_counter())
            run.submissions.append(sub)
            try:
                r = await client.post(url, content=world.need_body(index), headers=headers)
            except httpx.HTTPError as exc:
                run.errors[type(exc).__name__] += 1
                return
            finally:
                sub.finished = time.perf_counter()
            sub.status = r.status_code
            if r.status_code == 201:
                sub.need_id = r.json()["id"]
            else:
                run.errors[f"http_{r.status_code}"] += 1

        start = time.perf_counter() + 0.05
        run.submit_began = start
        for index in range(planned):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_in_flight:
                run.skipped_at_cap += 1
                continue
            task = asyncio.create_task(submit(index, due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        run.submit_ended = time.perf_counter()

        drain_deadline = run.submit_ended + drain_s
        while in_flight and time.perf_counter() < drain_deadline:
            await asyncio.sleep(0.05)
        run.abandoned = len(in_flight)
        for task in list(in_flight):
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
    need_ids = [s.need_id for s in run.submissions if s.need_id]
    while time.perf_counter() < drain_deadline and observer.fulfilled(need_ids) < len(need_ids):
        await asyncio.sleep(0.1)
    run.drain_ended = time.perf_counter()
    return run
