"""The checks of `make faults` (faults/invariants.py) find what they look for: each
defect is planted in the tables or on the stream, and counted once; the driver's own
poison, refused as poison, is not counted.

No services run: the schemas are migrated and the streams made, then rows are written
directly, as a defect would have left them.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness.lifecycle import Lifecycle
from harness.names import Names
from harness.procs import ProcessGroup

from linli.contracts.binding import to_structured
from linli.contracts.envelope import new_event
from linli.contracts.events import NeedCancelled
from linli.contracts.registry import spec_for
from linli.contracts.subjects import subject_for

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from faults.invariants import check  # noqa: E402

pytestmark = [pytest.mark.e2e]


async def test_each_planted_defect_is_counted(
    nats_url: str, database_url: str, names: Names, procs: ProcessGroup
) -> None:
    lc = Lifecycle(names, nats_url, database_url, procs, notifications=True)
    await lc.prepare()
    try:
        clean = await check(lc, [])
        assert {n: c.count for n, c in clean.items()} == dict.fromkeys(clean, 0)

        # A need intake acknowledged that neither service holds.
        missing = str(uuid.uuid4())
        # One event stored twice under two message ids.
        event = new_event(
            NeedCancelled(
                need_id=uuid.uuid4(), cancelled_by_role="operator", cancelled_at=datetime.now(UTC)
            ),
            community=lc.home,
            source="faults-test",
        )
        body, headers = to_structured(event)
        js = lc.nats.jetstream()
        subject = subject_for(spec_for(NeedCancelled), lc.home)
        for msg_id in ("copy-1", "copy-2"):
            await js.publish(subject, body, headers={**headers, "Nats-Msg-Id": msg_id})
        # ... and the driver's own copy of it, which is not a defect.
        await js.publish(subject, body, headers={**headers, "Nats-Msg-Id": "faults-dup-1"})
        # Two offers for one attempt of one need.
        need = uuid.uuid4()
        now = datetime.now(UTC)
        for _ in range(2):
            await lc.sql(
                "partners",
                "INSERT INTO offers (assignment_id, community, need_id, slot_id, party_kind, "
                "party_id, kind, urgency, window_earliest, window_latest, details, attempt, "
                "offered_at, expires_at) VALUES ($1, $2, $3, $4, 'volunteer', $5, "
                "'meal_delivery', 'routine', $6, $7, '{}', 1, $6, $7)",
                uuid.uuid4(),
                lc.home,
                need,
                uuid.uuid4(),
                uuid.uuid4(),
                now,
                now + timedelta(hours=1),
            )
        # Dead letters: a real one, poison refused as poison, poison given up on.
        letters = [
            ("scheduling", "someone-else", "invalid_json"),
            ("scheduling", "faults-poison-1", "invalid_json"),
            ("partners", "faults-poison-2", "max_deliveries"),
        ]
        for service, msg_id, code in letters:
            await lc.sql(
                service,
                "INSERT INTO dead_letters (id, dedupe_key, consumer, subject, headers, payload, "
                "reasons) VALUES ($1, $2, 'c', 's', $3::jsonb, '\\x00', $4::jsonb)",
                uuid.uuid4(),
                msg_id,
                json.dumps({"Nats-Msg-Id": msg_id}),
                json.dumps([{"field": "body", "message": "m", "code": code}]),
            )

        found = await check(lc, [missing])
        counts = {n: c.count for n, c in found.items()}
        assert counts == {
            "needs_lost": 1,
            "effects_duplicated": 2,
            "places_oversold": 0,
            "dead_letters_not_poison": 2,
        }, {n: c.examples for n, c in found.items()}
        assert missing in found["needs_lost"].examples[0]
        examples = " ".join(found["effects_duplicated"].examples)
        assert f"event {event.id} x2" in examples
        assert f"two offers for one attempt: {need} x2" in examples
    finally:
        await lc.close()
