"""The "15-minute life circle" guide (十五分钟生活圈): the public part of the directory that
street offices print and hand to every household. Only partners that made their contacts
public; only the organisation's own channels (no staff member, no volunteer)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from linli.contracts.catalogue import label

from . import mapping

_WEEKDAYS = {
    1: ("一", "Mon"),
    2: ("二", "Tue"),
    3: ("三", "Wed"),
    4: ("四", "Thu"),
    5: ("五", "Fri"),
    6: ("六", "Sat"),
    7: ("日", "Sun"),
}
_COST = {"free": "免费 free", "low_cost": "低偿 low cost", "paid": "有偿 paid"}


class GuideFormat(StrEnum):
    JSON = "json"
    HTML = "html"


class GuideHours(BaseModel):
    weekdays: list[int] = Field(description="ISO days of week, 1 = Monday.")
    opens_at: str = Field(description="Local opening time, HH:MM.")
    closes_at: str = Field(description="Local closing time, HH:MM.")


class GuideService(BaseModel):
    name: str = Field(description="The service as the partner names it.")
    kind: str = Field(description="Kind of need it serves.")
    label_zh: str = Field(description="Kind in Chinese.")
    label_en: str = Field(description="Kind in English.")
    cost_option: str = Field(description="free, low_cost or paid.")


class GuideEntry(BaseModel):
    """One organisation with its public channels."""

    organization: str = Field(description="Organisation name.")
    kind: str = Field(description="What kind of organisation it is.")
    address: str | None = Field(description="Street address, one line.")
    phone: str | None = Field(description="Public phone (front desk).")
    email: str | None = Field(description="Public e-mail address.")
    website: str | None = Field(description="Public website.")
    latitude: float | None = Field(description="WGS 84 latitude.")
    longitude: float | None = Field(description="WGS 84 longitude.")
    opening_hours: list[GuideHours] = Field(description="Weekly opening hours, local time.")
    services: list[GuideService] = Field(description="What it offers residents.")


class GuideView(BaseModel):
    community: str = Field(description="Community slug.")
    generated_at: datetime = Field(description="When this guide was read.")
    entries: list[GuideEntry] = Field(description="Organisations, by name.")


def _address(value: Any) -> str | None:
    address = json.loads(value) if isinstance(value, str) else value
    if not address:
        return None
    parts = [
        address.get("state_province"),
        address.get("city"),
        address.get("region"),
        address.get("address_1"),
        address.get("address_2"),
    ]
    line = " ".join(p for p in parts if p)
    return f"{line} ({address['postal_code']})" if address.get("postal_code") else line


def _entry(d: mapping.Directory, partner: Mapping[str, Any]) -> GuideEntry:
    hours = partner["opening_hours"]
    hours = json.loads(hours) if isinstance(hours, str) else hours
    return GuideEntry(
        organization=partner["name"],
        kind=mapping.label_of_partner_kind(partner["kind"]),
        address=_address(partner["address"]),
        phone=partner["public_phone"],
        email=partner["public_email"],
        website=partner["website"],
        latitude=partner["latitude"],
        longitude=partner["longitude"],
        opening_hours=[GuideHours.model_validate(h) for h in hours or []],
        services=[
            GuideService(
                name=s["name"],
                kind=s["need_kind"],
                label_zh=label(s["need_kind"], "zh-CN"),
                label_en=label(s["need_kind"], "en"),
                cost_option=s["cost_option"],
            )
            for s in d.service_rows()
            if s["partner_id"] == partner["id"]
        ],
    )


def build(d: mapping.Directory) -> GuideView:
    """The guide of the directory's public partners (the caller loads only those)."""
    entries = [_entry(d, p) for p in d.partners if mapping.is_public(p)]
    return GuideView(
        community=d.community,
        generated_at=d.now,
        entries=sorted(entries, key=lambda e: e.organization),
    )


def _days(days: list[int]) -> str:
    return (
        "、".join(_WEEKDAYS[d][0] for d in sorted(days))
        + " / "
        + ", ".join(_WEEKDAYS[d][1] for d in sorted(days))
    )


def page(view: GuideView) -> str:
    """A printable A4 page, zh-CN with English beside it."""
    e = html.escape
    blocks = []
    for entry in view.entries:
        hours = "<br>".join(
            f"周{e(_days(h.weekdays))} {e(h.opens_at)}-{e(h.closes_at)}"
            for h in entry.opening_hours
        )
        services = "<br>".join(
            f"{e(s.label_zh)} {e(s.label_en)}: {e(s.name)} "
            f"({e(_COST.get(s.cost_option, s.cost_option))})"
            for s in entry.services
        )
        rows = [
            ("地址 Address", e(entry.address or "—")),
            ("电话 Phone", e(entry.phone or "—")),
            ("开放时间 Hours", hours or "—"),
            ("服务 Services", services or "—"),
        ]
        if entry.website:
            rows.append(("网站 Website", e(entry.website)))
        cells = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        blocks.append(
            f"<section><h2>{e(entry.organization)} <small>{e(entry.kind)}</small></h2>"
            f"<table>{cells}</table></section>"
        )
    body = "".join(blocks) or "<p>暂无公开的服务 No public services listed yet.</p>"
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>十五分钟生活圈 {e(view.community)}</title><style>"
        "@page{size:A4;margin:15mm}body{font-family:sans-serif;font-size:11pt}"
        "section{break-inside:avoid;border-bottom:1px solid #999;padding:4pt 0}"
        "th{text-align:left;width:28%;vertical-align:top}h2{font-size:13pt;margin:4pt 0}"
        "</style></head><body>"
        f"<h1>十五分钟生活圈 15-minute life circle</h1><p>{e(view.community)} · "
        f"{view.generated_at:%Y-%m-%d}</p>{body}</body></html>"
    )
