"""Recurring plans generate each occurrence's need once (also with two generators at
once), and pause/resume covers a hospital stay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from harness.intake import events_on_stream

from linli.intake.service import Clock, generate_plan_needs

pytestmark = pytest.mark.integration


def every_day_plan(resident: str) -> dict:
    today = datetime.now(UTC).date()
    return {
        "resident_id": resident,
        "kind": "meal_delivery",
        "details": {"diet_needs": ["soft food"], "portions": 1},
        "schedule": {
            "weekdays": [1, 2, 3, 4, 5, 6, 7],
            "start_time": "23:58:00",
            "end_time": "23:59:00",
            "timezone": "UTC",
            "starts_on": (today + timedelta(days=1)).isoformat(),
        },
    }


async def plan_needs(intake, plan_id: str, want: int, timeout: float = 10.0) -> list:
    world = intake.world
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await intake.http.get(
            f"/v1/communities/{world.home}/plans/{plan_id}", headers=world.auth()
        )
        occurrences = got.json()["occurrences"]
        if len(occurrences) >= want or loop.time() > deadline:
            return occurrences
        await asyncio.sleep(0.1)


async def test_plan_generates_each_occurrence_once(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    created = await intake.http.post(
        f"/v1/communities/{world.home}/plans", json=every_day_plan(resident), headers=world.auth()
    )
    assert created.status_code == 201, created.text
    plan_id = created.json()["id"]
    # Horizon 2 days from today, plan starts tomorrow: tomorrow and the day after.
    occurrences = await plan_needs(intake, plan_id, 2)
    assert len(occurrences) == 2
    # Three generators racing (as three intake processes would) on occurrences nobody has
    # generated yet (a longer horizon than the service's): each made exactly once.
    pool = intake.app.state.runtime.pool

    async def one() -> int:
        async with pool.acquire() as conn:
            return await generate_plan_needs(conn, clock=Clock(), horizon_days=5)

    created = sum(await asyncio.gather(one(), one(), one()))
    assert created >= 3  # the days beyond the service's 2-day horizon
    total = 2 + created
    assert await pool.fetchval("SELECT count(*) FROM needs") == total
    days = await pool.fetch("SELECT on_date, count(*) AS n FROM plan_occurrences GROUP BY on_date")
    assert len(days) == total
    assert all(d["n"] == 1 for d in days)
    # And once more, all at once: nothing left to make.
    assert sum(await asyncio.gather(one(), one(), one())) == 0
    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=total)
    assert len(messages) == total
    need = await intake.http.get(
        f"/v1/communities/{world.home}/needs/{occurrences[0]['need_id']}", headers=world.auth()
    )
    assert need.json()["source"] == {"system": "linli-plans", "reference": plan_id}


async def test_pause_cancels_future_needs_and_resume_brings_them_back(intake) -> None:
    world = intake.world
    base = f"/v1/communities/{world.home}/plans"
    resident = await intake.new_resident()
    plan_id = (
        await intake.http.post(base, json=every_day_plan(resident), headers=world.auth())
    ).json()["id"]
    first = await plan_needs(intake, plan_id, 2)
    paused = await intake.http.post(f"{base}/{plan_id}/pause", headers=world.auth())
    assert paused.status_code == 200
    assert paused.json()["paused"] is True
    for occurrence in first:
        need = await intake.http.get(
            f"/v1/communities/{world.home}/needs/{occurrence['need_id']}", headers=world.auth()
        )
        assert need.json()["status"] == "cancelled"
    resumed = await intake.http.post(f"{base}/{plan_id}/resume", headers=world.auth())
    assert resumed.json()["paused"] is False
    again = await plan_needs(intake, plan_id, 2)
    assert len(again) == 2
    assert {o["need_id"] for o in again}.isdisjoint({o["need_id"] for o in first})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "repair"}, "body"),
        (
            {
                "schedule": {
                    "weekdays": [8],
                    "start_time": "10:00",
                    "end_time": "11:00",
                    "starts_on": "2026-12-01",
                }
            },
            "body.schedule.weekdays.0",
        ),
        (
            {
                "schedule": {
                    "weekdays": [1],
                    "start_time": "11:00",
                    "end_time": "10:00",
                    "starts_on": "2026-12-01",
                }
            },
            "body.schedule",
        ),
        (
            {
                "schedule": {
                    "weekdays": [1],
                    "start_time": "10:00",
                    "end_time": "11:00",
                    "starts_on": "2026-12-01",
                    "timezone": "Mars/Olympus",
                }
            },
            "body.schedule",
        ),
    ],
    ids=["details-not-for-kind", "weekday-8", "end-before-start", "unknown-timezone"],
)
async def test_bad_plans_are_refused(intake, change: dict, field: str) -> None:
    world = intake.world
    resident = await intake.new_resident()
    body = {**every_day_plan(resident), **change}
    response = await intake.http.post(
        f"/v1/communities/{world.home}/plans", json=body, headers=world.auth()
    )
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["detail"]]
    pool = intake.app.state.runtime.pool
    assert await pool.fetchval("SELECT count(*) FROM plans") == 0


async def test_other_communities_cannot_see_plans(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    plan_id = (
        await intake.http.post(
            f"/v1/communities/{world.home}/plans",
            json=every_day_plan(resident),
            headers=world.auth(),
        )
    ).json()["id"]
    other = world.auth("other_operator")
    assert (
        await intake.http.get(f"/v1/communities/{world.home}/plans/{plan_id}", headers=other)
    ).status_code == 404
    assert (
        await intake.http.post(f"/v1/communities/{world.home}/plans/{plan_id}/pause", headers=other)
    ).status_code == 404
