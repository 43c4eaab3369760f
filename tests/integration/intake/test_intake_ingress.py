"""Other systems submit needs over NATS: accepted, rejected, duplicated, fire-and-forget."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from harness.common import consumer_settled
from harness.intake import cloudevent, dumps, events_on_stream, meal_need

from linli.contracts.binding import to_binary
from linli.contracts.envelope import CloudEvent

pytestmark = pytest.mark.integration


def submit_subject(community: str, version: int = 1) -> str:
    return f"linli.ingress.{community}.need.submit.v{version}"


async def request(intake, subject: str, payload: bytes, headers=None) -> dict:
    reply = await intake.nc.request(subject, payload, headers=headers, timeout=5)
    return json.loads(reply.data)


async def count(intake, sql: str, *args) -> int:
    return int(await intake.app.state.runtime.pool.fetchval(sql, *args))


async def test_structured_request_is_accepted_after_commit(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    event = cloudevent(world.home, meal_need(resident))
    answer = await request(intake, submit_subject(world.home), dumps(event))
    assert answer["status"] == "accepted", answer
    assert answer["duplicate"] is False
    # "accepted" means stored: the need is readable at once.
    got = await intake.http.get(
        f"/v1/communities/{world.home}/needs/{answer['need_id']}", headers=world.auth()
    )
    assert got.status_code == 200
    assert got.json()["timeline"][0]["actor"] == "system:urn:hospital:discharge"
    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=1)
    assert [m.subject for m in messages] == [f"linli.events.{world.home}.need.submitted.v1"]


async def test_binary_mode_request_is_accepted(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    event = CloudEvent[dict].model_validate(cloudevent(world.home, meal_need(resident)))
    body, headers = to_binary(event)
    answer = await request(intake, submit_subject(world.home), body, headers)
    assert answer["status"] == "accepted", answer


async def test_same_source_and_id_twice_creates_one_need(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    event = cloudevent(world.home, meal_need(resident))
    first = await request(intake, submit_subject(world.home), dumps(event))
    second = await request(intake, submit_subject(world.home), dumps(event))
    assert first["need_id"] == second["need_id"]
    assert second["duplicate"] is True
    # The durable stream path saw both copies too and changed nothing.
    await consumer_settled(intake.js, world.settings.ingress_stream)
    assert await count(intake, "SELECT count(*) FROM needs") == 1
    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=1)
    assert len(messages) == 1


async def test_same_source_and_id_in_another_community_is_a_command_of_its_own(intake) -> None:
    """De-duplication is per community: B reusing A's (source, id) gets B's own need."""
    world = intake.world
    home_resident = await intake.new_resident()
    other_resident = await intake.new_resident("other_operator", world.other)
    event = cloudevent(world.home, meal_need(home_resident))
    in_home = await request(intake, submit_subject(world.home), dumps(event))
    reused = {**event, "community": world.other, "data": meal_need(other_resident)}
    in_other = await request(intake, submit_subject(world.other), dumps(reused))
    assert in_home["status"] == in_other["status"] == "accepted", (in_home, in_other)
    assert in_other["duplicate"] is False
    assert in_other["need_id"] != in_home["need_id"]
    got = await intake.http.get(
        f"/v1/communities/{world.other}/needs/{in_other['need_id']}",
        headers=world.auth("other_operator"),
    )
    assert got.status_code == 200, got.text
    assert got.json()["resident_id"] == other_resident
    # Within one community the key still holds: a repeat in B is B's duplicate.
    again = await request(intake, submit_subject(world.other), dumps(reused))
    assert (again["need_id"], again["duplicate"]) == (in_other["need_id"], True)
    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=2)
    assert sorted(m.subject for m in messages) == sorted(
        f"linli.events.{c}.need.submitted.v1" for c in (world.home, world.other)
    )

    # A rejection is scoped the same way: B's is kept and announced to B, not folded
    # into A's dead letter.
    bad = cloudevent(world.home, meal_need(str(uuid.uuid4())))
    rejected_home = await request(intake, submit_subject(world.home), dumps(bad))
    bad_other = {**bad, "community": world.other}
    rejected_other = await request(intake, submit_subject(world.other), dumps(bad_other))
    assert rejected_home["status"] == rejected_other["status"] == "rejected"
    assert rejected_other["dead_letter_id"] != rejected_home["dead_letter_id"]
    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=4)
    rejections = [m.subject for m in messages if m.subject.endswith("need.rejected.v1")]
    assert sorted(rejections) == sorted(
        f"linli.events.{c}.need.rejected.v1" for c in (world.home, world.other)
    )


async def test_fire_and_forget_publish_is_processed_by_the_durable_consumer(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    event = cloudevent(world.home, meal_need(resident))
    await intake.nc.publish(submit_subject(world.home), dumps(event))
    for _ in range(100):
        if await count(intake, "SELECT count(*) FROM needs") == 1:
            break
        await asyncio.sleep(0.1)
    assert (
        await count(intake, "SELECT count(*) FROM needs WHERE ingress_event_id = $1", event["id"])
        == 1
    )


async def test_invalid_data_is_rejected_kept_and_announced_once(intake) -> None:
    world = intake.world
    event = cloudevent(world.home, meal_need(str(uuid.uuid4())))
    payload = dumps(event)
    answer = await request(intake, submit_subject(world.home), payload)
    assert answer["status"] == "rejected"
    assert answer["reasons"][0]["field"] == "data.resident_id"
    again = await request(intake, submit_subject(world.home), payload)
    assert again["dead_letter_id"] == answer["dead_letter_id"]
    # The stream path saw both copies as well.
    await consumer_settled(intake.js, world.settings.ingress_stream)
    row = await intake.app.state.runtime.pool.fetchrow(
        "SELECT subject, payload, reasons FROM dead_letters WHERE id = $1",
        uuid.UUID(answer["dead_letter_id"]),
    )
    assert bytes(row["payload"]) == payload
    assert row["subject"] == submit_subject(world.home)
    assert await count(intake, "SELECT count(*) FROM dead_letters") == 1
    assert await count(intake, "SELECT count(*) FROM needs") == 0
    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=1)
    assert [json.loads(m.data)["type"] for m in messages] == ["linli.need.rejected.v1"]
    rejected = json.loads(messages[0].data)["data"]
    assert rejected["dead_letter_id"] == answer["dead_letter_id"]
    assert rejected["source_event_id"] == event["id"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff\xfe not json", "malformed"),
        (b"[1, 2, 3]", "not_object"),
        (b'{"specversion": "0.3"}', None),
        (b"{" * 100 + b"}" * 100, None),
        (b"x" * 70_000, "too_large"),
    ],
    ids=["bad-bytes", "array", "old-specversion", "deep-nesting", "oversized"],
)
async def test_garbage_is_rejected_with_reasons_and_kept(intake, payload: bytes, code) -> None:
    world = intake.world
    answer = await request(intake, submit_subject(world.home), payload)
    assert answer["status"] == "rejected"
    assert answer["reasons"]
    if code:
        assert answer["reasons"][0]["code"] == code
    stored = await intake.app.state.runtime.pool.fetchval(
        "SELECT payload FROM dead_letters WHERE id = $1", uuid.UUID(answer["dead_letter_id"])
    )
    assert bytes(stored) == payload


async def test_unknown_version_and_mismatched_community_are_rejected(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    v99 = cloudevent(world.home, meal_need(resident), type="linli.need.submit.v99")
    answer = await request(intake, submit_subject(world.home, 99), dumps(v99))
    assert answer["status"] == "rejected"
    assert {r["code"] for r in answer["reasons"]} >= {"unknown_type"}
    # A system may not submit for another community by naming it in the envelope.
    elsewhere = cloudevent(world.other, meal_need(resident))
    answer = await request(intake, submit_subject(world.home), dumps(elsewhere))
    assert answer["status"] == "rejected"
    assert "community_mismatch" in {r["code"] for r in answer["reasons"]}
    assert await count(intake, "SELECT count(*) FROM needs") == 0
