"""Recurring capacity end to end (issue #12 item 2, ADR 0042): a slot template's slots
are generated exactly once by two partners processes racing over it, and every
generated slot reaches scheduling."""

from __future__ import annotations

import asyncio

import pytest
from harness.lifecycle import Lifecycle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TEMPLATE = {
    "kind": "meal_delivery",
    "weekdays": [1, 2, 3, 4, 5, 6, 7],
    "start": "23:50",
    "end": "23:59",
    "capacity": 20,
}


async def test_two_partners_replicas_generate_each_date_once(lifecycle) -> None:
    lc: Lifecycle = await lifecycle(
        replicas={"partners": 2}, partners_env={"LINLI_SLOT_TEMPLATE_INTERVAL_S": "0.2"}
    )
    canteen = await lc.create_partner("canteen", "canteen", ["meal_delivery"])
    lc.ok(
        await lc.http.post(lc.c("partners", f"/partners/{canteen}/slot-templates"), json=TEMPLATE),
        201,
    )

    async def generated() -> int:
        return int(
            await lc.sql_value(
                "partners", "SELECT count(*) FROM slots WHERE template_id IS NOT NULL"
            )
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while await generated() < 7 and loop.time() < deadline:
        await asyncio.sleep(0.2)
    # Both replicas keep passing over the template for a while: nothing more appears.
    await asyncio.sleep(2)
    rows = await lc.sql("partners", "SELECT id, occurs_on FROM slots WHERE template_id IS NOT NULL")
    assert len(rows) >= 7
    assert len({r["occurs_on"] for r in rows}) == len(rows)

    published = await lc.wait_events("slot.published", len(rows))
    assert sorted(e.data["slot_id"] for e in published) == sorted(str(r["id"]) for r in rows)
    scheduled = await lc.sql_value(
        "scheduling",
        "SELECT count(*) FROM slots WHERE id = ANY($1::uuid[])",
        [r["id"] for r in rows],
    )
    deadline = loop.time() + 15
    while scheduled < len(rows) and loop.time() < deadline:
        await asyncio.sleep(0.2)
        scheduled = await lc.sql_value(
            "scheduling",
            "SELECT count(*) FROM slots WHERE id = ANY($1::uuid[])",
            [r["id"] for r in rows],
        )
    assert scheduled == len(rows)
