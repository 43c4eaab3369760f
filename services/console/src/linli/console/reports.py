"""A month's report from the read model's rows (pure): needs by status and priority
group, SLA met per tier, failed deliveries, escalations with their outcomes, what each
partner delivered, volunteers' hours and points (ADR 0038).

Aggregates only: no resident, no volunteer id, no free text. Partners (organisations)
appear by id.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

STATUSES = ("submitted", "accepted", "escalated", "failed", "cancelled", "fulfilled")
"""A need's status in a report, from the furthest fact known (see `status_of`)."""

TIERS = ("emergency_accepted", "emergency_on_site", "repair_24h", "meal_in_window")

CSV_HEADER = ("section", "kind", "item", "detail", "metric", "value")


@dataclass(frozen=True)
class Promises:
    """The SLA promises a report measures against (scheduling's defaults, ADR 0038)."""

    emergency_accept: timedelta = timedelta(minutes=10)
    emergency_on_site: timedelta = timedelta(minutes=30)
    priority_repair: timedelta = timedelta(hours=24)


def month_bounds(month: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The month `YYYY-MM` in `zone`, as [start, end). ValueError when malformed."""
    match = MONTH.match(month)
    if not match:
        raise ValueError("month must be YYYY-MM")
    year, number = int(match.group(1)), int(match.group(2))
    if year < 2000 or year > 2200:
        raise ValueError("month out of range")
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start, end


def status_of(need: Any) -> str:
    """Fulfilled, cancelled, failed, escalated, accepted or submitted: the first that holds."""
    if need["fulfilled_at"] is not None:
        return "fulfilled"
    if need["cancelled_at"] is not None:
        return "cancelled"
    if need["failed_at"] is not None:
        return "failed"
    if need["escalated_at"] is not None:
        return "escalated"
    if need["accepted_at"] is not None:
        return "accepted"
    return "submitted"


def _tiers(need: Any, promises: Promises) -> list[tuple[str, datetime | None, bool]]:
    """(tier, deadline, met-or-None-if-unmeasured) of the promises a need was made."""
    submitted: datetime = need["submitted_at"]
    found: list[tuple[str, datetime | None, bool]] = []

    def measure(tier: str, at: datetime | None, deadline: datetime) -> None:
        found.append((tier, deadline if at is None else None, at is not None and at <= deadline))

    if need["urgency"] == "emergency":
        measure("emergency_accepted", need["accepted_at"], submitted + promises.emergency_accept)
        measure("emergency_on_site", need["arrived_at"], submitted + promises.emergency_on_site)
    elif need["kind"] == "repair" and (
        need["urgency"] == "urgent" or need["priority_group"] not in (None, "none")
    ):
        measure("repair_24h", need["arrived_at"], submitted + promises.priority_repair)
    if need["kind"] == "meal_delivery" and need["window_latest"] is not None:
        at = need["arrived_at"]
        in_window = at is not None and need["window_earliest"] <= at <= need["window_latest"]
        found.append(("meal_in_window", need["window_latest"] if at is None else None, in_window))
    return found


def _sla(needs: Iterable[Any], promises: Promises, now: datetime) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], Counter[str]] = {}
    for need in needs:
        status = status_of(need)
        for tier, deadline, met in _tiers(need, promises):
            if deadline is None:  # measured
                outcome = "met" if met else "missed"
            elif status == "cancelled":
                continue  # withdrawn before it was measured: no promise left to keep
            elif status in ("fulfilled", "failed") or now > deadline:
                outcome = "missed"
            else:
                outcome = "pending"
            counts.setdefault((tier, need["kind"]), Counter())[outcome] += 1
    rows = []
    for (tier, kind), counter in sorted(
        counts.items(), key=lambda i: (TIERS.index(i[0][0]), i[0][1])
    ):
        rows.append(
            {
                "tier": tier,
                "kind": kind,
                "eligible": sum(counter.values()),
                "met": counter["met"],
                "missed": counter["missed"],
                "pending": counter["pending"],
            }
        )
    return rows


def _counted(counter: Counter[tuple[str, ...]], names: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {**dict(zip(names, key, strict=True)), "count": n} for key, n in sorted(counter.items())
    ]


def build(
    rows: Mapping[str, Sequence[Any]],
    *,
    month: str,
    scope: Mapping[str, str],
    communities: Sequence[str],
    timezone: str,
    now: datetime,
    meal_minutes: int,
    promises: Promises | None = None,
) -> dict[str, Any]:
    """The report for one month of `communities` (their sum, for a street office)."""
    promises = promises or Promises()
    needs = rows["needs"]
    by_status: Counter[tuple[str, ...]] = Counter(
        (n["kind"], status_of(n), n["priority_group"]) for n in needs
    )
    failures: Counter[tuple[str, ...]] = Counter(
        (f["kind"] or "unknown", f["reason"], f["party_kind"]) for f in rows["failures"]
    )
    escalations: Counter[tuple[str, ...]] = Counter(
        (e["kind"] or "unknown", e["reason"], e["outcome"] or "open") for e in rows["escalations"]
    )
    delivered: Counter[tuple[str, str, str | None]] = Counter(
        (str(w["party_id"]), w["kind"], w["cost_option"])
        for w in rows["work"]
        if w["party_kind"] == "partner"
    )
    volunteer_work = [w for w in rows["work"] if w["party_kind"] == "volunteer"]
    measured = sum(
        (w["ended_at"] - w["started_at"]).total_seconds()
        for w in volunteer_work
        if w["started_at"] is not None and w["ended_at"] >= w["started_at"]
    )
    meals = sum(1 for w in volunteer_work if w["started_at"] is None)
    points = rows["points"]
    return {
        "activities": activity_contributions(rows.get("attendance", ())),
        "month": month,
        "timezone": timezone,
        "scope": dict(scope),
        "communities": sorted(communities),
        "needs": _counted(by_status, ("kind", "status", "priority_group")),
        "sla": _sla(needs, promises, now),
        "failed_deliveries": _counted(failures, ("kind", "reason", "party_kind")),
        "escalations": _counted(escalations, ("kind", "reason", "outcome")),
        "partners": [
            {"partner_id": partner, "kind": kind, "delivered": n, "cost_option": cost}
            for (partner, kind, cost), n in sorted(
                delivered.items(), key=lambda i: (i[0][0], i[0][1], i[0][2] or "")
            )
        ],
        "volunteers": {
            "active": len({w["party_id"] for w in volunteer_work}),
            "minutes_measured": int(measured // 60),
            "meal_deliveries": meals,
            "minutes_approximated": meals * meal_minutes,
            "points_awarded": sum(p["points"] for p in points if p["points"] > 0),
            "points_redeemed": -sum(p["points"] for p in points if p["points"] < 0),
        },
    }


def activity_contributions(attendance: Iterable[Any]) -> list[dict[str, Any]]:
    """Per partner, at group activities (ADR 0046): the activities, stalls and sessions
    where it served at least one resident recorded as attended, and how many attended."""
    served: dict[str, dict[str, set[Any]]] = {}
    attended: Counter[str] = Counter()
    for row in attendance:
        if not row["attended"]:
            continue
        partner = str(row["partner_id"])
        sets = served.setdefault(partner, {"activities": set(), "stalls": set(), "sessions": set()})
        sets["activities"].add(row["activity_id"])
        sets["stalls"].add(row["stall_id"])
        sets["sessions"].add(row["session_id"])
        attended[partner] += 1
    return [
        {
            "partner_id": partner,
            "activities": len(sets["activities"]),
            "stalls": len(sets["stalls"]),
            "sessions": len(sets["sessions"]),
            "residents_attended": attended[partner],
        }
        for partner, sets in sorted(served.items())
    ]


def flatten(report: Mapping[str, Any]) -> list[tuple[str, str, str, str, str, int]]:
    """Every figure of a report as one CSV row: (section, kind, item, detail, metric, value)."""
    out: list[tuple[str, str, str, str, str, int]] = []
    for n in report["needs"]:
        out.append(("needs", n["kind"], n["status"], n["priority_group"], "count", n["count"]))
    for s in report["sla"]:
        for metric in ("eligible", "met", "missed", "pending"):
            out.append(("sla", s["kind"], s["tier"], "", metric, s[metric]))
    for f in report["failed_deliveries"]:
        out.append(
            ("failed_deliveries", f["kind"], f["reason"], f["party_kind"], "count", f["count"])
        )
    for e in report["escalations"]:
        out.append(("escalations", e["kind"], e["reason"], e["outcome"], "count", e["count"]))
    for p in report["partners"]:
        detail = p["cost_option"] or "unknown"
        out.append(("partners", p["kind"], p["partner_id"], detail, "delivered", p["delivered"]))
    for a in report.get("activities", []):
        for metric in ("activities", "stalls", "sessions", "residents_attended"):
            out.append(("activities", "", a["partner_id"], "", metric, a[metric]))
    for metric, value in report["volunteers"].items():
        out.append(("volunteers", "", "", "", metric, value))
    return out


def to_csv(report: Mapping[str, Any]) -> bytes:
    """UTF-8 with a byte-order mark (so Excel reads Chinese correctly), CRLF rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(flatten(report))
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")
