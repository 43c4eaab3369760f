"""Community A's credentials never read or change community B's data (RELIABILITY.md row
11; issue #10, "Attacks": schemathesis with A's token against B's ids, 0 answers in 2xx).

The four services run as processes. Community B is seeded through the APIs with one of
everything a route can name (tests/harness/communities.py); community A gets an
operator, an app (system), an admin, a street office (ADR 0040), a volunteer and a partner
credential. Then
`faults.cross_community.attack` sends schemathesis-generated requests for every operation
of every service with each of A's credentials, B's community and ids placed in every
path, filter and body field that takes one (and A's community in the path with B's ids
elsewhere). Afterwards:

* no answer was 2xx and no answer, whatever its status, held B's canary;
* every service was really attacked (a floor of requests each);
* everything B's own credentials can read is exactly as before.

The control proves the probe can fail: the same attack with B's own credentials gets 2xx
answers and finds B's canary in them.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from harness.communities import Community, attacker, seed_community, snapshot, templates
from harness.intake import meal_need
from harness.lifecycle import Lifecycle, now_iso

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from faults.cross_community import attack  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EXAMPLES = 8
"""Generated cases per operation (each sent once per shape and per credential)."""
FLOOR = 20
"""Requests each service must at least have answered (about 50 operations, 6 roles)."""


async def test_community_a_credentials_get_no_2xx_on_community_b_ids(lifecycle) -> None:
    lc: Lifecycle = await lifecycle(notifications=True)
    a = await attacker(lc)
    b = await seed_community(lc, lc.other)
    before = await snapshot(lc, b)
    bases = {name: svc.url for name, svc in lc.services.items()}

    result = await attack(
        bases,
        a.tokens,
        b.ids,
        examples=EXAMPLES,
        community_a=lc.home,
        canaries_b=b.canaries,
        bodies=templates(b),
    )
    lc.check_alive()

    assert result["violations"] == [], result["violations"]
    assert result["two_xx"] == 0
    assert result["leaks"] == 0, result["leak_samples"]
    for service in bases:
        assert result["by_service"][service]["requests"] >= FLOOR, (service, result)
    # The Open311 facade (ADR 0050) names B by jurisdiction_id and B's needs by
    # service_request_id / token_id: every one of its operations was attacked.
    open311 = {
        op for op, seen in result["by_operation"].items() if "/open311/" in op and seen["requests"]
    }
    assert len(open311) == 6, open311
    assert set(result["by_role"]) == {
        "operator",
        "system",
        "admin",
        "street_office",
        "volunteer",
        "partner",
    }
    assert await snapshot(lc, b) == before
    await recipients_stay_in_their_community(lc, b, result)

    # The control. First B's own credentials with only the valid bodies: each gets
    # through (so A's requests with the same bodies were refused for the community alone).
    bodies = templates(b)
    proven = await attack(
        bases, b.tokens, b.ids, examples=2, bodies=bodies, only=set(bodies), canaries_b=b.canaries
    )
    refused = {op for op, seen in proven["by_operation"].items() if seen["two_xx"] == 0}
    assert refused == set(), proven["by_operation"]
    # Then everything: the classifier counts 2xx answers and finds B's canary in them.
    control = await attack(bases, b.tokens, b.ids, examples=2, canaries_b=b.canaries)
    assert control["two_xx"] > 0, control
    assert control["leaks"] > 0, control


async def recipients_stay_in_their_community(lc: Lifecycle, b: Community, result: dict) -> None:
    """The 2xx the attack counts as inert (docs/adr/0032) are inert: A's recipients that
    name B's resident and volunteer hear nothing of B's events, while B's own recipients,
    registered the same way, do (the positive signal that the events were processed)."""
    assert result["inert_two_xx"] > 0, "the attack made no recipient of A naming B's ids"
    resident, volunteer = b.ids["resident_id"][0], b.ids["volunteer_id"][0]
    planted = await lc.sql(
        "notifications",
        "SELECT id FROM people_recipients WHERE community = $1 "
        "AND (resident_id = $2 OR volunteer_id = $3)",
        lc.home,
        uuid.UUID(resident),
        uuid.UUID(volunteer),
    )
    assert planted, "no recipient of A names B's resident or volunteer"
    operator = lc.bearer(b.token("operator", "notifications"))
    mine = []
    for body in (
        {"role": "family", "resident_id": resident, "events": ["meal.delivered"]},
        {"role": "volunteer", "volunteer_id": volunteer, "events": ["assignment.offered"]},
    ):
        created = lc.ok(
            await lc.http.post(
                lc.c("notifications", "/recipients", b.slug),
                json={**body, "channel": "sms", "address": "13800138012"},
                headers=operator,
            ),
            201,
        )
        mine.append(uuid.UUID(created["id"]))
    # B's open offer is delivered (meal.delivered for the resident's family) and a new
    # need is offered to B's volunteer (assignment.offered).
    volunteer_token = b.token("volunteer", "partners")
    offered = b.ids["assignment_id"][1]
    lc.ok(await lc.answer(volunteer_token, offered, "accept"))
    delivered = {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"}
    lc.ok(await lc.report(volunteer_token, offered, delivered), 201)
    need = lc.ok(
        await lc.http.post(
            lc.c("intake", "/needs", b.slug),
            json=meal_need(resident, hours_ahead=1),
            headers=lc.bearer(b.token("operator", "intake")),
        ),
        201,
    )
    offer = await lc.wait_offer(volunteer_token, need["id"], timeout=30)
    b.ids["assignment_id"].append(offer["assignment_id"])

    async def told() -> bool:
        count = await lc.sql_value(
            "notifications",
            "SELECT count(DISTINCT recipient_id) FROM people_messages WHERE recipient_id = ANY($1)",
            mine,
        )
        return bool(count == len(mine))

    await lc.wait_for(told, 30, what="B's own recipients told of B's events")
    heard = await lc.sql_value(
        "notifications",
        "SELECT count(*) FROM people_messages WHERE recipient_id = ANY($1)",
        [r["id"] for r in planted],
    )
    assert heard == 0
