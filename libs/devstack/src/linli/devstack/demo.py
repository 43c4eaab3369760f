"""Demo data drawn from the workflow in DESIGN.md: two communities, residents who
need lunches, visits and repairs, and the credentials to look at them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from .stack import Stack


@dataclass(frozen=True)
class Community:
    slug: str
    name: str


COMMUNITIES = [
    Community("taian-zhiyuan", "泰安致远社区"),
    Community("heping-lijiang", "和平丽江社区"),
]

STREET_OFFICE = ("demo-jiedao", "示范街道")
"""The street office (街道) over the demo communities (console accounts)."""

RESIDENTS: list[dict[str, Any]] = [
    {
        "name": "王秀兰",
        "phone": "13800138001",
        "address": "致远小区 3号楼 2单元 401",
        "compound": "致远小区",
        "priority_group": "elderly_living_alone",
        "consent_to_share_contact": True,
    },
    {
        "name": "李建国",
        "phone": "13800138002",
        "address": "致远小区 7号楼 1单元 102",
        "compound": "致远小区",
        "priority_group": "low_income",
        "consent_to_share_contact": True,
    },
    {
        "name": "张淑芬",
        "phone": "13800138003",
        "address": "东湖苑 12号楼 3单元 601",
        "compound": "东湖苑",
        "priority_group": "disabled",
        "consent_to_share_contact": False,
    },
]


OTHER_RESIDENT: dict[str, Any] = {
    "name": "赵德明",
    "phone": "13800138004",
    "address": "丽江花园 5号楼 1单元 301",
    "compound": "丽江花园",
    "priority_group": "elderly_living_alone",
    "consent_to_share_contact": True,
}


SHANGHAI = timezone(timedelta(hours=8))


def _next_local(now: datetime, hour: int, minute: int = 0) -> datetime:
    """The next time it is hour:minute in the communities' time zone (UTC+8)."""
    local = now.astimezone(SHANGHAI)
    at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > local else at + timedelta(days=1)


def _plans(residents: list[str]) -> list[dict[str, Any]]:
    """Lunch every day for the resident who lives alone; a visit every afternoon."""
    today = datetime.now(SHANGHAI).date().isoformat()
    return [
        {
            "resident_id": residents[0],
            "kind": "meal_delivery",
            "details": {"diet_needs": ["soft food"], "portions": 1},
            "schedule": {
                "weekdays": [1, 2, 3, 4, 5, 6, 7],
                "start_time": "11:00",
                "end_time": "12:30",
                "timezone": "Asia/Shanghai",
                "starts_on": today,
            },
        },
        {
            "resident_id": residents[2],
            "kind": "elder_care_visit",
            "details": {"purpose": "companionship", "duration_minutes": 60},
            "schedule": {
                "weekdays": [1, 2, 3, 4, 5, 6, 7],
                "start_time": "14:30",
                "end_time": "16:30",
                "timezone": "Asia/Shanghai",
                "starts_on": today,
            },
        },
    ]


def _needs(residents: list[str], now: datetime) -> list[dict[str, Any]]:
    # Windows match the demo capacity: lunch rounds 10:30-13:00, visits 14:00-17:00.
    lunch = _next_local(now, 11)
    visit = _next_local(now, 14, 30)
    evening = _next_local(now, 20)
    return [
        {
            "kind": "meal_delivery",
            "resident_id": residents[0],
            "window": {
                "earliest": lunch.isoformat(),
                "latest": (lunch + timedelta(minutes=90)).isoformat(),
            },
            "details": {"diet_needs": ["soft food", "low salt"], "portions": 1},
            "source": {"system": "community-office"},
        },
        {
            "kind": "repair",
            "resident_id": residents[1],
            "urgency": "urgent",
            "window": {
                "earliest": now.isoformat(),
                "latest": (now + timedelta(hours=24)).isoformat(),
            },
            "details": {
                "category": "heating",
                "description": "radiator leaking through the floor",
                "hazard": "water_leak",
            },
            "source": {"system": "city-hotline", "reference": "HL-2026-1122-0042"},
        },
        {
            "kind": "elder_care_visit",
            "resident_id": residents[2],
            "window": {
                "earliest": visit.isoformat(),
                "latest": (visit + timedelta(minutes=90)).isoformat(),
            },
            "details": {"purpose": "companionship", "duration_minutes": 60},
        },
        # A repair after work hours: only the night repair crew's on-call fits it, and the
        # crew is reached by webhook, so the demo shows an offer accepted by its signed link
        # at any hour (ADR 0043).
        {
            "kind": "repair",
            "resident_id": residents[2],
            "window": {
                "earliest": evening.isoformat(),
                "latest": (evening + timedelta(hours=2)).isoformat(),
            },
            "details": {
                "category": "plumbing",
                "description": "kitchen tap dripping; home after 8 pm",
                "hazard": "none",
            },
            "source": {"system": "community-office"},
        },
        # Blood-pressure tablets from the pharmacy; the list stays in intake (ADR 0031).
        {
            "kind": "goods_delivery",
            "resident_id": residents[0],
            "window": {
                "earliest": visit.isoformat(),
                "latest": (visit + timedelta(minutes=150)).isoformat(),
            },
            "details": {
                "category": "medicine",
                "items_count": 2,
                "prescription_required": True,
                "description": "降压药两盒 two boxes of blood-pressure tablets",
            },
            "source": {"system": "community-office"},
        },
    ]


def load(stack: Stack) -> None:
    """Idempotent: communities and credentials once; residents and needs when empty."""
    from .stack import SERVICES

    intake = SERVICES[0]
    for community in COMMUNITIES:
        stack.run_cli(intake, "communities", "add", community.slug, community.name)
    first = COMMUNITIES[0].slug
    wanted = {
        "operator": ("operator", [first]),
        "operator_other": ("operator", [COMMUNITIES[1].slug]),
        "system": ("system", [first]),
        "admin": ("admin", ["*"]),
    }
    # The same demo token works in every service (registered in each).
    stack.ensure_tokens({key: (role, comms, None) for key, (role, comms) in wanted.items()})
    # Console staff: an operator per community and a street office over both.
    stack.ensure_staff([c.slug for c in COMMUNITIES], STREET_OFFICE)
    # Capacity first, so the demo's needs find it instead of being escalated.
    load_partners(stack)
    try:
        load_reach(stack)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        # The demo runs without it: the crew's offers are then answered through the API.
        print(f"demo: the night repair crew's webhook was not registered ({exc!r})")
    base = f"{stack.service_url(intake)}/v1/communities/{first}"
    headers = {"Authorization": f"Bearer {stack.state.tokens['operator']}"}
    with httpx.Client(headers=headers, timeout=10) as client:
        existing = client.get(f"{base}/residents").raise_for_status().json()["items"]
        if existing:
            return
        ids = [
            client.post(f"{base}/residents", json=r).raise_for_status().json()["id"]
            for r in RESIDENTS
        ]
        for index, need in enumerate(_needs(ids, datetime.now(UTC))):
            client.post(
                f"{base}/needs", json=need, headers={"Idempotency-Key": f"demo-{index}"}
            ).raise_for_status()
        for plan in _plans(ids):
            client.post(f"{base}/plans", json=plan).raise_for_status()
        partners_base = f"{stack.service_url(SERVICES[1])}/v1/communities/{first}"
        partner_ids = [
            p["id"]
            for p in client.get(f"{partners_base}/partners").raise_for_status().json()["items"]
        ]
        free_clinic(client, base, partner_ids, ids)
    # The second community has no partners yet: its need is escalated to the operator
    # at once (no capacity), which is what an operator must see.
    other = f"{stack.service_url(intake)}/v1/communities/{COMMUNITIES[1].slug}"
    other_headers = {"Authorization": f"Bearer {stack.state.tokens['operator_other']}"}
    with httpx.Client(headers=other_headers, timeout=10) as client:
        resident = client.post(f"{other}/residents", json=OTHER_RESIDENT).raise_for_status()
        need = _needs([resident.json()["id"]] * 3, datetime.now(UTC))[0]
        client.post(
            f"{other}/needs", json=need, headers={"Idempotency-Key": "demo-other-0"}
        ).raise_for_status()


def _listed(street: str, phone: str, lat: float, lon: float, *hours: tuple[Any, ...]) -> Any:
    """A public directory entry (ADR 0051): address, front-desk phone, opening hours."""
    return {
        "public": True,
        "address": {
            "address_1": street,
            "city": "泰安市",
            "region": "泰山区",
            "state_province": "山东省",
            "postal_code": "271000",
        },
        "latitude": lat,
        "longitude": lon,
        "phone": phone,
        "opening_hours": [
            {"weekdays": days, "opens_at": opens, "closes_at": closes}
            for days, opens, closes in hours
        ],
    }


_WEEK = [1, 2, 3, 4, 5, 6, 7]

PARTNERS: list[dict[str, Any]] = [
    {
        "name": "幸福食堂 Happiness Canteen",
        "kind": "canteen",
        "services": [
            {"name": "lunch round", "need_kind": "meal_delivery", "cost_option": "low_cost"}
        ],
        "directory": _listed(
            "致远路 18 号", "0538-6220018", 36.1921, 117.1203, (_WEEK, "10:30", "13:30")
        ),
    },
    {
        "name": "安居维修 Anju Repairs",
        "kind": "repair_firm",
        "services": [{"name": "household repairs", "need_kind": "repair", "cost_option": "free"}],
        "directory": _listed(
            "东岳大街 66 号", "0538-6220066", 36.1948, 117.1287, ([1, 2, 3, 4, 5], "08:30", "17:30")
        ),
    },
    {
        "name": "夜间抢修队 Night Repair Crew",
        "kind": "repair_firm",
        "services": [{"name": "night on-call", "need_kind": "repair", "cost_option": "free"}],
    },
    # Serves no need: it honours volunteers' points (issue #12, ADR 0041).
    {
        "name": "泰安职业技能培训学校 Taian Vocational School",
        "kind": "other",
        "description": "Courses for residents: elder care, cooking, e-bike repair.",
    },
    # Medicine and shopping brought to the door (ADR 0045); index 4.
    {
        "name": "仁心大药房 Renxin Pharmacy",
        "kind": "pharmacy",
        "services": [
            {"name": "medicine delivery", "need_kind": "goods_delivery", "cost_option": "free"}
        ],
        "directory": _listed(
            "致远路 25 号", "0538-6220025", 36.1915, 117.1221, (_WEEK, "08:00", "21:00")
        ),
    },
    # Cooks but does not deliver: its lunches are carried by volunteers (ADR 0044); index 5.
    {
        "name": "长者食堂 Elders' Kitchen",
        "kind": "canteen",
        "description": "Cooks soft and low-salt lunches; volunteers carry them.",
        "services": [
            {
                "name": "lunch (carried by volunteers)",
                "need_kind": "meal_delivery",
                "cost_option": "free",
            }
        ],
    },
]

# Rewards for volunteers' points, by index into PARTNERS (ADR 0041).
REWARDS: list[tuple[int, dict[str, Any]]] = [
    (
        3,
        {
            "title": "培训课程抵扣100元 100 yuan off a training course",
            "description": "Any course of the school; one certificate per course.",
            "points": 200,
        },
    ),
    (
        0,
        {
            "title": "家属午餐一份 A lunch for a family member",
            "description": "Served at the canteen between 11:00 and 13:00.",
            "points": 30,
        },
    ),
]

VOLUNTEERS: list[dict[str, Any]] = [
    {"display_name": "小刘 Xiao Liu", "skills": ["meal_delivery", "elder_care_visit"]},
    {"display_name": "陈阿姨 Auntie Chen", "skills": ["elder_care_visit"]},
    {"display_name": "老王 Lao Wang (former rider)", "skills": ["meal_delivery"]},
]


LUNCH_TEMPLATE: dict[str, Any] = {
    "kind": "meal_delivery",
    "weekdays": [1, 2, 3, 4, 5, 6, 7],
    "start": "10:30",
    "end": "13:00",
    "timezone": "Asia/Shanghai",
    "capacity": 40,
}


def _slots(partners: list[str], volunteers: list[str], now: datetime) -> list[dict[str, Any]]:
    """Repair firms' on-call, volunteers' afternoons (UTC+8); the canteen's lunch rounds
    come from its slot template."""
    today = now.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    slots: list[dict[str, Any]] = []
    for day in range(3):
        base = today + timedelta(days=day)
        # The canteen's lunch round comes from its weekly template (LUNCH_TEMPLATE).
        slots.append(
            {
                "kind": "repair",
                "provider": {"kind": "partner", "id": partners[1]},
                "window": _w(base + timedelta(hours=8), base + timedelta(hours=19)),
                "capacity": 4,
            }
        )
        slots.append(
            {
                "kind": "repair",
                "provider": {"kind": "partner", "id": partners[2]},
                "window": _w(base + timedelta(hours=19), base + timedelta(hours=31)),
                "capacity": 2,
            }
        )
        if len(partners) > 4:
            slots.append(
                {
                    "kind": "goods_delivery",
                    "provider": {"kind": "partner", "id": partners[4]},
                    "window": _w(base + timedelta(hours=9), base + timedelta(hours=18)),
                    "capacity": 6,
                }
            )
        for volunteer in volunteers[:2]:
            slots.append(
                {
                    "kind": "elder_care_visit",
                    "provider": {"kind": "volunteer", "id": volunteer},
                    "window": _w(base + timedelta(hours=14), base + timedelta(hours=17)),
                    "capacity": 1,
                }
            )
        slots.append(
            {
                "kind": "meal_delivery",
                "provider": {"kind": "volunteer", "id": volunteers[2]},
                "window": _w(base + timedelta(hours=10, minutes=30), base + timedelta(hours=13)),
                "capacity": 5,
            }
        )
    slots.extend(_two_leg_slots(partners, volunteers, today))
    return [s for s in slots if datetime.fromisoformat(s["window"]["latest"]) > now]


def _two_leg_slots(
    partners: list[str], volunteers: list[str], today: datetime
) -> list[dict[str, Any]]:
    """Two-leg lunches (ADR 0044): the Elders' Kitchen prepares a few lunches a day from
    10:00 (earlier than the Happiness Canteen, so the first lunches go two-leg), and two
    volunteers carry them."""
    slots: list[dict[str, Any]] = []
    for day in range(3):
        base = today + timedelta(days=day)
        lunch = _w(base + timedelta(hours=10), base + timedelta(hours=13))
        slots.append(
            {
                "kind": "meal_delivery",
                "provider": {"kind": "partner", "id": partners[5]},
                "window": lunch,
                "capacity": 3,
                "leg": "prepare",
            }
        )
        for volunteer in (volunteers[2], volunteers[0]):
            slots.append(
                {
                    "kind": "meal_delivery",
                    "provider": {"kind": "volunteer", "id": volunteer},
                    "window": lunch,
                    "capacity": 3,
                    "leg": "carry",
                }
            )
    return slots


def _w(earliest: datetime, latest: datetime) -> dict[str, str]:
    return {"earliest": earliest.isoformat(), "latest": latest.isoformat()}


def load_partners(stack: Stack) -> None:
    """Partners, volunteers, their capacity and their own tokens (once)."""
    from .stack import SERVICES

    partners_svc = SERVICES[1]
    first = COMMUNITIES[0].slug
    base = f"{stack.service_url(partners_svc)}/v1/communities/{first}"
    headers = {"Authorization": f"Bearer {stack.state.tokens['operator']}"}
    with httpx.Client(headers=headers, timeout=10) as client:
        if client.get(f"{base}/partners").raise_for_status().json()["items"]:
            return
        partner_ids = [
            client.post(f"{base}/partners", json=p).raise_for_status().json()["id"]
            for p in PARTNERS
        ]
        volunteer_ids = [
            client.post(f"{base}/volunteers", json=v).raise_for_status().json()["id"]
            for v in VOLUNTEERS
        ]
        for slot in _slots(partner_ids, volunteer_ids, datetime.now(UTC)):
            client.post(f"{base}/slots", json=slot).raise_for_status()
        # The canteen publishes its daily lunch round once, as a weekly template (ADR 0042).
        client.post(
            f"{base}/partners/{partner_ids[0]}/slot-templates", json=LUNCH_TEMPLATE
        ).raise_for_status()
        for index, reward in REWARDS:
            body = {"partner_id": partner_ids[index], **reward}
            client.post(f"{base}/rewards", json=body).raise_for_status()
    # A partner's or volunteer's own token, for the partners API only.
    parties = {f"partner_{i}": ("partner", [first], p) for i, p in enumerate(partner_ids)}
    parties |= {f"volunteer_{i}": ("volunteer", [first], v) for i, v in enumerate(volunteer_ids)}
    stack.ensure_tokens(parties, services=["partners"])


def free_clinic(
    client: httpx.Client, base: str, partner_ids: list[str], residents: list[str]
) -> None:
    """A free-clinic morning (义诊) next week with two stalls, and sign-ups (ADR 0046).

    Registration stays open until the morning starts; the intake service then gives the
    places to priority groups first."""
    if len(partner_ids) < 4 or not residents:
        return
    on = (datetime.now(UTC) + timedelta(days=7)).date().isoformat()
    body = {
        "title": "社区义诊 Free clinic morning",
        "venue": "社区服务中心广场 Community centre square",
        "date": on,
        "start_time": "08:30:00",
        "end_time": "11:30:00",
        "stalls": [
            {
                "partner_id": partner_ids[3],
                "offering": "测血压、血糖 Blood pressure and sugar checks",
                "sessions": [
                    {"start_time": "08:30:00", "end_time": "10:00:00", "places": 2},
                    {"start_time": "10:00:00", "end_time": "11:30:00", "places": 2},
                ],
            },
            {
                "partner_id": partner_ids[0],
                "offering": "磨剪刀、修电动车 Knife sharpening, e-bike repair",
                "sessions": [{"start_time": "09:00:00", "end_time": "11:00:00", "places": 5}],
            },
        ],
    }
    activity = client.post(f"{base}/activities", json=body).raise_for_status().json()
    url = f"{base}/activities/{activity['id']}"
    client.post(f"{url}/publish").raise_for_status()
    first_session = activity["stalls"][0]["sessions"][0]["id"]
    second_stall = activity["stalls"][1]["sessions"][0]["id"]
    for resident in residents:
        for session in (first_session, second_stall):
            client.post(
                f"{url}/sessions/{session}/signups", json={"resident_id": resident}
            ).raise_for_status()


REACH_PARTNER = 2
"""The night repair crew is reached by webhook (ADR 0043): the actors run its receiver,
which accepts pushed offers by following their signed link."""


def reach_receiver_url(partners_url: str) -> str:
    """The demo receiver of the night repair crew: partners' port + 90, on 127.0.0.1."""
    port = int(partners_url.rstrip("/").rsplit(":", 1)[1]) + 90
    return f"http://127.0.0.1:{port}/linli"


def load_reach(stack: Stack) -> None:
    """The night repair crew registers its webhook with its own token (every load: the same
    URL keeps the endpoint)."""
    from .stack import SERVICES

    first = COMMUNITIES[0].slug
    partners_url = stack.service_url(SERVICES[1])
    headers = {"Authorization": f"Bearer {stack.state.tokens['operator']}"}
    with httpx.Client(headers=headers, timeout=10) as client:
        items = client.get(f"{partners_url}/v1/communities/{first}/partners").json()["items"]
    crew = [p["id"] for p in items if p["name"] == PARTNERS[REACH_PARTNER]["name"]]
    if not crew:
        return
    key = f"reach_partner_{REACH_PARTNER}"
    stack.ensure_tokens({key: ("partner", [first], crew[0])}, services=["notifications"])
    url = f"{stack.service_url(SERVICES[3])}/v1/communities/{first}/partners/{crew[0]}/delivery"
    body = {"webhook": {"url": reach_receiver_url(partners_url)}}
    with httpx.Client(timeout=10) as client:
        mine = {"Authorization": f"Bearer {stack.state.tokens[key]}"}
        client.put(url, json=body, headers=mine).raise_for_status()
