"""Bad HTTP input to intake gets a precise 4xx answer and changes nothing.

RELIABILITY.md row 10 and DESIGN.md section 7: malformed JSON, wrong types, unknown
kinds, oversized bodies, unknown communities and residents each answer with a clear
error, and afterwards no need, timeline, outbox or idempotency row exists and no
message reached the events stream. The truth is read from PostgreSQL and JetStream.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from harness.intake import (
    IntakeWorld,
    drop_world,
    intake_settings,
    meal_need,
    nats_client,
    prepare_world,
    repair_need,
    resident_body,
)
from harness.names import Names
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from nats.js import JetStreamContext

from linli.intake.app import build_app

pytestmark = pytest.mark.integration

KINDS = ("meal_delivery", "elder_care_visit", "repair")
JSON = {"content-type": "application/json"}
# Tables intake writes; every one must be unchanged after a refused request.
TABLES = ("needs", "need_timeline", "outbox", "idempotency_keys", "residents", "dead_letters")


# --- helpers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """What a corpus case needs to build its request."""

    world: IntakeWorld
    resident: str
    foreign_resident: str

    @property
    def home(self) -> str:
        return self.world.home

    def need(self, body: Any, *, who: str | None = "operator", **extra: Any) -> dict[str, Any]:
        headers = dict(extra.pop("headers", {}))
        if who is not None:
            headers.update(self.world.auth(who))
        return {
            "method": "POST",
            "url": f"/v1/communities/{extra.pop('community', self.home)}/needs",
            "json": body,
            "headers": headers,
            **extra,
        }

    def raw_need(self, content: bytes, *, who: str | None = "operator") -> dict[str, Any]:
        headers = {**JSON, **(self.world.auth(who) if who else {})}
        return {
            "method": "POST",
            "url": f"/v1/communities/{self.home}/needs",
            "content": content,
            "headers": headers,
        }

    def resident_post(self, body: Any, *, community: str | None = None) -> dict[str, Any]:
        return {
            "method": "POST",
            "url": f"/v1/communities/{community or self.home}/residents",
            "json": body,
            "headers": self.world.auth(),
        }

    def list_needs(self, **params: str) -> dict[str, Any]:
        return {
            "method": "GET",
            "url": f"/v1/communities/{self.home}/needs",
            "params": params,
            "headers": self.world.auth(),
        }

    def list_residents(self, **params: str) -> dict[str, Any]:
        return {
            "method": "GET",
            "url": f"/v1/communities/{self.home}/residents",
            "params": params,
            "headers": self.world.auth(),
        }


def window(*, start_in: timedelta, length: timedelta) -> dict[str, str]:
    start = datetime.now(UTC) + start_in
    return {"earliest": start.isoformat(), "latest": (start + length).isoformat()}


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def nested(depth: int) -> Any:
    value: Any = "soft food"
    for _ in range(depth):
        value = [value]
    return value


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


async def snapshot(intake: Any) -> dict[str, int]:
    """Row counts of intake's tables and the number of messages on the events stream."""
    pool = intake.app.state.runtime.pool
    counts = {t: int(await pool.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}  # noqa: S608
    info = await intake.js.stream_info(intake.world.settings.events_stream)
    counts["events_stream"] = info.state.messages
    return counts


async def assert_nothing_changed(intake: Any, before: dict[str, int]) -> None:
    after = await snapshot(intake)
    assert after == before
    # Nothing was ever enqueued (sent rows are kept), so nothing can be published later.
    assert after["outbox"] == 0
    assert after["events_stream"] == 0


def json_path(detail: dict[str, str]) -> str:
    """The JSON path a reason names (a path into the request, e.g. body.details.portions)."""
    return detail["field"]


def assert_validation_failed(response: httpx.Response, field_: str, code: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "validation_failed"
    assert body["detail"], body
    for detail in body["detail"]:
        assert set(detail) == {"field", "message", "code"}, detail
        assert all(isinstance(v, str) and v for v in detail.values()), detail
    named = [(json_path(d), d["code"]) for d in body["detail"]]
    assert (field_, code) in named, named


@asynccontextmanager
async def lenient_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client that turns an unhandled exception into the 500 a real server would send."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake.test") as client:
        yield client


# --- the corpus ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    request: Callable[[Ctx], dict[str, Any]]
    status: int
    field: str | None = None
    code: str | None = None


def _422(case_id: str, request: Callable[[Ctx], dict[str, Any]], field_: str, code: str) -> Case:
    return Case(case_id, request, 422, field_, code)


HOUR = timedelta(hours=1)
UNKNOWN_ID = "0b7e4b39-4d2a-4c59-9e3a-2f1d8c7a6b50"

CORPUS: list[Case] = [
    # --- body is not a JSON object
    _422(
        "malformed-json", lambda c: c.raw_need(b'{"kind": "meal_delivery",'), "body", "json_invalid"
    ),
    _422("truncated-json", lambda c: c.raw_need(b"{"), "body", "json_invalid"),
    _422(
        "json-array-body",
        lambda c: c.need([meal_need(c.resident)]),
        "body",
        "model_attributes_type",
    ),
    _422(
        "json-string-body",
        lambda c: c.raw_need(b'"meal_delivery"'),
        "body",
        "model_attributes_type",
    ),
    _422("json-null-body", lambda c: c.raw_need(b"null"), "body", "model_attributes_type"),
    _422("empty-body", lambda c: c.raw_need(b""), "body", "missing"),
    # --- wrong types
    _422(
        "portions-is-a-word",
        lambda c: c.need(meal_need(c.resident, details={"portions": "two"})),
        "body.details.portions",
        "int_parsing",
    ),
    _422(
        "portions-out-of-range",
        lambda c: c.need(meal_need(c.resident, details={"portions": 11})),
        "body.details.portions",
        "less_than_equal",
    ),
    _422(
        "portions-is-nan",
        lambda c: c.raw_need(
            json.dumps(meal_need(c.resident)).replace('"portions": 1', '"portions": NaN').encode()
        ),
        "body.details.portions",
        "finite_number",
    ),
    _422(
        "resident-id-not-a-uuid",
        lambda c: c.need(meal_need("resident-42")),
        "body.resident_id",
        "uuid_parsing",
    ),
    _422(
        "resident-id-is-a-number",
        lambda c: c.need({**meal_need(c.resident), "resident_id": 42}),
        "body.resident_id",
        "uuid_type",
    ),
    _422(
        "urgency-unknown",
        lambda c: c.need(meal_need(c.resident, urgency="asap")),
        "body.urgency",
        "enum",
    ),
    _422(
        "window-is-a-string",
        lambda c: c.need(meal_need(c.resident, window="tomorrow")),
        "body.window",
        "model_attributes_type",
    ),
    _422(
        "window-without-timezone",
        lambda c: c.need(
            meal_need(
                c.resident,
                window={"earliest": "2030-01-01T10:00:00", "latest": "2030-01-01T12:00:00"},
            )
        ),
        "body.window.earliest",
        "timezone_aware",
    ),
    # --- kind and details
    _422(
        "unknown-kind-haircut",
        lambda c: c.need(meal_need(c.resident, kind="haircut")),
        "body.kind",
        "union_tag_invalid",
    ),
    _422(
        "missing-kind",
        lambda c: c.need(without(meal_need(c.resident), "kind")),
        "body.kind",
        "union_tag_not_found",
    ),
    _422(
        "meal-with-repair-details",
        lambda c: c.need(
            meal_need(c.resident, details={"category": "heating", "description": "cold"})
        ),
        "body.details.category",
        "extra_forbidden",
    ),
    _422(
        "visit-with-meal-details",
        lambda c: c.need(meal_need(c.resident, kind="elder_care_visit", details={"portions": 1})),
        "body.details.purpose",
        "missing",
    ),
    _422(
        "repair-without-details",
        lambda c: c.need(without(repair_need(c.resident), "details")),
        "body.details",
        "missing",
    ),
    # --- the window
    _422(
        "missing-window",
        lambda c: c.need(without(meal_need(c.resident), "window")),
        "body.window",
        "missing",
    ),
    _422(
        "window-end-before-start",
        lambda c: c.need(meal_need(c.resident, window=window(start_in=3 * HOUR, length=-HOUR))),
        "body.window",
        "value_error",
    ),
    _422(
        "window-of-zero-length",
        lambda c: c.need(meal_need(c.resident, window=window(start_in=3 * HOUR, length=0 * HOUR))),
        "body.window",
        "value_error",
    ),
    _422(
        "window-in-the-past",
        lambda c: c.need(meal_need(c.resident, window=window(start_in=-3 * HOUR, length=HOUR))),
        "body.window.latest",
        "window_in_past",
    ),
    _422(
        "window-longer-than-31-days",
        lambda c: c.need(
            meal_need(c.resident, window=window(start_in=HOUR, length=timedelta(days=31, hours=1)))
        ),
        "body.window",
        "value_error",
    ),
    # --- residents that are not this community's
    _422(
        "unknown-resident",
        lambda c: c.need(meal_need(UNKNOWN_ID)),
        "body.resident_id",
        "unknown_resident",
    ),
    _422(
        "resident-of-another-community",
        lambda c: c.need(meal_need(c.foreign_resident)),
        "body.resident_id",
        "unknown_resident",
    ),
    # --- unknown fields are forbidden at every level
    _422(
        "extra-top-level-field",
        lambda c: c.need(meal_need(c.resident, colour="blue")),
        "body.colour",
        "extra_forbidden",
    ),
    _422(
        "extra-field-in-details",
        lambda c: c.need(meal_need(c.resident, details={"portions": 1, "sauce": "chili"})),
        "body.details.sauce",
        "extra_forbidden",
    ),
    _422(
        "extra-field-in-window",
        lambda c: c.need(
            meal_need(c.resident, window={**window(start_in=HOUR, length=HOUR), "tz": "CST"})
        ),
        "body.window.tz",
        "extra_forbidden",
    ),
    _422(
        "extra-field-in-source",
        lambda c: c.need(meal_need(c.resident, source={"system": "app", "ip": "10.0.0.1"})),
        "body.source.ip",
        "extra_forbidden",
    ),
    # --- nesting within the limits of the parser
    _422(
        "deeply-nested-diet-needs",
        lambda c: c.need(meal_need(c.resident, details={"diet_needs": nested(200)})),
        "body.details.diet_needs.0",
        "string_type",
    ),
    _422(
        "nested-object-as-notes",
        lambda c: c.need(meal_need(c.resident, notes={"a": {"b": {"c": ["d"]}}})),
        "body.notes",
        "string_type",
    ),
    # --- strings over their maximum length
    _422(
        "notes-over-1000-chars",
        lambda c: c.need(meal_need(c.resident, notes="x" * 1001)),
        "body.notes",
        "string_too_long",
    ),
    _422(
        "diet-need-over-40-chars",
        lambda c: c.need(meal_need(c.resident, details={"diet_needs": ["x" * 41]})),
        "body.details.diet_needs.0",
        "string_too_long",
    ),
    _422(
        "more-than-10-diet-needs",
        lambda c: c.need(meal_need(c.resident, details={"diet_needs": ["salt"] * 11})),
        "body.details.diet_needs",
        "too_long",
    ),
    _422(
        "repair-description-over-2000-chars",
        lambda c: c.need(
            repair_need(c.resident, details={"category": "plumbing", "description": "d" * 2001})
        ),
        "body.details.description",
        "string_too_long",
    ),
    _422(
        "source-system-over-64-chars",
        lambda c: c.need(meal_need(c.resident, source={"system": "s" * 65})),
        "body.source.system",
        "string_too_long",
    ),
    _422(
        "source-reference-over-128-chars",
        lambda c: c.need(meal_need(c.resident, source={"system": "app", "reference": "r" * 129})),
        "body.source.reference",
        "string_too_long",
    ),
    _422(
        "source-system-with-spaces",
        lambda c: c.need(meal_need(c.resident, source={"system": "city hotline"})),
        "body.source.system",
        "string_pattern_mismatch",
    ),
    # --- headers
    _422(
        "idempotency-key-over-200-chars",
        lambda c: c.need(meal_need(c.resident), headers={"Idempotency-Key": "k" * 201}),
        "header.Idempotency-Key",
        "string_too_long",
    ),
    _422(
        "idempotency-key-with-space",
        lambda c: c.need(meal_need(c.resident), headers={"Idempotency-Key": "order 42"}),
        "header.Idempotency-Key",
        "string_pattern_mismatch",
    ),
    # --- size
    Case(
        "body-of-70-KiB",
        lambda c: c.need(meal_need(c.resident, notes="x" * (70 * 1024))),
        413,
    ),
    Case(
        "70-KiB-of-nesting",
        lambda c: c.raw_need(b"[" * (35 * 1024) + b"]" * (35 * 1024)),
        413,
    ),
    # --- authentication
    Case("no-token", lambda c: c.need(meal_need(c.resident), who=None), 401),
    Case(
        "unknown-token",
        lambda c: c.need(
            meal_need(c.resident), who=None, headers={"Authorization": "Bearer lnl_not-a-token"}
        ),
        401,
    ),
    Case(
        "token-without-prefix",
        lambda c: c.need(
            meal_need(c.resident),
            who=None,
            headers={"Authorization": "Bearer " + c.world.tokens["operator"][4:]},
        ),
        401,
    ),
    Case(
        "token-in-basic-scheme",
        lambda c: c.need(
            meal_need(c.resident),
            who=None,
            headers={"Authorization": "Basic " + c.world.tokens["operator"]},
        ),
        401,
    ),
    Case(
        "token-of-5000-chars",
        lambda c: c.need(
            meal_need(c.resident), who=None, headers={"Authorization": "Bearer lnl_" + "a" * 5000}
        ),
        401,
    ),
    # --- communities
    Case(
        "unknown-community",
        lambda c: c.need(meal_need(c.resident), community="no-such-community"),
        404,
    ),
    Case(
        "unknown-community-as-admin",
        lambda c: c.need(meal_need(c.resident), community="no-such-community", who="admin"),
        404,
    ),
    _422(
        "invalid-community-slug",
        lambda c: c.need(meal_need(c.resident), community="Bad_Slug!"),
        "path.community",
        "string_pattern_mismatch",
    ),
    _422(
        "invalid-community-slug-as-admin",
        lambda c: c.need(meal_need(c.resident), community="Bad_Slug!", who="admin"),
        "path.community",
        "string_pattern_mismatch",
    ),
    _422(
        "community-slug-over-64-chars",
        lambda c: c.need(meal_need(c.resident), community="a" * 65, who="admin"),
        "path.community",
        "string_pattern_mismatch",
    ),
    # --- residents
    _422(
        "resident-invalid-phone",
        lambda c: c.resident_post(resident_body(phone="12345")),
        "body.phone",
        "value_error",
    ),
    _422(
        "resident-phone-of-letters",
        lambda c: c.resident_post(resident_body(phone="call me maybe")),
        "body.phone",
        "value_error",
    ),
    _422(
        "resident-missing-phone",
        lambda c: c.resident_post(without(resident_body(), "phone")),
        "body.phone",
        "missing",
    ),
    _422(
        "resident-name-over-100-chars",
        lambda c: c.resident_post(resident_body(name="n" * 101)),
        "body.name",
        "string_too_long",
    ),
    _422(
        "resident-blank-name",
        lambda c: c.resident_post(resident_body(name="   ")),
        "body.name",
        "string_too_short",
    ),
    _422(
        "resident-address-over-300-chars",
        lambda c: c.resident_post(resident_body(address="a" * 301)),
        "body.address",
        "string_too_long",
    ),
    _422(
        "resident-unknown-priority-group",
        lambda c: c.resident_post(resident_body(priority_group="vip")),
        "body.priority_group",
        "enum",
    ),
    _422(
        "resident-consent-not-boolean",
        lambda c: c.resident_post(resident_body(consent_to_share_contact="perhaps")),
        "body.consent_to_share_contact",
        "bool_parsing",
    ),
    _422(
        "resident-extra-field",
        lambda c: c.resident_post(resident_body(id_card="110101194001011234")),
        "body.id_card",
        "extra_forbidden",
    ),
    _422(
        "resident-json-array",
        lambda c: c.resident_post([resident_body()]),
        "body",
        "model_attributes_type",
    ),
    Case(
        "resident-unknown-community-as-admin",
        lambda c: {
            **c.resident_post(resident_body(), community="nowhere"),
            "headers": c.world.auth("admin"),
        },
        404,
    ),
    _422(
        "resident-invalid-community-slug",
        lambda c: c.resident_post(resident_body(), community="Bad_Slug!"),
        "path.community",
        "string_pattern_mismatch",
    ),
    # --- listing
    _422(
        "list-cursor-not-base64",
        lambda c: c.list_needs(cursor="!!!"),
        "query.cursor",
        "string_pattern_mismatch",
    ),
    _422(
        "list-cursor-without-separator",
        lambda c: c.list_needs(cursor=cursor_of("2026-01-01T00:00:00+00:00")),
        "query.cursor",
        "string_pattern_mismatch",
    ),
    _422(
        "list-cursor-with-naive-time",
        lambda c: c.list_needs(cursor=cursor_of(f"2026-01-01T00:00:00|{uuid.uuid4()}")),
        "query.cursor",
        "string_too_long",
    ),
    _422(
        "list-cursor-with-bad-uuid",
        lambda c: c.list_needs(cursor=cursor_of("2026-01-01T00:00:00+00:00|nope")),
        "query.cursor",
        "string_pattern_mismatch",
    ),
    _422(
        "list-cursor-over-200-chars",
        lambda c: c.list_needs(cursor="a" * 201),
        "query.cursor",
        "string_too_long",
    ),
    _422("list-limit-0", lambda c: c.list_needs(limit="0"), "query.limit", "greater_than_equal"),
    _422("list-limit-1000", lambda c: c.list_needs(limit="1000"), "query.limit", "less_than_equal"),
    _422(
        "list-limit-not-a-number", lambda c: c.list_needs(limit="ten"), "query.limit", "int_parsing"
    ),
    _422("list-status-bogus", lambda c: c.list_needs(status="bogus"), "query.status", "enum"),
    _422("list-kind-bogus", lambda c: c.list_needs(kind="haircut"), "query.kind", "enum"),
    _422(
        "list-since-naive",
        lambda c: c.list_needs(since="2026-01-01T00:00:00"),
        "query.since",
        "timezone_aware",
    ),
    _422(
        "list-since-a-word",
        lambda c: c.list_needs(since="yesterday"),
        "query.since",
        "datetime_from_date_parsing",
    ),
    _422(
        "residents-cursor-bad",
        lambda c: c.list_residents(cursor="zzz"),
        "query.cursor",
        "string_pattern_mismatch",
    ),
    _422(
        "residents-limit-0",
        lambda c: c.list_residents(limit="0"),
        "query.limit",
        "greater_than_equal",
    ),
]


@dataclass
class SharedIntake:
    """The `intake` fixture's shape, started once for the whole corpus.

    A refused request changes nothing, so the corpus can share one intake; each case
    still compares the tables and the stream before and after. This keeps some ninety
    cases from paying for a schema, streams and a service start each.
    """

    world: IntakeWorld
    http: httpx.AsyncClient
    js: JetStreamContext
    app: Any
    ctx: Ctx


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_intake(nats_url: str, database_url: str) -> AsyncIterator[SharedIntake]:
    names = Names()
    settings_ = intake_settings(names, nats_url, database_url)
    world = await prepare_world(settings_, names)
    app = build_app(settings_)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://intake.test"
            ) as http,
            nats_client(nats_url) as nc,
        ):
            residents = []
            for who, community in (("operator", world.home), ("other_operator", world.other)):
                created = await http.post(
                    f"/v1/communities/{community}/residents",
                    json=resident_body(),
                    headers=world.auth(who),
                )
                assert created.status_code == 201, created.text
                residents.append(created.json()["id"])
            ctx = Ctx(world, *residents)
            yield SharedIntake(world, http, nc.jetstream(), app, ctx)
    finally:
        await drop_world(settings_, nats_url)


@pytest.fixture
async def ctx(intake: Any) -> Ctx:
    """A corpus context on the per-test `intake`."""
    world = intake.world
    foreign = await intake.new_resident("other_operator", community=world.other)
    return Ctx(world, await intake.new_resident(), foreign)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
async def test_bad_input_is_refused_and_changes_nothing(
    shared_intake: SharedIntake, case: Case
) -> None:
    intake = shared_intake
    before = await snapshot(intake)
    response = await intake.http.request(**case.request(intake.ctx))
    assert response.status_code == case.status, response.text
    if case.status == 422:
        assert case.field is not None
        assert case.code is not None
        assert_validation_failed(response, case.field, case.code)
    elif case.status == 413:
        assert response.json()["error"] == "payload_too_large"
    elif case.status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    await assert_nothing_changed(intake, before)


# --- personal data is not echoed ------------------------------------------------------


async def test_validation_errors_do_not_echo_personal_data(intake: Any) -> None:
    world = intake.world
    before = await snapshot(intake)
    response = await intake.http.post(
        f"/v1/communities/{world.home}/residents",
        json=resident_body(name="ZZCANARY-x", phone="ZZCANARY-phone", address="ZZCANARY-addr"),
        headers=world.auth(),
    )
    assert_validation_failed(response, "body.phone", "value_error")
    assert "ZZCANARY" not in response.text
    # A second failure in the same body: still nothing of the input comes back.
    response = await intake.http.post(
        f"/v1/communities/{world.home}/residents",
        json=resident_body(name="ZZCANARY-" + "x" * 100, phone="ZZCANARY-phone"),
        headers=world.auth(),
    )
    assert response.status_code == 422
    assert "ZZCANARY" not in response.text
    await assert_nothing_changed(intake, before)


async def test_an_unknown_kind_is_not_echoed(intake: Any) -> None:
    world = intake.world
    resident = await intake.new_resident()
    response = await intake.http.post(
        f"/v1/communities/{world.home}/needs",
        json=meal_need(resident, kind="ZZCANARY-13800138001"),
        headers=world.auth(),
    )
    assert response.status_code == 422
    assert "ZZCANARY" not in response.text


# --- known bugs: each test asserts the intended behaviour -----------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            lambda r: meal_need(r, details={"portions": "two"}), "body.details.portions", id="tag"
        ),
        pytest.param(lambda r: meal_need(r, kind="haircut"), "body.kind", id="unknown-kind"),
        pytest.param(lambda r: b'{"kind": ', "body", id="json-offset"),
    ],
)
async def test_reason_fields_are_paths_into_the_request(
    intake: Any, body: Callable[[str], Any], expected: str
) -> None:
    world = intake.world
    value = body(await intake.new_resident())
    kwargs: dict[str, Any] = (
        {"content": value, "headers": {**world.auth(), **JSON}}
        if isinstance(value, bytes)
        else {"json": value, "headers": world.auth()}
    )
    response = await intake.http.post(f"/v1/communities/{world.home}/needs", **kwargs)
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["detail"]] == [expected]


UNPARSEABLE = [
    pytest.param(b'{"notes": ' + b"[" * 5000 + b"]" * 5000 + b"}", id="nesting-5000-deep"),
    pytest.param(b'{"kind": "\xff\xfe"}', id="invalid-utf8"),
]


@pytest.mark.parametrize("content", UNPARSEABLE)
async def test_unparseable_body_changes_nothing(intake: Any, content: bytes) -> None:
    world = intake.world
    before = await snapshot(intake)
    response = await intake.http.post(
        f"/v1/communities/{world.home}/needs", content=content, headers={**world.auth(), **JSON}
    )
    assert response.status_code in (400, 422)
    await assert_nothing_changed(intake, before)


@pytest.mark.parametrize("content", UNPARSEABLE)
async def test_unparseable_body_answers_validation_failed(intake: Any, content: bytes) -> None:
    world = intake.world
    response = await intake.http.post(
        f"/v1/communities/{world.home}/needs", content=content, headers={**world.auth(), **JSON}
    )
    assert_validation_failed(response, "body", "json_invalid")


async def test_chunked_body_over_the_limit_is_413(intake: Any) -> None:
    world = intake.world
    before = await snapshot(intake)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    response = await intake.http.post(
        f"/v1/communities/{world.home}/needs", content=chunks(), headers={**world.auth(), **JSON}
    )
    await assert_nothing_changed(intake, before)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_malformed_json_without_a_token_is_401(intake: Any) -> None:
    world = intake.world
    response = await intake.http.post(
        f"/v1/communities/{world.home}/needs", content=b'{"kind": ', headers=JSON
    )
    assert response.status_code == 401


@pytest.mark.parametrize("target", ["need-notes", "resident-name", "repair-description"])
async def test_nul_character_is_refused_with_422(intake: Any, target: str) -> None:
    world = intake.world
    resident = await intake.new_resident()
    url, body, field_ = {
        "need-notes": ("needs", meal_need(resident, notes="a\x00b"), "body.notes"),
        "resident-name": ("residents", resident_body(name="a\x00b"), "body.name"),
        "repair-description": (
            "needs",
            repair_need(resident, details={"category": "other", "description": "a\x00b"}),
            "body.details.description",
        ),
    }[target]
    before = await snapshot(intake)
    async with lenient_client(intake.app) as client:
        response = await client.post(
            f"/v1/communities/{world.home}/{url}", json=body, headers=world.auth()
        )
    await assert_nothing_changed(intake, before)
    assert response.status_code == 422, response.text
    assert [json_path(d) for d in response.json()["detail"]] == [field_]


# Aware datetimes that PostgreSQL cannot hold once converted to UTC.
_Y1 = "0001-01-01T00:00:00+14:00"
_Y9999 = "9999-12-31T23:00:00-14:00"


@pytest.mark.parametrize(
    "request_of",
    [
        pytest.param(lambda c: c.list_needs(since=_Y1), id="since-year-1"),
        pytest.param(lambda c: c.list_needs(since=_Y9999), id="since-year-10000"),
        pytest.param(
            lambda c: c.need(
                meal_need(
                    c.resident,
                    window={
                        "earliest": "9999-12-31T10:00:00-14:00",
                        "latest": "9999-12-31T12:00:00-14:00",
                    },
                )
            ),
            id="window-year-10000",
        ),
    ],
)
async def test_out_of_range_datetimes_are_refused_with_422(
    intake: Any, ctx: Ctx, request_of: Callable[[Ctx], dict[str, Any]]
) -> None:
    before = await snapshot(intake)
    async with lenient_client(intake.app) as client:
        response = await client.request(**request_of(ctx))
    await assert_nothing_changed(intake, before)
    assert response.status_code == 422, response.text


# --- property: no input makes intake answer 500 ----------------------------------------

# NUL is left out: test_nul_character_is_refused_with_422 covers it (a known 500).
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["kind", "resident_id", "window", "urgency", "notes", "source", "details", "unexpected"]
)
_bodies = st.one_of(
    st.tuples(st.just("json"), _json_values),
    st.tuples(st.just("text"), _text),
    st.tuples(st.just("replace"), st.tuples(_keys, _json_values)),
    st.tuples(st.just("replace-details"), st.tuples(_text, _json_values)),
    st.tuples(st.just("drop"), _keys),
    st.tuples(st.just("valid"), st.sampled_from(["meal", "repair"])),
    # Valid shapes with arbitrary text where text is allowed: these should be 201.
    st.tuples(st.just("replace"), st.tuples(st.just("notes"), _text)),
    st.tuples(st.just("replace-details"), st.tuples(st.just("diet_needs"), st.lists(_text))),
)
_who = st.sampled_from(["operator", "operator", "operator", "system", "other_operator", None])


def _build(resident: str, mode: str, arg: Any) -> bytes:
    body = meal_need(resident)
    if mode == "json":
        return json.dumps(arg).encode()
    if mode == "text":
        return str(arg).encode()
    if mode == "replace":
        key, value = arg
        body[key] = value
    elif mode == "replace-details":
        key, value = arg
        body["details"] = {**body["details"], key: value}
    elif mode == "drop":
        body.pop(arg, None)
    elif mode == "valid":
        body = meal_need(resident) if arg == "meal" else repair_need(resident)
    return json.dumps(body).encode()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies, who=_who)
async def test_arbitrary_bodies_never_cause_a_server_error(
    intake: Any, body: tuple[str, Any], who: str | None
) -> None:
    world = intake.world
    pool = intake.app.state.runtime.pool
    resident = await intake.new_resident()
    content = _build(resident, *body)
    headers = {**JSON, **(world.auth(who) if who else {})}
    needs_before = await pool.fetchval("SELECT count(*) FROM needs")
    outbox_before = await pool.fetchval("SELECT count(*) FROM outbox")
    async with lenient_client(intake.app) as client:
        response = await client.post(
            f"/v1/communities/{world.home}/needs", content=content, headers=headers
        )
    event(f"status {response.status_code}")
    assert response.status_code in {201, 401, 404, 409, 413, 422}, response.text
    grew = 1 if response.status_code == 201 else 0
    assert await pool.fetchval("SELECT count(*) FROM needs") == needs_before + grew
    assert await pool.fetchval("SELECT count(*) FROM outbox") == outbox_before + grew
    if response.status_code == 422:
        assert response.json()["error"] == "validation_failed"
