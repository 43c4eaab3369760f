"""Messages to people on real NATS, PostgreSQL and SMTP (aiosmtpd)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from harness.common import wait_for
from harness.names import Names
from harness.notifications_people import PeopleStack, in_minutes, now, party, people_stack

from linli.contracts.events import (
    MealDelivered,
    NeedEscalated,
    NeedFulfilled,
    NeedSubmitted,
    VisitCompleted,
)

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")
_DETAILS = {
    "meal_delivery": {"diet_needs": ["soft food"], "portions": 1},
    "elder_care_visit": {"purpose": "companionship", "duration_minutes": 60},
    "repair": {"category": "heating", "description": "burst radiator", "hazard": "water_leak"},
}


@pytest.fixture
async def stack(names: Names, nats_url: str, database_url: str, tmp_path: Path) -> Any:
    async with people_stack(names, nats_url, database_url, tmp_path) as s:
        yield s


def need_submitted(
    resident_id: uuid.UUID, kind: str = "meal_delivery", urgency: str = "routine"
) -> NeedSubmitted:
    return NeedSubmitted.model_validate(
        {
            "need_id": uuid.uuid4(),
            "resident_id": resident_id,
            "kind": kind,
            "urgency": urgency,
            "window": {"earliest": in_minutes(10), "latest": in_minutes(120)},
            "details": _DETAILS[kind],
            "priority_group": "elderly_living_alone",
            "compound": "致远小区",
            "submitted_at": now(),
        }
    )


def meal_delivered(need_id: uuid.UUID, at: datetime) -> MealDelivered:
    return MealDelivered.model_validate(
        {
            "need_id": need_id,
            "assignment_id": uuid.uuid4(),
            "delivered_by": party("volunteer"),
            "delivered_at": at,
            "handed_to": "resident",
        }
    )


def at_shanghai(hour: int, minute: int) -> datetime:
    today = datetime.now(SHANGHAI).date()
    return datetime(today.year, today.month, today.day, hour, minute, tzinfo=SHANGHAI)


async def test_email_in_both_locales_and_sms_to_a_file(
    stack: PeopleStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    resident, other_resident = uuid.uuid4(), uuid.uuid4()
    await stack.add_recipient(
        role="family", resident_id=str(resident), channel="email",
        address="daughter@example.com", locale="zh-CN",
    )  # fmt: skip
    await stack.add_recipient(
        role="family", resident_id=str(resident), channel="email",
        address="son@example.com", locale="en",
    )  # fmt: skip
    await stack.add_recipient(
        role="family", resident_id=str(resident), channel="sms",
        address="+8613800000001", locale="zh-CN",
    )  # fmt: skip
    await stack.add_recipient(
        role="family", resident_id=str(other_resident), channel="email",
        address="neighbour-family@example.com", locale="zh-CN",
    )  # fmt: skip
    await stack.add_recipient(role="operator", channel="email", address="ops@example.com")

    need = need_submitted(resident)
    await stack.publish(need)
    await stack.publish(meal_delivered(need.need_id, at_shanghai(11, 52)))

    await wait_for(lambda: len(stack.smtp.mails) >= 2 and stack.sms(), what="mails and sms")
    [zh] = stack.smtp.to("daughter@example.com")
    [en] = stack.smtp.to("son@example.com")
    assert zh.body == "午餐已于11:52送达。"
    assert zh.subject == "午餐已送达"
    assert en.body == "Lunch delivered at 11:52."
    assert en.subject == "Lunch delivered"
    [sms] = stack.sms()
    assert sms["to"] == "+8613800000001"
    assert sms["text"] == "午餐已于11:52送达。"
    # Nobody else is told: not another resident's family, not operators (no problem).
    assert stack.smtp.to("neighbour-family@example.com") == []
    assert stack.smtp.to("ops@example.com") == []
    # Our logs name ids only: no address, phone or text (the test SMTP server's own
    # "mail.log" is not ours).
    ours = [r for r in caplog.records if r.name.startswith("linli")]
    assert any(r.getMessage() == "message sent" for r in ours)
    logged = "\n".join(str(r.__dict__) for r in ours)
    for secret in ("daughter@example.com", "son@example.com", "+8613800000001", "午餐", "Lunch"):
        assert secret not in logged


async def test_quiet_hours_postpone_routine_but_not_emergency(stack: PeopleStack) -> None:
    local = datetime.now(SHANGHAI)
    quiet = {
        "start": (local - timedelta(hours=1)).strftime("%H:%M"),
        "end": (local + timedelta(hours=1)).strftime("%H:%M"),
    }
    resident = uuid.uuid4()
    await stack.add_recipient(
        role="family", resident_id=str(resident), channel="email",
        address="sleepy@example.com", locale="en", quiet_hours=quiet,
    )  # fmt: skip
    await stack.add_recipient(
        role="operator", channel="email", address="night-ops@example.com",
        locale="zh-CN", quiet_hours=quiet,
    )  # fmt: skip
    need = need_submitted(resident)
    await stack.publish(need)
    routine = await stack.publish(meal_delivered(need.need_id, now()))
    emergency = await stack.publish(
        NeedEscalated(
            need_id=need.need_id,
            reason="welfare_check",
            detail="attempt failed: not_home",
            urgency="routine",
            escalated_at=now(),
        )
    )
    await wait_for(lambda: stack.smtp.to("night-ops@example.com"), what="emergency mail")
    [mail] = stack.smtp.to("night-ops@example.com")
    assert "送餐未能送达独居老人" in mail.body
    [row] = await wait_for(lambda: stack.messages(routine.id), what="routine message row")
    assert row["status"] == "pending"
    expected_end = datetime.combine(
        local.date(), (local + timedelta(hours=1)).time().replace(second=0, microsecond=0),
        tzinfo=SHANGHAI,
    )  # fmt: skip
    if expected_end < local:
        expected_end += timedelta(days=1)
    assert abs((row["next_attempt_at"] - expected_end).total_seconds()) < 1

    # The mail reaches the SMTP server a moment before its row is marked sent.
    async def sent() -> list:
        rows = await stack.messages(emergency.id)
        return rows if rows and rows[0]["status"] == "sent" else []

    [erow] = await wait_for(sent, what="emergency marked sent")
    assert erow["emergency"] is True
    assert stack.smtp.to("sleepy@example.com") == []


async def test_a_redelivered_event_sends_one_message(stack: PeopleStack) -> None:
    resident = uuid.uuid4()
    await stack.add_recipient(
        role="family", resident_id=str(resident), channel="email",
        address="once@example.com", locale="en",
    )  # fmt: skip
    need = need_submitted(resident)
    await stack.publish(need)
    first = await stack.publish(meal_delivered(need.need_id, at_shanghai(12, 1)))
    await wait_for(lambda: stack.smtp.to("once@example.com"), what="first mail")
    # The same event again past the stream's duplicate window, then a later one as a
    # barrier: once that arrives the redelivery has been consumed.
    await stack.redeliver(first)
    second = await stack.publish(meal_delivered(need.need_id, at_shanghai(12, 2)))
    await wait_for(lambda: len(stack.smtp.to("once@example.com")) >= 2, what="barrier mail")
    bodies = [m.body for m in stack.smtp.to("once@example.com")]
    assert bodies == ["Lunch delivered at 12:01.", "Lunch delivered at 12:02."]
    assert len(await stack.messages(first.id)) == 1
    assert len(await stack.messages(second.id)) == 1
    # The redelivered copy reached the consumer and its inbox turned it away.
    assert stack.people.consumer.stats["duplicate"] >= 1


async def test_operators_and_family_hear_about_problems(stack: PeopleStack) -> None:
    resident = uuid.uuid4()
    await stack.add_recipient(role="operator", channel="email", address="ops@example.com")
    await stack.add_recipient(
        role="operator", channel="email", address="ops-en@example.com", locale="en",
        events=["need.escalated"],
    )  # fmt: skip
    await stack.add_recipient(
        role="family", resident_id=str(resident), channel="email",
        address="family@example.com", locale="zh-CN",
    )  # fmt: skip
    repair = need_submitted(resident, kind="repair", urgency="emergency")
    await stack.publish(repair)
    await stack.publish(
        NeedEscalated(
            need_id=repair.need_id,
            reason="sla_breached",
            detail="accept deadline missed",
            urgency="emergency",
            sla_deadline=repair.submitted_at + timedelta(minutes=10),
            escalated_at=now(),
        )
    )
    visit = need_submitted(resident, kind="elder_care_visit")
    await stack.publish(visit)
    started = now() - timedelta(hours=1)
    await stack.publish(
        VisitCompleted.model_validate(
            {
                "need_id": visit.need_id,
                "assignment_id": uuid.uuid4(),
                "visited_by": party("volunteer"),
                "started_at": started,
                "ended_at": started + timedelta(minutes=45),
                "wellbeing_concern": True,
                "observations": "private observations",
            }
        )
    )
    await stack.publish(
        NeedFulfilled.model_validate(
            {
                "need_id": repair.need_id,
                "assignment_id": uuid.uuid4(),
                "kind": "repair",
                "fulfilled_by": party("partner"),
                "fulfilled_at": at_shanghai(15, 5),
            }
        )
    )
    await wait_for(
        lambda: (
            len(stack.smtp.to("family@example.com")) >= 2
            and stack.smtp.to("ops@example.com")
            and stack.smtp.to("ops-en@example.com")
        ),
        what="operator and family mails",
    )
    [ops] = stack.smtp.to("ops@example.com")
    assert ops.body.startswith("紧急维修10分钟内无人接单")
    [ops_en] = stack.smtp.to("ops-en@example.com")
    assert ops_en.body.startswith("Emergency repair not accepted within 10 minutes")
    family = sorted(m.body for m in stack.smtp.to("family@example.com"))
    assert any("探访人员对老人的状况有所担心" in b for b in family)
    assert "维修已于15:05完成。" in family
    assert not any("private observations" in b for b in family)


async def test_last_failed_attempt_emits_notification_failed(stack: PeopleStack) -> None:
    await stack.add_recipient(role="operator", channel="email", address="busy@example.com")
    escalated = await stack.publish(
        NeedEscalated(
            need_id=uuid.uuid4(), reason="no_capacity", urgency="urgent", escalated_at=now()
        )
    )
    [failed] = await wait_for(
        lambda: stack.events_of("notification.failed"), timeout=15, what="notification.failed"
    )
    assert failed.data["channel"] == "email"
    assert failed.data["event_id"] == escalated.id
    assert failed.data["attempts"] == 3
    assert failed.community == stack.community
    assert "busy@" not in failed.model_dump_json()
    [row] = await stack.messages(escalated.id)
    assert row["status"] == "failed"
    assert stack.smtp.mails == []


async def test_recipients_api_is_scoped_to_the_community(stack: PeopleStack) -> None:
    base = f"/v1/communities/{stack.community}/recipients"
    created = await stack.add_recipient(
        role="family", resident_id=str(uuid.uuid4()), channel="sms",
        address="+8613812345678", quiet_hours={"start": "22:00", "end": "07:00"},
    )  # fmt: skip
    assert created["address"] == "+86*******5678"
    listed = await stack.http.get(base, headers=stack.auth())
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()] == [created["id"]]
    assert "+8613812345678" not in listed.text

    other = await stack.http.get(base, headers=stack.auth("other_operator"))
    assert other.status_code == 404
    other_delete = await stack.http.delete(
        f"{base}/{created['id']}", headers=stack.auth("other_operator")
    )
    assert other_delete.status_code == 404
    partner = await stack.http.get(base, headers=stack.auth("partner"))
    assert partner.status_code == 403
    anonymous = await stack.http.get(base)
    assert anonymous.status_code == 401
    bad = await stack.http.post(
        base, json={"role": "operator", "channel": "email", "address": "nope"},
        headers=stack.auth(),
    )  # fmt: skip
    assert bad.status_code == 422

    deleted = await stack.http.delete(f"{base}/{created['id']}", headers=stack.auth())
    assert deleted.status_code == 204
    again = await stack.http.delete(f"{base}/{created['id']}", headers=stack.auth())
    assert again.status_code == 404
    assert (await stack.http.get(base, headers=stack.auth())).json() == []


async def test_a_message_in_flight_at_stop_is_sent_once_and_recorded(stack: PeopleStack) -> None:
    """SIGTERM while the SMTP server is still accepting a message: the sender lets it
    finish and records it as sent, so no later replica sends it a second time."""
    resident = uuid.uuid4()
    await stack.add_recipient(
        role="family", resident_id=str(resident), channel="email",
        address="slow@example.com", locale="zh-CN",
    )  # fmt: skip
    need = need_submitted(resident)
    await stack.publish(need)
    delivered = await stack.publish(meal_delivered(need.need_id, at_shanghai(11, 52)))
    await wait_for(lambda: stack.smtp.slow_started.is_set(), what="the slow SMTP transaction")
    await stack.runtime.stop()  # what the lifespan does on SIGTERM
    assert len(stack.smtp.to("slow@example.com")) == 1
    [row] = await stack.messages(delivered.id)
    assert row["status"] == "sent"
