"""Staff actions on escalations and needs (issue 11 item 2, ADR 0034), across intake,
partners and scheduling as separate processes on real NATS JetStream and PostgreSQL.

Everything goes through the HTTP APIs; the truth is read from the events stream and the
services' tables afterwards.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from harness.intake import meal_need
from harness.lifecycle import Lifecycle, new_token, window

pytestmark = [pytest.mark.e2e]

NOTE = "ZZNOTE 李奶奶 13800138999 家里没人应门, 邻居说住院了"
"""A resolve note with what a note may hold (a name, a phone): it must stay in scheduling."""


async def _declined_need(lc: Lifecycle) -> tuple[str, str, str]:
    """A lunch whose only volunteer declines: escalated `no_taker`. (need, volunteer, token)"""
    volunteer = await lc.create_volunteer("小刘 Xiao Liu", ["meal_delivery"])
    token = await lc.party_token("volunteer", volunteer)
    await lc.publish_slot("meal_delivery", window=window(20, 150), token=token)
    await lc.wait_slots(1)
    resident = await lc.create_resident(priority_group="elderly_living_alone")
    need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
    offer = await lc.wait_offer(token, need_id)
    lc.ok(await lc.answer(token, offer["assignment_id"], "decline"))
    await lc.wait_events("need.escalated", need_id=need_id, reason="no_taker")
    return need_id, volunteer, token


async def _escalation_of(lc: Lifecycle, need_id: str, reason: str) -> dict[str, Any]:
    page = lc.ok(await lc.http.get(lc.c("scheduling", "/escalations")))
    (found,) = [e for e in page["items"] if e["need_id"] == need_id and e["reason"] == reason]
    return found


def _notes(view: dict[str, Any]) -> list[str]:
    return [entry["note"] or "" for entry in view["timeline"]]


async def _timeline_has(lc: Lifecycle, need_id: str, *fragments: str) -> dict[str, Any]:
    async def seen() -> dict[str, Any] | None:
        view = await lc.need(need_id)
        notes = _notes(view)
        return view if all(any(f in n for n in notes) for f in fragments) else None

    view: dict[str, Any] = await lc.wait_for(seen, what=f"timeline notes {fragments}")
    return view


async def _capacity_holds(lc: Lifecycle) -> None:
    """Never oversold, and every held unit belongs to a live or completed offer."""
    assert await lc.sql("scheduling", "SELECT id FROM slots WHERE reserved > capacity") == []
    reserved = await lc.sql_value("scheduling", "SELECT coalesce(sum(reserved), 0) FROM slots")
    held = await lc.sql_value(
        "scheduling",
        "SELECT count(*) FROM assignments WHERE state IN ('offered', 'accepted', 'completed')",
    )
    assert reserved == held


# --- escalations ------------------------------------------------------------------------


async def test_an_escalation_is_acknowledged_assigned_and_resolved_on_the_needs_timeline(
    lifecycle,
) -> None:
    lc: Lifecycle = await lifecycle()
    need_id, _volunteer, _token = await _declined_need(lc)

    escalation = await _escalation_of(lc, need_id, "no_taker")
    assert escalation["state"] == "open"
    path = f"/escalations/{escalation['id']}"
    one = lc.ok(await lc.http.get(lc.c("scheduling", path)))
    assert one["need_id"] == need_id
    assert one["actions"] == []
    assert one["escalated_at"]
    assert one["reason"] == "no_taker"

    # Acknowledge, twice: the second changes nothing.
    acked = lc.ok(await lc.http.post(lc.c("scheduling", f"{path}/acknowledge")))
    assert acked["state"] == "acknowledged"
    assert acked["acknowledged_at"]
    again = await lc.http.post(lc.c("scheduling", f"{path}/acknowledge"))
    assert lc.ok(again)["state"] == "acknowledged"
    assert again.headers.get("Idempotent-Replayed") == "true"

    # Assign to a named staff member, twice.
    staff = {"assignee": "王芳 Wang Fang", "assignee_ref": "staff-17"}
    assigned = lc.ok(await lc.http.post(lc.c("scheduling", f"{path}/assign"), json=staff))
    assert (assigned["state"], assigned["assignee"], assigned["assignee_ref"]) == (
        "assigned",
        "王芳 Wang Fang",
        "staff-17",
    )
    repeat = await lc.http.post(lc.c("scheduling", f"{path}/assign"), json=staff)
    assert repeat.headers.get("Idempotent-Replayed") == "true"

    # Resolve with an outcome and a note, twice; then nothing else is allowed.
    body = {"outcome": "helper_found", "note": NOTE}
    resolved = lc.ok(await lc.http.post(lc.c("scheduling", f"{path}/resolve"), json=body))
    assert (resolved["state"], resolved["outcome"], resolved["note"]) == (
        "resolved",
        "helper_found",
        NOTE,
    )
    assert resolved["assignee"] == "王芳 Wang Fang", "resolving keeps who had it"
    repeat = await lc.http.post(lc.c("scheduling", f"{path}/resolve"), json=body)
    assert repeat.status_code == 200
    assert repeat.headers.get("Idempotent-Replayed") == "true"
    for action, payload in (
        ("resolve", {"outcome": "resident_well", "note": NOTE}),
        ("acknowledge", None),
        ("assign", {"assignee": "李强"}),
    ):
        refused = await lc.http.post(lc.c("scheduling", f"{path}/{action}"), json=payload)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "conflict"

    history = lc.ok(await lc.http.get(lc.c("scheduling", path)))
    assert [a["action"] for a in history["actions"]] == ["acknowledged", "assigned", "resolved"]
    for action in history["actions"]:
        assert action["actor"]["label"] == "test operator"
        assert action["actor"]["role"] == "operator"
    assert history["actions"][2]["note_recorded"] is True
    assert history["outcome"] == "helper_found"

    # Filters: it is resolved now, and no longer open.
    resolved_page = lc.ok(
        await lc.http.get(lc.c("scheduling", "/escalations"), params={"state": "resolved"})
    )
    assert [e["id"] for e in resolved_page["items"]] == [escalation["id"]]
    open_page = lc.ok(
        await lc.http.get(lc.c("scheduling", "/escalations"), params={"state": "open"})
    )
    assert escalation["id"] not in {e["id"] for e in open_page["items"]}

    # One event per action that changed something, naming who, without the note.
    for short in ("escalation.acknowledged", "escalation.assigned", "escalation.resolved"):
        (event,) = await lc.wait_events(short, need_id=need_id)
        assert event.data["escalation_id"] == escalation["id"]
        assert event.data["reason"] == "no_taker"
        assert event.data["actor"]["label"] == "test operator"
        assert event.data["actor"]["role"] == "operator"
        assert event.event.subject == need_id
    (resolved_event,) = await lc.events("escalation.resolved", need_id=need_id)
    assert resolved_event.data["outcome"] == "helper_found"
    assert resolved_event.data["note_recorded"] is True
    assert "note" not in resolved_event.data
    everything = json.dumps([e.data for e in await lc.events()], ensure_ascii=False)
    assert "ZZNOTE" not in everything
    assert "13800138999" not in everything

    # Intake's timeline is the accountability record.
    view = await _timeline_has(
        lc,
        need_id,
        "escalation no_taker acknowledged by test operator",
        "escalation no_taker assigned to 王芳 Wang Fang by test operator",
        "escalation no_taker resolved (helper_found) by test operator",
    )
    staff_entries = [e for e in view["timeline"] if (e["note"] or "").startswith("escalation")]
    assert len(staff_entries) == 3
    assert {e["actor_label"] for e in staff_entries} == {"test operator"}
    assert all(e["actor"].startswith("operator:") for e in staff_entries)
    assert not any("ZZNOTE" in n for n in _notes(view))
    assert view["status"] == "escalated", "acting on an escalation does not move the need"


async def test_assign_or_resolve_straight_away_acknowledges_on_the_way(lifecycle) -> None:
    lc: Lifecycle = await lifecycle()
    need_id, _volunteer, _token = await _declined_need(lc)
    escalation = await _escalation_of(lc, need_id, "no_taker")
    path = f"/escalations/{escalation['id']}"
    resolved = lc.ok(
        await lc.http.post(
            lc.c("scheduling", f"{path}/resolve"), json={"outcome": "no_action_needed"}
        )
    )
    assert resolved["state"] == "resolved"
    assert resolved["acknowledged_at"]
    assert resolved["note"] is None
    assert [a["action"] for a in resolved["actions"]] == ["acknowledged", "resolved"]
    (event,) = await lc.wait_events("escalation.resolved", need_id=need_id)
    assert event.data["note_recorded"] is False
    await lc.wait_events("escalation.acknowledged", need_id=need_id)
    assert await lc.events("escalation.assigned", need_id=need_id) == []

    # Cancel (intake's) records who as well.
    cancelled = await lc.http.post(
        lc.c("intake", f"/needs/{need_id}/cancel"), json={"reason": "家属已接走"}
    )
    assert lc.ok(cancelled)["status"] == "cancelled"
    view = await lc.need(need_id)
    (entry,) = [e for e in view["timeline"] if e["status"] == "cancelled"]
    assert entry["actor_label"] == "test operator"
    assert entry["actor"].startswith("operator:")


# --- needs: dispatch by hand and re-offer -----------------------------------------------


async def test_a_need_dispatched_by_hand_to_a_chosen_volunteer_who_accepts(lifecycle) -> None:
    lc: Lifecycle = await lifecycle()
    first = await lc.create_volunteer("老王 Lao Wang", ["meal_delivery"])
    first_token = await lc.party_token("volunteer", first)
    chosen = await lc.create_volunteer("小李 Xiao Li", ["meal_delivery"])
    chosen_token = await lc.party_token("volunteer", chosen)
    # The first volunteer's round starts earlier, so matching offers the need to them.
    await lc.publish_slot("meal_delivery", window=window(20, 150), token=first_token)
    chosen_slot = await lc.publish_slot("meal_delivery", window=window(40, 150), token=chosen_token)
    await lc.wait_slots(2)
    resident = await lc.create_resident(priority_group="elderly_living_alone")
    need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
    first_offer = await lc.wait_offer(first_token, need_id)

    # The operator knows Xiao Li is next door and sends it to her instead.
    body = {"party": {"kind": "volunteer", "id": chosen}}
    url = lc.c("scheduling", f"/needs/{need_id}/dispatch")
    result = lc.ok(await lc.http.post(url, json=body))
    assert result["state"] == "offered"
    assert result["changed"] is True
    assert result["withdrawn_assignment_id"] == first_offer["assignment_id"]
    assert result["without_capacity"] is False
    repeat = lc.ok(await lc.http.post(url, json=body))
    assert repeat["changed"] is False
    assert repeat["assignment_id"] == result["assignment_id"]

    (dispatched,) = await lc.wait_events("need.dispatched", need_id=need_id)
    assert dispatched.data["offered_to"] == {"kind": "volunteer", "id": chosen}
    assert dispatched.data["slot_id"] == chosen_slot["id"]
    assert dispatched.data["actor"]["label"] == "test operator"
    (withdrawn,) = await lc.wait_events("assignment.withdrawn", need_id=need_id)
    assert withdrawn.data["assignment_id"] == first_offer["assignment_id"]
    released = await lc.wait_events("slot.released", need_id=need_id)
    assert [e.data["reason"] for e in released] == ["other"]

    # The first volunteer's offer is gone from her inbox; she can no longer accept it.
    await lc.wait_offer(first_token, need_id, status="withdrawn")
    late = await lc.answer(first_token, first_offer["assignment_id"], "accept")
    assert late.status_code == 409, late.text

    offer = await lc.wait_offer(chosen_token, need_id)
    assert offer["assignment_id"] == result["assignment_id"]
    lc.ok(await lc.answer(chosen_token, offer["assignment_id"], "accept"))
    view = await lc.wait_status(need_id, "assigned")
    view = await _timeline_has(
        lc,
        need_id,
        f"dispatched by hand to volunteer:{chosen} by test operator",
        f"offer to volunteer:{first} withdrawn by test operator",
    )
    assert f"volunteer:{chosen}" in {e["actor"] for e in view["timeline"]}

    scheduled = lc.ok(await lc.http.get(lc.c("scheduling", f"/schedule/needs/{need_id}")))
    assert [a["action"] for a in scheduled["actions"]] == ["dispatched"]
    assert scheduled["actions"][0]["actor"]["label"] == "test operator"
    states = {a["id"]: a["state"] for a in scheduled["assignments"]}
    assert states == {first_offer["assignment_id"]: "withdrawn", offer["assignment_id"]: "accepted"}
    await _capacity_holds(lc)

    # An accepted need is the helper's: it is not dispatched or re-offered by hand.
    for action, payload in (
        ("dispatch", {"party": {"kind": "volunteer", "id": first}}),
        ("reoffer", None),
    ):
        refused = await lc.http.post(lc.c("scheduling", f"/needs/{need_id}/{action}"), json=payload)
        assert refused.status_code == 409, refused.text


async def test_a_directed_offer_without_published_capacity_is_an_override(lifecycle) -> None:
    lc: Lifecycle = await lifecycle()
    volunteer = await lc.create_volunteer("老赵 Lao Zhao", ["meal_delivery"])
    token = await lc.party_token("volunteer", volunteer)
    # Her only round is tomorrow: nothing fits today's lunch.
    await lc.publish_slot("meal_delivery", window=window(24 * 60, 120), token=token)
    await lc.wait_slots(1)
    resident = await lc.create_resident()
    need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
    await lc.wait_events("need.escalated", need_id=need_id, reason="no_capacity")

    result = lc.ok(
        await lc.http.post(
            lc.c("scheduling", f"/needs/{need_id}/dispatch"),
            json={"party": {"kind": "volunteer", "id": volunteer}},
        )
    )
    assert result["without_capacity"] is True
    assert result["withdrawn_assignment_id"] is None
    (dispatched,) = await lc.wait_events("need.dispatched", need_id=need_id)
    assert dispatched.data["without_capacity"] is True
    (slot,) = await lc.sql(
        "scheduling",
        "SELECT capacity, reserved, directed_need FROM slots WHERE id = $1",
        uuid.UUID(dispatched.data["slot_id"]),
    )
    assert (slot["capacity"], slot["reserved"], str(slot["directed_need"])) == (1, 1, need_id)
    offer = await lc.wait_offer(token, need_id)
    lc.ok(await lc.answer(token, offer["assignment_id"], "accept"))
    await lc.wait_status(need_id, "assigned")
    await _timeline_has(lc, need_id, "(no published capacity: override)")
    await _capacity_holds(lc)


async def test_reoffer_withdraws_the_open_offer_and_asks_someone_else(lifecycle) -> None:
    lc: Lifecycle = await lifecycle()
    first = await lc.create_volunteer("老王 Lao Wang", ["meal_delivery"])
    first_token = await lc.party_token("volunteer", first)
    second = await lc.create_volunteer("小李 Xiao Li", ["meal_delivery"])
    second_token = await lc.party_token("volunteer", second)
    await lc.publish_slot("meal_delivery", window=window(20, 150), token=first_token)
    await lc.publish_slot("meal_delivery", window=window(40, 150), token=second_token)
    await lc.wait_slots(2)
    resident = await lc.create_resident(priority_group="elderly_living_alone")
    need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
    first_offer = await lc.wait_offer(first_token, need_id)

    url = lc.c("scheduling", f"/needs/{need_id}/reoffer")
    key = {"Idempotency-Key": "reoffer-1"}
    result = lc.ok(await lc.http.post(url, headers=key))
    assert result["withdrawn_assignment_id"] == first_offer["assignment_id"]
    assert result["state"] == "offered"
    # A retry with the same key answers the same and does nothing more.
    retry = await lc.http.post(url, headers=key)
    assert lc.ok(retry) == result
    assert retry.headers.get("Idempotent-Replayed") == "true"
    # No body and an empty `readmit` are the same request.
    same = await lc.http.post(url, headers=key, json={"readmit": []})
    assert lc.ok(same) == result
    assert same.headers.get("Idempotent-Replayed") == "true"
    changed = await lc.http.post(
        url, headers=key, json={"readmit": [{"kind": "volunteer", "id": first}]}
    )
    assert changed.status_code == 409, "the same key for another request is refused"

    second_offer = await lc.wait_offer(second_token, need_id)
    assert second_offer["assignment_id"] == result["assignment_id"]
    await lc.wait_offer(first_token, need_id, status="withdrawn")
    (reoffered,) = await lc.wait_events("need.reoffered", need_id=need_id)
    assert reoffered.data["withdrawn_assignment_id"] == first_offer["assignment_id"]
    assert reoffered.data["actor"]["label"] == "test operator"

    # Again, naming the first volunteer: the second is withdrawn and excluded, the first
    # may be asked again and is.
    again = lc.ok(await lc.http.post(url, json={"readmit": [{"kind": "volunteer", "id": first}]}))
    assert again["withdrawn_assignment_id"] == second_offer["assignment_id"]
    assert again["state"] == "offered"
    offers = await lc.wait_events("assignment.offered", 3, need_id=need_id)
    assert [o.data["offered_to"]["id"] for o in offers] == [first, second, first]
    assert len(await lc.events("need.reoffered", need_id=need_id)) == 2

    # Once more, with nobody left to ask: escalated, and the operators are told.
    third = lc.ok(await lc.http.post(url))
    assert third["state"] == "escalated"
    assert third["assignment_id"] is None
    await lc.wait_events("need.escalated", need_id=need_id, reason="no_taker")

    async def three_reoffers() -> dict[str, Any] | None:
        view = await lc.need(need_id)
        return view if sum("re-offered by" in n for n in _notes(view)) >= 3 else None

    view = await lc.wait_for(three_reoffers, what="three re-offers on the timeline")
    assert sum("re-offered by test operator" in n for n in _notes(view)) == 3
    await lc.wait_status(need_id, "escalated")
    await _capacity_holds(lc)


# --- scope, bad input, conflicts --------------------------------------------------------


async def test_another_communitys_operator_gets_404_everywhere_and_changes_nothing(
    lifecycle,
) -> None:
    lc: Lifecycle = await lifecycle()
    need_id, volunteer, _token = await _declined_need(lc)
    escalation = await _escalation_of(lc, need_id, "no_taker")
    outsider = new_token()
    await lc.cli(
        "scheduling",
        "credentials", "issue", "--community", lc.other, "--role", "operator",
        "--label", "outsider", "--token", outsider,
    )  # fmt: skip
    headers = lc.bearer(outsider)
    esc = f"/escalations/{escalation['id']}"
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/escalations", None),
        ("GET", esc, None),
        ("POST", f"{esc}/acknowledge", None),
        ("POST", f"{esc}/assign", {"assignee": "外人"}),
        ("POST", f"{esc}/resolve", {"outcome": "resident_well", "note": "x"}),
        ("POST", f"/needs/{need_id}/dispatch", {"party": {"kind": "volunteer", "id": volunteer}}),
        ("POST", f"/needs/{need_id}/reoffer", None),
    ]
    for method, path, body in calls:
        # The home community's path: not theirs.
        home = await lc.http.request(method, lc.c("scheduling", path), json=body, headers=headers)
        assert home.status_code == 404, (path, home.text)
        assert home.json()["error"] == "not_found"
        if path == "/escalations":
            continue
        # Their own community's path with the home community's ids: no such thing.
        own = await lc.http.request(
            method, lc.c("scheduling", path, community=lc.other), json=body, headers=headers
        )
        assert own.status_code == 404, (path, own.text)
    listed = lc.ok(
        await lc.http.get(lc.c("scheduling", "/escalations", community=lc.other), headers=headers)
    )
    assert listed["items"] == []

    assert await lc.sql("scheduling", "SELECT * FROM escalation_actions") == []
    assert await lc.sql("scheduling", "SELECT * FROM need_actions") == []
    unchanged = lc.ok(await lc.http.get(lc.c("scheduling", esc)))
    assert unchanged["state"] == "open"
    assert len(await lc.events("assignment.offered", need_id=need_id)) == 1


async def test_bad_bodies_get_field_reasons_and_change_nothing(lifecycle) -> None:
    lc: Lifecycle = await lifecycle()
    need_id, volunteer, _token = await _declined_need(lc)
    other_volunteer = await lc.create_volunteer("老孙 Lao Sun", ["meal_delivery"])
    other_token = await lc.party_token("volunteer", other_volunteer)
    other_slot = await lc.publish_slot("meal_delivery", window=window(30, 150), token=other_token)
    await lc.wait_slots(2)
    # The new slot offered the escalated need at once; make the need escalated again.
    offer = await lc.wait_offer(other_token, need_id)
    lc.ok(await lc.answer(other_token, offer["assignment_id"], "decline"))
    await lc.wait_events("need.escalated", 2, need_id=need_id, reason="no_taker")
    escalation = (await lc.http.get(lc.c("scheduling", "/escalations"))).json()["items"][0]
    esc = f"/escalations/{escalation['id']}"
    before_actions = await lc.sql_value("scheduling", "SELECT count(*) FROM need_actions")

    cases: list[tuple[str, Any, str, str | None]] = [
        (f"{esc}/assign", {}, "body.assignee", None),
        (f"{esc}/assign", {"assignee": ""}, "body.assignee", None),
        (f"{esc}/assign", {"assignee": "王\n芳"}, "body.assignee", None),
        (f"{esc}/assign", {"assignee": "王芳", "assignee_ref": "a b"}, "body.assignee_ref", None),
        (f"{esc}/assign", {"assignee": "王芳", "phone": "138"}, "body.phone", None),
        (f"{esc}/resolve", {"outcome": "bogus", "note": "x"}, "body.outcome", None),
        (f"{esc}/resolve", {"outcome": "other"}, "body", None),
        (f"{esc}/resolve", {"outcome": "referred", "note": "x" * 2001}, "body.note", None),
        (
            f"/needs/{need_id}/dispatch",
            {"party": {"kind": "robot", "id": volunteer}},
            "body.party.kind",
            None,
        ),
        (f"/needs/{need_id}/dispatch", {"party": {"kind": "volunteer"}}, "body.party.id", None),
        (
            f"/needs/{need_id}/dispatch",
            {"party": {"kind": "partner", "id": volunteer}},
            "body.party",
            "unknown_party",
        ),
        (
            f"/needs/{need_id}/dispatch",
            {"party": {"kind": "volunteer", "id": volunteer}, "slot_id": other_slot["id"]},
            "body.slot_id",
            "unknown_slot",
        ),
        (
            f"/needs/{need_id}/reoffer",
            {"readmit": [{"kind": "volunteer"}]},
            "body.readmit.0.id",
            None,
        ),
    ]
    for path, body, field, code in cases:
        response = await lc.http.post(lc.c("scheduling", path), json=body)
        assert response.status_code == 422, (path, body, response.text)
        payload = response.json()
        assert payload["error"] == "validation_failed"
        fields = {r["field"] for r in payload["detail"]}
        assert field in fields, (path, body, payload)
        if code is not None:
            assert code in {r["code"] for r in payload["detail"]}
        assert "138" not in response.text, "input is never echoed"
    bad_cursor = await lc.http.get(lc.c("scheduling", "/escalations"), params={"cursor": "nope"})
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["detail"][0]["field"] == "query.cursor"
    bad_state = await lc.http.get(lc.c("scheduling", "/escalations"), params={"state": "gone"})
    assert bad_state.status_code == 422

    # Nothing changed: no actions, the escalation still open, no offer made.
    assert await lc.sql("scheduling", "SELECT * FROM escalation_actions") == []
    assert await lc.sql_value("scheduling", "SELECT count(*) FROM need_actions") == before_actions
    assert lc.ok(await lc.http.get(lc.c("scheduling", esc)))["state"] == "open"
    assert len(await lc.events("assignment.offered", need_id=need_id)) == 2
    assert await lc.events("need.dispatched") == []

    # Paging, newest first: two escalations of this need, one page each.
    first = lc.ok(await lc.http.get(lc.c("scheduling", "/escalations"), params={"limit": 1}))
    assert len(first["items"]) == 1
    assert first["next_cursor"]
    second = lc.ok(
        await lc.http.get(
            lc.c("scheduling", "/escalations"),
            params={"limit": 1, "cursor": first["next_cursor"]},
        )
    )
    assert len(second["items"]) == 1
    assert second["next_cursor"] is None
    assert first["items"][0]["escalated_at"] >= second["items"][0]["escalated_at"]
    assert first["items"][0]["id"] != second["items"][0]["id"]
