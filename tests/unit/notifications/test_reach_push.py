"""What is pushed to a partner (ADR 0043): the webhook body with signed links, and the
message intents; pure functions of `reach.push`."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from linli.contracts.events import AssignmentOffered, AssignmentReminderDue
from linli.notifications.messages.plan import Audience
from linli.notifications.messages.templates import render
from linli.notifications.reach.push import LinkMaker, intents, partner_body
from linli.servicekit.offerlinks import LinkAction, OfferLinks

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
LINKS = OfferLinks("k" * 40)
MAKER = LinkMaker(LINKS, "https://partners.example/")
TZ = ZoneInfo("Asia/Shanghai")


def offer(kind: str = "partner", urgency: str = "routine") -> dict[str, object]:
    return {
        "assignment_id": str(uuid.uuid4()),
        "need_id": str(uuid.uuid4()),
        "slot_id": str(uuid.uuid4()),
        "offered_to": {"kind": kind, "id": str(uuid.uuid4())},
        "kind": "repair",
        "urgency": urgency,
        "window": {
            "earliest": (NOW + timedelta(hours=1)).isoformat(),
            "latest": (NOW + timedelta(hours=2)).isoformat(),
        },
        "details": {"category": "plumbing", "hazard": "none"},
        "compound": "致远小区",
        "offered_at": NOW.isoformat(),
        "expires_at": (NOW + timedelta(minutes=30)).isoformat(),
    }


def test_an_offer_to_a_partner_carries_signed_links() -> None:
    data = offer()
    body = json.dumps({"id": "e1", "type": "linli.assignment.offered.v1", "data": data}).encode()
    partner, pushed = partner_body("linli.assignment.offered.v1", data, body, MAKER)
    assert str(partner) == data["offered_to"]["id"]  # type: ignore[index]
    event = json.loads(pushed)
    assert event["data"] == data
    accept = event["offeraccepturl"]
    assert accept.startswith("https://partners.example/public/v1/offers/")
    assert accept.endswith("/accept")
    link = LINKS.check(accept.split("/")[-2], NOW)
    assert link.action is LinkAction.ACCEPT
    assert str(link.offer_id) == data["assignment_id"]
    assert link.expires_at == NOW + timedelta(minutes=30)
    assert LINKS.check(event["offerdeclineurl"].split("/")[-2], NOW).action is LinkAction.DECLINE


def test_volunteers_offers_and_other_events_are_not_pushed_to_partners() -> None:
    data = offer("volunteer")
    assert partner_body("linli.assignment.offered.v1", data, b"{}", MAKER) is None
    assert partner_body("linli.need.submitted.v1", offer(), b"{}", MAKER) is None


def test_partner_messages_hold_links_and_emergencies_skip_quiet_hours() -> None:
    routine = AssignmentOffered.model_validate(offer())
    (intent,) = intents(routine, TZ, MAKER)
    assert intent.audience is Audience.PARTNER
    assert not intent.emergency
    _subject, text = render(intent.template, "zh-CN", intent.params)
    assert "/public/v1/offers/" in text
    assert "致远小区" in text
    (urgent,) = intents(AssignmentOffered.model_validate(offer(urgency="emergency")), TZ, MAKER)
    assert urgent.emergency
    assert render(urgent.template, "en", urgent.params)[0] == "[URGENT] New repair task"
    assert render(urgent.template, "zh-CN", urgent.params)[0] == "【紧急】新的维修任务"
    assert intents(routine, TZ, None) == []


def test_reminders_go_to_volunteers_and_partners() -> None:
    for kind, audience in (("volunteer", Audience.VOLUNTEER), ("partner", Audience.PARTNER)):
        data = offer(kind)
        reminder = AssignmentReminderDue.model_validate(
            {
                "assignment_id": data["assignment_id"],
                "need_id": data["need_id"],
                "assigned_to": data["offered_to"],
                "kind": "elder_care_visit",
                "urgency": "routine",
                "window": data["window"],
                "compound": None,
                "due_at": NOW.isoformat(),
            }
        )
        (intent,) = intents(reminder, TZ, None)
        assert intent.audience is audience
        subject, text = render(intent.template, "en", intent.params)
        assert subject == "Reminder: home visit task"
        assert "17:00 to 18:00" in text
