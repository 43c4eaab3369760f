"""Partners' directory as HSDS 3.1 (ADR 0051) on real NATS and PostgreSQL: every document
validates against the copied HSDS schemas; service_capacity follows slot.reserved and
slot.released; only public organisation channels appear (never staff or volunteers);
another community sees nothing; bad input is refused with reasons; the public guide needs
no credential, is rate-limited and shows only public partners."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from harness.hsds import assert_valid
from harness.partners import eventually, publish_event, window

from linli.contracts.events import SlotReleased, SlotReserved
from linli.contracts.types import Role
from linli.servicekit.ratelimit import RateLimit

pytestmark = pytest.mark.integration

STAFF = "ZZSTAFF"
VOLUNTEER = "ZZVOLUNTEER-小王"
PUBLIC_PHONE = "+865386220000"  # 0538-6220000 as partners normalises it (E.164)
PRIVATE_PHONE = "+865386229999"
DIRECTORY = {
    "public": True,
    "address": {
        "address_1": "致远路 18 号",
        "city": "泰安市",
        "region": "泰山区",
        "state_province": "山东省",
        "postal_code": "271000",
    },
    "latitude": 36.19,
    "longitude": 117.12,
    "phone": "0538-6220000",
    "email": "canteen@example.org",
    "website": "https://canteen.example.org/",
    "opening_hours": [{"weekdays": [1, 2, 3, 4, 5], "opens_at": "10:30", "closes_at": "13:30"}],
}


def _far_template() -> dict[str, Any]:
    """A weekly schedule whose slots start after the capacity horizon."""
    start = date.today() + timedelta(days=40)
    return {
        "kind": "meal_delivery",
        "weekdays": [1, 3, 5],
        "start": "11:00",
        "end": "12:30",
        "capacity": 20,
        "compounds": ["致远小区"],
        "valid_from": start.isoformat(),
    }


async def _setup(partners: Any) -> dict[str, Any]:
    world = partners.world
    public = await partners.new_partner(
        directory=DIRECTORY,
        services=[
            {"name": "lunch round", "need_kind": "meal_delivery", "cost_option": "free"},
            {"name": "home visits", "need_kind": "elder_care_visit", "cost_option": "low_cost"},
        ],
    )
    private = await partners.new_partner(
        name="不公开的维修公司",
        kind="repair_firm",
        services=[{"name": "repairs", "need_kind": "repair", "cost_option": "paid"}],
        directory={**DIRECTORY, "public": False, "phone": "0538-6229999"},
    )
    await partners.new_volunteer(display_name=VOLUNTEER)
    template = await partners.http.post(
        f"/v1/communities/{world.home}/partners/{public}/slot-templates",
        json=_far_template(),
        headers=world.auth(),
    )
    assert template.status_code == 201, template.text
    slot = await partners.http.post(
        f"/v1/communities/{world.home}/slots",
        json={
            "kind": "meal_delivery",
            "provider": {"kind": "partner", "id": public},
            "window": window(hours_ahead=24, length_h=2),
            "capacity": 3,
            "compounds": ["致远小区", "泰山小区"],
        },
        headers=world.auth(),
    )
    assert slot.status_code == 201, slot.text
    await world.issue("street", Role.STREET_OFFICE, [world.home])
    return {"public": public, "private": private, "slot": slot.json()["id"]}


async def _services(partners: Any, who: str = "operator", **query: Any) -> Any:
    world = partners.world
    response = await partners.http.get(
        f"/v1/communities/{world.home}/hsds/services", params=query, headers=world.auth(who)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _meal_capacity(page: Any, public: str) -> dict[str, Any]:
    (service,) = [
        s for s in page["contents"] if s["organization_id"] == public and s["name"] == "lunch round"
    ]
    (capacity,) = service["capacities"]
    return dict(capacity)


async def test_the_export_validates_and_holds_only_public_organisation_channels(partners) -> None:
    world = partners.world
    ids = await _setup(partners)
    base = f"/v1/communities/{world.home}/hsds"

    page = await _services(partners)
    assert page["total_items"] == 3
    assert page["page_number"] == 1
    assert page["last_page"]
    for service in page["contents"]:
        assert_valid(service, "service_with_definitions")
        assert_valid(service, "service")
    meal = next(s for s in page["contents"] if s["name"] == "lunch round")
    assert meal["cost_options"][0]["option"] == "free"
    (weekly,) = [s for s in meal["schedules"] if s.get("freq") == "WEEKLY"]
    assert weekly["byday"] == "MO,WE,FR"
    assert weekly["opens_at"] == "11:00"
    assert weekly["closes_at"] == "12:30"
    assert weekly["timezone"] == 8
    assert [s for s in meal["schedules"] if "freq" not in s], "the dated slot is a schedule too"
    areas = {a["name"] for a in meal["service_areas"]}
    assert areas == {world.home, "致远小区", "泰山小区"}
    (at,) = meal["service_at_locations"]
    assert at["location"]["addresses"][0]["postal_code"] == "271000"
    assert at["location"]["latitude"] == 36.19
    assert meal["capacities"][0]["maximum"] == 3
    assert meal["capacities"][0]["available"] == 3
    assert meal["capacities"][0]["unit"]["identifier"] == "meals"
    datetime.fromisoformat(meal["capacities"][0]["updated"])

    one = await partners.http.get(f"{base}/services/{meal['id']}", headers=world.auth())
    assert one.status_code == 200
    assert_valid(one.json(), "service_with_definitions")
    assert one.json()["id"] == meal["id"]

    orgs = (await partners.http.get(f"{base}/organizations", headers=world.auth())).json()
    assert {o["id"] for o in orgs["contents"]} == {ids["public"], ids["private"]}
    for org in orgs["contents"]:
        assert_valid(org, "organization")
    private = next(o for o in orgs["contents"] if o["id"] == ids["private"])
    assert private["phones"] == []
    assert private["locations"] == []
    assert "email" not in private
    org = await partners.http.get(f"{base}/organizations/{ids['public']}", headers=world.auth())
    assert org.status_code == 200
    assert org.json()["phones"][0]["number"] == PUBLIC_PHONE
    assert org.json()["website"] == "https://canteen.example.org/"

    sal = (await partners.http.get(f"{base}/service_at_locations", headers=world.auth())).json()
    assert sal["total_items"] == 2  # the public partner's two services; none of the private one
    for item in sal["contents"]:
        assert_valid(item, "service_at_location")

    everything = json.dumps([page, orgs, sal], ensure_ascii=False)
    assert STAFF not in everything
    assert VOLUNTEER not in everything
    assert PRIVATE_PHONE not in everything  # not public: its phone stays out
    assert "13900139000" not in everything  # the staff contact's phone

    # A street office reads the same export (public organisation data only).
    assert (await _services(partners, "street"))["total_items"] == 3

    # Paging as HSDS pages.
    first = await _services(partners, per_page=2)
    second = await _services(partners, per_page=2, page=2)
    assert first["size"] == 2
    assert not first["last_page"]
    assert first["total_pages"] == 2
    assert second["size"] == 1
    assert second["last_page"]
    assert not second["first_page"]
    beyond = await _services(partners, per_page=2, page=9)
    assert beyond["empty"]
    assert beyond["contents"] == []
    only = await _services(partners, organization_id=ids["private"])
    assert [s["name"] for s in only["contents"]] == ["repairs"]


async def test_service_capacity_follows_reservations_and_releases(partners) -> None:
    world = partners.world
    ids = await _setup(partners)
    slot_id = uuid.UUID(ids["slot"])
    before = _meal_capacity(await _services(partners), ids["public"])
    assert (before["available"], before["maximum"]) == (3, 3)

    def reserved(reservation: uuid.UUID) -> SlotReserved:
        return SlotReserved(
            reservation_id=reservation,
            slot_id=slot_id,
            need_id=uuid.uuid4(),
            remaining_capacity=2,
            reserved_at=datetime.now(UTC),
        )

    first, second = uuid.uuid4(), uuid.uuid4()
    await publish_event(partners.js, reserved(first), world.home)
    await publish_event(partners.js, reserved(second), world.home)

    async def available(expected: int) -> bool:
        return _meal_capacity(await _services(partners), ids["public"])["available"] == expected

    assert await eventually(lambda: available(1)), "two reservations never counted"
    release = SlotReleased(
        reservation_id=first,
        slot_id=slot_id,
        need_id=uuid.uuid4(),
        reason="need_cancelled",
        released_at=datetime.now(UTC),
    )
    await publish_event(partners.js, release, world.home)
    assert await eventually(lambda: available(2)), "the release never counted"

    # A release heard before its reservation (redelivery can reorder) still stands.
    late = uuid.uuid4()
    await publish_event(
        partners.js, release.model_copy(update={"reservation_id": late}), world.home
    )
    await publish_event(partners.js, reserved(late), world.home)
    await publish_event(partners.js, reserved(uuid.uuid4()), world.home)
    assert await eventually(lambda: available(1))
    rows = await partners.pool.fetchval(
        "SELECT count(*) FROM slot_reservations WHERE reservation_id = $1 "
        "AND released_at IS NOT NULL AND reserved_at IS NOT NULL",
        late,
    )
    assert rows == 1


async def test_another_community_roles_and_bad_input(partners) -> None:
    world = partners.world
    ids = await _setup(partners)
    base = f"/v1/communities/{world.home}/hsds"
    services = await _services(partners)
    service_id = services["contents"][0]["id"]
    paths = [
        "",
        "/services",
        f"/services/{service_id}",
        "/organizations",
        f"/organizations/{ids['public']}",
        "/service_at_locations",
        "/package",
    ]
    for path in paths:
        other = await partners.http.get(base + path, headers=world.auth("other_operator"))
        assert other.status_code == 404, (path, other.text)
        assert other.json()["error"] == "not_found"
        assert STAFF not in other.text
        assert "致远" not in other.text
    # Its own community knows nothing of home's partners.
    theirs = await partners.http.get(
        f"/v1/communities/{world.other}/hsds/organizations/{ids['public']}",
        headers=world.auth("other_operator"),
    )
    assert theirs.status_code == 404
    assert (
        await partners.http.get(
            f"/v1/communities/{world.other}/hsds/services", headers=world.auth("other_operator")
        )
    ).json()["total_items"] == 0

    for role, who in ((Role.VOLUNTEER, "vol"), (Role.PARTNER, "partner")):
        subject = ids["public"] if role is Role.PARTNER else uuid.uuid4()
        await world.issue(who, role, [world.home], subject)
        refused = await partners.http.get(f"{base}/services", headers=world.auth(who))
        assert refused.status_code == 403, refused.text
    assert (await partners.http.get(f"{base}/services")).status_code == 401

    bad = {
        f"{base}/services?page=0": "query.page",
        f"{base}/services?per_page=1000": "query.per_page",
        f"{base}/services?page=x": "query.page",
        f"{base}/services?organization_id=nope": "query.organization_id",
        f"{base}/services/not-a-uuid": "path.service_id",
        f"{base}/organizations/not-a-uuid": "path.organization_id",
        f"{base}/service_at_locations?per_page=0": "query.per_page",
    }
    for url, field in bad.items():
        response = await partners.http.get(url, headers=world.auth())
        assert response.status_code == 422, (url, response.text)
        assert field in [r["field"] for r in response.json()["detail"]], response.text
    for path in (f"/services/{uuid.uuid4()}", f"/organizations/{uuid.uuid4()}"):
        missing = await partners.http.get(base + path, headers=world.auth())
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
    # The volunteer (a person) is no organisation of the directory.
    volunteer = await partners.pool.fetchval("SELECT id FROM volunteers LIMIT 1")
    gone = await partners.http.get(f"{base}/organizations/{volunteer}", headers=world.auth())
    assert gone.status_code == 404


async def test_the_package_downloads_as_a_zip_of_valid_hsds(partners) -> None:
    world = partners.world
    await _setup(partners)
    response = await partners.http.get(
        f"/v1/communities/{world.home}/hsds/package", headers=world.auth("street")
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = set(archive.namelist())
    assert names == {
        "datapackage.json",
        "services.json",
        "organizations.json",
        "service_at_locations.json",
    }
    meta = json.loads(archive.read("datapackage.json"))
    assert {r["path"] for r in meta["resources"]} == names - {"datapackage.json"}
    services = json.loads(archive.read("services.json"))
    assert len(services) == 3
    for service in services:
        assert_valid(service, "service_with_definitions")
    for org in json.loads(archive.read("organizations.json")):
        assert_valid(org, "organization")
    for sal in json.loads(archive.read("service_at_locations.json")):
        assert_valid(sal, "service_at_location")
    everything = b"".join(archive.read(n) for n in names).decode()
    assert STAFF not in everything
    assert VOLUNTEER not in everything


async def test_the_directory_entry_is_edited_and_bad_entries_change_nothing(partners) -> None:
    world = partners.world
    pid = await partners.new_partner()
    url = f"/v1/communities/{world.home}/partners/{pid}"
    created = (await partners.http.get(url, headers=world.auth())).json()
    assert created["directory"] is None

    bad_entries = [
        ({**DIRECTORY, "latitude": 91}, "body.directory.latitude"),
        ({**DIRECTORY, "longitude": None}, "body.directory"),
        ({**DIRECTORY, "website": "javascript:alert(1)"}, "body.directory.website"),
        ({**DIRECTORY, "email": "no-at-sign"}, "body.directory.email"),
        (
            {
                **DIRECTORY,
                "opening_hours": [{"weekdays": [1], "opens_at": "14:00", "closes_at": "9:00"}],
            },
            "body.directory.opening_hours.0.closes_at",
        ),
        (
            {
                **DIRECTORY,
                "opening_hours": [{"weekdays": [1], "opens_at": "14:00", "closes_at": "13:00"}],
            },
            "body.directory.opening_hours.0",
        ),
        (
            {
                **DIRECTORY,
                "opening_hours": [{"weekdays": [8], "opens_at": "09:00", "closes_at": "13:00"}],
            },
            "body.directory.opening_hours.0.weekdays.0",
        ),
        ({**DIRECTORY, "address": {"address_1": "x"}}, "body.directory.address.city"),
        ({**DIRECTORY, "public": "perhaps"}, "body.directory.public"),
    ]
    for entry, field in bad_entries:
        response = await partners.http.patch(url, json={"directory": entry}, headers=world.auth())
        assert response.status_code == 422, (field, response.text)
        fields = [r["field"] for r in response.json()["detail"]]
        assert field in fields, (field, fields)
        assert (await partners.http.get(url, headers=world.auth())).json()["directory"] is None

    # The partner itself publishes its entry (its consent), and can withdraw it.
    own = await world.issue("canteen", Role.PARTNER, [world.home], pid)
    edited = await partners.http.patch(url, json={"directory": DIRECTORY}, headers=own)
    assert edited.status_code == 200, edited.text
    assert edited.json()["directory"]["public"] is True
    assert edited.json()["directory"]["opening_hours"][0]["opens_at"] == "10:30"
    assert edited.json()["contacts"], "the rest of the partner is untouched"
    guide = (await partners.http.get(f"/public/v1/communities/{world.home}/guide")).json()
    assert [e["organization"] for e in guide["entries"]] == [created["name"]]
    hidden = await partners.http.patch(
        url, json={"directory": {**DIRECTORY, "public": False}}, headers=own
    )
    assert hidden.status_code == 200
    guide = (await partners.http.get(f"/public/v1/communities/{world.home}/guide")).json()
    assert guide["entries"] == []


async def test_the_public_guide_shows_public_partners_only_and_is_rate_limited(partners) -> None:
    world = partners.world
    ids = await _setup(partners)
    url = f"/public/v1/communities/{world.home}/guide"
    guide = await partners.http.get(url)
    assert guide.status_code == 200, guide.text
    body = guide.json()
    (entry,) = body["entries"]
    assert entry["phone"] == PUBLIC_PHONE
    assert "271000" in entry["address"]
    assert entry["opening_hours"] == DIRECTORY["opening_hours"]
    assert {s["kind"] for s in entry["services"]} == {"meal_delivery", "elder_care_visit"}
    for text in (guide.text,):
        assert STAFF not in text
        assert VOLUNTEER not in text
        assert "13900139000" not in text
        assert PRIVATE_PHONE not in text
        assert ids["private"] not in text

    page = await partners.http.get(url, params={"format": "html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "十五分钟生活圈" in page.text
    assert "@page{size:A4" in page.text
    assert PUBLIC_PHONE in page.text
    assert STAFF not in page.text
    browser = await partners.http.get(url, headers={"Accept": "text/html"})
    assert browser.headers["content-type"].startswith("text/html")

    # A community nobody registered answers like one without public partners.
    unknown = await partners.http.get("/public/v1/communities/no-such-place/guide")
    assert unknown.status_code == 200
    assert unknown.json()["entries"] == []
    assert set(unknown.json()) == set(body)
    for bad, field in (
        ("/public/v1/communities/NOT_A_SLUG/guide", "path.community"),
        (f"{url}?format=pdf", "query.format"),
    ):
        refused = await partners.http.get(bad)
        assert refused.status_code == 422, refused.text
        assert field in refused.text, refused.text

    # Three requests per window from here on (a fresh bucket: the reads above counted).
    partners.app.state.guide_limit = RateLimit("partners:guide-test", 3, 60)
    statuses = [(await partners.http.get(url)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = await partners.http.get(url)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]
    assert "致远" not in limited.text


async def _import(partners: Any, body: str) -> Any:
    world = partners.world
    return await partners.http.post(
        f"/v1/communities/{world.home}/imports/partners?dry_run=false",
        content=body.encode(),
        headers={**world.auth(), "Content-Type": "text/csv"},
    )


async def test_the_csv_import_carries_the_directory_entry(partners) -> None:
    world = partners.world
    header = (
        "external_ref,name,kind,need_kinds,public,address_1,city,state_province,postal_code,"
        "latitude,longitude,public_phone,opening_hours\n"
    )
    row = "P-1,幸福食堂,canteen,meal_delivery,true,致远路 18 号,泰安市,山东省,271000,36.19,117.12,"
    body = header + row + '0538-6220000,"1-5 10:30-13:30;6,7 09:00-12:00"\n'
    first = await _import(partners, body)
    assert first.status_code == 200, first.text
    assert [r["action"] for r in first.json()["rows"]] == ["created"]
    again = await _import(partners, body)
    assert [r["action"] for r in again.json()["rows"]] == ["unchanged"]

    guide = (await partners.http.get(f"/public/v1/communities/{world.home}/guide")).json()
    (entry,) = guide["entries"]
    assert entry["phone"] == PUBLIC_PHONE
    assert [h["weekdays"] for h in entry["opening_hours"]] == [[1, 2, 3, 4, 5], [6, 7]]
    services = await _services(partners)
    assert_valid(services["contents"][0], "service_with_definitions")

    # A file without directory columns leaves the entry as it is.
    plain = await _import(
        partners, "external_ref,name,kind,need_kinds\nP-1,幸福食堂,canteen,meal_delivery\n"
    )
    assert [r["action"] for r in plain.json()["rows"]] == ["unchanged"]
    guide = (await partners.http.get(f"/public/v1/communities/{world.home}/guide")).json()
    assert len(guide["entries"]) == 1

    # Bad directory cells are refused by line and column; nothing changes.
    for cells, field in (
        ("P-1,x,canteen,,true,致远路,,,,,,,", "line.2"),
        ("P-1,x,canteen,,true,,,,,91,1,,", "line.2.latitude"),
        ("P-1,x,canteen,,true,,,,,,,,mon 10-12", "line.2.opening_hours"),
    ):
        refused = await _import(partners, header + cells + "\n")
        assert refused.status_code == 422, refused.text
        assert any(field in json.dumps(e) for e in refused.json()["detail"]), (field, refused.text)
    assert (await partners.http.get(f"/public/v1/communities/{world.home}/guide")).json()[
        "entries"
    ][0]["organization"] == "幸福食堂"
