"""Recurring capacity in partners (ADR 0042): slot templates generate slots exactly
once, slots are revised and withdrawn, partners deactivated; bad input changes nothing."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from harness.partners import emitted, offered, publish_event, window

from linli.contracts.binding import parse_data
from linli.contracts.events import PartyKind, PartyRef, SlotRevised, SlotWithdrawn
from linli.contracts.types import Role
from linli.partners import capacity
from linli.servicekit.clock import Clock

pytestmark = pytest.mark.integration

TEMPLATE = {
    "kind": "meal_delivery",
    "weekdays": [1, 2, 3, 4, 5, 6, 7],
    "start": "23:50",
    "end": "23:59",
    "capacity": 30,
    "compounds": ["致远小区"],
}


async def test_a_template_generates_each_date_once_with_racing_generators(partners) -> None:
    world = partners.world
    canteen = await partners.new_partner()
    url = f"/v1/communities/{world.home}/partners/{canteen}/slot-templates"
    created = await partners.http.post(url, json=TEMPLATE, headers=world.auth())
    assert created.status_code == 201, created.text
    template = created.json()

    async def generate() -> int:
        async with partners.pool.acquire() as conn:
            return await capacity.generate_template_slots(conn, clock=Clock(), horizon_days=7)

    # The app's own loop races these two passes (the creation woke it).
    await asyncio.gather(generate(), generate())
    await generate()
    rows = await partners.pool.fetch(
        "SELECT id, occurs_on, capacity FROM slots WHERE template_id = $1", template["id"]
    )
    days = [r["occurs_on"] for r in rows]
    assert len(days) >= 7
    assert len(days) == len(set(days))
    assert {r["capacity"] for r in rows} == {30}
    events = await emitted(
        partners.js, world.settings.events_stream, types=("slot.published",), expect=len(rows)
    )
    published = [e.subject for e in events]
    assert sorted(published) == sorted(str(r["id"]) for r in rows)

    listed = await partners.http.get(url, headers=world.auth())
    assert [t["id"] for t in listed.json()["items"]] == [template["id"]]
    assert listed.json()["items"][0]["generated_until"] is not None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"start": "12:00", "end": "11:00"}, "end"),
        ({"capacity": 0}, "capacity"),
        ({"weekdays": [0, 8]}, "weekdays"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
    ],
)
async def test_bad_templates_are_refused_with_field_reasons(partners, change, field) -> None:
    world = partners.world
    canteen = await partners.new_partner()
    url = f"/v1/communities/{world.home}/partners/{canteen}/slot-templates"
    response = await partners.http.post(url, json={**TEMPLATE, **change}, headers=world.auth())
    assert response.status_code == 422, response.text
    assert any(field in r["field"] for r in response.json()["detail"]), response.text
    assert await partners.pool.fetchval("SELECT count(*) FROM slot_templates") == 0


async def test_templates_are_scoped_and_closed_to_a_street_office(partners) -> None:
    world = partners.world
    canteen = await partners.new_partner()
    url = f"/v1/communities/{world.home}/partners/{canteen}/slot-templates"
    created = await partners.http.post(url, json=TEMPLATE, headers=world.auth())
    assert created.status_code == 201
    other = await partners.http.get(
        f"/v1/communities/{world.other}/partners/{canteen}/slot-templates",
        headers=world.auth("other_operator"),
    )
    assert other.status_code == 404
    street = await world.issue("street", Role.STREET_OFFICE, [world.home])
    assert (await partners.http.get(url, headers=street)).status_code == 403
    assert (await partners.http.post(url, json=TEMPLATE, headers=street)).status_code == 403


async def test_a_slot_is_revised_then_withdrawn_once(partners) -> None:
    world = partners.world
    canteen = await partners.new_partner()
    slots = f"/v1/communities/{world.home}/slots"
    published = await partners.http.post(
        slots,
        json={
            "kind": "meal_delivery",
            "provider": {"kind": "partner", "id": canteen},
            "window": window(hours_ahead=2, length_h=1),
            "capacity": 5,
        },
        headers=world.auth(),
    )
    slot_id = published.json()["id"]
    revised = await partners.http.patch(
        f"{slots}/{slot_id}", json={"capacity": 3, "compounds": ["致远小区"]}, headers=world.auth()
    )
    assert revised.status_code == 200, revised.text
    assert revised.json()["capacity"] == 3
    bad = await partners.http.patch(
        f"{slots}/{slot_id}", json={"capacity": 0}, headers=world.auth()
    )
    assert bad.status_code == 422
    for _ in range(2):
        gone = await partners.http.delete(f"{slots}/{slot_id}", headers=world.auth())
        assert gone.status_code == 204
    again = await partners.http.patch(
        f"{slots}/{slot_id}", json={"capacity": 4}, headers=world.auth()
    )
    assert again.status_code == 409
    events = await emitted(
        partners.js,
        world.settings.events_stream,
        types=("slot.revised", "slot.withdrawn"),
        expect=2,
    )
    assert [e.type for e in events] == ["linli.slot.revised.v1", "linli.slot.withdrawn.v1"]
    assert parse_data(events[0], SlotRevised).revision == 1
    assert parse_data(events[1], SlotWithdrawn).reason.value == "withdrawn"


async def test_capacity_does_not_shrink_below_what_is_reserved(partners) -> None:
    world = partners.world
    canteen = await partners.new_partner()
    published = await partners.http.post(
        f"/v1/communities/{world.home}/slots",
        json={
            "kind": "meal_delivery",
            "provider": {"kind": "partner", "id": canteen},
            "window": window(hours_ahead=2, length_h=1),
            "capacity": 2,
        },
        headers=world.auth(),
    )
    slot_id = published.json()["id"]
    party = PartyRef(kind=PartyKind.PARTNER, id=canteen)
    for _ in range(2):
        data = offered(world.home, party).model_copy(update={"slot_id": uuid.UUID(slot_id)})
        await publish_event(partners.js, data, world.home)
        assert await partners.offer_stored(data.assignment_id)
    shrink = await partners.http.patch(
        f"/v1/communities/{world.home}/slots/{slot_id}", json={"capacity": 1}, headers=world.auth()
    )
    assert shrink.status_code == 409, shrink.text
    row = await partners.pool.fetchrow(
        "SELECT capacity, revision FROM slots WHERE id = $1", slot_id
    )
    assert (row["capacity"], row["revision"]) == (2, 0)


async def test_a_deactivated_partner_loses_its_future_slots_and_templates_stop(partners) -> None:
    world = partners.world
    canteen = await partners.new_partner()
    for hours in (2, 30):
        response = await partners.http.post(
            f"/v1/communities/{world.home}/slots",
            json={
                "kind": "meal_delivery",
                "provider": {"kind": "partner", "id": canteen},
                "window": window(hours_ahead=hours, length_h=1),
                "capacity": 2,
            },
            headers=world.auth(),
        )
        assert response.status_code == 201
    gone = await partners.http.delete(
        f"/v1/communities/{world.home}/partners/{canteen}", headers=world.auth()
    )
    assert gone.status_code == 200, gone.text
    assert gone.json()["slots_withdrawn"] == 2
    statuses = await partners.pool.fetch("SELECT status FROM slots WHERE provider_id = $1", canteen)
    assert {r["status"] for r in statuses} == {"withdrawn"}
    # No new capacity while deactivated; the partner and its history stay readable.
    refused = await partners.http.post(
        f"/v1/communities/{world.home}/partners/{canteen}/slot-templates",
        json=TEMPLATE,
        headers=world.auth(),
    )
    assert refused.status_code == 409
    still = await partners.http.get(
        f"/v1/communities/{world.home}/partners/{canteen}", headers=world.auth()
    )
    assert still.status_code == 200
    back = await partners.http.post(
        f"/v1/communities/{world.home}/partners/{canteen}/reactivate", headers=world.auth()
    )
    assert back.status_code == 200
    assert back.json()["active"] is True
    other = await partners.http.delete(
        f"/v1/communities/{world.other}/partners/{canteen}", headers=world.auth("other_operator")
    )
    assert other.status_code == 404


async def test_a_partner_is_edited_by_its_operator_or_itself_and_by_no_one_else(partners) -> None:
    world = partners.world
    canteen = await partners.new_partner()
    url = f"/v1/communities/{world.home}/partners/{canteen}"
    before = (await partners.http.get(url, headers=world.auth())).json()
    contacts = [{"name": "Duty desk", "title": "duty manager", "phone": "+8613800000001"}]
    edited = await partners.http.patch(
        url, json={"name": "幸福食堂 Happiness Canteen", "contacts": contacts}, headers=world.auth()
    )
    assert edited.status_code == 200, edited.text
    body = edited.json()
    # Changed what was given; kept what was not.
    assert body["name"] == "幸福食堂 Happiness Canteen"
    assert [c["name"] for c in body["contacts"]] == ["Duty desk"]
    assert body["services"] == before["services"]
    assert body["kind"] == before["kind"]
    cleared = await partners.http.patch(url, json={"description": None}, headers=world.auth())
    assert cleared.status_code == 200
    assert cleared.json()["description"] is None
    assert cleared.json()["name"] == "幸福食堂 Happiness Canteen"

    # The partner itself may edit its own record; another partner's record is not there.
    own = await world.issue("canteen", Role.PARTNER, [world.home], subject_id=canteen)
    mine = await partners.http.patch(url, json={"description": "Soft food"}, headers=own)
    assert mine.status_code == 200
    assert mine.json()["description"] == "Soft food"
    stranger = await world.issue("stranger", Role.PARTNER, [world.home], subject_id=uuid.uuid4())
    assert (await partners.http.patch(url, json={"name": "x"}, headers=stranger)).status_code == 404

    # Bad input names its field and changes nothing; communities are not edited here.
    for bad, field in (
        ({"name": ""}, "name"),
        ({"kind": "spaceship"}, "kind"),
        ({"communities": [world.other]}, "communities"),
        ({"services": [{"name": "x", "need_kind": "teleport", "cost_option": "free"}]}, "services"),
    ):
        refused = await partners.http.patch(url, json=bad, headers=world.auth())
        assert refused.status_code == 422, refused.text
        assert any(field in r["field"] for r in refused.json()["detail"]), refused.text
    after = (await partners.http.get(url, headers=world.auth())).json()
    assert after["name"] == "幸福食堂 Happiness Canteen"
    assert after["communities"] == before["communities"]

    # Another community's operator and a street office cannot.
    other = await partners.http.patch(
        f"/v1/communities/{world.other}/partners/{canteen}",
        json={"name": "x"},
        headers=world.auth("other_operator"),
    )
    assert other.status_code == 404
    street = await world.issue("street", Role.STREET_OFFICE, [world.home])
    assert (await partners.http.patch(url, json={"name": "x"}, headers=street)).status_code == 403
