"""Partners' directory as Open Referral HSDS 3.1 objects (ADR 0051). Pure functions.

| Linli | HSDS |
| --- | --- |
| partner (active, serving the community) | `organization` (id = partner id) |
| partner service (name, need kind) | `service` (id derived from partner, kind and name) |
| the partner's address and geo point, when public | `location` (physical) with its `address` |
| service offered at that location | `service_at_location` |
| the community, and the compounds its capacity names | `service_area` |
| active slot templates of the kind (ADR 0042) | `schedule` (WEEKLY, byday, opens_at, closes_at) |
| one-off published slots in the horizon | `schedule` (valid_from = valid_to = the day) |
| opening hours, when public | `schedule` of the location |
| `cost_option` free / low_cost / paid | `cost_option` |
| public phone, e-mail, website (the organisation's) | `phone`, `contact`, `email`, `website` |
| published slots in the horizon less held places | `service_capacity` (`available`, `maximum`) |

Ids that Linli has no row for are UUIDv5 of the partner (and kind and name), so they stay
the same from one export to the next while the partner's record stays the same.
Volunteers, staff contacts and residents never appear (people, not organisations).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from linli.contracts.catalogue import label

HSDS_VERSION = "3.1"
PROFILE = "https://docs.openreferral.org/en/latest/hsds/"
_NS = uuid.UUID("a2914a92-d9b9-41e2-b7ba-ebf0460f41f9")
_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_COST = {
    "free": ("free", "免费 free of charge"),
    "low_cost": ("low cost", "低偿 low cost, subsidised"),
    "paid": ("paid", "有偿 at the partner's price"),
}
UNITS: Mapping[str, tuple[str, str]] = {
    "meal_delivery": ("meals", "份 meals"),
    "elder_care_visit": ("visits", "次 visits"),
    "repair": ("calls", "次 repair calls"),
}
"""Unit of a kind's capacity (identifier, name); other kinds count `places`."""
ONE_OFF_SCHEDULES = 20
"""One-off schedules (dated slots without a template) listed per service at most."""


def derived_id(*parts: object) -> str:
    """A stable id for an HSDS object that has no row of its own."""
    return str(uuid.uuid5(_NS, "/".join(str(p) for p in parts)))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class Directory:
    """What one community's export is made of, read in one go from partners' store."""

    community: str
    now: datetime
    horizon_days: int
    timezone: str
    partners: Sequence[Mapping[str, Any]]
    services: Sequence[Mapping[str, Any]]
    templates: Sequence[Mapping[str, Any]] = ()
    capacity: Mapping[tuple[uuid.UUID, str], Mapping[str, Any]] = field(default_factory=dict)
    compounds: Mapping[tuple[uuid.UUID, str], Sequence[str]] = field(default_factory=dict)
    one_offs: Sequence[Mapping[str, Any]] = ()
    """Upcoming published slots without a template: partner_id, kind, window."""

    def partner(self, partner_id: uuid.UUID) -> Mapping[str, Any] | None:
        return next((p for p in self.partners if p["id"] == partner_id), None)

    def service_rows(self) -> list[Mapping[str, Any]]:
        known = {p["id"] for p in self.partners}
        return [s for s in self.services if s["partner_id"] in known]


def service_id(row: Mapping[str, Any]) -> str:
    return derived_id("service", row["partner_id"], row["need_kind"], row["name"])


def is_public(partner: Mapping[str, Any]) -> bool:
    """The partner agreed to publish its organisation's contacts (ADR 0051)."""
    return bool(partner["directory_public"])


# --- organisation, location, phones -------------------------------------------------------


def _phones(partner: Mapping[str, Any], **links: str) -> list[dict[str, Any]]:
    if not is_public(partner) or not partner["public_phone"]:
        return []
    key = "/".join(f"{k}={v}" for k, v in sorted(links.items()))
    return [
        {
            "id": derived_id("phone", partner["id"], key),
            "number": partner["public_phone"],
            "type": "voice",
            "description": "服务台 front desk",
            **links,
        }
    ]


def _address(partner: Mapping[str, Any], location_id: str) -> dict[str, Any] | None:
    address = _json(partner["address"])
    if not address:
        return None
    out = {
        "id": derived_id("address", partner["id"]),
        "location_id": location_id,
        "address_1": address["address_1"],
        "city": address["city"],
        "state_province": address["state_province"],
        "postal_code": address["postal_code"],
        "country": address.get("country") or "CN",
        "address_type": "physical",
    }
    for optional in ("address_2", "region"):
        if address.get(optional):
            out[optional] = address[optional]
    return out


def _hours(partner: Mapping[str, Any], location_id: str, offset: float) -> list[dict[str, Any]]:
    out = []
    for i, hours in enumerate(_json(partner["opening_hours"]) or []):
        out.append(
            {
                "id": derived_id("opening-hours", partner["id"], i),
                "location_id": location_id,
                "freq": "WEEKLY",
                "wkst": "MO",
                "byday": ",".join(_DAYS[d - 1] for d in sorted(hours["weekdays"])),
                "opens_at": hours["opens_at"],
                "closes_at": hours["closes_at"],
                "timezone": offset,
                "description": "开放时间 opening hours",
            }
        )
    return out


def utc_offset_hours(zone: str, at: datetime) -> float:
    """HSDS `schedule.timezone` is a number: the zone's UTC offset in hours at `at`."""
    offset = at.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)
    return offset.total_seconds() / 3600


def location(d: Directory, partner: Mapping[str, Any]) -> dict[str, Any] | None:
    """The partner's physical location, when public and it has an address or a point."""
    if not is_public(partner):
        return None
    if not _json(partner["address"]) and partner["latitude"] is None:
        return None
    location_id = derived_id("location", partner["id"])
    out: dict[str, Any] = {
        "id": location_id,
        "location_type": "physical",
        "organization_id": str(partner["id"]),
        "name": partner["name"],
        "addresses": [a for a in [_address(partner, location_id)] if a],
        "phones": _phones(partner, location_id=location_id),
        "schedules": _hours(partner, location_id, utc_offset_hours(d.timezone, d.now)),
    }
    if partner["latitude"] is not None:
        out["latitude"] = partner["latitude"]
        out["longitude"] = partner["longitude"]
    return out


def organization(d: Directory, partner: Mapping[str, Any], *, full: bool = True) -> dict[str, Any]:
    """HSDS `organization`; `full` nests its public phones and location."""
    out: dict[str, Any] = {
        "id": str(partner["id"]),
        "name": partner["name"],
        "description": partner["description"] or label_of_partner_kind(partner["kind"]),
    }
    if is_public(partner):
        if partner["public_email"]:
            out["email"] = partner["public_email"]
        if partner["website"]:
            out["website"] = partner["website"]
    if full:
        out["phones"] = _phones(partner, organization_id=str(partner["id"]))
        where = location(d, partner)
        out["locations"] = [where] if where else []
        out["contacts"] = _contacts(partner, organization_id=str(partner["id"]))
    return out


_PARTNER_KINDS = {
    "canteen": "社区食堂 community canteen",
    "hospital": "医院 hospital",
    "elder_care_centre": "养老服务中心 elder-care centre",
    "repair_firm": "维修公司 repair firm",
    "barber": "理发店 barber",
    "pharmacy": "药店 pharmacy",
    "social_work_org": "社工机构 social-work organisation",
    "property_manager": "物业 property manager",
    "other": "社区合伙人 community partner",
}


def label_of_partner_kind(kind: str) -> str:
    return _PARTNER_KINDS.get(kind, kind)


def _contacts(partner: Mapping[str, Any], **links: str) -> list[dict[str, Any]]:
    """The organisation's front desk as an HSDS contact (never a person; ADR 0051)."""
    if not is_public(partner) or not (partner["public_phone"] or partner["public_email"]):
        return []
    key = "/".join(f"{k}={v}" for k, v in sorted(links.items()))
    contact_id = derived_id("contact", partner["id"], key)
    out: dict[str, Any] = {
        "id": contact_id,
        "name": f"{partner['name']} 服务台",
        "title": "front desk",
        "phones": _phones(partner, contact_id=contact_id),
        **links,
    }
    if partner["public_email"]:
        out["email"] = partner["public_email"]
    return [out]


# --- services -------------------------------------------------------------------------------


def _local(at: datetime, zone: str) -> datetime:
    return at.astimezone(ZoneInfo(zone))


def _hhmm(value: time) -> str:
    return value.strftime("%H:%M")


def schedules(d: Directory, row: Mapping[str, Any], sid: str) -> list[dict[str, Any]]:
    """Weekly schedules from the kind's active slot templates, then one-off dated slots."""
    out: list[dict[str, Any]] = []
    for t in d.templates:
        if t["partner_id"] != row["partner_id"] or t["kind"] != row["need_kind"]:
            continue
        item: dict[str, Any] = {
            "id": str(t["id"]),
            "service_id": sid,
            "freq": "WEEKLY",
            "wkst": "MO",
            "byday": ",".join(_DAYS[w - 1] for w in sorted(t["weekdays"])),
            "opens_at": _hhmm(t["start_time"]),
            "closes_at": _hhmm(t["end_time"]),
            "timezone": utc_offset_hours(t["timezone"], d.now),
            "description": f"{t['capacity']} per day",
        }
        if t["valid_from"]:
            item["valid_from"] = t["valid_from"].isoformat()
            item["dtstart"] = t["valid_from"].isoformat()
        if t["valid_until"]:
            item["valid_to"] = t["valid_until"].isoformat()
        out.append(item)
    one_offs = [
        s
        for s in d.one_offs
        if s["partner_id"] == row["partner_id"] and s["kind"] == row["need_kind"]
    ]
    for s in one_offs[:ONE_OFF_SCHEDULES]:
        start = _local(s["window_earliest"], d.timezone)
        end = _local(s["window_latest"], d.timezone)
        day: date = start.date()
        out.append(
            {
                "id": derived_id("slot-schedule", s["id"]),
                "service_id": sid,
                "valid_from": day.isoformat(),
                "valid_to": day.isoformat(),
                "dtstart": day.isoformat(),
                "opens_at": start.strftime("%H:%M"),
                "closes_at": end.strftime("%H:%M") if end.date() == day else "23:59",
                "timezone": utc_offset_hours(d.timezone, s["window_earliest"]),
                "description": f"{s['capacity']} on this day",
            }
        )
    return out


def capacity(d: Directory, row: Mapping[str, Any], sid: str) -> dict[str, Any]:
    """Live capacity: places left against places published in the horizon."""
    kind = row["need_kind"]
    live = d.capacity.get((row["partner_id"], kind), {})
    identifier, name = UNITS.get(kind, ("places", "个 places"))
    return {
        "id": derived_id("capacity", sid),
        "service_id": sid,
        "unit": {
            "id": derived_id("unit", identifier),
            "name": name,
            "scheme": "linli",
            "identifier": identifier,
        },
        "available": int(live.get("available") or 0),
        "maximum": int(live.get("maximum") or 0),
        "description": f"places left in published capacity from now to {d.horizon_days} days "
        f"ahead ({int(live.get('slots') or 0)} slots)",
        "updated": d.now.isoformat(),
    }


def cost_option(row: Mapping[str, Any], sid: str) -> dict[str, Any]:
    option, text = _COST.get(row["cost_option"], (row["cost_option"], row["cost_option"]))
    out: dict[str, Any] = {
        "id": derived_id("cost", sid),
        "service_id": sid,
        "option": option,
        "amount_description": text,
    }
    if row["cost_option"] == "free":
        out["amount"] = 0
        out["currency"] = "CNY"
    return out


def service_areas(d: Directory, row: Mapping[str, Any], sid: str, **link: str) -> list[Any]:
    """The community of this export, and the compounds (小区) its capacity names there."""
    key = "/".join(f"{k}={v}" for k, v in sorted(link.items()))
    areas = [
        {
            "id": derived_id("area", sid, d.community, key),
            "name": d.community,
            "description": "社区 community",
            "extent_type": "linli:community",
            **(link if link else {"service_id": sid}),
        }
    ]
    for compound in d.compounds.get((row["partner_id"], row["need_kind"]), ()):
        areas.append(
            {
                "id": derived_id("area", sid, d.community, compound, key),
                "name": compound,
                "description": f"小区 compound in {d.community}",
                "extent_type": "linli:compound",
                **(link if link else {"service_id": sid}),
            }
        )
    return areas


def service_at_location(
    d: Directory, row: Mapping[str, Any], partner: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The service at the partner's public location (None without one)."""
    where = location(d, partner)
    if where is None:
        return None
    sid = service_id(row)
    sal_id = derived_id("service-at-location", sid)
    return {
        "id": sal_id,
        "service_id": sid,
        "location_id": where["id"],
        "location": where,
        "service_areas": service_areas(d, row, sid, service_at_location_id=sal_id),
        "phones": _phones(partner, service_at_location_id=sal_id),
    }


def service(d: Directory, row: Mapping[str, Any]) -> dict[str, Any]:
    """A full HSDS service document (service_with_definitions.json)."""
    partner = d.partner(row["partner_id"])
    assert partner is not None
    sid = service_id(row)
    at = service_at_location(d, row, partner)
    out: dict[str, Any] = {
        "id": sid,
        "organization_id": str(partner["id"]),
        "name": row["name"],
        "alternate_name": label(row["need_kind"], "zh-CN"),
        "description": row["description"] or label(row["need_kind"], "en"),
        "status": "active",
        "organization": organization(d, partner, full=False),
        "phones": _phones(partner, service_id=sid),
        "contacts": _contacts(partner, service_id=sid),
        "schedules": schedules(d, row, sid),
        "service_areas": service_areas(d, row, sid),
        "service_at_locations": [at] if at else [],
        "cost_options": [cost_option(row, sid)],
        "capacities": [capacity(d, row, sid)],
        "attributes": [],
    }
    if is_public(partner) and partner["public_email"]:
        out["email"] = partner["public_email"]
    if is_public(partner) and partner["website"]:
        out["url"] = partner["website"]
    return out


def services(d: Directory) -> list[dict[str, Any]]:
    return [service(d, row) for row in d.service_rows()]


def service_at_locations(d: Directory) -> list[dict[str, Any]]:
    out = []
    for row in d.service_rows():
        partner = d.partner(row["partner_id"])
        if partner is not None and (at := service_at_location(d, row, partner)) is not None:
            out.append(at)
    return out


def organizations(d: Directory) -> list[dict[str, Any]]:
    return [organization(d, partner) for partner in d.partners]


def page(items: Sequence[Any], number: int, per_page: int) -> dict[str, Any]:
    """HSDS's `Page`: total_items, total_pages, page_number, size, first/last, empty."""
    total = len(items)
    pages = max(1, -(-total // per_page))
    contents = list(items[(number - 1) * per_page : number * per_page])
    return {
        "total_items": total,
        "total_pages": pages,
        "page_number": number,
        "size": len(contents),
        "first_page": number == 1,
        "last_page": number >= pages,
        "empty": not contents,
        "contents": contents,
    }


def ordered(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(rows, key=lambda r: (str(r["partner_id"]), r["need_kind"], r["name"]))
