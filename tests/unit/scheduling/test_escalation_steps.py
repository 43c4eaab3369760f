"""The escalation state machine (ADR 0034) as a plain function."""

from __future__ import annotations

import pytest

from linli.scheduling.rules import (
    DISPATCHABLE,
    EscalationAction,
    EscalationConflict,
    EscalationState,
    NeedState,
    escalation_steps,
)

A, S = EscalationAction, EscalationState


@pytest.mark.parametrize(
    ("state", "action", "same", "steps"),
    [
        (S.OPEN, A.ACKNOWLEDGE, False, (S.ACKNOWLEDGED,)),
        (S.ACKNOWLEDGED, A.ACKNOWLEDGE, True, ()),
        (S.ASSIGNED, A.ACKNOWLEDGE, True, ()),
        (S.OPEN, A.ASSIGN, False, (S.ACKNOWLEDGED, S.ASSIGNED)),
        (S.ACKNOWLEDGED, A.ASSIGN, False, (S.ASSIGNED,)),
        (S.ASSIGNED, A.ASSIGN, True, ()),
        (S.ASSIGNED, A.ASSIGN, False, (S.ASSIGNED,)),
        (S.OPEN, A.RESOLVE, False, (S.ACKNOWLEDGED, S.RESOLVED)),
        (S.ACKNOWLEDGED, A.RESOLVE, False, (S.RESOLVED,)),
        (S.ASSIGNED, A.RESOLVE, False, (S.RESOLVED,)),
        (S.RESOLVED, A.RESOLVE, True, ()),
    ],
)
def test_allowed_steps(
    state: EscalationState,
    action: EscalationAction,
    same: bool,
    steps: tuple[EscalationState, ...],
) -> None:
    assert escalation_steps(state, action, same_as_recorded=same) == steps


@pytest.mark.parametrize(
    ("action", "same"),
    [(A.ACKNOWLEDGE, True), (A.ASSIGN, False), (A.ASSIGN, True), (A.RESOLVE, False)],
)
def test_nothing_follows_resolved(action: EscalationAction, same: bool) -> None:
    with pytest.raises(EscalationConflict):
        escalation_steps(S.RESOLVED, action, same_as_recorded=same)


def test_only_needs_nobody_accepted_are_dispatched_by_hand() -> None:
    assert {NeedState.WAITING, NeedState.ESCALATED, NeedState.OFFERED} == DISPATCHABLE
