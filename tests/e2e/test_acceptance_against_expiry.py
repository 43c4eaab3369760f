"""An acceptance is judged by when it was made against the offer's expiry, not by which
message a service happens to process first (issue 10, defect 1; ADR 0026; DESIGN.md
section 6, rule 7).

Partners serialises the answers to an offer and its lapse under the offer's row lock
and is the one place that decides "accepted in time" or "lapsed"; scheduling acts on
that verdict however late it reaches it. Each test makes one component lag past the
offer's expiry while the helper accepts in time, then follows the need to the end and
reads the truth from the events stream and the services' tables.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness.intake import meal_need, repair_need
from harness.lifecycle import Lifecycle, now_iso, window

pytestmark = [pytest.mark.e2e]

OFFER_TIMEOUT_S = 6
"""The offer window (SLA seconds at time scale 1): short, so the lag can outlast it."""
BACKLOG = 40
"""Needs that queue up in front of the acceptance while scheduling is paused."""


async def _offered_meal(lc: Lifecycle) -> tuple[str, str, str, dict[str, Any]]:
    """A canteen with a lunch round, a resident's lunch offered to it: (canteen id, its
    token, need id, the offer in the canteen's inbox)."""
    canteen = await lc.create_partner("幸福食堂 Happiness Canteen", "canteen", ["meal_delivery"])
    token = await lc.party_token("partner", canteen)
    await lc.publish_slot("meal_delivery", window=window(20, 150), capacity=3, token=token)
    await lc.wait_slots(1)
    resident = await lc.create_resident(priority_group="elderly_living_alone")
    need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
    offer = await lc.wait_offer(token, need_id)
    return canteen, token, need_id, offer


async def _accept_in_time(lc: Lifecycle, token: str, offer: dict[str, Any]) -> datetime:
    """Accept through the partners API before the offer's expiry; returns the expiry."""
    expires_at = datetime.fromisoformat(offer["expires_at"])
    accepted = lc.ok(await lc.answer(token, offer["assignment_id"], "accept", {"eta": now_iso()}))
    assert accepted["status"] == "accepted"
    assert datetime.fromisoformat(accepted["answered_at"]) < expires_at
    return expires_at


async def _past(lc: Lifecycle, moment: datetime) -> None:
    """Wait until the clock has passed `moment` (plus the timer poll and some slack)."""
    later = moment + timedelta(seconds=1)
    await lc.wait_for(
        lambda: datetime.now(UTC) > later, OFFER_TIMEOUT_S + 10, what="the expiry to pass"
    )


async def _served_exactly_once(
    lc: Lifecycle, token: str, canteen: str, need_id: str, offer: dict[str, Any]
) -> None:
    """The need is the canteen's: assigned everywhere, then delivered and fulfilled, with
    one reservation kept and no expiry, release or escalation, each step once."""
    await lc.wait_for(
        lambda: lc.sql_value(
            "scheduling", "SELECT state = 'assigned' FROM needs WHERE id = $1", uuid.UUID(need_id)
        ),
        what="scheduling to hold the need as assigned",
    )
    view = await lc.wait_status(need_id, "assigned")
    assert view["status"] == "assigned"
    assert lc.ok(await lc.offer(token, offer["assignment_id"]))["status"] == "accepted"
    contact = await lc.http.get(
        lc.c("intake", f"/needs/{need_id}/contact"),
        params={"party_kind": "partner", "party_id": canteen},
        headers=lc.bearer(lc.service_token),
    )
    assert contact.status_code == 200, contact.text

    lc.ok(
        await lc.report(
            token,
            offer["assignment_id"],
            {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"},
        ),
        201,
    )
    await lc.wait_status(need_id, "fulfilled")
    await lc.wait_events("need.fulfilled", need_id=need_id)
    # Everything scheduling decided for this need is on the stream by now.
    await lc.wait_for(
        lambda: lc.sql_value("scheduling", "SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL"),
        what="scheduling's outbox to drain",
    )

    kinds = Counter(e.short for e in await lc.events(need_id=need_id))
    for short in (
        "need.submitted",
        "slot.reserved",
        "assignment.offered",
        "partner.accepted",
        "meal.delivered",
        "need.fulfilled",
    ):
        assert kinds[short] == 1, (short, kinds)
    for short in ("assignment.expired", "slot.released", "need.escalated", "offer.lapsed"):
        assert kinds[short] == 0, (short, kinds)

    # Scheduling's tables: one assignment, completed by the canteen; its place was kept.
    rows = await lc.sql(
        "scheduling",
        "SELECT a.state, a.provider_id, s.reserved FROM assignments a "
        "JOIN slots s ON s.id = a.slot_id WHERE a.need_id = $1",
        uuid.UUID(need_id),
    )
    assert [(r["state"], str(r["provider_id"]), r["reserved"]) for r in rows] == [
        ("completed", canteen, 1)
    ]
    assert (
        await lc.sql_value(
            "scheduling",
            "SELECT count(*) FROM escalations WHERE need_id = $1",
            uuid.UUID(need_id),
        )
        == 0
    )


async def test_acceptance_in_time_stands_when_scheduling_lags_past_the_expiry(lifecycle) -> None:
    lc: Lifecycle = await lifecycle(scheduling_env={"LINLI_OFFER_TIMEOUT_S": str(OFFER_TIMEOUT_S)})
    canteen, token, need_id, offer = await _offered_meal(lc)

    # Scheduling stops consuming and firing timers (a GC pause, a database outage) while
    # other needs queue up in front of the acceptance: it hears the acceptance only after
    # the offer's expiry, behind a backlog, when its expiry timer is long due.
    (scheduling,) = lc.processes("scheduling")
    scheduling.pause()
    try:
        resident = await lc.create_resident(priority_group="none")
        backlog = [
            (await lc.submit_need(repair_need(resident, urgency="routine")))["id"]
            for _ in range(BACKLOG)
        ]
        await lc.wait_events("need.submitted", BACKLOG + 1)
        expires_at = await _accept_in_time(lc, token, offer)
        (accepted,) = await lc.wait_events("partner.accepted", need_id=need_id)
        assert accepted.event.time < expires_at  # on the stream in time
        await _past(lc, expires_at)
    finally:
        scheduling.resume()

    await _served_exactly_once(lc, token, canteen, need_id, offer)
    for other in backlog:  # the backlog was worked off too (no repairer: escalated)
        await lc.wait_status(other, "escalated")


async def test_acceptance_in_time_stands_when_partners_relay_lags_past_the_expiry(
    lifecycle,
) -> None:
    # Partners' events are relayed by the test, so it can hold them back past the expiry.
    lc: Lifecycle = await lifecycle(
        scheduling_env={"LINLI_OFFER_TIMEOUT_S": str(OFFER_TIMEOUT_S)},
        partners_env={"LINLI_RUN_RELAY": "false"},
    )
    relay = await lc.outbox_relay("partners")
    await relay.start()
    try:
        canteen, token, need_id, offer = await _offered_meal(lc)
        await relay.stop()  # partners loses NATS right before the canteen answers
        expires_at = await _accept_in_time(lc, token, offer)
        await _past(lc, expires_at)
        # The acceptance is still in partners' outbox, nowhere else.
        assert await lc.events("partner.accepted", need_id=need_id) == []
        await relay.start()  # partners reconnects: the acceptance arrives after the expiry
        await _served_exactly_once(lc, token, canteen, need_id, offer)
    finally:
        await relay.stop()


async def test_acceptance_after_the_expiry_is_refused_and_the_need_goes_on(lifecycle) -> None:
    """The opposite case: too late is too late, and nobody is left believing otherwise."""
    lc: Lifecycle = await lifecycle(scheduling_env={"LINLI_OFFER_TIMEOUT_S": str(OFFER_TIMEOUT_S)})
    canteen, token, need_id, offer = await _offered_meal(lc)
    await _past(lc, datetime.fromisoformat(offer["expires_at"]))
    late = await lc.answer(token, offer["assignment_id"], "accept")
    assert late.status_code == 409, late.text

    # The only candidate let it lapse: released, escalated as no taker, once.
    await lc.wait_events("need.escalated", need_id=need_id, reason="no_taker")
    await lc.wait_status(need_id, "escalated")
    (expired,) = await lc.events("assignment.expired", need_id=need_id)
    assert expired.data["assignment_id"] == offer["assignment_id"]
    (released,) = await lc.events("slot.released", need_id=need_id)
    assert released.data["reason"] == "expired"
    assert await lc.events("partner.accepted", need_id=need_id) == []
    assert lc.ok(await lc.offer(token, offer["assignment_id"]))["status"] == "expired"
    contact = await lc.http.get(
        lc.c("intake", f"/needs/{need_id}/contact"),
        params={"party_kind": "partner", "party_id": canteen},
        headers=lc.bearer(lc.service_token),
    )
    assert contact.status_code == 404
    assert (
        await lc.sql_value(
            "scheduling", "SELECT state FROM needs WHERE id = $1", uuid.UUID(need_id)
        )
        == "escalated"
    )
