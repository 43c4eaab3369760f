"""Scheduling's business rules as plain functions (no I/O), so unit tests drive them.

Every state change of a need is checked against `TRANSITIONS` (`Scheduler._move`). The
store's matching SQL implements `slot_fits`, `choose_slot` and `queue_key` inside
PostgreSQL (so that a reservation is one conditional statement); a property test
(tests/integration/scheduling/test_matching_sql_equals_rules.py) proves the SQL and
these functions agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum

from linli.contracts.catalogue import KindSpec, SlaBasis, kind_spec
from linli.contracts.types import NeedKind, PriorityGroup, Urgency
from linli.servicekit.recurrence import WeeklyPeriod, within_weekly


class NeedState(StrEnum):
    """Scheduling's state of a need (README: the state machine)."""

    WAITING = "waiting"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    FULFILLED = "fulfilled"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"
    FAILED = "failed"


MATCHABLE = frozenset({NeedState.WAITING, NeedState.ESCALATED})
"""States in which a need is in the queue: an escalated need is still matched when
capacity appears (the operator may also act on it)."""

FINAL = frozenset({NeedState.FULFILLED, NeedState.CANCELLED, NeedState.FAILED})

TRANSITIONS: Mapping[NeedState, frozenset[NeedState]] = {
    NeedState.WAITING: frozenset({NeedState.OFFERED, NeedState.ESCALATED, NeedState.CANCELLED}),
    # escalated → escalated: a rematch of an escalated need that still finds nothing.
    NeedState.ESCALATED: frozenset({NeedState.OFFERED, NeedState.ESCALATED, NeedState.CANCELLED}),
    NeedState.OFFERED: frozenset(
        {
            NeedState.ASSIGNED,
            NeedState.WAITING,
            NeedState.ESCALATED,
            NeedState.OFFERED,
            NeedState.FULFILLED,
            NeedState.FAILED,
            NeedState.CANCELLED,
        }
    ),
    NeedState.ASSIGNED: frozenset(
        {
            NeedState.FULFILLED,
            NeedState.FAILED,
            NeedState.CANCELLED,
            NeedState.WAITING,
            NeedState.OFFERED,
            NeedState.ESCALATED,
        }
    ),
    NeedState.FULFILLED: frozenset(),
    NeedState.CANCELLED: frozenset(),
    NeedState.FAILED: frozenset(),
}
"""Allowed moves. offered/assigned → waiting/offered/escalated is a decline or an
expiry followed by the next match."""


def can_move(src: NeedState, dst: NeedState) -> bool:
    """Whether the state machine allows `src` → `dst` (every state change is checked)."""
    return dst in TRANSITIONS[src]


# --- priority -----------------------------------------------------------------

_URGENCY_RANK = {Urgency.EMERGENCY: 0, Urgency.URGENT: 1, Urgency.ROUTINE: 2}
_GROUP_RANK = {
    PriorityGroup.ELDERLY_LIVING_ALONE: 0,
    PriorityGroup.DISABLED: 1,
    PriorityGroup.LOW_INCOME: 2,
    PriorityGroup.BEREAVED_FAMILY: 3,
    PriorityGroup.MILITARY_FAMILY: 4,
    PriorityGroup.NONE: 5,
}


def priority_rank(urgency: Urgency | str, priority_group: PriorityGroup | str) -> int:
    """Smaller is served first: urgency first, then the priority group.

    Emergency before urgent before routine; within one urgency, elderly living alone,
    disabled, low income, bereaved family, military family, then everyone else.
    Ties are broken by submission time (`queue_key`).
    """
    return _URGENCY_RANK[Urgency(urgency)] * 10 + _GROUP_RANK[PriorityGroup(priority_group)]


@dataclass(frozen=True)
class NeedFacts:
    """What matching needs to know about a need."""

    id: uuid.UUID
    kind: NeedKind
    urgency: Urgency
    priority_group: PriorityGroup
    window_earliest: datetime
    window_latest: datetime
    compound: str | None
    submitted_at: datetime

    @property
    def rank(self) -> int:
        return priority_rank(self.urgency, self.priority_group)


@dataclass(frozen=True)
class SlotFacts:
    """What matching needs to know about a slot."""

    id: uuid.UUID
    kind: NeedKind
    provider_kind: str
    provider_id: uuid.UUID
    window_earliest: datetime
    window_latest: datetime
    capacity: int
    reserved: int
    compounds: tuple[str, ...]
    published_at: datetime
    provider_active: bool = True
    """False for a volunteer announced inactive (ADR 0042)."""
    weekly: tuple[WeeklyPeriod, ...] = ()
    """A volunteer's weekly availability; empty = no restriction."""
    timezone: str = "Asia/Shanghai"
    """Time zone of `weekly`."""

    @property
    def remaining(self) -> int:
        return self.capacity - self.reserved

    @property
    def provider(self) -> tuple[str, uuid.UUID]:
        return (self.provider_kind, self.provider_id)


def queue_key(need: NeedFacts) -> tuple[int, datetime, uuid.UUID]:
    """The order in which waiting needs get capacity."""
    return (need.rank, need.submitted_at, need.id)


def order_queue(needs: Iterable[NeedFacts]) -> list[NeedFacts]:
    return sorted(needs, key=queue_key)


def slot_fits(
    need: NeedFacts,
    slot: SlotFacts,
    *,
    excluded: frozenset[tuple[str, uuid.UUID]] = frozenset(),
    now: datetime | None = None,
) -> bool:
    """Same kind, overlapping windows, the need's compound served, capacity left, a
    provider who has not declined or let this need's offer expire, not yet over."""
    if slot.kind != need.kind or slot.remaining <= 0:
        return False
    if not (
        slot.window_earliest < need.window_latest and need.window_earliest < slot.window_latest
    ):
        return False
    # A slot without compounds serves the whole community; a need without a compound
    # only matches such slots.
    if slot.compounds and need.compound not in slot.compounds:
        return False
    if slot.provider in excluded:
        return False
    if not slot.provider_active:
        return False
    if slot.weekly and not within_weekly(
        slot.weekly,
        slot.timezone,
        max(slot.window_earliest, need.window_earliest),
        min(slot.window_latest, need.window_latest),
    ):
        return False
    return now is None or (slot.window_latest > now and need.window_latest > now)


def slot_order_key(slot: SlotFacts) -> tuple[datetime, datetime, uuid.UUID]:
    """Earliest-starting slot first; then the older publication; then the id."""
    return (slot.window_earliest, slot.published_at, slot.id)


def choose_slot(
    need: NeedFacts,
    slots: Iterable[SlotFacts],
    *,
    excluded: frozenset[tuple[str, uuid.UUID]] = frozenset(),
    now: datetime | None = None,
) -> SlotFacts | None:
    """The slot a need is offered on, or None when no candidate remains."""
    fitting = [s for s in slots if slot_fits(need, s, excluded=excluded, now=now)]
    return min(fitting, key=slot_order_key) if fitting else None


def no_candidate_reason(has_exclusions: bool) -> str:
    """`no_taker` once someone declined or let it expire, else `no_capacity`."""
    return "no_taker" if has_exclusions else "no_capacity"


def failure_escalation(
    kind: NeedKind | str, priority_group: PriorityGroup | str, entry: KindSpec | None = None
) -> str:
    """A failed attempt for a resident in one of the kind's welfare-check groups (a meal
    or medicine that did not reach someone who lives alone) is a welfare check at once."""
    entry = entry or kind_spec(kind)
    if PriorityGroup(priority_group) in entry.sla.welfare_check_groups:
        return "welfare_check"
    return "delivery_failed"


# --- policy and SLA clocks ----------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A community's offer timeouts and SLA durations, in SLA seconds.

    Durations are divided by the time scale (LINLI_TIME_SCALE) before use, so a demo
    can run a 24-hour promise in minutes. Window-based deadlines (meals, visits) are
    real timestamps and are never scaled.
    """

    offer_timeout_s: float = 30 * 60.0
    offer_timeout_emergency_s: float = 3 * 60.0
    emergency_accept_s: float = 10 * 60.0
    emergency_onsite_s: float = 30 * 60.0
    priority_repair_s: float = 24 * 3600.0
    routine_repair_s: float = 72 * 3600.0
    at_risk_fraction: float = 0.8

    def merged(self, overrides: Mapping[str, float | None]) -> Policy:
        """This policy with every non-null override applied."""
        known = {f.name for f in fields(self)}
        values = {k: float(v) for k, v in overrides.items() if k in known and v is not None}
        return replace(self, **values)


DEFAULT_POLICY = Policy()


def _scaled(seconds: float, time_scale: float) -> timedelta:
    return timedelta(seconds=seconds / time_scale)


def offer_timeout(urgency: Urgency | str, policy: Policy, time_scale: float = 1.0) -> timedelta:
    """How long a candidate has to answer an offer (never less than 100 ms)."""
    seconds = (
        policy.offer_timeout_emergency_s
        if Urgency(urgency) is Urgency.EMERGENCY
        else policy.offer_timeout_s
    )
    return max(_scaled(seconds, time_scale), timedelta(milliseconds=100))


class ClockName(StrEnum):
    """`accept`: someone must accept; `complete`: on site / delivered / visited."""

    ACCEPT = "accept"
    COMPLETE = "complete"


@dataclass(frozen=True)
class SlaClock:
    """One promise made for a need: from `start` to `deadline`."""

    name: ClockName
    start: datetime
    deadline: datetime
    label: str

    def at_risk_at(self, fraction: float) -> datetime:
        """When `fraction` of the time is used up."""
        return self.start + (self.deadline - self.start) * fraction


def sla_clocks(
    need: NeedFacts, policy: Policy, time_scale: float = 1.0, entry: KindSpec | None = None
) -> list[SlaClock]:
    """The SLA clocks a need starts when it arrives, from its kind's catalogue entry
    (ADR 0045) with the community's policy overrides.

    * Response promises (repairs): an emergency is accepted within 10 minutes and on
      site within 30; urgent, or a household in a priority group: 24 hours; routine:
      72 hours.
    * Window promises (meals, visits, goods, personal care): done by the end of the
      agreed window; the clock starts when the window opens.
    """
    entry = entry or kind_spec(need.kind)
    start = need.submitted_at
    response = entry.sla.response
    if entry.sla.basis is SlaBasis.RESPONSE and response is not None:
        overrides = asdict(policy)
        what = entry.sla.label
        if need.urgency is Urgency.EMERGENCY:
            accept_s = response.seconds("emergency_accept_s", overrides)
            onsite_s = response.seconds("emergency_onsite_s", overrides)
            return [
                SlaClock(
                    ClockName.ACCEPT,
                    start,
                    start + _scaled(accept_s, time_scale),
                    f"emergency {entry.kind} accepted",
                ),
                SlaClock(
                    ClockName.COMPLETE,
                    start,
                    start + _scaled(onsite_s, time_scale),
                    f"emergency {what}",
                ),
            ]
        if need.urgency is Urgency.URGENT or (
            entry.sla.priority_groups_shorten and need.priority_group is not PriorityGroup.NONE
        ):
            seconds, label = response.seconds("priority_s", overrides), f"priority {what}"
        else:
            seconds, label = response.seconds("routine_s", overrides), f"routine {what}"
        return [SlaClock(ClockName.COMPLETE, start, start + _scaled(seconds, time_scale), label)]
    clock_start = max(start, need.window_earliest)
    if clock_start >= need.window_latest:
        clock_start = start
    return [SlaClock(ClockName.COMPLETE, clock_start, need.window_latest, entry.sla.label)]


def clock_running(clock: ClockName | str, state: NeedState | str) -> bool:
    """Whether a clock still matters: acceptance stops at assigned, everything at a
    final state."""
    state = NeedState(state)
    if state in FINAL:
        return False
    return not (ClockName(clock) is ClockName.ACCEPT and state is NeedState.ASSIGNED)


# --- staff actions (ADR 0034) ---------------------------------------------------


DISPATCHABLE = frozenset({NeedState.WAITING, NeedState.ESCALATED, NeedState.OFFERED})
"""States in which an operator may dispatch a need by hand or re-offer it: nobody has
accepted it yet. An accepted need is the helper's; it is cancelled, not taken away."""


class EscalationState(StrEnum):
    """An escalation's life: open → acknowledged → assigned → resolved."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"


class EscalationAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    ASSIGN = "assign"
    RESOLVE = "resolve"


class EscalationConflict(Exception):
    """The action is not allowed in the escalation's state (answer 409)."""


def escalation_steps(
    state: EscalationState | str, action: EscalationAction, *, same_as_recorded: bool = False
) -> tuple[EscalationState, ...]:
    """The states an action passes through, in order; () when it changes nothing.

    * acknowledge: open → acknowledged; once acknowledged (or assigned) it already is.
    * assign: acknowledges an open escalation on the way (the same actor and time);
      assigning an assigned one again to someone else reassigns it; to the same person
      changes nothing.
    * resolve: acknowledges an open one on the way; resolving a resolved one with the same
      outcome and note changes nothing, with another is a conflict.
    * Nothing follows resolved.

    `same_as_recorded`: the request names what is recorded already (assignee, outcome).
    """
    state = EscalationState(state)
    if state is EscalationState.RESOLVED:
        if action is EscalationAction.RESOLVE and same_as_recorded:
            return ()
        raise EscalationConflict(f"the escalation is resolved; it cannot be {_verb(action)}")
    opening: tuple[EscalationState, ...] = (
        (EscalationState.ACKNOWLEDGED,) if state is EscalationState.OPEN else ()
    )
    if action is EscalationAction.ACKNOWLEDGE:
        return opening
    if action is EscalationAction.ASSIGN:
        if state is EscalationState.ASSIGNED and same_as_recorded:
            return ()
        return (*opening, EscalationState.ASSIGNED)
    return (*opening, EscalationState.RESOLVED)


def _verb(action: EscalationAction) -> str:
    return {"acknowledge": "acknowledged", "assign": "assigned", "resolve": "resolved again"}[
        action.value
    ]
