"""Two communities with real data, for the cross-community attack (RELIABILITY.md row 11).

`seed_community(lc, lc.other)` gives community B what every route can name: an operator,
an app (role system) and an admin credential registered in every running service; a
resident (with a canary name), a volunteer and a partner with their own credentials;
two meal needs, one fulfilled (so the volunteer holds points) and one with an open offer;
the volunteer's slot; a plan that starts in a year (so it generates nothing now); and,
when notifications runs, a webhook subscription and a recipient. Everything is made
through the services' HTTP APIs with B's own credentials, then the flow is left at rest
(no open timer fires for 30 minutes at time scale 1).

`credentials(lc, lc.home)` gives community A the same kinds of credentials (no data), and
`snapshot(lc, world)` reads everything B's own credentials can see, to compare before and
after an attack.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from linli.contracts.types import Role
from linli.servicekit.auth import issue_credential

from .intake import meal_need, resident_body
from .lifecycle import Lifecycle, new_token, now_iso, window

OTHER_ROLES = (Role.SYSTEM, Role.ADMIN)
"""Besides the operator, the community-wide roles registered in every service."""


@dataclass
class Community:
    """One community's credentials (and, for a seeded one, its ids)."""

    slug: str
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    """Role label -> {service: token}, only where the credential exists."""
    ids: dict[str, list[str]] = field(default_factory=dict)
    """Values by the parameter or body field name that takes them (`community`,
    `need_id`, ...), as `faults.cross_community.attack` wants them."""
    canaries: list[str] = field(default_factory=list)

    def token(self, role: str, service: str) -> str:
        return self.tokens[role][service]


async def _register(lc: Lifecycle, service: str, role: Role, community: str, **kw: Any) -> str:
    conn = await lc._connect(service)
    try:
        _, token = await issue_credential(
            conn, role=role, communities=[community], label=f"{role.value} {community}", **kw
        )
    finally:
        await conn.close()
    return token


async def register_everywhere(lc: Lifecycle, role: Role, community: str) -> dict[str, str]:
    """One new token of `role` for `community`, registered in every running service."""
    token = new_token()
    await asyncio.gather(*(_register(lc, s, role, community, token=token) for s in lc.services))
    return dict.fromkeys(lc.services, token)


async def credentials(lc: Lifecycle, community: str, *, operator: str | None = None) -> Community:
    """Operator (the given token, or a new one in every service), system and admin
    credentials of a community, and a volunteer and a partner of its own (partners)."""
    found = Community(community)
    if operator is None:
        found.tokens["operator"] = await register_everywhere(lc, Role.OPERATOR, community)
    else:
        found.tokens["operator"] = dict.fromkeys(lc.services, operator)
    for role in OTHER_ROLES:
        found.tokens[role.value] = await register_everywhere(lc, role, community)
    return found


async def party(lc: Lifecycle, world: Community, kind: str, body: dict[str, Any]) -> str:
    """A volunteer or partner of the world's community, with its own token."""
    created = lc.ok(
        await lc.http.post(
            lc.c("partners", f"/{kind}s", world.slug),
            json=body,
            headers=lc.bearer(world.token("operator", "partners")),
        ),
        201,
    )
    party_id = str(created["id"])
    token = await _register(lc, "partners", Role(kind), world.slug, subject_id=uuid.UUID(party_id))
    world.tokens[kind] = {"partners": token}
    world.ids.setdefault(f"{kind}_id", []).append(party_id)
    return party_id


async def seed_community(lc: Lifecycle, community: str) -> Community:
    """Community `community` with one of everything the APIs can name (see the module)."""
    world = await credentials(lc, community)
    world.ids["community"] = [community]
    op = lc.bearer(world.token("operator", "intake"))
    canary = f"ZZCANARY-B-{uuid.uuid4().hex[:8]}"
    world.canaries.append(canary)

    resident = lc.ok(
        await lc.http.post(
            lc.c("intake", "/residents", community),
            json=resident_body(name=canary, address=f"{canary} street 1"),
            headers=op,
        ),
        201,
    )
    resident_id = str(resident["id"])
    world.ids["resident_id"] = [resident_id]

    volunteer = await party(
        lc, world, "volunteer", {"display_name": "B volunteer", "skills": ["meal_delivery"]}
    )
    await party(
        lc,
        world,
        "partner",
        {
            "name": "B canteen",
            "kind": "canteen",
            "services": [{"name": "lunch", "need_kind": "meal_delivery", "cost_option": "free"}],
        },
    )
    volunteer_token = world.token("volunteer", "partners")
    slot = lc.ok(
        await lc.http.post(
            lc.c("partners", "/slots", community),
            json={"kind": "meal_delivery", "window": window(20, 150), "capacity": 3},
            headers=lc.bearer(volunteer_token),
        ),
        201,
    )
    world.ids["slot_id"] = [str(slot["id"])]

    async def slot_in_scheduling() -> bool:
        got = await lc.http.get(
            lc.c("scheduling", "/slots", community),
            headers=lc.bearer(world.token("operator", "scheduling")),
        )
        return got.status_code == 200 and bool(lc.ok(got)["items"])

    await lc.wait_for(slot_in_scheduling, 20, what="B's slot in scheduling")

    needs = []
    for _ in range(2):
        created = lc.ok(
            await lc.http.post(
                lc.c("intake", "/needs", community),
                json=meal_need(resident_id, hours_ahead=1),
                headers=op,
            ),
            201,
        )
        needs.append(str(created["id"]))
    world.ids["need_id"] = needs
    # The Open311 facade (ADR 0050) names the community and a need its own way.
    world.ids["jurisdiction_id"] = [community]
    world.ids["service_request_id"] = needs
    world.ids["token_id"] = needs
    offers = [await lc.wait_offer(volunteer_token, n, timeout=30) for n in needs]
    world.ids["assignment_id"] = [o["assignment_id"] for o in offers]

    # The first need is delivered (the volunteer earns points); the second stays offered.
    done = offers[0]["assignment_id"]
    lc.ok(await lc.answer(volunteer_token, done, "accept"))
    lc.ok(
        await lc.report(
            volunteer_token,
            done,
            {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"},
        ),
        201,
    )

    async def status(need_id: str, wanted: str) -> bool:
        view = lc.ok(await lc.http.get(lc.c("intake", f"/needs/{need_id}", community), headers=op))
        return bool(view["status"] == wanted)

    await lc.wait_for(lambda: status(needs[0], "fulfilled"), 30, what="B's first need fulfilled")
    await lc.wait_for(lambda: status(needs[1], "offered"), 30, what="B's second need offered")
    await lc.wait_events("points.awarded", need_id=needs[0], timeout=30)

    starts = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
    plan = lc.ok(
        await lc.http.post(
            lc.c("intake", "/plans", community),
            json={
                "resident_id": resident_id,
                "kind": "meal_delivery",
                "details": {"diet_needs": ["soft food"], "portions": 1},
                "schedule": {
                    "weekdays": [1, 3, 5],
                    "start_time": "11:00:00",
                    "end_time": "12:30:00",
                    "starts_on": starts,
                },
            },
            headers=op,
        ),
        201,
    )
    world.ids["plan_id"] = [str(plan["id"])]
    world.ids["event_id"] = [
        str(e.event.id) for e in await lc.events("need.submitted", need_id=needs[0])
    ]

    if "notifications" in lc.services:
        app = lc.bearer(world.token("system", "notifications"))
        # Repair events only: B has none, so nothing is delivered while the test runs.
        sub = lc.ok(
            await lc.http.post(
                lc.url("notifications", "/v1/subscriptions"),
                json={
                    "url": "http://127.0.0.1:9/hook",
                    "communities": [community],
                    "need_kinds": ["repair"],
                },
                headers=app,
            ),
            201,
        )
        world.ids["sub_id"] = [str(sub["id"])]
        recipient = lc.ok(
            await lc.http.post(
                lc.c("notifications", "/recipients", community),
                json={
                    "role": "volunteer",
                    "volunteer_id": volunteer,
                    "channel": "sms",
                    "address": "13800138009",
                    "events": ["visit.completed"],
                },
                headers=lc.bearer(world.token("operator", "notifications")),
            ),
            201,
        )
        world.ids["recipient_id"] = [str(recipient["id"])]
    await _seed_activity(lc, world, community, op, resident_id)
    return world


async def _seed_activity(
    lc: Lifecycle, world: Community, community: str, op: dict[str, str], resident_id: str
) -> None:
    """A published free clinic (ADR 0046) with the resident signed up."""
    base = lc.c("intake", "/activities", community)
    body = {
        "title": "B free clinic",
        "venue": "B square",
        "date": (datetime.now(UTC) + timedelta(days=30)).date().isoformat(),
        "start_time": "08:00:00",
        "end_time": "10:00:00",
        "stalls": [
            {
                "partner_id": str(uuid.uuid4()),
                "offering": "blood pressure",
                "sessions": [{"start_time": "08:00:00", "end_time": "09:00:00", "places": 5}],
            }
        ],
    }
    activity = lc.ok(await lc.http.post(base, json=body, headers=op), 201)
    stall = activity["stalls"][0]
    session = stall["sessions"][0]
    lc.ok(await lc.http.post(f"{base}/{activity['id']}/publish", headers=op))
    signup = lc.ok(
        await lc.http.post(
            f"{base}/{activity['id']}/sessions/{session['id']}/signups",
            json={"resident_id": resident_id},
            headers=op,
        ),
        201,
    )
    world.ids["activity_id"] = [str(activity["id"])]
    world.ids["stall_id"] = [str(stall["id"])]
    world.ids["session_id"] = [str(session["id"])]
    world.ids["signup_id"] = [str(signup["id"])]


async def snapshot(lc: Lifecycle, world: Community) -> dict[str, Any]:
    """Everything B's own credentials can read of B through the APIs (lists and each
    item), to compare before and after an attack."""
    c = world.slug
    reads: list[tuple[str, str, str, str]] = [
        ("intake", "operator", lc.c("intake", "/needs?limit=200", c), "needs"),
        ("intake", "operator", lc.c("intake", "/residents?limit=200", c), "residents"),
        ("intake", "operator", lc.c("intake", "/plans?limit=200", c), "plans"),
        ("partners", "operator", lc.c("partners", "/partners?limit=200", c), "partners"),
        ("partners", "operator", lc.c("partners", "/volunteers?limit=200", c), "volunteers"),
        ("partners", "operator", lc.c("partners", "/slots?limit=200", c), "slots"),
        ("partners", "volunteer", lc.url("partners", "/v1/me/offers?limit=200"), "my offers"),
        ("partners", "volunteer", lc.url("partners", "/v1/me/points?limit=200"), "my points"),
        ("partners", "partner", lc.url("partners", "/v1/me"), "partner me"),
        (
            "scheduling",
            "operator",
            lc.c("scheduling", "/schedule/needs?limit=200", c),
            "schedule",
        ),
        ("scheduling", "operator", lc.c("scheduling", "/slots?limit=200", c), "sched slots"),
    ]
    for need in world.ids.get("need_id", []):
        reads.append(("intake", "operator", lc.c("intake", f"/needs/{need}", c), need))
        reads.append(
            ("scheduling", "operator", lc.c("scheduling", f"/schedule/needs/{need}", c), need)
        )
    for volunteer in world.ids.get("volunteer_id", []):
        path = f"/volunteers/{volunteer}/points?limit=200"
        reads.append(("partners", "operator", lc.c("partners", path, c), f"points {volunteer}"))
    if "notifications" in lc.services:
        reads += [
            ("notifications", "system", lc.url("notifications", "/v1/subscriptions"), "subs"),
            (
                "notifications",
                "operator",
                lc.c("notifications", "/subscriptions", c),
                "community subs",
            ),
            ("notifications", "operator", lc.c("notifications", "/recipients", c), "recipients"),
        ]
        for sub in world.ids.get("sub_id", []):
            path = f"/v1/subscriptions/{sub}/attempts"
            reads.append(("notifications", "system", lc.url("notifications", path), path))
    seen: dict[str, Any] = {}
    for service, role, url, name in reads:
        got = await lc.http.get(url, headers=lc.bearer(world.token(role, service)))
        seen[f"{service} {name}"] = lc.ok(got)
    return seen


def templates(world: Community) -> dict[str, list[Any]]:
    """Valid request bodies for the operations whose generated bodies rarely pass the
    services' own checks, keyed as `faults.cross_community.attack(bodies=...)` wants them.
    Their id fields carry placeholders: the attack puts the victim's ids there."""
    placeholder = str(uuid.uuid4())
    starts = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
    c = "/v1/communities/{community}"
    return {
        f"intake POST {c}/needs": [meal_need(placeholder, hours_ahead=3)],
        f"intake POST {c}/residents": [resident_body(name="ZZCANARY-template")],
        f"intake POST {c}/plans": [
            {
                "resident_id": placeholder,
                "kind": "meal_delivery",
                "details": {"diet_needs": ["soft food"], "portions": 1},
                "schedule": {
                    "weekdays": [2],
                    "start_time": "11:00:00",
                    "end_time": "12:00:00",
                    "starts_on": starts,
                },
            }
        ],
        f"partners POST {c}/slots": [
            {
                "kind": "meal_delivery",
                "window": window(300, 60),
                "capacity": 1,
                "provider": {"kind": "volunteer", "id": placeholder},
            }
        ],
        f"partners POST {c}/volunteers/{{volunteer_id}}/redemptions": [{"points": 1}],
        "partners POST /v1/me/offers/{assignment_id}/accept": [{}],
        "partners POST /v1/me/offers/{assignment_id}/report": [
            {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"}
        ],
        f"notifications POST {c}/recipients": [
            {
                "role": "volunteer",
                "volunteer_id": placeholder,
                "channel": "sms",
                "address": "13800138010",
            },
            {
                "role": "family",
                "resident_id": placeholder,
                "channel": "sms",
                "address": "13800138011",
            },
        ],
        "notifications POST /v1/subscriptions": [
            {
                "url": "http://127.0.0.1:9/hook",
                "communities": [world.slug],
                "need_kinds": ["repair"],
            }
        ],
        # Everything recorded for the endpoint (an event id is the generated cases' job).
        "notifications POST /v1/subscriptions/{sub_id}/replay": [{"since": "2000-01-01T00:00:00Z"}],
    }


async def attacker(lc: Lifecycle) -> Community:
    """Community A as the cross-community attack uses it: its operator, system, admin and
    street-office credentials, and a volunteer and a partner of its own with theirs."""
    a = await credentials(lc, lc.home, operator=lc.operator_token)
    # A street office over A only (ADR 0040): reads, and only A's.
    a.tokens[Role.STREET_OFFICE.value] = await register_everywhere(lc, Role.STREET_OFFICE, lc.home)
    await party(lc, a, "volunteer", {"display_name": "A volunteer", "skills": ["meal_delivery"]})
    await party(
        lc,
        a,
        "partner",
        {
            "name": "A canteen",
            "kind": "canteen",
            "services": [{"name": "lunch", "need_kind": "meal_delivery", "cost_option": "free"}],
        },
    )
    return a
