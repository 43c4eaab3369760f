"""Each service's OpenAPI document tells the truth (issue #13, item 1; ADR 0047).

The four services run as processes on real NATS and PostgreSQL (their own Lifecycle, so
the fuzzing touches no other test's data). The home community is seeded through the
APIs with one of everything a route can name (a resident, a volunteer, a partner, a
slot, needs, a plan, an activity, a subscription, a recipient). Then schemathesis, the
version pinned in uv.lock, runs as a third-party client against each service's
`/openapi.json` with a valid operator credential of that community (and, for the
routes an operator may not use, notifications with the community app's credential and
partners with a volunteer's; `RUNS`), all runs at once:
`schemathesis run --checks all` with all four phases (examples, coverage, fuzzing,
stateful), a fixed number of examples per operation and a fixed seed in deterministic
mode (`SCHEMATHESIS_CONFIG`). The test asserts that schemathesis exits 0 and that its
JUnit report holds no failure and no error, and prints every failure it finds.

`test_a_planted_undeclared_status_is_caught` shows the probe can fail: the same run
against a small servicekit app whose one route answers a status it does not declare.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.communities import seed_community
from harness.lifecycle import Lifecycle

from linli.servicekit.openapi import RULES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

RUNS = (
    ("intake", "operator"),
    ("partners", "operator"),
    ("scheduling", "operator"),
    ("notifications", "operator"),
    # The routes an operator may not use: a community app's subscriptions, a
    # volunteer's own offers and points (`/v1/me/...`).
    ("notifications", "system"),
    ("partners", "volunteer"),
)
"""(service, credential of the seeded community) for each schemathesis run."""
MAX_EXAMPLES = 4
"""Generated cases per operation and phase: about 170 operations in all; enough to walk
every operation and status, small enough for ~3 minutes on two loaded cores."""
SEED = 13
STATEFUL_STEPS = 6
TIMEOUT_S = 240.0
"""One service's run, at most (schemathesis stops; the test then fails)."""


def schemathesis_bin() -> str:
    """The schemathesis of this venv (pinned in uv.lock)."""
    here = Path(sys.executable).parent / "schemathesis"
    found = str(here) if here.exists() else shutil.which("schemathesis")
    assert found, "schemathesis is not installed (uv sync)"
    return found


BODY_RULES_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""What a schema-valid body may answer: schemathesis' default for valid data, plus 422
for the rules JSON Schema cannot state (ADR 0047): one field against another (`latest`
after `earliest`, a note required for an outcome), references to rows that must exist
(a resident, a partner), a phone number's validity, the credential's communities, the
content of a CSV file. Parameters (path, query, header) get no such allowance unless the
operation lists its rules under `x-linli-rules` (servicekit `openapi.rules`): every other
rule on them is in the schema."""


def body_rules(doc: dict[str, Any]) -> str:
    """`[[operations]]` blocks: 422 answers valid data only where there is a body or the
    operation declares rules beyond its schema."""
    blocks = []
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and ("requestBody" in operation or operation.get(RULES)):
                # A facade that answers bad input with 400 as its standard says (Open311,
                # ADR 0050) declares no 422: the same rules answer 400 there.
                responses = operation.get("responses", {})
                bad_input = "422" if "422" in responses or "400" not in responses else "400"
                statuses = [bad_input if s == "422" else s for s in BODY_RULES_STATUSES]
                blocks.append(
                    "[[operations]]\n"
                    # One operation by its name ("METHOD path"): schemathesis ORs the
                    # include-* keys of an entry, so path + method would select every
                    # operation of the path and every operation of the method.
                    f'include-name = "{method.upper()} {path}"\n'
                    "[operations.checks.positive_data_acceptance]\n"
                    f"expected-statuses = {statuses!r}\n".replace("'", '"')
                )
    return "\n".join(blocks)


def config(community: str, doc: dict[str, Any], max_examples: int = MAX_EXAMPLES) -> str:
    """schemathesis.toml for one run: the community every `{community}` path takes, the
    bounds, every check, and where a valid body may still meet a rule (`body_rules`)."""
    return f"""
seed = {SEED}
workers = 1
request-timeout = 15
max-stream-events = 1
continue-on-failure = true
suppress-health-check = ["all"]

[generation]
deterministic = true
max-examples = {max_examples}
database = "none"
# PostgreSQL text cannot hold NUL: every string field refuses it with 422 (ADR 0047).
allow-x00 = false

[parameters]
"path.community" = "{community}"

[phases.stateful]
max-steps = {STATEFUL_STEPS}

[checks]
enabled = true

{body_rules(doc)}
"""


async def run_schemathesis(
    url: str, token: str, workdir: Path, community: str, max_examples: int = MAX_EXAMPLES
) -> tuple[int, list[dict[str, str]], str]:
    """(exit code, failures from the JUnit report, the tail of the output)."""
    async with httpx.AsyncClient(timeout=15) as client:
        answer = await client.get(f"{url}/openapi.json")
        answer.raise_for_status()
    conf = write(workdir / "schemathesis.toml", config(community, answer.json(), max_examples))
    junit = workdir / "junit.xml"
    proc = await asyncio.create_subprocess_exec(
        schemathesis_bin(),
        "--config-file",
        str(conf),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
        "--output-truncate",
        "false",
        cwd=str(workdir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"schemathesis ran over {TIMEOUT_S} s against {url}") from None
    text = out.decode("utf-8", "replace")
    return proc.returncode or 0, failures(junit), text[-20000:]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def failures(junit: Path) -> list[dict[str, str]]:
    """Every <failure> and <error> of schemathesis' JUnit report."""
    if not junit.exists():
        return [{"case": "-", "kind": "no report", "message": ""}]
    found = []
    # schemathesis' own report, written by the run above on this machine.
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314
        for kind in ("failure", "error"):
            for item in case.findall(kind):
                found.append(
                    {
                        "case": case.get("name", ""),
                        "kind": kind,
                        "message": (item.get("message") or "") + "\n" + (item.text or ""),
                    }
                )
    return found


def summary(service: str, code: int, found: list[dict[str, str]], output: str) -> str:
    lines = [f"{service}: schemathesis exit {code}, {len(found)} failing operation(s)"]
    for item in found:
        lines.append(f"--- {item['kind']}: {item['case']}\n{item['message'][:4000]}")
    if code and not found:
        lines.append(output)
    return "\n".join(lines)


async def test_every_service_passes_schemathesis(lifecycle, tmp_path: Path) -> None:
    lc: Lifecycle = await lifecycle(notifications=True)
    world = await seed_community(lc, lc.home)
    # All runs at once: each is one client against one service process.
    results = await asyncio.gather(
        *(
            run_schemathesis(
                lc.services[service].url,
                world.token(role, service),
                tmp_path / f"{service}-{role}",
                lc.home,
            )
            for service, role in RUNS
        )
    )
    lc.check_alive()
    reports = [
        (f"{service} as {role}", *result)
        for (service, role), result in zip(RUNS, results, strict=True)
    ]
    for name, _code, _found, output in reports:
        print(f"--- {name}\n{output[-1500:]}")
    bad = [summary(*r) for r in reports if r[1] != 0 or r[2]]
    assert not bad, "\n\n".join(bad)
