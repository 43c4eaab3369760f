"""A consumer that dies after its batch committed and before it acknowledged it.

The named failpoint `inbox.after_commit_before_ack` makes scheduling exit (status 137,
as kill -9) right after the transaction that matched a need and wrote its events to the
outbox committed, before the message is acknowledged. JetStream then delivers the
`need.submitted` again to the restarted process; the inbox row written in that
transaction recognises it, so the need is reserved and offered exactly once.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from harness.intake import meal_need
from harness.lifecycle import Lifecycle, window
from prometheus_client.parser import text_string_to_metric_families

from linli.devstack.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

FAILPOINT = "inbox.after_commit_before_ack"


async def test_crash_after_commit_before_ack_has_one_effect(lifecycle) -> None:
    lc: Lifecycle = await lifecycle()
    canteen = await lc.create_partner("幸福食堂 Happiness Canteen", "canteen", ["meal_delivery"])
    await lc.publish_slot(
        "meal_delivery", provider=("partner", canteen), window=window(60, 90), capacity=5
    )
    await lc.wait_slots(1)

    # Arm the failpoint in a fresh scheduling process (nothing is pending for it now).
    scheduling = lc.services["scheduling"]
    scheduling.env["LINLI_FAILPOINT"] = FAILPOINT
    (first,) = lc.processes("scheduling")
    armed = await lc.restart(first)
    lc.expect_exit(armed)

    resident = await lc.create_resident(priority_group="elderly_living_alone")
    need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]

    async def crashed() -> int | None:
        return armed.returncode

    await lc.wait_for(crashed, 30, what="scheduling to hit the failpoint")
    assert armed.returncode == 137
    assert f"failpoint {FAILPOINT} hit" in armed.output()
    # The batch had committed: the reservation and its events are in scheduling's tables
    # although the message was never acknowledged.
    assert await lc.sql_value("scheduling", "SELECT sum(reserved) FROM slots") == 1
    assert await lc.sql_value("scheduling", "SELECT count(*) FROM inbox") >= 1

    del scheduling.env["LINLI_FAILPOINT"]
    metrics_port = free_port()
    scheduling.env["LINLI_METRICS_PORT"] = str(metrics_port)
    await lc.start_replica("scheduling")

    # JetStream delivered it again, and the restarted process knew it had handled it.
    async def recognised() -> bool:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        samples = {
            (s.name, s.labels.get("type"), s.labels.get("outcome")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        submitted = "linli.need.submitted.v1"
        return (
            samples.get(("linli_events_consumed_total", submitted, "duplicate")) == 1
            and samples.get(("linli_consumer_redeliveries_total", None, None)) == 1
        )

    await lc.wait_for(recognised, 60, what="the redelivered need.submitted, recognised")
    (offered,) = await lc.wait_events("assignment.offered", need_id=need_id)
    # Exactly one effect: one reservation, one offer, one assignment, one outbox row each.
    mine = [e for e in await lc.events() if e.need_id == need_id]
    kinds = Counter(e.short for e in mine)
    assert kinds["slot.reserved"] == 1
    assert kinds["assignment.offered"] == 1
    assert await lc.sql_value("scheduling", "SELECT sum(reserved) FROM slots") == 1
    assert (
        await lc.sql_value(
            "scheduling", "SELECT count(*) FROM assignments WHERE need_id = $1::uuid", need_id
        )
        == 1
    )
    assert await lc.sql_value("scheduling", "SELECT count(*) FROM dead_letters") == 0
    assert offered.data["assignment_id"]
