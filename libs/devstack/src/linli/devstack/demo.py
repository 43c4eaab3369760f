"""Demo data drawn from the workflow in DESIGN.md: two communities, residents who
need lunches, visits and repairs, and the credentials to look at them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


def _needs(residents: list[str], now: datetime) -> list[dict[str, Any]]:
    lunch = now.replace(hour=11, minute=0, second=0, microsecond=0)
    if lunch < now:
        lunch += timedelta(days=1)
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
                "earliest": (now + timedelta(days=1)).isoformat(),
                "latest": (now + timedelta(days=1, hours=4)).isoformat(),
            },
            "details": {"purpose": "companionship", "duration_minutes": 60},
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
    for key, (role, communities) in wanted.items():
        if key in stack.state.tokens:
            continue
        args = ["credentials", "issue", "--role", role, "--label", f"demo {key}"]
        for c in communities:
            args += ["--community", c]
        stack.state.tokens[key] = json.loads(stack.run_cli(intake, *args))["token"]
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
