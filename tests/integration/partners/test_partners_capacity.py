"""Partners, volunteers and their capacity: HTTP in, `slot.published` out, once."""

from __future__ import annotations

import pytest
from harness.partners import emitted, window

from linli.contracts.binding import parse_data
from linli.contracts.events import SlotPublished

pytestmark = pytest.mark.integration


async def test_operator_publishes_a_canteen_lunch_round_once(partners) -> None:
    world = partners.world
    canteen = await partners.new_partner()
    response = await partners.http.post(
        f"/v1/communities/{world.home}/slots",
        json={
            "kind": "meal_delivery",
            "provider": {"kind": "partner", "id": canteen},
            "window": window(hours_ahead=1, length_h=1.5),
            "capacity": 40,
            "compounds": ["致远小区"],
        },
        headers=world.auth(),
    )
    assert response.status_code == 201, response.text
    slot = response.json()
    assert slot["capacity"] == 40
    assert slot["provider"] == {"kind": "partner", "id": canteen}

    events = await emitted(partners.js, world.settings.events_stream, expect=1)
    assert [e.type for e in events] == ["linli.slot.published.v1"]
    event = events[0]
    assert event.community == world.home
    data = parse_data(event, SlotPublished)
    assert str(data.slot_id) == slot["id"]
    assert data.capacity == 40
    assert data.compounds == ["致远小区"]
    # Staff contacts stay in partners.
    assert "ZZSTAFF" not in event.model_dump_json()

    listed = await partners.http.get(f"/v1/communities/{world.home}/slots", headers=world.auth())
    assert [s["id"] for s in listed.json()["items"]] == [slot["id"]]


async def test_a_volunteer_publishes_only_its_own_afternoon(partners) -> None:
    world = partners.world
    mine = await partners.new_volunteer()
    someone_else = await partners.new_volunteer(display_name="老李")
    me = await partners.volunteer_token("vol", mine)
    url = f"/v1/communities/{world.home}/slots"
    body = {"kind": "elder_care_visit", "window": window(hours_ahead=24, length_h=3), "capacity": 1}

    own = await partners.http.post(url, json=body, headers=me)
    assert own.status_code == 201, own.text
    assert own.json()["provider"] == {"kind": "volunteer", "id": mine}

    theirs = {**body, "provider": {"kind": "volunteer", "id": someone_else}}
    refused = await partners.http.post(url, json=theirs, headers=me)
    assert refused.status_code == 403
    # A skill the volunteer does not have, and a provider that does not exist.
    wrong_kind = await partners.http.post(url, json={**body, "kind": "repair"}, headers=me)
    assert wrong_kind.status_code == 422
    assert wrong_kind.json()["detail"][0]["code"] == "kind_not_offered"
    ghost = {**body, "provider": {"kind": "partner", "id": mine}}
    unknown = await partners.http.post(url, json=ghost, headers=world.auth())
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["code"] == "unknown_provider"

    # The volunteer lists only its own capacity; the operator sees all of it.
    await partners.http.post(
        url,
        json={**body, "provider": {"kind": "volunteer", "id": someone_else}},
        headers=world.auth(),
    )
    listed = await partners.http.get(url, headers=me)
    assert [s["provider"]["id"] for s in listed.json()["items"]] == [mine]
    assert len((await partners.http.get(url, headers=world.auth())).json()["items"]) == 2
    events = await emitted(
        partners.js, world.settings.events_stream, types=("slot.published",), expect=2
    )
    assert len(events) == 2


async def test_another_community_sees_none_of_home(partners) -> None:
    world = partners.world
    canteen = await partners.new_partner()
    volunteer = await partners.new_volunteer()
    slot = await partners.http.post(
        f"/v1/communities/{world.home}/slots",
        json={
            "kind": "meal_delivery",
            "provider": {"kind": "partner", "id": canteen},
            "window": window(),
            "capacity": 5,
        },
        headers=world.auth(),
    )
    assert slot.status_code == 201
    slot_id = slot.json()["id"]
    theirs = world.auth("other_operator")
    home, other = f"/v1/communities/{world.home}", f"/v1/communities/{world.other}"
    for url in (
        f"{home}/partners",
        f"{home}/partners/{canteen}",
        f"{other}/partners/{canteen}",
        f"{home}/volunteers",
        f"{home}/volunteers/{volunteer}",
        f"{other}/volunteers/{volunteer}",
        f"{home}/volunteers/{volunteer}/points",
        f"{other}/volunteers/{volunteer}/points",
        f"{home}/slots",
        f"{home}/slots/{slot_id}",
        f"{other}/slots/{slot_id}",
    ):
        response = await partners.http.get(url, headers=theirs)
        assert response.status_code == 404, (url, response.text)
        for secret in (canteen, volunteer, slot_id, "ZZSTAFF"):
            assert secret not in response.text
    # Writes into home, or naming home's providers from other: refused, nothing changes.
    assert (
        await partners.http.post(f"{home}/volunteers", json={"display_name": "x"}, headers=theirs)
    ).status_code == 404
    into_other = await partners.http.post(
        f"{other}/slots",
        json={
            "kind": "meal_delivery",
            "provider": {"kind": "partner", "id": canteen},
            "window": window(),
            "capacity": 1,
        },
        headers=theirs,
    )
    assert into_other.status_code == 422
    redeem = await partners.http.post(
        f"{other}/volunteers/{volunteer}/redemptions", json={"points": 1}, headers=theirs
    )
    assert redeem.status_code == 404
    # Other's own lists are empty; a partner cannot claim a community it does not hold.
    assert (await partners.http.get(f"{other}/partners", headers=theirs)).json()["items"] == []
    sneaky = await partners.http.post(
        f"{other}/partners",
        json={"name": "x", "kind": "barber", "communities": [world.home]},
        headers=theirs,
    )
    assert sneaky.status_code == 422
    assert sneaky.json()["detail"][0]["code"] == "community_out_of_scope"
    assert await partners.pool.fetchval("SELECT count(*) FROM slots") == 1
    assert await partners.pool.fetchval("SELECT count(*) FROM partners") == 1


async def test_volunteer_crud_and_me(partners) -> None:
    world = partners.world
    vid = await partners.new_volunteer()
    url = f"/v1/communities/{world.home}/volunteers/{vid}"
    patched = await partners.http.patch(
        url,
        json={
            "skills": ["repair"],
            "availability": [{"weekday": 5, "start": "19:00", "end": "07:00"}],
        },
        headers=world.auth(),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["skills"] == ["repair"]
    assert patched.json()["availability"] == [
        {"weekday": 5, "start": "19:00:00", "end": "07:00:00"}
    ]
    listed = await partners.http.get(
        f"/v1/communities/{world.home}/volunteers?skill=repair", headers=world.auth()
    )
    assert [v["id"] for v in listed.json()["items"]] == [vid]

    me = await partners.volunteer_token("vol", vid)
    mine = await partners.http.get("/v1/me", headers=me)
    assert mine.status_code == 200
    assert mine.json()["volunteer"]["id"] == vid
    assert mine.json()["points_balance"] == 0
    # A volunteer cannot use the operators' routes.
    assert (await partners.http.get(url, headers=me)).status_code == 403
    # An operator has no "me".
    assert (await partners.http.get("/v1/me", headers=world.auth())).status_code == 403

    assert (await partners.http.delete(url, headers=world.auth())).status_code == 204
    inactive = await partners.http.get(url, headers=world.auth())
    assert inactive.json()["active"] is False
    slot = await partners.http.post(
        f"/v1/communities/{world.home}/slots",
        json={"kind": "repair", "window": window(), "capacity": 1},
        headers=me,
    )
    assert slot.status_code == 422
