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
react to `assignment.offered` for a bench party as a partner's app would to a push:
they accept the offer and report the delivery through the partners API with that
party's own token, at once (no think time), so the stage times are the system's own.
An offer the partners service has not stored yet answers 404; the helper retries it
with a short backoff.
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

from .world import Party, World

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
            self.helpers.offered(str(data["assignment_id"]), str(data["offered_to"]["id"]))

    def fulfilled(self, need_ids: list[str]) -> int:
        return sum(1 for n in need_ids if "need.fulfilled" in self.arrivals.get(n, {}))


@dataclass
class HelperStats:
    accepted: int = 0
    reported: int = 0
    not_found_retries: int = 0
    gave_up: int = 0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Offer:
    """An offer to one of the parties, as a helper works on it."""

    assignment_id: str
    party: Party
    seen: float  # when the observer saw assignment.offered
    retries: int = 0


class Helpers:
    """The canteen and volunteers: accept every offer, report the meal delivered.

    Workers only ever wait on HTTP: an offer partners has not stored yet is put back
    on the queue after a delay (call_later), so a slow partners service cannot tie up
    the workers and delay offers that are ready.
    """

    def __init__(
        self,
        world: World,
        *,
        workers: int = 16,
        queue_size: int = 100_000,
        retry_for_s: float = 20.0,
    ) -> None:
        self.world = world
        self.parties = {p.id: p for p in world.parties}
        self.queue: asyncio.Queue[Offer] = asyncio.Queue(maxsize=queue_size)
        self.stats = HelperStats()
        self.retry_for_s = retry_for_s
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._client = httpx.AsyncClient(
            base_url=world.partners_url,
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
        )

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    def offered(self, assignment_id: str, party_id: str) -> None:
        party = self.parties.get(party_id)
        if party is None:
            return  # not a meal party of the bench: not ours to answer
        self._put(Offer(assignment_id, party, time.perf_counter()))

    def _put(self, offer: Offer) -> None:
        if self._stopped:
            return
        try:
            self.queue.put_nowait(offer)
        except asyncio.QueueFull:
            self.stats.errors["queue_full"] += 1

    async def _work(self) -> None:
        while True:
            offer = await self.queue.get()
            try:
                await self._serve(offer)
            except httpx.HTTPError as exc:
                self.stats.errors[type(exc).__name__] += 1
            finally:
                self.queue.task_done()

    async def _serve(self, offer: Offer) -> None:
        party = offer.party
        path = f"/v1/me/offers/{offer.assignment_id}"
        body: dict[str, Any] = {}
        if party.kind == "partner":
            body["eta"] = (datetime.now(UTC) + timedelta(minutes=20)).isoformat()
        r = await self._client.post(f"{path}/accept", json=body, headers=party.headers)
        if r.status_code == 404:
            # partners has not stored the offer yet (it reads the same event we did)
            delay = min(0.02 * 2**offer.retries, 0.5)
            if time.perf_counter() + delay - offer.seen > self.retry_for_s:
                self.stats.gave_up += 1
                return
            offer.retries += 1
            self.stats.not_found_retries += 1
            asyncio.get_running_loop().call_later(delay, self._put, offer)
            return
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
