"""One trace per need (issue 9, item 6): the spans of a lunch's whole life, exported over
OTLP/HTTP by the four service processes to an in-test receiver, form one tree.

The lunch: submitted over HTTP at intake -> need.submitted through intake's outbox ->
scheduling reserves a place and offers it to the first volunteer, who never answers ->
partners' lapse sweep lapses the offer at its expiry (`offer.lapsed`, ADR 0026), on which
scheduling expires it and the place goes to the second volunteer -> partners puts it in
her inbox, she accepts and reports the meal delivered over HTTP (requests with traces of
their own) -> scheduling fulfils the need, partners credits
points -> notifications delivers every step to a community app's webhook receiver.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
from harness.intake import meal_need
from harness.lifecycle import Lifecycle, now_iso, window
from harness.notifications import receiver
from harness.otlp import CollectedSpan, OtlpReceiver, otlp_env, otlp_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(150)]

SERVICES = {"linli-intake", "linli-partners", "linli-scheduling", "linli-notifications"}
OFFER_TIMEOUT_S = 2
NAME = "ZZTRACE-王秀兰"
PHONE = "13900139077"
ADDRESS = "ZZTRACE 致远小区 7号楼 203"


def submit_span(spans: list[CollectedSpan]) -> CollectedSpan | None:
    for span in spans:
        if (
            span.service == "linli-intake"
            and span.kind == "server"
            and span.name.startswith("POST")
            and span.name.endswith("/needs")
        ):
            return span
    return None


def complete(spans: list[CollectedSpan], trace_id: str) -> bool:
    """Everything the need's life produces has arrived (spans are exported in batches)."""
    mine = [s for s in spans if s.trace_id == trace_id]
    ids = {s.span_id for s in mine}
    if any(s.parent_id is not None and s.parent_id not in ids for s in mine):
        return False  # a parent is still on its way
    consumed = Counter(s.service for s in mine if s.kind == "consumer")
    names = {s.name for s in mine}
    return (
        all(consumed[service] for service in SERVICES)
        and "offer lapsed" in names
        and "webhook POST" in names
        and any("need.fulfilled" in n and "process" in n for n in names)
        and any("points.awarded" in n for n in names)
    )


async def test_one_trace_follows_a_lunch_through_all_four_services(lifecycle) -> None:
    async with otlp_receiver() as otlp, receiver() as app:
        lc: Lifecycle = await lifecycle(
            notifications=True,
            env=otlp_env(otlp.endpoint),
            scheduling_env={"LINLI_OFFER_TIMEOUT_S": str(OFFER_TIMEOUT_S)},
        )
        app.secret = (await lc.subscribe_webhook(app.url))["secret"]
        first = await lc.create_volunteer("老王 Lao Wang", ["meal_delivery"])
        second = await lc.create_volunteer("小刘 Xiao Liu", ["meal_delivery"])
        second_token = await lc.party_token("volunteer", second)
        # The first volunteer's round starts earlier, so it is offered first.
        await lc.publish_slot(
            "meal_delivery", provider=("volunteer", first), window=window(20, 150)
        )
        await lc.publish_slot(
            "meal_delivery", provider=("volunteer", second), window=window(30, 150)
        )
        await lc.wait_slots(2)
        resident = await lc.create_resident(name=NAME, phone=PHONE, address=ADDRESS)

        need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
        # Nobody answers the first offer: partners lapses it, scheduling expires it.
        await lc.wait_events("assignment.expired", need_id=need_id, timeout=20)
        offer = await lc.wait_offer(second_token, need_id)
        lc.ok(await lc.answer(second_token, offer["assignment_id"], "accept"))
        await lc.wait_status(need_id, "assigned")
        body = {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"}
        lc.ok(await lc.report(second_token, offer["assignment_id"], body), 201)
        await lc.wait_status(need_id, "fulfilled")
        (fulfilled,) = await lc.wait_events("need.fulfilled", need_id=need_id)
        (points,) = await lc.wait_events("points.awarded", need_id=need_id)
        await lc.wait_for(
            lambda: {fulfilled.event.id, points.event.id} <= set(app.event_ids()),
            20,
            what="the app's webhook receiver to get need.fulfilled and points.awarded",
        )

        root = submit_span(
            await otlp.wait_for(lambda s: submit_span(s) is not None, what="intake's POST span")
        )
        assert root is not None
        # Spans arrive in batches; when some never come, the checks below say which.
        with contextlib.suppress(AssertionError):
            await otlp.wait_for(lambda spans: complete(spans, root.trace_id), timeout=30)
        check_one_tree(otlp, root)
        check_partner_requests_linked(otlp, root)
        # The events of the need all carry the need's trace (their traceparent extension).
        for event in await lc.events(need_id=need_id):
            assert event.event.traceparent is not None, event.short
            assert event.event.traceparent.split("-")[1] == root.trace_id, event.short
        # Every webhook request carried a traceparent of the need's trace, so the app can
        # go on with it.
        for request in app.received:
            if request.event and request.event["id"] in {fulfilled.event.id, points.event.id}:
                assert request.headers["traceparent"].split("-")[1] == root.trace_id
        check_no_personal_data(otlp)
        await lc.stop()  # before the OTLP receiver goes


def check_one_tree(otlp: OtlpReceiver, root: CollectedSpan) -> None:
    spans = otlp.trace(root.trace_id)
    shown = "\n".join(sorted(str(s) for s in spans))
    ids = {s.span_id for s in spans}
    assert len(ids) == len(spans), "a span was exported twice"
    roots = [s for s in spans if s.parent_id is None]
    assert roots == [root], f"the trace has other roots than intake's POST:\n{shown}"
    orphans = [s for s in spans if s.parent_id is not None and s.parent_id not in ids]
    assert not orphans, "spans whose parent is missing:\n" + "\n".join(map(str, orphans))
    # Every span reaches the root through its parents (no cycles, one tree).
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        seen, current = set(), span
        while current.parent_id is not None:
            assert current.span_id not in seen, f"cycle at {current}"
            seen.add(current.span_id)
            current = by_id[current.parent_id]
        assert current is root

    services = {s.service for s in spans}
    assert services == SERVICES, shown
    consumers = Counter(s.service for s in spans if s.kind == "consumer")
    assert set(consumers) == SERVICES, f"consumer spans per service: {consumers}\n{shown}"
    producers = Counter(s.service for s in spans if s.kind == "producer")
    # Outbox publishes of intake (need.submitted), scheduling (reservations, offers, the
    # expiry, fulfilment) and partners (the lapse, confirmation, delivery, points).
    assert {"linli-intake", "linli-scheduling", "linli-partners"} <= set(producers), shown
    sent = {
        s.attributes.get("messaging.destination.name", "") for s in spans if s.kind == "producer"
    }
    for event in ("need.submitted", "slot.reserved", "assignment.offered", "assignment.expired"):
        assert any(f".{event}." in subject for subject in sent), (event, shown)
    for event in (
        "offer.lapsed",
        "volunteer.confirmed",
        "meal.delivered",
        "need.fulfilled",
        "points.awarded",
    ):
        assert any(f".{event}." in subject for subject in sent), (event, shown)
    (lapse,) = [s for s in spans if s.name == "offer lapsed"]
    assert lapse.service == "linli-partners"
    # The second offer was made on partners' lapse, so its publish descends from it.
    under_lapse = descendants(spans, lapse)
    assert any(
        ".assignment.offered." in s.attributes.get("messaging.destination.name", "")
        for s in under_lapse
    ), shown
    webhooks = [s for s in spans if s.name == "webhook POST"]
    assert webhooks
    assert all(s.service == "linli-notifications" for s in webhooks)
    assert all(s.kind == "client" for s in webhooks)


def descendants(spans: list[CollectedSpan], top: CollectedSpan) -> list[CollectedSpan]:
    children: dict[str, list[CollectedSpan]] = {}
    for span in spans:
        if span.parent_id:
            children.setdefault(span.parent_id, []).append(span)
    found, todo = [], [top]
    while todo:
        for child in children.get(todo.pop().span_id, []):
            found.append(child)
            todo.append(child)
    return found


def check_partner_requests_linked(otlp: OtlpReceiver, root: CollectedSpan) -> None:
    """The volunteer's accept and report are requests with traces of their own; the work
    they do for the need is in the need's trace, linked back to the request (ADR 0025)."""
    spans = otlp.trace(root.trace_id)
    resumed = [s for s in spans if s.name in ("accepted offer", "report meal_delivered")]
    assert {s.name for s in resumed} == {"accepted offer", "report meal_delivered"}, resumed
    by_id = {(s.trace_id, s.span_id): s for s in otlp.spans}
    for span in resumed:
        assert span.service == "linli-partners"
        assert len(span.links) == 1, span
        request = by_id.get((span.links[0].trace_id, span.links[0].span_id))
        assert request is not None, f"the linked request span of {span} was not exported"
        assert request.service == "linli-partners", request
        assert request.kind == "server", request
        assert request.trace_id != root.trace_id


def check_no_personal_data(otlp: OtlpReceiver) -> None:
    for span in otlp.spans:
        for key, value in span.attributes.items():
            text = str(value)
            for secret in (NAME, PHONE, ADDRESS, "ZZTRACE"):
                assert secret not in text, f"{span}: attribute {key} carries personal data"
        assert "ZZTRACE" not in span.name


async def test_a_waiting_need_filled_by_a_new_slot_stays_in_its_own_trace(lifecycle) -> None:
    """The place appears after the need: the offer is made while handling the slot's
    event (another trace), yet it belongs to the need's trace, linked to that event."""
    async with otlp_receiver() as otlp:
        lc: Lifecycle = await lifecycle(env=otlp_env(otlp.endpoint))
        volunteer = await lc.create_volunteer("小刘 Xiao Liu", ["meal_delivery"])
        resident = await lc.create_resident()
        need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
        await lc.wait_events("need.escalated", need_id=need_id)  # no place anywhere yet
        await lc.publish_slot(
            "meal_delivery", provider=("volunteer", volunteer), window=window(20, 150)
        )
        (offered,) = await lc.wait_events("assignment.offered", need_id=need_id)
        (submitted,) = await lc.events("need.submitted", need_id=need_id)
        assert submitted.event.traceparent is not None
        assert offered.event.traceparent is not None
        need_trace = submitted.event.traceparent.split("-")[1]
        assert offered.event.traceparent.split("-")[1] == need_trace

        def resumed(spans: list[CollectedSpan]) -> bool:
            return any(s.name == "offer from slot" for s in spans)

        await otlp.wait_for(resumed, what="the offer's span")
        (span,) = [s for s in otlp.spans if s.name == "offer from slot"]
        assert span.trace_id == need_trace
        (link,) = span.links
        await otlp.wait_for(
            lambda spans: any(s.span_id == link.span_id for s in spans),
            what="the linked slot.published consumer span",
        )
        (cause,) = [s for s in otlp.spans if s.span_id == link.span_id]
        assert cause.service == "linli-scheduling"
        assert cause.name == "process linli.slot.published.v1"
        assert cause.trace_id != need_trace
        await lc.stop()  # before the OTLP receiver goes
