"""Two replicas of every service share their durables under load (issue 9, item 7, the
local proof): 200 lunches at about 20 a second for 100 places, so places are contested.

Every service runs as two processes on real NATS and PostgreSQL; each pair shares its
durable consumers, schema, outbox and timers. Volunteers accept and report through
partners' API, requests spread over both replicas of intake and partners. Afterwards:

* 0 needs lost: each lunch is fulfilled (it got a place) or escalated to the operators
  (no place left), in intake and in scheduling, and every place was used;
* 0 places oversold: reservations per slot never exceed its capacity (scheduling's
  tables and the slot.reserved events);
* 0 effects duplicated: each event once on the stream, one reservation and one offer
  per placed lunch, one escalation per unplaced one, one points credit per delivery,
  each event once at the app's webhook;
* both replicas of each service did work: every replica's spans (OTLP, each replica
  names itself in `service.instance.id`) include consumed events, and both replicas of
  intake and partners answered requests.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from harness.lifecycle import ALL_SERVICES, Lifecycle, window
from harness.load import Load
from harness.notifications import receiver
from harness.otlp import otlp_env, otlp_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

NEEDS = 200
RATE = 20.0
SLOTS = 5
PER_SLOT = 20
PLACES = SLOTS * PER_SLOT
CONSUMERS = {
    "intake": {"intake-lifecycle"},
    "partners": {"partners"},
    "scheduling": {"scheduling"},
    "notifications": {"notifications", "notifications-people"},
}


async def test_two_replicas_of_every_service_share_the_work_and_oversell_nothing(
    lifecycle,
) -> None:
    async with otlp_receiver() as otlp, receiver() as app:
        lc: Lifecycle = await lifecycle(notifications=True, replicas=2, env=otlp_env(otlp.endpoint))
        app.secret = (await lc.subscribe_webhook(app.url))["secret"]
        volunteers = [
            await lc.create_volunteer(f"volunteer {i}", ["meal_delivery"]) for i in range(SLOTS)
        ]
        tokens = [await lc.party_token("volunteer", v) for v in volunteers]
        residents = [
            await lc.create_resident(priority_group=g)
            for g in ("elderly_living_alone", "disabled", "low_income", "none")
        ]
        load = Load(lc, residents, tokens)
        stop = asyncio.Event()
        answering = [asyncio.create_task(load.volunteer(t, stop)) for t in tokens]
        try:
            # Half the lunches before the places exist, half after: both matching paths
            # race on both schedulers (a new lunch looking for a place, a new place
            # filling itself from the queue).
            await load.submit(NEEDS // 2, NEEDS / 2 / RATE)
            await asyncio.gather(
                *(
                    lc.publish_slot(
                        "meal_delivery",
                        provider=("volunteer", v),
                        window=window(20 + i, 180),
                        capacity=PER_SLOT,
                    )
                    for i, v in enumerate(volunteers)
                )
            )
            await load.submit(NEEDS // 2, NEEDS / 2 / RATE)
            assert not load.failures, "\n".join(load.failures)
            assert len(set(load.submitted)) == NEEDS
            await lc.wait_for(
                lambda: len(load.reported) >= PLACES, 60, what="every place accepted and reported"
            )
            settled = (
                "SELECT (SELECT count(*) FROM needs) = $1 "
                "AND (SELECT count(*) FROM needs WHERE state IN ('fulfilled', 'escalated')) = $1 "
                "AND NOT EXISTS (SELECT 1 FROM timers WHERE kind = 'rematch' "
                "AND fired_at IS NULL) "
                "AND NOT EXISTS (SELECT 1 FROM outbox WHERE sent_at IS NULL)"
            )
            await lc.wait_for(
                lambda: lc.sql_value("scheduling", settled, NEEDS), 60, what="scheduling to settle"
            )
        finally:
            stop.set()
            await asyncio.gather(*answering, return_exceptions=True)
        assert not load.failures, "\n".join(load.failures)

        # 0 places oversold.
        slots = await lc.sql("scheduling", "SELECT id, capacity, reserved FROM slots")
        assert len(slots) == SLOTS
        assert all(r["reserved"] <= r["capacity"] for r in slots), [dict(r) for r in slots]
        per_slot = await lc.sql(
            "scheduling", "SELECT slot_id, count(*) AS n FROM assignments GROUP BY slot_id"
        )
        assert all(r["n"] <= PER_SLOT for r in per_slot), [dict(r) for r in per_slot]
        assert sum(r["n"] for r in per_slot) == PLACES

        # 0 needs lost: placed lunches fulfilled, the rest escalated, in both services.
        states = Counter(r["state"] for r in await lc.sql("scheduling", "SELECT state FROM needs"))
        assert states == Counter({"fulfilled": PLACES, "escalated": NEEDS - PLACES}), states

        async def intake_final() -> Counter[str] | None:
            rows = await lc.sql(
                "intake", "SELECT status FROM needs WHERE id = ANY($1::uuid[])", load.submitted
            )
            found = Counter(r["status"] for r in rows)
            return found if found == states else None

        await lc.wait_for(intake_final, 30, what=f"intake to agree with scheduling: {states}")

        # 0 effects duplicated.
        await lc.wait_events("points.awarded", PLACES, timeout=30)
        events = await lc.events()
        assert len({e.event.id for e in events}) == len(events), "an event was published twice"
        per_need: dict[str | None, Counter[str]] = {}
        for e in events:
            per_need.setdefault(e.need_id, Counter())[e.short] += 1
        placed = [n for n in load.submitted if per_need[n]["need.fulfilled"]]
        assert len(placed) == PLACES
        for need_id in load.submitted:
            kinds = per_need[need_id]
            assert kinds["need.submitted"] == 1, (need_id, kinds)
            if need_id in placed:
                for short in (
                    "slot.reserved",
                    "assignment.offered",
                    "volunteer.confirmed",
                    "meal.delivered",
                    "need.fulfilled",
                    "points.awarded",
                ):
                    assert kinds[short] == 1, (need_id, short, kinds)
                # Submitted before any place existed: escalated once, then placed.
                assert kinds["need.escalated"] <= 1, (need_id, kinds)
            else:
                assert kinds["need.escalated"] == 1, (need_id, kinds)
                assert kinds["slot.reserved"] == 0, (need_id, kinds)
        reserved = Counter(e.data["slot_id"] for e in events if e.short == "slot.reserved")
        assert max(reserved.values()) <= PER_SLOT
        awards = await lc.sql_value(
            "partners",
            "SELECT count(DISTINCT assignment_id) = count(*) FROM ledger_entries "
            "WHERE entry_kind = 'award' AND account LIKE 'volunteer:%'",
        )
        assert awards
        balances = [(await lc.my_points(t))["balance"] for t in tokens]
        assert sum(balances) == 10 * PLACES
        for service in lc.active:
            letters = await lc.sql(service, "SELECT consumer, subject FROM dead_letters")
            assert letters == [], (service, [dict(r) for r in letters])
        home = {e.event.id for e in events if e.event.community == lc.home}
        await lc.wait_for(
            lambda: home <= set(app.event_ids()), 30, what="every event at the app's webhook"
        )
        assert await lc.sql_value("notifications", "SELECT max(attempts) FROM deliveries") == 1
        twice = {k: n for k, n in Counter(app.event_ids()).items() if n > 1}
        assert not twice, f"webhooks delivered more than once: {twice}"

        # Both replicas of each service did work.
        replicas = {s: {r.proc.name for r in lc.running(s)} for s in ALL_SERVICES}

        def both_consumed(spans: list) -> bool:
            seen = {(s.instance, s.attributes.get("messaging.consumer.group.name")) for s in spans}
            return all(
                (instance, durable) in seen
                for service, durables in CONSUMERS.items()
                for instance in replicas[service]
                for durable in durables
            )

        await otlp.wait_for(both_consumed, timeout=30, what="consumer spans of every replica")
        by_replica = Counter(
            (s.instance, s.attributes.get("messaging.consumer.group.name"))
            for s in otlp.spans
            if s.kind == "consumer"
        )
        print("consumed per replica and durable:", dict(sorted(by_replica.items())))
        for service in ("intake", "partners"):
            answered = [k for k in lc.router.answered if k.startswith(f"{service}:")]
            assert len(answered) == 2, lc.router.answered
        lc.check_alive()
        await lc.stop()  # before the OTLP receiver goes
