"""What must hold after the system drained, read from PostgreSQL and JetStream only.

Each invariant is a count (0 required) with up to a few examples (need ids, event ids)
so a defect can be followed up.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from linli.contracts.binding import from_nats
from tests.harness.lifecycle import Lifecycle

from .inject import INJECTED_MSG_ID, POISON_MSG_ID

FINAL = ("fulfilled", "escalated", "cancelled", "failed")
"""States a need rests in (scheduling's and intake's names agree)."""
EXAMPLES = 10


@dataclass
class Check:
    name: str
    count: int = 0
    examples: list[Any] = field(default_factory=list)

    def add(self, count: int, examples: list[Any]) -> None:
        self.count += count
        self.examples.extend(examples[: max(0, EXAMPLES - len(self.examples))])

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "examples": [str(e) for e in self.examples]}


async def settled(lc: Lifecycle, submitted: list[str]) -> str | None:
    """None once everything is drained, else what is still moving (for the wait's log)."""
    left = await lc.sql_value(
        "scheduling",
        "SELECT count(*) FROM unnest($1::uuid[]) AS s(id) LEFT JOIN needs n USING (id) "
        "WHERE n.state IS NULL OR n.state <> ALL($2::text[])",
        submitted,
        list(FINAL),
    )
    if left:
        return f"{left} needs not final in scheduling"
    left = await lc.sql_value(
        "intake",
        "SELECT count(*) FROM needs WHERE id = ANY($1::uuid[]) AND status <> ALL($2::text[])",
        submitted,
        list(FINAL),
    )
    if left:
        return f"{left} needs not final in intake"
    for service in lc.active:
        unsent = await lc.sql_value(service, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        if unsent:
            return f"{unsent} unsent outbox rows in {service}"
    pending = await consumers_pending(lc)
    if pending:
        return f"consumers with pending messages: {pending}"
    return None


async def consumers_pending(lc: Lifecycle) -> dict[str, int]:
    js = lc.nats.jetstream()
    out: dict[str, int] = {}
    for stream in (lc.events_stream, lc.ingress_stream):
        for info in await js.consumers_info(stream):
            waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
            if waiting:
                out[f"{stream}/{info.name}"] = waiting
    return out


async def stream_messages(lc: Lifecycle) -> list[tuple[int, str, str, str]]:
    """(seq, subject, Nats-Msg-Id, CloudEvent id or '') of every message on the stream."""
    js = lc.nats.jetstream()
    info = await js.stream_info(lc.events_stream)
    out: list[tuple[int, str, str, str]] = []
    for start in range(info.state.first_seq, info.state.last_seq + 1, 200):
        seqs = range(start, min(start + 200, info.state.last_seq + 1))
        msgs = await asyncio.gather(
            *(js.get_msg(lc.events_stream, s) for s in seqs), return_exceptions=True
        )
        for seq, msg in zip(seqs, msgs, strict=True):
            if isinstance(msg, BaseException):
                continue
            headers = dict(msg.headers or {})
            try:
                event_id = from_nats(msg.data or b"", headers).id
            except Exception:
                event_id = ""
            out.append((seq, str(msg.subject), str(headers.get("Nats-Msg-Id", "")), event_id))
    return out


async def check(
    lc: Lifecycle, submitted: list[str], stored_again: set[str] | None = None
) -> dict[str, Check]:
    lost = Check("needs_lost")
    dup = Check("effects_duplicated")
    oversold = Check("places_oversold")
    letters = Check("dead_letters_not_poison")

    # Needs lost: acknowledged by intake, but missing or not final in intake or scheduling.
    rows = await lc.sql(
        "intake", "SELECT id::text, status FROM needs WHERE id = ANY($1::uuid[])", submitted
    )
    in_intake = {r["id"]: r["status"] for r in rows}
    rows = await lc.sql(
        "scheduling", "SELECT id::text, state FROM needs WHERE id = ANY($1::uuid[])", submitted
    )
    in_scheduling = {r["id"]: r["state"] for r in rows}
    bad = [
        (n, in_intake.get(n), in_scheduling.get(n))
        for n in submitted
        if in_intake.get(n) not in FINAL or in_scheduling.get(n) not in FINAL
    ]
    lost.add(len(bad), [f"{n}: intake={i} scheduling={s}" for n, i, s in bad])

    # An event id twice on the stream (the driver's own republished copies aside: those
    # under a new message id, and those it republished with theirs after the window).
    messages = await stream_messages(lc)
    theirs = stored_again or set()
    ids = Counter(
        e for _, _, m, e in messages if e and not m.startswith(INJECTED_MSG_ID) and e not in theirs
    )
    twice = [f"event {e} x{n}" for e, n in ids.items() if n > 1]
    dup.add(len(twice), twice)

    queries = {
        "scheduling": [
            (
                "two assignments for one attempt",
                "SELECT need_id::text AS k, attempt, count(*) AS n FROM assignments "
                "GROUP BY need_id, attempt HAVING count(*) > 1",
            ),
            (
                "two active assignments for one need",
                "SELECT need_id::text AS k, count(*) AS n FROM assignments "
                "WHERE state IN ('offered', 'accepted', 'completed') "
                "GROUP BY need_id HAVING count(*) > 1",
            ),
        ],
        "partners": [
            (
                "two offers for one attempt",
                "SELECT need_id::text AS k, attempt, count(*) AS n FROM offers "
                "GROUP BY need_id, attempt HAVING count(*) > 1",
            ),
            (
                "points awarded twice for one report",
                "SELECT assignment_id::text AS k, count(*) AS n FROM ledger_entries "
                "WHERE entry_kind = 'award' AND account LIKE 'volunteer:%' "
                "GROUP BY assignment_id HAVING count(*) > 1",
            ),
        ],
        "notifications": [
            (
                "webhook delivered twice to one subscription for one event",
                "SELECT subscription_id::text || '/' || event_id AS k, count(*) AS n "
                "FROM delivery_attempts WHERE status BETWEEN 200 AND 299 "
                "GROUP BY subscription_id, event_id HAVING count(*) > 1",
            ),
            (
                "two deliveries for one subscription and event",
                "SELECT subscription_id::text || '/' || event_id AS k, count(*) AS n "
                "FROM deliveries GROUP BY subscription_id, event_id HAVING count(*) > 1",
            ),
        ],
    }
    for service, checks in queries.items():
        if service not in lc.active:
            continue
        for what, query in checks:
            found = await lc.sql(service, query)
            dup.add(len(found), [f"{what}: {r['k']} x{r['n']}" for r in found])

    # Places oversold: more reserved, or more live assignments, than a slot has.
    found = await lc.sql(
        "scheduling",
        "SELECT s.id::text AS k, s.capacity, s.reserved, count(a.id) AS live FROM slots s "
        "LEFT JOIN assignments a ON a.slot_id = s.id "
        "AND a.state IN ('offered', 'accepted', 'completed') "
        "GROUP BY s.id HAVING s.reserved > s.capacity OR count(a.id) > s.capacity",
    )
    oversold.add(
        len(found), [f"slot {r['k']}: capacity {r['capacity']}, live {r['live']}" for r in found]
    )

    # Dead letters that are not one of the driver's poison messages (or are, but were
    # given up after max deliveries instead of being refused as poison).
    for service in lc.active:
        found = await lc.sql(
            service, "SELECT consumer, subject, headers, reasons FROM dead_letters"
        )
        for r in found:
            headers = _json(r["headers"])
            reasons = _json(r["reasons"])
            codes = [str(x.get("code")) for x in reasons if isinstance(x, dict)]
            msg_id = str(headers.get("Nats-Msg-Id", "")) if isinstance(headers, dict) else ""
            if not msg_id.startswith(POISON_MSG_ID) or "max_deliveries" in codes:
                letters.add(1, [f"{service}/{r['consumer']} {r['subject']} {codes} {msg_id}"])
    return {c.name: c for c in (lost, dup, oversold, letters)}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


async def poison_dead_letters(lc: Lifecycle) -> int:
    total = 0
    for service in lc.active:
        total += int(await lc.sql_value(service, "SELECT count(*) FROM dead_letters") or 0)
    return total
