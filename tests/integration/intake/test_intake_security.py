"""Intake's HTTP security: community scoping, roles, revocation, injection, canaries.

RELIABILITY.md rows 11, 14 and 15 and DESIGN.md section 7: one community's credentials
never read or change another's data (404 with none of its data), values are bound as
parameters so injection strings change nothing, and a resident's personal data never
reaches the events stream or a log record.
"""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from harness.common import outbox_settled
from harness.intake import events_on_stream, meal_need, outbox_backlog, resident_body

from linli.contracts.types import Role
from linli.servicekit.auth import issue_credential, revoke_credential
from linli.servicekit.cursors import encode_cursor

pytestmark = pytest.mark.integration

INJECTIONS = [
    "' OR 1=1 --",
    '"; DROP TABLE needs; --',
    "'); DELETE FROM residents; --",
    "1 UNION SELECT token_sha256 FROM credentials",
    "$1::text; TRUNCATE outbox",
]
CANARY = "ZZCANARY"


async def need_count(pool: Any) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM needs"))


async def status_of(pool: Any, need_id: str) -> str:
    return str(await pool.fetchval("SELECT status FROM needs WHERE id = $1", uuid.UUID(need_id)))


def assert_reveals_nothing(response: httpx.Response, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in response.text, response.text
    assert CANARY not in response.text


async def submit(intake: Any, resident: str, *, who: str = "operator", **body: Any) -> str:
    world = intake.world
    community = world.other if who == "other_operator" else world.home
    response = await intake.http.post(
        f"/v1/communities/{community}/needs",
        json=meal_need(resident, **body),
        headers=world.auth(who),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# --- cross-community access -----------------------------------------------------------


async def test_another_communitys_operator_cannot_read_or_change_home(intake: Any) -> None:
    world, pool = intake.world, intake.app.state.runtime.pool
    resident = await intake.new_resident()
    need = await submit(intake, resident)
    theirs = world.auth("other_operator")
    home, other = f"/v1/communities/{world.home}", f"/v1/communities/{world.other}"
    # The relay publishes need.submitted; wait, so a later change would show up as a new row.
    assert await outbox_backlog(pool) == 0
    rows_before = {
        t: await pool.fetchval(f"SELECT count(*) FROM {t}")  # noqa: S608
        for t in ("needs", "need_timeline", "outbox", "residents", "idempotency_keys")
    }

    reads = [
        f"{other}/needs/{need}",
        f"{home}/needs/{need}",
        f"{home}/needs",
        f"{home}/needs?status=submitted",
        f"{home}/residents",
        f"{home}/residents/{resident}",
        f"{other}/residents/{resident}",
    ]
    for url in reads:
        response = await intake.http.get(url, headers=theirs)
        assert response.status_code == 404, (url, response.text)
        assert_reveals_nothing(response, need, resident, world.home)

    for url in (f"{home}/needs/{need}/cancel", f"{other}/needs/{need}/cancel"):
        response = await intake.http.post(url, json={"reason": "not yours"}, headers=theirs)
        assert response.status_code == 404, (url, response.text)
        assert_reveals_nothing(response, need, resident)
    assert await status_of(pool, need) == "submitted"

    # Writing into home with other's token: refused before anything is looked at.
    response = await intake.http.post(f"{home}/needs", json=meal_need(resident), headers=theirs)
    assert response.status_code == 404
    assert_reveals_nothing(response, need, resident)
    response = await intake.http.post(f"{home}/residents", json=resident_body(), headers=theirs)
    assert response.status_code == 404
    # Home's resident named in other's own community: as if it did not exist.
    response = await intake.http.post(f"{other}/needs", json=meal_need(resident), headers=theirs)
    assert response.status_code == 422
    assert [(d["field"], d["code"]) for d in response.json()["detail"]] == [
        ("body.resident_id", "unknown_resident")
    ]
    assert_reveals_nothing(response, need)

    # Filters in other's own community never reach home's rows, even with a cursor that
    # points just past home's need (under home's path it lists that need).
    submitted_at = await pool.fetchval(
        "SELECT submitted_at FROM needs WHERE id = $1", uuid.UUID(need)
    )
    home_cursor = encode_cursor(submitted_at + timedelta(seconds=1), uuid.UUID(need))
    mine = await intake.http.get(
        f"{home}/needs", params={"cursor": home_cursor}, headers=world.auth()
    )
    assert [n["id"] for n in mine.json()["items"]] == [need]
    for params in ({}, {"status": "submitted"}, {"kind": "meal_delivery"}, {"cursor": home_cursor}):
        listed = await intake.http.get(f"{other}/needs", params=params, headers=theirs)
        assert listed.status_code == 200
        assert listed.json()["items"] == []
        assert need not in listed.text
    listed = await intake.http.get(f"{other}/residents", headers=theirs)
    assert listed.status_code == 200
    assert listed.json()["items"] == []

    await outbox_settled(pool)  # anything enqueued after all would be counted now
    rows_after = {
        t: await pool.fetchval(f"SELECT count(*) FROM {t}")  # noqa: S608
        for t in rows_before
    }
    assert rows_after == rows_before
    assert await status_of(pool, need) == "submitted"
    info = await intake.js.stream_info(world.settings.events_stream)
    assert info.state.messages == 1


async def test_admin_reads_every_community_but_only_through_its_path(intake: Any) -> None:
    world = intake.world
    home_need = await submit(intake, await intake.new_resident())
    other_resident = await intake.new_resident("other_operator", community=world.other)
    other_need = await submit(intake, other_resident, who="other_operator")
    admin = world.auth("admin")
    for community, need in ((world.home, home_need), (world.other, other_need)):
        got = await intake.http.get(f"/v1/communities/{community}/needs/{need}", headers=admin)
        assert got.status_code == 200
        assert got.json()["community"] == community
        listed = await intake.http.get(f"/v1/communities/{community}/needs", headers=admin)
        assert [n["id"] for n in listed.json()["items"]] == [need]
        residents = await intake.http.get(f"/v1/communities/{community}/residents", headers=admin)
        assert residents.status_code == 200
    # Even '*' finds a need only under its own community's path.
    crossed = await intake.http.get(
        f"/v1/communities/{world.other}/needs/{home_need}", headers=admin
    )
    assert crossed.status_code == 404
    assert home_need not in crossed.text


async def test_system_role_submits_needs_but_never_reads_residents(intake: Any) -> None:
    world, pool = intake.world, intake.app.state.runtime.pool
    resident = await intake.new_resident()
    need = await submit(intake, resident, who="system")
    assert await need_count(pool) == 1
    system = world.auth("system")
    home = f"/v1/communities/{world.home}"
    for url in (f"{home}/residents", f"{home}/residents/{resident}"):
        response = await intake.http.get(url, headers=system)
        assert response.status_code == 403, (url, response.text)
        assert CANARY not in response.text
        assert resident not in response.text
    # It may read the needs of its community, not of another.
    assert (await intake.http.get(f"{home}/needs/{need}", headers=system)).status_code == 200
    other = await intake.http.get(f"/v1/communities/{world.other}/needs", headers=system)
    assert other.status_code == 404


async def test_a_revoked_credential_answers_401(intake: Any) -> None:
    world, pool = intake.world, intake.app.state.runtime.pool
    url = f"/v1/communities/{world.home}/needs"
    async with pool.acquire() as conn:
        cred_id, token = await issue_credential(
            conn, role=Role.OPERATOR, communities=[world.home], label="revoke-me"
        )
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await intake.http.get(url, headers=bearer)).status_code == 200
    async with pool.acquire() as conn:
        assert (await revoke_credential(conn, cred_id))[0]
        assert not (await revoke_credential(conn, cred_id))[0]
    response = await intake.http.get(url, headers=bearer)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    resident = await intake.new_resident()
    refused = await intake.http.post(url, json=meal_need(resident), headers=bearer)
    assert refused.status_code == 401
    assert await need_count(pool) == 0

    # The fixture's own operator credential, found by its label, revoked the same way.
    assert (await intake.http.get(url, headers=world.auth())).status_code == 200
    operator_id = await pool.fetchval("SELECT id FROM credentials WHERE label = 'operator'")
    async with pool.acquire() as conn:
        assert (await revoke_credential(conn, operator_id))[0]
    assert (await intake.http.get(url, headers=world.auth())).status_code == 401
    # Other credentials are untouched.
    assert (await intake.http.get(url, headers=world.auth("admin"))).status_code == 200


# --- injection ------------------------------------------------------------------------


async def schema_tables(pool: Any) -> set[str]:
    rows = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r["tablename"] for r in rows}


async def test_injection_strings_change_nothing(intake: Any) -> None:
    world, pool = intake.world, intake.app.state.runtime.pool
    auth = world.auth()
    home = f"/v1/communities/{world.home}"
    tables = await schema_tables(pool)
    assert {"needs", "residents", "credentials", "outbox", "communities"} <= tables
    credentials = await pool.fetchval("SELECT count(*) FROM credentials")
    created_needs: list[str] = []
    for text in INJECTIONS:
        quoted = quote(text, safe="")
        # In the path: the slug and the id are validated before any SQL runs.
        for url, field in (
            (f"/v1/communities/{quoted}/needs", "path.community"),
            (f"/v1/communities/{quoted}/residents", "path.community"),
            (f"{home}/needs/{quoted}", "path.need_id"),
            (f"{home}/residents/{quoted}", "path.resident_id"),
        ):
            response = await intake.http.get(url, headers=world.auth("admin"))
            assert response.status_code == 422, (url, response.text)
            assert [d["field"] for d in response.json()["detail"]] == [field]
        response = await intake.http.post(f"{home}/needs/{quoted}/cancel", json={}, headers=auth)
        assert response.status_code == 422
        # In the filters: enums, datetimes and cursors are parsed, never spliced.
        for name in ("status", "kind", "since", "cursor", "limit"):
            response = await intake.http.get(f"{home}/needs", params={name: text}, headers=auth)
            assert response.status_code == 422, (name, response.text)
            assert [d["field"] for d in response.json()["detail"]] == [f"query.{name}"]
        forged = base64.urlsafe_b64encode(f"2026-01-01T00:00:00+00:00|{text}".encode()).decode()
        response = await intake.http.get(f"{home}/needs", params={"cursor": forged}, headers=auth)
        assert response.status_code == 422
        # In the body: stored verbatim as data.
        created = await intake.http.post(
            f"{home}/residents",
            json=resident_body(name=text, address=text, compound=text),
            headers=auth,
        )
        assert created.status_code == 201, created.text
        resident = created.json()
        assert (resident["name"], resident["address"], resident["compound"]) == (text,) * 3
        need = await intake.http.post(
            f"{home}/needs",
            json=meal_need(resident["id"], notes=text, source={"system": "app", "reference": text}),
            headers={**auth, "Idempotency-Key": "k';DROP-TABLE-needs;--" + str(len(created_needs))},
        )
        assert need.status_code == 201, need.text
        created_needs.append(need.json()["id"])
        cancelled = await intake.http.post(
            f"{home}/needs/{need.json()['id']}/cancel", json={"reason": text}, headers=auth
        )
        assert cancelled.status_code == 200
        stored = await pool.fetchrow(
            "SELECT notes, source_reference, cancel_reason FROM needs WHERE id = $1",
            uuid.UUID(need.json()["id"]),
        )
        assert tuple(stored) == (text, text, text)

    assert await schema_tables(pool) == tables
    assert await pool.fetchval("SELECT count(*) FROM credentials") == credentials
    assert await pool.fetchval("SELECT count(*) FROM communities") == 2
    assert await pool.fetchval("SELECT count(*) FROM residents") == len(INJECTIONS)
    ids = {r["id"] for r in await pool.fetch("SELECT id FROM needs")}
    assert ids == {uuid.UUID(n) for n in created_needs}
    listed = await intake.http.get(f"{home}/needs", params={"limit": "200"}, headers=auth)
    assert {n["id"] for n in listed.json()["items"]} == set(created_needs)
    assert {n["status"] for n in listed.json()["items"]} == {"cancelled"}
    # Every need was announced twice (submitted, cancelled) and nothing else.
    assert await outbox_backlog(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 2 * len(INJECTIONS)


# --- canary personal data -------------------------------------------------------------


async def test_canary_resident_never_reaches_events_or_logs(
    intake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    world = intake.world
    caplog.set_level(logging.DEBUG)
    # configure_logging quietens these; open them up for the capture.
    for name in ("nats", "faststream", "faststream.access", "asyncpg", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    phone = "13800138077"
    home = f"/v1/communities/{world.home}"

    created = await intake.http.post(
        f"{home}/residents",
        json=resident_body(name=f"{CANARY}-张桂英", phone=phone, address=f"{CANARY} 3-401"),
        headers=world.auth(),
    )
    assert created.status_code == 201
    resident = created.json()["id"]
    # Failure paths too: a refused resident and a refused need.
    refused = await intake.http.post(
        f"{home}/residents",
        json=resident_body(name=f"{CANARY}-x", phone=f"{CANARY}-phone"),
        headers=world.auth(),
    )
    assert refused.status_code == 422
    late = await intake.http.post(
        f"{home}/needs",
        json=meal_need(resident, hours_ahead=-5),
        headers=world.auth(),
    )
    assert late.status_code == 422
    need = await submit(intake, resident)
    cancelled = await intake.http.post(
        f"{home}/needs/{need}/cancel", json={"reason": "moved away"}, headers=world.auth()
    )
    assert cancelled.status_code == 200
    got = await intake.http.get(f"{home}/needs/{need}", headers=world.auth())
    assert got.status_code == 200
    assert CANARY not in got.text

    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=2)
    assert len(messages) == 2
    for msg in messages:
        for where in (msg.subject, msg.data.decode(), str(msg.headers)):
            assert CANARY not in where
            assert phone not in where
            assert "张桂英" not in where
    assert await outbox_backlog(intake.app.state.runtime.pool) == 0

    assert caplog.records, "nothing was logged at all; the capture is not working"
    for record in caplog.records:
        assert CANARY not in record.getMessage(), record
        assert CANARY not in str(record.__dict__), record
        assert phone not in str(record.__dict__), record
