from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness.communities import register_everywhere
from harness.lifecycle import Lifecycle

from linli.contracts.types import Role

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


async def test_schemathesis(lifecycle: Any) -> None:
    lc: Lifecycle = await lifecycle()
    system = (await register_everywhere(lc, Role.SYSTEM, lc.home))["intake"]
    await lc.create_resident()
    proc = await asyncio.create_subprocess_exec(
        ".venv/bin/schemathesis",
        "run",
        lc.services["intake"].url + "/openapi.json",
        "--include-path-regex",
        "^/open311/",
        "--checks",
        "all",
        "-n",
        "40",
        "-H",
        f"Authorization: Bearer {system}",
        "--no-color",
        "--report",
        "ndjson",
        "--report-dir",
        "/tmp/o311",
        stdout=open("/tmp/o311/out.txt", "w"),
        stderr=asyncio.subprocess.STDOUT,
    )
    await proc.wait()
