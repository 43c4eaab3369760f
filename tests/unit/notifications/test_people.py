# ruff: noqa: RUF001 -- Chinese text uses full-width punctuation on purpose.
"""Messages to people: templates, who is told what, quiet hours, backoff, providers."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from linli.contracts.events import (
    AssignmentOffered,
    MealDelivered,
    NeedEscalated,
    NeedFulfilled,
    PartyKind,
    PartyRef,
    VisitCompleted,
)
from linli.notifications.messages.api import RecipientIn, mask
from linli.notifications.messages.plan import Audience, NeedFacts, intents_for
from linli.notifications.messages.providers import (
    FileSmsProvider,
    Message,
    SmtpProvider,
    build_providers,
)
from linli.notifications.messages.schedule import backoff, due_at, quiet_until
from linli.notifications.messages.templates import LOCALES, TEMPLATES, render
from linli.notifications.settings import NotificationsSettings

pytestmark = pytest.mark.unit

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _need(kind: str = "meal_delivery", urgency: str = "routine") -> NeedFacts:
    return NeedFacts(
        uuid.uuid4(), uuid.uuid4(), kind, urgency, datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    )


def _party(kind: str = "volunteer") -> PartyRef:
    return PartyRef(kind=PartyKind(kind), id=uuid.uuid4())


def test_every_template_has_both_locales() -> None:
    for key, by_locale in TEMPLATES.items():
        assert set(by_locale) == set(LOCALES), key


def test_meal_delivered_in_both_locales_at_community_local_time() -> None:
    need = _need()
    data = MealDelivered(
        need_id=need.need_id,
        assignment_id=uuid.uuid4(),
        delivered_by=_party(),
        delivered_at=datetime(2026, 3, 2, 3, 52, tzinfo=UTC),
        handed_to="resident",
    )
    [intent] = intents_for("meal.delivered", data, need, SHANGHAI)
    assert intent.audience is Audience.FAMILY
    assert intent.resident_id == need.resident_id
    assert not intent.emergency
    assert render(intent.template, "zh-CN", intent.params)[1] == "午餐已于11:52送达。"
    assert render(intent.template, "en", intent.params)[1] == "Lunch delivered at 11:52."


def test_emergency_repair_not_accepted_tells_operators_in_minutes() -> None:
    need = _need("repair", "emergency")
    data = NeedEscalated(
        need_id=need.need_id,
        reason="sla_breached",
        detail="accept deadline missed",
        urgency="emergency",
        sla_deadline=need.submitted_at + timedelta(minutes=10),
        escalated_at=need.submitted_at + timedelta(minutes=10),
    )
    [intent] = intents_for("need.escalated", data, need, SHANGHAI)
    assert intent.audience is Audience.OPERATOR
    assert intent.emergency
    zh = render(intent.template, "zh-CN", intent.params)[1]
    en = render(intent.template, "en", intent.params)[1]
    assert zh.startswith("紧急维修10分钟内无人接单")
    assert en.startswith("Emergency repair not accepted within 10 minutes")


def test_welfare_check_and_wellbeing_are_emergencies_for_operators() -> None:
    need = _need()
    for reason in ("welfare_check", "wellbeing_concern"):
        data = NeedEscalated(
            need_id=need.need_id, reason=reason, escalated_at=datetime.now(UTC), urgency="routine"
        )
        [intent] = intents_for("need.escalated", data, need, SHANGHAI)
        assert intent.audience is Audience.OPERATOR
        assert intent.emergency


def test_routine_escalation_is_not_an_emergency() -> None:
    data = NeedEscalated(need_id=uuid.uuid4(), reason="no_capacity", escalated_at=datetime.now(UTC))
    [intent] = intents_for("need.escalated", data, None, SHANGHAI)
    assert not intent.emergency
    assert "暂无可用服务" in render(intent.template, "zh-CN", intent.params)[1]


def test_visit_concern_tells_family_without_observations() -> None:
    need = _need("elder_care_visit")
    start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    data = VisitCompleted(
        need_id=need.need_id,
        assignment_id=uuid.uuid4(),
        visited_by=_party(),
        started_at=start,
        ended_at=start + timedelta(hours=1),
        wellbeing_concern=True,
        observations="Mrs Wang at No. 5 seemed confused",
    )
    [intent] = intents_for("visit.completed", data, need, SHANGHAI)
    assert intent.audience is Audience.FAMILY
    assert intent.emergency
    for locale in LOCALES:
        _subject, body = render(intent.template, locale, intent.params)
        assert "Wang" not in body
        assert "No. 5" not in body
    no_concern = data.model_copy(update={"wellbeing_concern": False})
    assert intents_for("visit.completed", no_concern, need, SHANGHAI) == []


def test_need_fulfilled_tells_family_except_for_meals() -> None:
    need = _need("repair")
    data = NeedFulfilled(
        need_id=need.need_id,
        assignment_id=uuid.uuid4(),
        kind="repair",
        fulfilled_by=_party("partner"),
        fulfilled_at=datetime(2026, 3, 2, 7, 5, tzinfo=UTC),
    )
    [intent] = intents_for("need.fulfilled", data, need, SHANGHAI)
    assert render(intent.template, "zh-CN", intent.params)[1] == "维修已于15:05完成。"
    assert render(intent.template, "en", intent.params)[1] == "Repair completed at 15:05."
    meal = data.model_copy(update={"kind": "meal_delivery"})
    assert intents_for("need.fulfilled", meal, _need(), SHANGHAI) == []
    assert intents_for("need.fulfilled", data, None, SHANGHAI) == []


def test_assignment_offered_goes_to_the_volunteer_only() -> None:
    now = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    volunteer = _party("volunteer")
    data = AssignmentOffered(
        assignment_id=uuid.uuid4(),
        need_id=uuid.uuid4(),
        slot_id=uuid.uuid4(),
        offered_to=volunteer,
        kind="meal_delivery",
        urgency="routine",
        window={"earliest": now, "latest": now + timedelta(hours=1)},
        details={"portions": 1},
        compound="致远小区",
        offered_at=now,
        expires_at=now + timedelta(minutes=30),
    )
    [intent] = intents_for("assignment.offered", data, None, SHANGHAI)
    assert intent.audience is Audience.VOLUNTEER
    assert intent.volunteer_id == volunteer.id
    assert render(intent.template, "zh-CN", intent.params)[1] == (
        "新的送餐任务：致远小区，11:00至12:00，请在11:30前回复。"
    )
    partner = data.model_copy(update={"offered_to": _party("partner")})
    assert intents_for("assignment.offered", partner, None, SHANGHAI) == []


def test_quiet_hours_wrap_midnight_in_local_time() -> None:
    start, end = time(22, 0), time(7, 0)
    late = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
    assert quiet_until(late, start, end, SHANGHAI) == datetime(2026, 3, 3, 7, 0, tzinfo=SHANGHAI)
    early = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)  # 05:00 on the 3rd
    assert quiet_until(early, start, end, SHANGHAI) == datetime(2026, 3, 3, 7, 0, tzinfo=SHANGHAI)
    noon = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
    assert quiet_until(noon, start, end, SHANGHAI) is None
    assert quiet_until(late, None, None, SHANGHAI) is None


def test_emergencies_ignore_quiet_hours() -> None:
    late = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    quiet = (time(22, 0), time(7, 0))
    assert (
        due_at(late, emergency=True, quiet_start=quiet[0], quiet_end=quiet[1], tz=SHANGHAI) == late
    )
    routine = due_at(late, emergency=False, quiet_start=quiet[0], quiet_end=quiet[1], tz=SHANGHAI)
    assert routine == datetime(2026, 3, 3, 7, 0, tzinfo=SHANGHAI)


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff(n, 30, 3600, rng) for n in range(1, 10)]
    assert delays[0] < delays[2] < delays[4]
    assert max(delays) <= 3600


async def test_file_sms_provider_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "sms" / "out.jsonl"
    provider = FileSmsProvider(path)
    for text in ("午餐已于11:52送达。", "second"):
        await provider.send(Message(uuid.uuid4(), "sms", "+8613800000000", "s", text, "zh-CN"))
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert [line["text"] for line in lines] == ["午餐已于11:52送达。", "second"]
    assert lines[0]["to"] == "+8613800000000"


def test_smtp_message_is_utf8_with_subject_and_body() -> None:
    provider = SmtpProvider(host="127.0.0.1", port=25, sender="Linli <n@linli.local>")
    mail = provider.build(
        Message(uuid.uuid4(), "email", "a@example.com", "午餐已送达", "午餐", "zh-CN")
    )
    assert mail["Subject"] == "午餐已送达"
    assert mail.get_content().strip() == "午餐"


def test_providers_chosen_by_settings(tmp_path: Path) -> None:
    settings = NotificationsSettings(
        email_provider="smtp", sms_provider="file", sms_file=str(tmp_path / "s")
    )
    providers = build_providers(settings)
    assert isinstance(providers["email"], SmtpProvider)
    assert isinstance(providers["sms"], FileSmsProvider)


def test_people_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINLI_SMTP_PORT", "2525")
    monkeypatch.setenv("LINLI_EMAIL_PROVIDER", "smtp")
    settings = NotificationsSettings()
    assert settings.smtp_port == 2525
    assert settings.email_provider == "smtp"


def test_recipient_validation() -> None:
    ok = RecipientIn(
        role="family",
        resident_id=uuid.uuid4(),
        channel="email",
        address=" son@example.com ",
        locale="en",
        quiet_hours={"start": "22:00", "end": "07:00"},
        events=["meal.delivered"],
    )
    assert ok.address == "son@example.com"
    bad = [
        {"role": "family", "channel": "email", "address": "a@example.com"},
        {"role": "operator", "channel": "sms", "address": "not a phone"},
        {"role": "operator", "channel": "email", "address": "a@example.com", "timezone": "Mars/X"},
        {"role": "operator", "channel": "email", "address": "a@example.com", "events": ["x"]},
        {"role": "volunteer", "channel": "sms", "address": "+8613800000000"},
    ]
    for body in bad:
        with pytest.raises(ValidationError):
            RecipientIn.model_validate(body)


def test_addresses_are_masked() -> None:
    assert mask("email", "son@example.com") == "s***@example.com"
    assert mask("sms", "+8613812345678") == "+86*******5678"
