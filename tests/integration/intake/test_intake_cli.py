"""The operator CLI: communities, credentials (hashed, scoped, revocable), dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import pytest
from harness.intake import cloudevent, dumps, meal_need, settings_env

pytestmark = pytest.mark.integration


async def cli(settings, *args: str, stdin: str | None = None) -> str:
    # Asynchronous, so the in-process intake keeps serving while the CLI runs.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "linli.intake",
        *args,
        env={**os.environ, **settings_env(settings)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else b""), timeout=60
    )
    assert proc.returncode == 0, stderr.decode()[-2000:]
    return stdout.decode()


async def test_issued_token_works_is_stored_hashed_and_can_be_revoked(intake) -> None:
    settings = intake.world.settings
    home = intake.world.home
    issued = json.loads(
        await cli(settings, "credentials", "issue", "--role", "operator", "--community", home)
    )
    token = issued["token"]
    headers = {"Authorization": f"Bearer {token}"}
    ok = await intake.http.get(f"/v1/communities/{home}/needs", headers=headers)
    assert ok.status_code == 200
    other = await intake.http.get(f"/v1/communities/{intake.world.other}/needs", headers=headers)
    assert other.status_code == 404
    pool = intake.app.state.runtime.pool
    stored = await pool.fetch("SELECT token_sha256::text AS t, label FROM credentials")
    assert all(token not in row["t"] for row in stored)
    assert json.loads(await cli(settings, "credentials", "revoke", issued["credential_id"])) == {
        "revoked": True,
        "credential_id": issued["credential_id"],
        "everywhere": True,
    }
    gone = await intake.http.get(f"/v1/communities/{home}/needs", headers=headers)
    assert gone.status_code == 401


async def test_several_given_tokens_are_imported_in_one_call(intake) -> None:
    home, other = intake.world.home, intake.world.other
    mine, theirs = "lnl_" + "a" * 40, "lnl_" + "b" * 40
    lines = "\n".join(
        json.dumps({"role": role, "communities": [c], "token": t, "label": "imported"})
        for role, c, t in (("operator", home, mine), ("system", other, theirs))
    )
    printed = await cli(intake.world.settings, "credentials", "import", stdin=lines)
    assert [json.loads(line)["token"] for line in printed.splitlines()] == [mine, theirs]
    as_mine = {"Authorization": f"Bearer {mine}"}
    assert (
        await intake.http.get(f"/v1/communities/{home}/needs", headers=as_mine)
    ).status_code == 200
    # Each token keeps its own scope.
    assert (
        await intake.http.get(f"/v1/communities/{other}/needs", headers=as_mine)
    ).status_code == 404
    pool = intake.app.state.runtime.pool
    assert await pool.fetchval("SELECT count(*) FROM credentials WHERE label = 'imported'") == 2


async def test_dead_letters_can_be_listed_and_replayed(intake) -> None:
    settings = intake.world.settings
    home = intake.world.home
    missing_resident = str(uuid.uuid4())
    event = cloudevent(home, meal_need(missing_resident))
    reply = await intake.nc.request(f"linli.ingress.{home}.need.submit.v1", dumps(event), timeout=5)
    answer = json.loads(reply.data)
    assert answer["status"] == "rejected"
    output = await cli(settings, "dead-letters", "list")
    listed = [json.loads(line) for line in output.splitlines()]
    assert [d["id"] for d in listed] == [answer["dead_letter_id"]]
    assert listed[0]["reasons"][0]["field"] == "data.resident_id"
    # Replaying an unchanged bad command is answered (rejected again) and counted.
    replayed = json.loads(await cli(settings, "dead-letters", "replay", answer["dead_letter_id"]))
    assert replayed["replayed"] == answer["dead_letter_id"]
    count = await intake.app.state.runtime.pool.fetchval(
        "SELECT replay_count FROM dead_letters WHERE id = $1", uuid.UUID(answer["dead_letter_id"])
    )
    assert count == 1
