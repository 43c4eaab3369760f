"""The consumption path's rules that need no server: filters and decoding."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from linli.contracts.binding import to_binary, to_structured
from linli.contracts.envelope import new_event
from linli.contracts.events import NeedCancelled, NeedFulfilled, SlotReserved
from linli.contracts.types import Role
from linli.servicekit.consume import SKIP, Received, Subscriptions, decode
from linli.servicekit.messaging import PoisonMessage

pytestmark = pytest.mark.unit


async def _noop(_conn: Any, _received: Received[Any]) -> None:
    return None


def _subs() -> Subscriptions:
    return Subscriptions("t").on(NeedCancelled, _noop).on(SlotReserved, _noop)


def _cancelled(community: str = "taian-zhiyuan") -> Any:
    data = NeedCancelled(
        need_id=uuid.uuid4(),
        reason="moved away",
        cancelled_by_role=Role.OPERATOR,
        cancelled_at=datetime.now(UTC),
    )
    return new_event(data, community=community, source="/t")


SUBJECT = "linli.events.taian-zhiyuan.need.cancelled.v1"


def test_filters_are_the_declared_subjects() -> None:
    assert _subs().filter_subjects([]) == [
        "linli.events.*.need.cancelled.v1",
        "linli.events.*.slot.reserved.v1",
    ]
    assert _subs().filter_subjects(["a", "b"]) == [
        "linli.events.a.need.cancelled.v1",
        "linli.events.b.need.cancelled.v1",
        "linli.events.a.slot.reserved.v1",
        "linli.events.b.slot.reserved.v1",
    ]
    every = Subscriptions("w").on_every_event(_noop)
    assert every.filter_subjects([]) == ["linli.events.>"]
    assert every.filter_subjects(["a"]) == ["linli.events.a.>"]


def test_declarations_that_cannot_be_filtered_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        Subscriptions("t").on(NeedCancelled, _noop).on(NeedCancelled, _noop)
    with pytest.raises(ValueError, match="every event"):
        Subscriptions("t").on_every_event(_noop).on(NeedCancelled, _noop)
    with pytest.raises(ValueError, match="single types"):
        Subscriptions("t").on(NeedCancelled, _noop).on_every_event(_noop)
    with pytest.raises(ValueError, match="no subscriptions"):
        Subscriptions("t").filter_subjects([])


@pytest.mark.parametrize("encode", [to_structured, to_binary])
def test_a_declared_event_decodes_into_its_model(encode: Any) -> None:
    event = _cancelled()
    body, headers = encode(event)
    outcome = decode(_subs(), SUBJECT, body, headers)
    assert not isinstance(outcome, (PoisonMessage, type(SKIP)))
    received, route = outcome
    assert isinstance(received.data, NeedCancelled)
    assert received.data.need_id == event.data.need_id
    assert received.community == "taian-zhiyuan"
    assert route.spec is not None


def test_undeclared_types_and_versions_are_skipped_unread() -> None:
    # The body is never looked at: not even garbage makes it poison.
    assert decode(_subs(), "linli.events.taian-zhiyuan.need.fulfilled.v1", b"\xff", {}) is SKIP
    assert decode(_subs(), "linli.events.taian-zhiyuan.need.cancelled.v2", b"{}", {}) is SKIP


def _codes(outcome: Any) -> list[str]:
    assert isinstance(outcome, PoisonMessage)
    return [r.code for r in outcome.reasons]


def test_what_can_never_be_processed_is_poison() -> None:
    body, headers = to_structured(_cancelled())
    assert _codes(decode(_subs(), "linli.events.bad subject", body, headers)) == ["invalid_subject"]
    assert _codes(decode(_subs(), SUBJECT, b"not json", headers))
    other = to_structured(_cancelled(community="heping-lijiang"))
    assert _codes(decode(_subs(), SUBJECT, *other)) == ["subject_mismatch"]
    fulfilled = new_event(
        NeedFulfilled.model_construct(need_id=uuid.uuid4()),
        community="taian-zhiyuan",
        source="/t",
    )
    wrong_type = to_structured(fulfilled)
    assert _codes(decode(_subs(), SUBJECT, *wrong_type)) == ["subject_mismatch"]
    broken = body.replace(b'"cancelled_by_role":"operator"', b'"cancelled_by_role":"nobody"')
    assert broken != body
    assert decode(_subs(), SUBJECT, broken, headers).reasons[0].field.startswith("data")  # type: ignore[union-attr]
