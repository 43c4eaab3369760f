"""What the pages show, built from the services' answers (pure: no I/O, unit-testable).

A need row is built in one place (`need_row`) and rendered in one place
(`templates/_need_row.html`). Rows carry no personal data: no names, phones, addresses
or free text; the need's own page shows those to community operators only.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from linli.contracts.events import EscalationOutcome

OPEN_STATES = ("escalated", "submitted", "waiting", "offered", "assigned")
"""Open needs by state, in the order the page shows them (escalations first)."""

SCHEDULING_EVENTS = (
    "linli.slot.reserved.",
    "linli.slot.released.",
    "linli.assignment.",
    "linli.need.escalated.",
    "linli.need.fulfilled.",
)
"""Types scheduling emits: when one is on the stream, scheduling's answers include it."""


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class NeedRow:
    """One open need in a list (no personal data)."""

    id: str
    kind: str
    urgency: str
    state: str
    compound: str | None
    earliest: datetime | None
    latest: datetime | None
    sla_deadline: datetime | None
    attempts: int
    escalation_reason: str | None
    escalated_at: datetime | None
    escalation_id: str | None = None
    """The latest escalation still to be resolved (the live page's action forms)."""
    escalation_state: str | None = None

    @property
    def short_id(self) -> str:
        return self.id[:8]


def need_row(scheduled: dict[str, Any] | None, submitted: dict[str, Any] | None) -> NeedRow:
    """A row from scheduling's view of the need, or intake's when scheduling has not
    seen it yet (state `submitted`)."""
    if scheduled is not None:
        clocks = [parse_time(c.get("deadline") or c.get("due_at")) for c in scheduled["sla_clocks"]]
        deadlines = [c for c in clocks if c is not None]
        escalations = scheduled.get("escalations") or []
        last = escalations[-1] if escalations else None
        pending = [e for e in escalations if e.get("state", "open") != "resolved" and "id" in e]
        acting = pending[-1] if pending else None
        return NeedRow(
            id=str(scheduled["id"]),
            kind=scheduled["kind"],
            urgency=scheduled["urgency"],
            state=scheduled["state"],
            compound=scheduled.get("compound"),
            earliest=parse_time(scheduled["window"].get("earliest")),
            latest=parse_time(scheduled["window"].get("latest")),
            sla_deadline=min(deadlines) if deadlines else None,
            attempts=int(scheduled.get("attempts") or 0),
            escalation_reason=last["reason"] if last else None,
            escalated_at=parse_time(last["escalated_at"]) if last else None,
            escalation_id=str(acting["id"]) if acting else None,
            escalation_state=acting["state"] if acting else None,
        )
    assert submitted is not None
    return NeedRow(
        id=str(submitted["id"]),
        kind=submitted["kind"],
        urgency=submitted["urgency"],
        state="submitted",
        compound=None,
        earliest=parse_time(submitted["window"].get("earliest")),
        latest=parse_time(submitted["window"].get("latest")),
        sla_deadline=None,
        attempts=0,
        escalation_reason=None,
        escalated_at=None,
    )


@dataclass(frozen=True)
class MealRound:
    compound: str
    delivered: int = 0
    failed: int = 0
    pending: int = 0


@dataclass(frozen=True)
class Load:
    """Capacity and use of one provider's open slots (or all volunteers together)."""

    name: str
    kind: str
    capacity: int
    reserved: int

    @property
    def percent(self) -> int:
        return round(100 * self.reserved / self.capacity) if self.capacity else 0


@dataclass
class CommunityView:
    community: str
    needs: dict[str, list[NeedRow]] = field(default_factory=dict)
    escalations: list[NeedRow] = field(default_factory=list)
    meals: list[MealRound] = field(default_factory=list)
    load: list[Load] = field(default_factory=list)

    @property
    def open_count(self) -> int:
        return sum(len(rows) for rows in self.needs.values())


def open_needs(
    scheduled: list[dict[str, Any]], submitted: list[dict[str, Any]]
) -> dict[str, list[NeedRow]]:
    """Open needs by state (scheduling's state wins; intake's `submitted` ones that
    scheduling has not seen yet come in as `submitted`)."""
    known = {str(n["id"]) for n in scheduled}
    rows = [need_row(n, None) for n in scheduled]
    rows += [need_row(None, n) for n in submitted if str(n["id"]) not in known]
    by_state: dict[str, list[NeedRow]] = {state: [] for state in OPEN_STATES}
    for row in rows:
        by_state.setdefault(row.state, []).append(row)
    return by_state


def meal_round(
    open_: list[dict[str, Any]],
    fulfilled: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    today: date,
    zone: ZoneInfo,
) -> list[MealRound]:
    """Today's meals per compound: delivered, failed, still pending."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)

    def add(needs: list[dict[str, Any]], outcome: str) -> None:
        for n in needs:
            earliest = parse_time(n["window"].get("earliest"))
            if n["kind"] != "meal_delivery" or earliest is None:
                continue
            if earliest.astimezone(zone).date() != today:
                continue
            counts[n.get("compound") or ""][outcome] += 1

    add(open_, "pending")
    add(fulfilled, "delivered")
    add(failed, "failed")
    return [
        MealRound(compound, c["delivered"], c["failed"], c["pending"])
        for compound, c in sorted(counts.items())
    ]


def provider_load(
    slots: list[dict[str, Any]],
    partners: list[dict[str, Any]],
    volunteers: list[dict[str, Any]],
    now: datetime,
    *,
    volunteer_names: bool,
    volunteers_label: str,
) -> list[Load]:
    """Open slots' capacity and reservations per partner, and per volunteer (or all
    volunteers as one row when their names are not to be shown)."""
    names = {str(p["id"]): p["name"] for p in partners}
    if volunteer_names:
        names.update({str(v["id"]): v["display_name"] for v in volunteers})
    totals: dict[tuple[str, str], list[int]] = {}
    for slot in slots:
        latest = parse_time(slot["window"].get("latest"))
        if latest is not None and latest < now:
            continue
        kind = slot["provider"]["kind"]
        pid = str(slot["provider"]["id"])
        key = (kind, pid) if kind == "partner" or volunteer_names else (kind, "")
        total = totals.setdefault(key, [0, 0])
        total[0] += int(slot["capacity"])
        total[1] += int(slot["reserved"])
    loads = []
    for (kind, pid), (capacity, reserved) in totals.items():
        name = names.get(pid, pid[:8]) if pid else volunteers_label
        loads.append(Load(name, kind, capacity, reserved))
    return sorted(loads, key=lambda load: (load.kind, -load.percent, load.name))


def event_need_id(event: dict[str, Any]) -> str | None:
    data = event.get("data")
    if isinstance(data, dict) and data.get("need_id"):
        return str(data["need_id"])
    return None


def short_type(ce_type: str) -> str:
    """`need.submitted` for `linli.need.submitted.v1`."""
    return ce_type.removeprefix("linli.").rsplit(".v", 1)[0]


def from_scheduling(ce_type: str) -> bool:
    return ce_type.startswith(SCHEDULING_EVENTS)


OUTCOMES = tuple(o.value for o in EscalationOutcome)
"""Scheduling's outcomes (the contract's `EscalationOutcome`), as the resolve form offers them."""

IMPORT_KINDS = {
    "residents": "intake",
    "partners": "partners",
    "volunteers": "partners",
    "capacity": "partners",
}
"""CSV import kinds and the service that owns each (ADR 0035)."""


@dataclass(frozen=True)
class Problem:
    """One reason a service gave for refusing an action, ready for the page: a
    catalogue key when the code is known (`known`), else the service's sentence."""

    field: str
    code: str
    message: str


def problems(
    status: int, error: str, reasons: list[dict[str, str]], sentence: str
) -> list[Problem]:
    """The reasons of a refusal (409/413/415/422), one per field, never input values."""
    if reasons:
        return [
            Problem(str(r.get("field", "")), str(r.get("code", "")), str(r.get("message", "")))
            for r in reasons
        ]
    return [Problem("", error or str(status), sentence)]
