"""Pure parts of the console: catalogues, view models, the SSE parser, settings,
passwords, fragments."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

import pytest

from linli.console import views
from linli.console.accounts import check_password, hash_password
from linli.console.i18n import LOCALES, catalogue, translate
from linli.console.live import sse
from linli.console.settings import ConsoleSettings
from linli.console.upstream import parse_sse

pytestmark = pytest.mark.unit

ZONE = ZoneInfo("Asia/Shanghai")


def _template_keys() -> set[str]:
    """Every literal key a template passes to t(...)."""
    keys: set[str] = set()
    root = resources.files("linli.console").joinpath("templates")
    for entry in root.iterdir():
        text = entry.read_text("utf-8")
        keys |= set(re.findall(r"""t\(\s*["']([a-z_.]*[a-z_])["']\s*[,)]""", text))
    return keys


def _no_duplicates(pairs: list[tuple[str, str]]) -> dict[str, str]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), sorted({k for k in keys if keys.count(k) > 1})
    return dict(pairs)


def test_catalogues_have_the_same_keys_and_every_key_the_templates_use() -> None:
    for locale in LOCALES:
        # A key written twice (a merge) silently keeps its last text: refuse it.
        text = resources.files("linli.console").joinpath("messages", f"{locale}.json")
        json.loads(text.read_text("utf-8"), object_pairs_hook=_no_duplicates)
    zh, en = catalogue("zh-CN"), catalogue("en")
    assert set(zh) == set(en)
    used = _template_keys()
    assert used, "the pattern found no keys"
    assert used <= set(zh), used - set(zh)
    assert translate("en", "community.title", community="x") == "x · live"
    assert translate("fr", "sign_in.title") == zh["sign_in.title"]  # unknown: zh-CN
    assert LOCALES[0] == "zh-CN"


def test_kinds_states_and_reasons_are_translated() -> None:
    from linli.contracts.events import ESCALATION_REASONS
    from linli.contracts.types import CostOption, NeedKind, NeedStatus, Urgency

    zh = catalogue("zh-CN")
    wanted = [f"kind.{k.value}" for k in NeedKind]
    wanted += [f"urgency.{u.value}" for u in Urgency]
    wanted += [f"state.{s.value}" for s in NeedStatus] + ["state.waiting"]
    wanted += [f"reason.{r}" for r in ESCALATION_REASONS]
    wanted += [f"cost.{c.value}" for c in CostOption] + ["cost.unknown"]
    assert [k for k in wanted if k not in zh] == []


def _scheduled(need_id: str, state: str, **extra: object) -> dict[str, object]:
    start = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai
    return {
        "id": need_id,
        "kind": "meal_delivery",
        "urgency": "routine",
        "state": state,
        "compound": "致远小区",
        "window": {
            "earliest": start.isoformat(),
            "latest": (start + timedelta(hours=1)).isoformat(),
        },
        "attempts": 1,
        "sla_clocks": [],
        "escalations": [],
        **extra,
    }


def test_open_needs_prefer_schedulings_state_and_add_intakes_unseen_ones() -> None:
    deadline = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    scheduled = [
        _scheduled("a", "offered", sla_clocks=[{"deadline": deadline.isoformat(), "due_at": None}]),
        _scheduled(
            "b",
            "escalated",
            escalations=[{"reason": "no_capacity", "escalated_at": deadline.isoformat()}],
        ),
    ]
    submitted = [
        {**_scheduled("a", "submitted")},  # intake lags: scheduling's state wins
        {**_scheduled("c", "submitted")},
    ]
    by_state = views.open_needs(scheduled, submitted)
    assert [r.id for r in by_state["offered"]] == ["a"]
    assert by_state["offered"][0].sla_deadline == deadline
    assert [r.id for r in by_state["submitted"]] == ["c"]
    assert by_state["submitted"][0].compound is None  # intake has no compound
    assert by_state["escalated"][0].escalation_reason == "no_capacity"
    assert list(by_state)[: len(views.OPEN_STATES)] == list(views.OPEN_STATES)


def test_meal_round_counts_todays_meals_per_compound() -> None:
    today = datetime(2026, 3, 2, tzinfo=ZONE).date()
    yesterday = _scheduled("y", "fulfilled")
    yesterday["window"] = {"earliest": "2026-03-01T03:00:00+00:00", "latest": None}
    visit = {**_scheduled("v", "waiting"), "kind": "elder_care_visit"}
    rounds = views.meal_round(
        [_scheduled("p", "waiting"), visit],
        [_scheduled("d1", "fulfilled"), _scheduled("d2", "fulfilled"), yesterday],
        [_scheduled("f", "failed")],
        today,
        ZONE,
    )
    assert rounds == [views.MealRound("致远小区", delivered=2, failed=1, pending=1)]


def test_load_hides_volunteer_names_when_asked() -> None:
    now = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    future = {"earliest": "2026-03-02T03:00:00+00:00", "latest": "2026-03-02T05:00:00+00:00"}
    past = {"earliest": "2026-03-01T03:00:00+00:00", "latest": "2026-03-01T05:00:00+00:00"}
    slots = [
        {
            "provider": {"kind": "partner", "id": "p1"},
            "window": future,
            "capacity": 10,
            "reserved": 5,
        },
        {
            "provider": {"kind": "volunteer", "id": "v1"},
            "window": future,
            "capacity": 2,
            "reserved": 2,
        },
        {
            "provider": {"kind": "volunteer", "id": "v2"},
            "window": future,
            "capacity": 2,
            "reserved": 0,
        },
        {"provider": {"kind": "partner", "id": "p1"}, "window": past, "capacity": 9, "reserved": 9},
    ]
    partners = [{"id": "p1", "name": "幸福食堂"}]
    volunteers = [
        {"id": "v1", "display_name": "ZZCANARY-志愿者"},
        {"id": "v2", "display_name": "B"},
    ]
    named = views.provider_load(
        slots, partners, volunteers, now, volunteer_names=True, volunteers_label="all"
    )
    assert {(x.name, x.capacity, x.reserved) for x in named} == {
        ("幸福食堂", 10, 5),
        ("ZZCANARY-志愿者", 2, 2),
        ("B", 2, 0),
    }
    hidden = views.provider_load(
        slots, partners, [], now, volunteer_names=False, volunteers_label="all"
    )
    assert {(x.name, x.capacity, x.reserved) for x in hidden} == {
        ("幸福食堂", 10, 5),
        ("all", 4, 2),
    }
    assert hidden[0].percent == 50


async def _lines(text: str) -> AsyncIterator[str]:
    for line in text.split("\n"):
        yield line


async def test_parse_sse_joins_data_lines_and_skips_comments() -> None:
    text = (
        ': connected\n\nid: 7\nevent: linli.need.submitted.v1\ndata: {"a":\ndata: 1}\n\n: ping\n\n'
    )
    frames = [f async for f in parse_sse(_lines(text))]
    assert len(frames) == 1
    assert (frames[0].id, frames[0].event, frames[0].data) == (
        "7",
        "linli.need.submitted.v1",
        '{"a":\n1}',
    )


def test_sse_frames_carry_multi_line_html() -> None:
    frame = sse("update", "<p>\r\n  a\n</p>", "12").decode()
    assert frame == "event: update\nid: 12\ndata: <p>\ndata:   a\ndata: </p>\n\n"


def test_scheduling_events_need_no_second_read() -> None:
    assert views.from_scheduling("linli.assignment.offered.v1")
    assert views.from_scheduling("linli.need.escalated.v1")
    assert not views.from_scheduling("linli.need.submitted.v1")
    assert not views.from_scheduling("linli.volunteer.confirmed.v1")
    assert views.short_type("linli.need.submitted.v1") == "need.submitted"


def test_settings_refuse_production_without_key_or_secure_cookies() -> None:
    base = {
        "environment": "production",
        "nats_user": "console",
        "nats_password": "pw",
        "database_url": "postgresql://console@db/linli",
        "stream_replicas": 3,
        "public_origin": "https://console.example.org",
    }
    with pytest.raises(ValueError, match="SECRETS_KEY"):
        ConsoleSettings(**base)
    with pytest.raises(ValueError, match="Secure"):
        ConsoleSettings(**base, secrets_key="k", cookie_secure=False)
    assert ConsoleSettings(**base, secrets_key="k").cookie_secure is True
    with pytest.raises(ValueError, match="PUBLIC_ORIGIN"):
        ConsoleSettings(**{**base, "public_origin": ""}, secrets_key="k")
    assert ConsoleSettings(environment="development").cookie_secure is False
    assert ConsoleSettings(environment="test").cookie_secure is True
    with pytest.raises(ValueError, match="session_idle_s"):
        ConsoleSettings(session_idle_s=100, session_max_s=50)


def test_passwords_are_argon2id() -> None:
    hashed = hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert check_password(hashed, "correct horse battery")
    assert not check_password(hashed, "wrong")
    assert not check_password("not a hash", "wrong")


def test_a_refusal_becomes_field_reasons_or_one_sentence() -> None:
    reasons = [{"field": "body.party", "code": "unknown_party", "message": "no capacity"}]
    assert views.problems(422, "validation_failed", reasons, "") == [
        views.Problem("body.party", "unknown_party", "no capacity")
    ]
    assert views.problems(409, "conflict", [], "resolved already") == [
        views.Problem("", "conflict", "resolved already")
    ]


def test_a_row_names_the_escalation_still_to_resolve() -> None:
    start = datetime(2026, 5, 4, 3, 0, tzinfo=UTC)
    scheduled = {
        "id": "n",
        "kind": "meal_delivery",
        "urgency": "routine",
        "state": "escalated",
        "window": {"earliest": start.isoformat(), "latest": start.isoformat()},
        "sla_clocks": [],
        "attempts": 1,
        "escalations": [
            {
                "id": "e2",
                "state": "assigned",
                "reason": "no_taker",
                "escalated_at": start.isoformat(),
            },
            {
                "id": "e3",
                "state": "resolved",
                "reason": "no_capacity",
                "escalated_at": start.isoformat(),
            },
        ],
    }
    row = views.need_row(scheduled, None)
    assert (row.escalation_id, row.escalation_state) == ("e2", "assigned")
    assert row.escalation_reason == "no_capacity"
    resolved = {**scheduled, "escalations": scheduled["escalations"][1:]}
    assert views.need_row(resolved, None).escalation_id is None
