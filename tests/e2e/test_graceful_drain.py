"""Graceful drain (issue 9, item 5): every service restarted with SIGTERM while needs flow.

All four services run as processes on real NATS and PostgreSQL. Lunches are submitted at
a steady pace and volunteers accept and report them through partners' API, while each
replica of every service in turn gets SIGTERM, exits and starts again on its port (a
rolling restart: with two replicas the other keeps serving; with one, its clients wait
for it to come back). Afterwards:

* every SIGTERM'd process exited 0 within its grace period;
* no request failed: the test's HTTP client (`ReplicaRouter`) sends a request to another
  replica only when a connection is refused (nobody listening: the request never reached
  a replica); a reset, a cut-off answer or a 5xx from a replica that had the request
  fails the test;
* 0 needs lost: every submitted lunch is fulfilled, in intake and in scheduling;
* 0 effects duplicated: each event once on the stream; per lunch one reservation, one
  offer, one confirmation, one delivery, one fulfilment, one points credit (and one
  ledger entry); each timeline entry once in intake; each event delivered once to
  the app's webhook (one `webhook-id` arrives once); no dead letters anywhere.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from harness.lifecycle import ALL_SERVICES, Lifecycle, window
from harness.load import Load
from harness.notifications import Receiver, receiver
from starlette.responses import Response

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.slow]

VOLUNTEERS = 3
WEBHOOK_ANSWER_S = 0.1
"""The app's receiver takes this long per request, so a shutdown finds POSTs in flight."""
POINTS_PER_MEAL = 10
SPINE = (
    "need.submitted",
    "slot.reserved",
    "assignment.offered",
    "volunteer.confirmed",
    "meal.delivered",
    "need.fulfilled",
    "points.awarded",
)


async def slow_ok(_n: int) -> Response:
    await asyncio.sleep(WEBHOOK_ANSWER_S)
    return Response(status_code=204)


async def drive(
    lc: Lifecycle, app: Receiver, *, needs: int, seconds: float
) -> tuple[Load, list[tuple[str, int | None]]]:
    """Flow `needs` lunches over `seconds` while every replica is restarted with SIGTERM."""
    volunteers = [
        await lc.create_volunteer(f"volunteer {i}", ["meal_delivery"]) for i in range(VOLUNTEERS)
    ]
    tokens = [await lc.party_token("volunteer", v) for v in volunteers]
    for i, volunteer in enumerate(volunteers):
        await lc.publish_slot(
            "meal_delivery",
            provider=("volunteer", volunteer),
            window=window(20 + i, 180),
            capacity=needs,
        )
    await lc.wait_slots(VOLUNTEERS)
    residents = [await lc.create_resident(priority_group=g) for g in ("none", "disabled")]
    load = Load(lc, residents, tokens)
    stop = asyncio.Event()
    answering = [asyncio.create_task(load.volunteer(t, stop)) for t in tokens]
    submitting = asyncio.create_task(load.submit(needs, seconds))
    restarted: list[tuple[str, int | None]] = []
    try:
        await asyncio.sleep(2.0)  # needs in flight everywhere first
        for service in ALL_SERVICES:
            for replica in lc.running(service):
                old = replica.proc
                await lc.restart(old)
                restarted.append((old.name, lc.exit_codes[old.name]))
        await submitting
        await lc.wait_for(
            lambda: len(load.reported) >= len(load.submitted),
            60,
            what="every lunch answered and reported",
        )
    finally:
        stop.set()
        submitting.cancel()
        await asyncio.gather(submitting, *answering, return_exceptions=True)
    return load, restarted


async def check_nothing_lost_nothing_twice(lc: Lifecycle, app: Receiver, load: Load) -> None:
    need_ids = load.submitted
    assert len(set(need_ids)) == len(need_ids)
    await lc.wait_for(
        lambda: lc.sql_value(
            "intake",
            "SELECT count(*) = $1 FROM needs WHERE status = 'fulfilled' AND id = ANY($2::uuid[])",
            len(need_ids),
            need_ids,
        ),
        60,
        what="every lunch fulfilled in intake",
    )
    fulfilled = await lc.sql_value(
        "scheduling", "SELECT count(*) FROM needs WHERE state = 'fulfilled'"
    )
    assert fulfilled == len(need_ids)
    await lc.wait_events("points.awarded", len(need_ids), timeout=30)

    # The stream: each event once, the spine once per lunch.
    events = await lc.events()
    assert len({e.event.id for e in events}) == len(events), "an event was published twice"
    per_need = {n: Counter() for n in need_ids}
    for e in events:
        if e.need_id in per_need:
            per_need[e.need_id][e.short] += 1
    for need_id, kinds in per_need.items():
        assert {k: kinds[k] for k in SPINE} == dict.fromkeys(SPINE, 1), (need_id, kinds)
        assert set(kinds) == set(SPINE), (need_id, kinds)

    # Intake's timeline: each entry once (an event's note stands under the status the
    # need has then, so one status can have several different entries).
    rows = await lc.sql(
        "intake",
        "SELECT need_id, status, actor, note, count(*) AS n FROM need_timeline "
        "GROUP BY need_id, status, actor, note HAVING count(*) > 1",
    )
    assert rows == [], [dict(r) for r in rows]

    # Points: credited once per lunch, in the ledger and on the balances.
    awarded = await lc.sql(
        "partners",
        "SELECT need_id, count(*) AS n FROM ledger_entries "
        "WHERE entry_kind = 'award' AND account LIKE 'volunteer:%' GROUP BY need_id",
    )
    assert {str(r["need_id"]): r["n"] for r in awarded} == dict.fromkeys(need_ids, 1)
    balances = [(await lc.my_points(t))["balance"] for t in load.tokens]
    assert sum(balances) == POINTS_PER_MEAL * len(need_ids)

    # Scheduling: one assignment per lunch, accepted once.
    doubles = await lc.sql_value(
        "scheduling",
        "SELECT count(*) FROM (SELECT need_id FROM assignments GROUP BY need_id "
        "HAVING count(*) > 1) d",
    )
    assert doubles == 0

    # No dead letters anywhere.
    for service in lc.active:
        letters = await lc.sql(service, "SELECT consumer, subject, reasons FROM dead_letters")
        assert letters == [], (service, [dict(r) for r in letters])

    # The app's webhook: every event of the community, each exactly once.
    home = [e.event.id for e in events if e.event.community == lc.home]
    await lc.wait_for(
        lambda: set(home) <= set(app.event_ids()),
        30,
        what="every event delivered to the app's webhook",
    )
    # Every delivery recorded as delivered on its first attempt: a POST cut short by a
    # shutdown (sent, never recorded) would wait for its lease to end and go out again.
    await lc.wait_for(
        lambda: lc.sql_value(
            "notifications", "SELECT count(*) = 0 FROM deliveries WHERE state <> 'delivered'"
        ),
        20,
        what="every webhook delivery recorded as delivered",
    )
    assert await lc.sql_value("notifications", "SELECT max(attempts) FROM deliveries") == 1
    ids = Counter(r.headers.get("webhook-id") for r in app.received)
    twice = {k: n for k, n in ids.items() if n > 1}
    assert not twice, f"webhooks delivered more than once: {twice}"
    assert all(r.verified for r in app.received)


def check_drained(lc: Lifecycle, load: Load, restarted: list[tuple[str, int | None]]) -> None:
    assert not load.failures, (
        f"{len(load.failures)} of {load.requests} requests failed:\n" + "\n".join(load.failures)
    )
    bad = [(name, code) for name, code in restarted if code != 0]
    assert not bad, f"processes that did not exit 0 after SIGTERM: {bad}"


@pytest.mark.timeout(180)
async def test_rolling_sigterm_of_two_replicas_each_loses_and_repeats_nothing(lifecycle) -> None:
    async with receiver(slow_ok) as app:
        lc: Lifecycle = await lifecycle(notifications=True, replicas=2)
        app.secret = (await lc.subscribe_webhook(app.url))["secret"]
        load, restarted = await drive(lc, app, needs=80, seconds=30)
        assert len(restarted) == 2 * len(ALL_SERVICES)
        check_drained(lc, load, restarted)
        await check_nothing_lost_nothing_twice(lc, app, load)
        # Both slots of every service answered requests (the router spread them).
        for service in ("intake", "partners"):
            slots = [k for k in lc.router.answered if k.startswith(f"{service}:")]
            assert len(slots) == 2, lc.router.answered


@pytest.mark.timeout(150)
async def test_sigterm_of_a_lone_replica_loses_and_repeats_nothing(lifecycle) -> None:
    async with receiver(slow_ok) as app:
        lc: Lifecycle = await lifecycle(notifications=True, replicas=1)
        app.secret = (await lc.subscribe_webhook(app.url))["secret"]
        load, restarted = await drive(lc, app, needs=40, seconds=20)
        assert len(restarted) == len(ALL_SERVICES)
        check_drained(lc, load, restarted)
        await check_nothing_lost_nothing_twice(lc, app, load)
