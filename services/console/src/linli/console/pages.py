"""What each page reads from the services, with the staff member's credential.

Reads run concurrently; each returns the view models of `views.py`. A community the
account does not hold is 404 here before any call (and the services would answer 404
too: the credential is scoped to the same communities).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from . import views
from .accounts import Staff
from .i18n import translate
from .upstream import Upstream, UpstreamNotFound


class NotFound(Exception):
    """The page does not exist for this staff member (another community, unknown need)."""


def require_community(staff: Staff, community: str) -> None:
    if not staff.holds(community):
        raise NotFound(community)


async def community_view(
    up: Upstream, staff: Staff, community: str, zone: ZoneInfo, locale: str
) -> views.CommunityView:
    """The live page's panels: open needs, escalations, today's meals, load."""
    require_community(staff, community)
    token = staff.service_token
    base = f"/v1/communities/{community}"
    needs_path = f"{base}/schedule/needs"
    try:
        scheduled, submitted, fulfilled, failed, slots, partners, volunteers = await asyncio.gather(
            up.get("scheduling", needs_path, token, {"limit": 500}),
            up.get("intake", f"{base}/needs", token, {"status": "submitted", "limit": 200}),
            up.get(
                "scheduling", f"{base}/schedule/needs", token, {"state": "fulfilled", "limit": 500}
            ),
            up.get(
                "scheduling", f"{base}/schedule/needs", token, {"state": "failed", "limit": 500}
            ),
            up.get("scheduling", f"{base}/slots", token, {"limit": 500}),
            up.get("partners", f"{base}/partners", token),
            up.get("partners", f"{base}/volunteers", token)
            if staff.sees_personal_data
            else _empty(),
        )
    except UpstreamNotFound as exc:
        raise NotFound(community) from exc
    now = datetime.now(UTC)
    needs = views.open_needs(scheduled["items"], submitted["items"])
    return views.CommunityView(
        community=community,
        needs=needs,
        escalations=needs.get("escalated", []),
        meals=views.meal_round(
            scheduled["items"],
            fulfilled["items"],
            failed["items"],
            now.astimezone(zone).date(),
            zone,
        ),
        load=views.provider_load(
            slots["items"],
            partners["items"],
            volunteers["items"],
            now,
            volunteer_names=staff.sees_personal_data,
            volunteers_label=translate(locale, "load.volunteers"),
        ),
    )


async def _empty() -> dict[str, Any]:
    return {"items": []}


@dataclass(frozen=True)
class Summary:
    community: str
    open: int
    escalated: int


async def summaries(up: Upstream, staff: Staff) -> list[Summary]:
    """Open needs and escalations of each of the account's communities (the home page)."""

    async def one(community: str) -> Summary:
        data = await up.get(
            "scheduling",
            f"/v1/communities/{community}/schedule/needs",
            staff.service_token,
            {"limit": 500},
        )
        items = data["items"]
        return Summary(community, len(items), sum(1 for n in items if n["state"] == "escalated"))

    return list(await asyncio.gather(*(one(c) for c in staff.communities)))


@dataclass
class NeedPage:
    need: dict[str, Any]
    scheduled: dict[str, Any] | None
    resident: dict[str, Any] | None
    offers: list[dict[str, Any]]
    escalations: list[dict[str, Any]] = field(default_factory=list)
    """Scheduling's escalations of the need with their state and who did what."""
    parties: list[dict[str, str]] = field(default_factory=list)
    """Partners and volunteers of the community (community operators: the dispatch form)."""
    actions: list[dict[str, Any]] = field(default_factory=list)
    """Scheduling's dispatches and re-offers of the need, with who."""


async def need_page(up: Upstream, staff: Staff, community: str, need_id: str) -> NeedPage:
    """A need's timeline (intake), offers and escalations (scheduling), names of the
    parties offered (partners); the resident only for community operators."""
    require_community(staff, community)
    token = staff.service_token
    base = f"/v1/communities/{community}"
    try:
        need = await up.get("intake", f"{base}/needs/{need_id}", token)
    except UpstreamNotFound as exc:
        raise NotFound(need_id) from exc
    try:
        scheduled: dict[str, Any] | None = await up.get(
            "scheduling", f"{base}/schedule/needs/{need_id}", token
        )
    except UpstreamNotFound:
        scheduled = None  # scheduling has not seen it yet
    resident = None
    if staff.sees_personal_data:
        try:
            resident = await up.get("intake", f"{base}/residents/{need['resident_id']}", token)
        except UpstreamNotFound:
            resident = None
    names: dict[str, str] = {}
    parties: list[dict[str, str]] = []
    assignments = (scheduled or {}).get("assignments") or []
    if assignments or staff.sees_personal_data:
        partners = await up.get("partners", f"{base}/partners", token)
        names.update({str(p["id"]): p["name"] for p in partners["items"]})
        parties += [
            {"value": f"partner:{p['id']}", "kind": "partner", "name": p["name"]}
            for p in partners["items"]
        ]
        if staff.sees_personal_data:
            volunteers = await up.get("partners", f"{base}/volunteers", token)
            names.update({str(v["id"]): v["display_name"] for v in volunteers["items"]})
            parties += [
                {"value": f"volunteer:{v['id']}", "kind": "volunteer", "name": v["display_name"]}
                for v in volunteers["items"]
            ]
    escalations = await asyncio.gather(
        *(
            up.get("scheduling", f"{base}/escalations/{e['id']}", token)
            for e in (scheduled or {}).get("escalations") or []
            if "id" in e
        )
    )
    offers = [
        {
            **a,
            "provider_name": names.get(str(a["provider"]["id"])),
            "offered_at": views.parse_time(a["offered_at"]),
            "answered_at": views.parse_time(a.get("answered_at")),
        }
        for a in assignments
    ]
    if not staff.sees_personal_data:
        # Street office: the need's course, not its contents (details and notes are free
        # text about a resident).
        need = {**need, "details": {}, "notes": None, "resident_id": None}
        need["timeline"] = [{**e, "note": None} for e in need.get("timeline") or []]
        escalations = [{**e, "note": None} for e in escalations]
    return NeedPage(
        need,
        scheduled,
        resident,
        offers,
        escalations=list(escalations),
        parties=parties if staff.sees_personal_data else [],
        actions=list((scheduled or {}).get("actions") or []),
    )
