"""A canteen's production list (ADR 0044): how many meals to cook for a day, with their
diets, per window and compound, from the meal offers it holds (prepare legs, and meals it
serves whole).

Counts only: no resident, no need id, no address. The aggregation is a plain function
(`production_list`), so a unit test drives it without a database.
"""

from __future__ import annotations

import html
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from linli.contracts.types import LocalDate, Role
from linli.servicekit.auth import CurrentPrincipal
from linli.servicekit.http import error_response

from . import store
from .api import OPERATORS, Community

router = APIRouter(prefix="/v1/communities/{community}", tags=["partners"])

COUNTED = frozenset({"accepted", "completed"})
"""Offers the canteen took: they are cooked. Open offers are shown apart (`pending`)."""


class DietCount(BaseModel):
    diet: str = Field(description="A dietary need as the requester gave it (e.g. 'low salt').")
    portions: int = Field(description="Portions with this dietary need.")


class ProductionLine(BaseModel):
    window: dict[str, datetime] = Field(description="The meal window: earliest and latest.")
    compound: str | None = Field(description="Compound the meals go to; null: not given.")
    meals: int = Field(description="Meals the canteen accepted (or prepared) for this line.")
    portions: int = Field(description="Portions to cook (a meal may have several).")
    diets: list[DietCount] = Field(description="Portions per dietary need, most first.")
    pending: int = Field(description="Offers not answered yet (not counted in meals).")


class ProductionList(BaseModel):
    partner_id: uuid.UUID
    community: str
    date: LocalDate = Field(description="The day, in the production list's time zone.")
    timezone: str = Field(description="Time zone the day is read in (LINLI_PRODUCTION_TIMEZONE).")
    meals: int = Field(description="Meals in total (accepted or prepared).")
    portions: int = Field(description="Portions in total.")
    diets: list[DietCount] = Field(description="Portions per dietary need over the day.")
    pending: int = Field(description="Open offers for the day, not yet answered.")
    lines: list[ProductionLine] = Field(description="Per window and compound, in time order.")


@dataclass
class _Line:
    meals: int = 0
    portions: int = 0
    pending: int = 0
    diets: Counter[str] = field(default_factory=Counter)


def _diets(counter: Counter[str]) -> list[DietCount]:
    return [
        DietCount(diet=d, portions=n)
        for d, n in sorted(counter.items(), key=lambda x: (-x[1], x[0]))
    ]


def production_list(
    offers: Iterable[Mapping[str, Any]] | Iterable[Any],
    *,
    partner_id: uuid.UUID,
    community: str,
    day: date,
    timezone: str,
) -> ProductionList:
    """Count the day's meal offers per (window, compound): meals, portions, diets.

    Accepted and completed offers are cooked; open ones are `pending`; declined, lapsed,
    withdrawn and failed ones are not on the list.
    """
    lines: dict[tuple[datetime, datetime, str | None], _Line] = {}
    for offer in offers:
        status = offer["status"]
        if status not in COUNTED and status != "open":
            continue
        key = (offer["window_earliest"], offer["window_latest"], offer["compound"])
        line = lines.setdefault(key, _Line())
        if status == "open":
            line.pending += 1
            continue
        details = offer["details"]
        details = json.loads(details) if isinstance(details, str) else dict(details)
        portions = int(details.get("portions", 1))
        line.meals += 1
        line.portions += portions
        for diet in details.get("diet_needs", []):
            line.diets[str(diet)] += portions
    views = [
        ProductionLine(
            window={"earliest": k[0], "latest": k[1]},
            compound=k[2],
            meals=v.meals,
            portions=v.portions,
            diets=_diets(v.diets),
            pending=v.pending,
        )
        for k, v in sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or ""))
    ]
    total: Counter[str] = Counter()
    for v in lines.values():
        total.update(v.diets)
    return ProductionList(
        partner_id=partner_id,
        community=community,
        date=day,
        timezone=timezone,
        meals=sum(v.meals for v in lines.values()),
        portions=sum(v.portions for v in lines.values()),
        diets=_diets(total),
        pending=sum(v.pending for v in lines.values()),
        lines=views,
    )


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) of a calendar day in a time zone."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time(0), tzinfo=zone)
    return start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)


@router.get(
    "/partners/{partner_id}/production-list",
    response_model=ProductionList,
    summary="A canteen's production list for a day: meals, portions and diets per window "
    "and compound (JSON; `Accept: text/html` or `?format=html` for a printable page)",
    responses={200: {"content": {"text/html": {}}}},
)
async def get_production_list(
    request: Request,
    community: Community,
    partner_id: uuid.UUID,
    principal: CurrentPrincipal,
    day: Annotated[
        LocalDate | None,
        Query(alias="date", description="YYYY-MM-DD; default tomorrow in the list's time zone"),
    ] = None,
    format_: Annotated[Literal["json", "html"] | None, Query(alias="format")] = None,
) -> Any:
    principal.require_community(community)
    # The canteen itself and the community's operators; counts only, yet a street office
    # reads the console's reports instead (ADR 0044), and volunteers have no business here.
    principal.require_role(*OPERATORS, Role.PARTNER)
    if principal.role is Role.PARTNER and principal.subject_id != partner_id:
        return error_response(404, "not_found", "partner not found")
    timezone = request.app.state.production_timezone
    if day is None:
        now = request.app.state.clock.now()
        day = now.astimezone(ZoneInfo(timezone)).date() + timedelta(days=1)
    start, end = day_bounds(day, timezone)
    async with request.app.state.runtime.pool.acquire() as conn:
        if await store.get_partner(conn, community, partner_id) is None:
            return error_response(404, "not_found", "partner not found")
        rows = await store.production_offers(conn, community, partner_id, start, end)
    view = production_list(
        rows, partner_id=partner_id, community=community, day=day, timezone=timezone
    )
    wants_html = format_ == "html" or (
        format_ is None and "text/html" in request.headers.get("accept", "")
    )
    if wants_html:
        return HTMLResponse(production_page(view), headers={"Cache-Control": "no-store"})
    return view


def production_page(view: ProductionList) -> str:
    """The printable page: zh-CN labels first, English beside them."""
    e = html.escape
    zone = ZoneInfo(view.timezone)

    def hhmm(t: datetime) -> str:
        return t.astimezone(zone).strftime("%H:%M")

    def diets(items: list[DietCount]) -> str:
        return "、".join(f"{e(d.diet)}: {d.portions}" for d in items) or "—"

    rows = "\n".join(
        f"<tr><td>{hhmm(line.window['earliest'])} - {hhmm(line.window['latest'])}</td>"
        f"<td>{e(line.compound or '—')}</td><td class='n'>{line.meals}</td>"
        f"<td class='n'>{line.portions}</td><td>{diets(line.diets)}</td>"
        f"<td class='n'>{line.pending}</td></tr>"
        for line in view.lines
    )
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>备餐清单 Production list {e(view.date.isoformat())}</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border: 1px solid #333; padding: .4rem .6rem; text-align: left; }}
td.n {{ text-align: right; }}
@media print {{ body {{ margin: 0; }} }}
</style></head>
<body>
<h1>备餐清单 <small>Production list</small></h1>
<p>日期 Date: {e(view.date.isoformat())} ({e(view.timezone)})</p>
<p>餐数 Meals: <strong>{view.meals}</strong> · 份数 Portions: <strong>{view.portions}</strong>
 · 待确认 Pending offers: {view.pending}</p>
<p>饮食要求 Diets: {diets(view.diets)}</p>
<table>
<thead><tr><th>时段 Window</th><th>小区 Compound</th><th>餐数 Meals</th><th>份数 Portions</th>
<th>饮食要求 Diets</th><th>待确认 Pending</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


__all__ = ["day_bounds", "production_list", "production_page", "router"]
