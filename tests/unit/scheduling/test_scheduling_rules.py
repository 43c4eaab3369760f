"""Scheduling's pure rules: queue order, slot choice, SLA clocks, policy."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from linli.contracts.types import NeedKind, PriorityGroup, Urgency
from linli.scheduling.rules import (
    DEFAULT_POLICY,
    ClockName,
    NeedFacts,
    NeedState,
    Policy,
    SlotFacts,
    can_move,
    choose_slot,
    clock_running,
    failure_escalation,
    no_candidate_reason,
    offer_timeout,
    order_queue,
    priority_rank,
    sla_clocks,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def need(
    *,
    urgency: Urgency = Urgency.ROUTINE,
    group: PriorityGroup = PriorityGroup.NONE,
    kind: NeedKind = NeedKind.MEAL_DELIVERY,
    at: float = 0,
    start: float = 60,
    minutes: float = 90,
    compound: str | None = "A",
) -> NeedFacts:
    return NeedFacts(
        id=uuid.uuid4(),
        kind=kind,
        urgency=urgency,
        priority_group=group,
        window_earliest=T0 + timedelta(minutes=start),
        window_latest=T0 + timedelta(minutes=start + minutes),
        compound=compound,
        submitted_at=T0 + timedelta(seconds=at),
    )


def slot(
    *,
    kind: NeedKind = NeedKind.MEAL_DELIVERY,
    start: float = 60,
    minutes: float = 90,
    capacity: int = 1,
    reserved: int = 0,
    compounds: tuple[str, ...] = (),
    provider: uuid.UUID | None = None,
) -> SlotFacts:
    return SlotFacts(
        id=uuid.uuid4(),
        kind=kind,
        provider_kind="partner",
        provider_id=provider or uuid.uuid4(),
        window_earliest=T0 + timedelta(minutes=start),
        window_latest=T0 + timedelta(minutes=start + minutes),
        capacity=capacity,
        reserved=reserved,
        compounds=compounds,
        published_at=T0,
    )


def test_queue_order_is_emergency_urgent_priority_groups_then_first_come() -> None:
    routine_none_early = need(at=0)
    routine_none_late = need(at=5)
    military = need(group=PriorityGroup.MILITARY_FAMILY, at=6)
    bereaved = need(group=PriorityGroup.BEREAVED_FAMILY, at=7)
    low_income = need(group=PriorityGroup.LOW_INCOME, at=8)
    disabled = need(group=PriorityGroup.DISABLED, at=9)
    alone = need(group=PriorityGroup.ELDERLY_LIVING_ALONE, at=10)
    urgent = need(urgency=Urgency.URGENT, at=11)
    urgent_alone = need(urgency=Urgency.URGENT, group=PriorityGroup.ELDERLY_LIVING_ALONE, at=12)
    emergency = need(urgency=Urgency.EMERGENCY, at=13)
    expected = [
        emergency,
        urgent_alone,
        urgent,
        alone,
        disabled,
        low_income,
        bereaved,
        military,
        routine_none_early,
        routine_none_late,
    ]
    assert order_queue(reversed(expected)) == expected


def test_rank_covers_every_urgency_and_group() -> None:
    ranks = {priority_rank(u, g) for u in Urgency for g in PriorityGroup}
    assert len(ranks) == len(Urgency) * len(PriorityGroup)
    assert priority_rank("emergency", "none") < priority_rank("urgent", "elderly_living_alone")


def test_earliest_starting_fitting_slot_is_chosen() -> None:
    n = need(start=60, minutes=120)
    late = slot(start=90)
    early = slot(start=30)
    assert choose_slot(n, [late, early]) == early


def test_slots_that_do_not_fit_are_never_chosen() -> None:
    n = need(start=60, minutes=60, compound="A")
    full = slot(start=0, capacity=2, reserved=2)
    other_kind = slot(start=1, kind=NeedKind.REPAIR)
    before = slot(start=0, minutes=60)  # ends exactly when the need starts
    other_compound = slot(start=2, compounds=("B",))
    declined_by = uuid.uuid4()
    declined = slot(start=3, provider=declined_by)
    fitting = slot(start=100, compounds=("A", "B"))
    candidates = [full, other_kind, before, other_compound, declined, fitting]
    excluded = frozenset({("partner", declined_by)})
    assert choose_slot(n, candidates, excluded=excluded) == fitting
    assert choose_slot(n, candidates[:-1], excluded=excluded) is None


def test_need_without_compound_takes_only_whole_community_slots() -> None:
    n = need(compound=None)
    assert choose_slot(n, [slot(compounds=("A",))]) is None
    whole = slot()
    assert choose_slot(n, [whole]) == whole


def test_past_slots_are_not_offered() -> None:
    n = need(start=0, minutes=600)
    over = slot(start=0, minutes=30)
    assert choose_slot(n, [over], now=T0 + timedelta(minutes=31)) is None
    assert choose_slot(n, [over], now=T0 + timedelta(minutes=29)) == over


def test_sla_clocks_per_kind() -> None:
    emergency = sla_clocks(need(kind=NeedKind.REPAIR, urgency=Urgency.EMERGENCY), DEFAULT_POLICY)
    assert [(c.name, c.deadline - c.start) for c in emergency] == [
        (ClockName.ACCEPT, timedelta(minutes=10)),
        (ClockName.COMPLETE, timedelta(minutes=30)),
    ]
    low_income = sla_clocks(
        need(kind=NeedKind.REPAIR, group=PriorityGroup.LOW_INCOME), DEFAULT_POLICY
    )
    assert [c.deadline - c.start for c in low_income] == [timedelta(hours=24)]
    routine = sla_clocks(need(kind=NeedKind.REPAIR), DEFAULT_POLICY)
    assert [c.deadline - c.start for c in routine] == [timedelta(hours=72)]
    meal = need(start=60, minutes=90)
    (clock,) = sla_clocks(meal, DEFAULT_POLICY)
    assert (clock.start, clock.deadline) == (meal.window_earliest, meal.window_latest)
    assert clock.at_risk_at(0.8) == meal.window_earliest + timedelta(minutes=72)


def test_time_scale_compresses_durations_but_not_windows() -> None:
    repair = sla_clocks(need(kind=NeedKind.REPAIR), DEFAULT_POLICY, time_scale=3600)
    assert repair[0].deadline - repair[0].start == timedelta(seconds=72)
    meal = need()
    assert sla_clocks(meal, DEFAULT_POLICY, time_scale=3600)[0].deadline == meal.window_latest
    assert offer_timeout("routine", DEFAULT_POLICY, 60) == timedelta(seconds=30)
    assert offer_timeout("emergency", DEFAULT_POLICY) == timedelta(minutes=3)
    assert offer_timeout("routine", DEFAULT_POLICY, 1e6) == timedelta(milliseconds=100)


def test_policy_overrides_apply_non_null_known_fields() -> None:
    policy = Policy().merged({"offer_timeout_s": 60, "routine_repair_s": None, "bogus": 1})
    assert policy.offer_timeout_s == 60
    assert policy.routine_repair_s == DEFAULT_POLICY.routine_repair_s


def test_escalation_reasons() -> None:
    assert failure_escalation("meal_delivery", "elderly_living_alone") == "welfare_check"
    assert failure_escalation("meal_delivery", "disabled") == "delivery_failed"
    assert failure_escalation("repair", "elderly_living_alone") == "delivery_failed"
    assert no_candidate_reason(False) == "no_capacity"
    assert no_candidate_reason(True) == "no_taker"


def test_clocks_stop_and_states_move_as_documented() -> None:
    assert clock_running("accept", "offered")
    assert not clock_running("accept", "assigned")
    assert clock_running("complete", "assigned")
    assert not clock_running("complete", "fulfilled")
    assert can_move(NeedState.ESCALATED, NeedState.OFFERED)
    assert not can_move(NeedState.FULFILLED, NeedState.WAITING)
    assert not can_move(NeedState.CANCELLED, NeedState.OFFERED)
