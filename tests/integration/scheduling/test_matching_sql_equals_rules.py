"""Scheduling's matching runs as SQL (one conditional statement reserves a unit); the
rules in `linli.scheduling.rules` say what it must do. These properties prove the two
agree on real PostgreSQL for generated needs, slots, exclusions and clocks:

* `store.reserve_best_slot` takes the slot `rules.choose_slot` picks (or none);
* `store.needs_for_slot` returns the needs `rules.slot_fits` admits, in
  `rules.queue_key` order (for a slot with capacity that is not over, as `_fill_slot`
  asks).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from linli.contracts.types import NeedKind, PriorityGroup, Urgency
from linli.scheduling import rules, store
from linli.servicekit.db import migrate, service_migrations

pytestmark = pytest.mark.integration

COMMUNITY = "matching"
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
# Few distinct instants, so that windows touch, overlap and tie often.
instants = st.integers(min_value=0, max_value=4).map(lambda h: T0 + timedelta(hours=h))
published = st.integers(min_value=0, max_value=2).map(lambda h: T0 - timedelta(hours=h))
# Mostly one kind and few compounds, so that several slots fit and ties are common.
kinds = st.sampled_from([NeedKind.MEAL_DELIVERY] * 4 + [NeedKind.REPAIR])
compound_names = st.sampled_from(["致远小区", "和平里", "third"])
providers = st.sampled_from(
    [("partner", uuid.UUID(int=1)), ("partner", uuid.UUID(int=2)), ("volunteer", uuid.UUID(int=3))]
)


@st.composite
def windows(draw: Any, latest_start: int = 4) -> tuple[datetime, datetime]:
    start = T0 + timedelta(hours=draw(st.integers(min_value=0, max_value=latest_start)))
    length = draw(st.integers(min_value=1, max_value=8))
    return start, start + timedelta(hours=length)


@st.composite
def slot_facts(draw: Any) -> rules.SlotFacts:
    earliest, latest = draw(windows(latest_start=2))
    capacity = draw(st.integers(min_value=1, max_value=3))
    provider_kind, provider_id = draw(providers)
    return rules.SlotFacts(
        id=draw(st.uuids()),
        kind=draw(kinds),
        provider_kind=provider_kind,
        provider_id=provider_id,
        window_earliest=earliest,
        window_latest=latest,
        capacity=capacity,
        reserved=draw(st.just(0) | st.integers(min_value=0, max_value=capacity)),
        compounds=tuple(sorted(draw(st.sets(compound_names, max_size=2) | st.just(set())))),
        published_at=draw(published),
    )


@st.composite
def need_facts(draw: Any) -> rules.NeedFacts:
    earliest, latest = draw(windows())
    return rules.NeedFacts(
        id=draw(st.uuids()),
        kind=draw(kinds),
        urgency=draw(st.sampled_from(list(Urgency))),
        priority_group=draw(st.sampled_from(list(PriorityGroup))),
        window_earliest=earliest,
        window_latest=latest,
        compound=draw(st.none() | compound_names),
        submitted_at=draw(instants),
    )


@dataclass
class Db:
    pool: asyncpg.Pool


@pytest.fixture
async def db(database_url: str, db_schema: str) -> AsyncIterator[Db]:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, db_schema, service_migrations("linli.scheduling", "scheduling"))
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, server_settings={"search_path": db_schema}
    )
    assert pool is not None
    try:
        yield Db(pool)
    finally:
        await pool.close()


async def _insert_slot(conn: Any, s: rules.SlotFacts) -> None:
    await conn.execute(
        "INSERT INTO slots (id, community, kind, provider_kind, provider_id, window_earliest, "
        "window_latest, capacity, compounds, reserved, published_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        s.id,
        COMMUNITY,
        s.kind.value,
        s.provider_kind,
        s.provider_id,
        s.window_earliest,
        s.window_latest,
        s.capacity,
        list(s.compounds),
        s.reserved,
        s.published_at,
    )


async def _insert_need(conn: Any, n: rules.NeedFacts, state: str = "waiting") -> Any:
    await conn.execute(
        "INSERT INTO needs (id, community, resident_id, kind, urgency, priority_group, rank, "
        "window_earliest, window_latest, compound, details, submitted_at, state) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13)",
        n.id,
        COMMUNITY,
        uuid.uuid4(),
        n.kind.value,
        n.urgency.value,
        n.priority_group.value,
        n.rank,
        n.window_earliest,
        n.window_latest,
        n.compound,
        json.dumps({}),
        n.submitted_at,
        state,
    )
    return await store.lock_need(conn, n.id)


async def _exclude(conn: Any, need_id: uuid.UUID, provider: tuple[str, uuid.UUID]) -> None:
    await conn.execute(
        "INSERT INTO need_exclusions (need_id, provider_kind, provider_id, reason) "
        "VALUES ($1, $2, $3, 'declined')",
        need_id,
        *provider,
    )


class _Rollback(Exception):
    """Leave the database as it was after each example."""


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    need=need_facts(),
    slots=st.lists(slot_facts(), min_size=3, max_size=8, unique_by=lambda s: s.id),
    excluded=st.sets(providers, max_size=1),
    now=instants,
)
async def test_the_reserved_slot_is_the_one_the_rules_choose(
    db: Db,
    need: rules.NeedFacts,
    slots: list[rules.SlotFacts],
    excluded: set[tuple[str, uuid.UUID]],
    now: datetime,
) -> None:
    expected = rules.choose_slot(need, slots, excluded=frozenset(excluded), now=now)
    async with db.pool.acquire() as conn:
        try:
            async with conn.transaction():
                for slot in slots:
                    await _insert_slot(conn, slot)
                row = await _insert_need(conn, need)
                for provider in excluded:
                    await _exclude(conn, need.id, provider)
                reserved = await store.reserve_best_slot(conn, row, now)
                assert (reserved["id"] if reserved else None) == (expected.id if expected else None)
                if reserved is not None:
                    assert expected is not None
                    assert reserved["reserved"] == expected.reserved + 1
                exists = await store.candidate_exists(conn, row, now)
                # After the reservation, a candidate remains iff the rules still see one.
                after = [
                    s if reserved is None or s.id != reserved["id"] else _taken(s) for s in slots
                ]
                still = rules.choose_slot(need, after, excluded=frozenset(excluded), now=now)
                assert exists == (still is not None)
                raise _Rollback
        except _Rollback:
            pass


def _taken(slot: rules.SlotFacts) -> rules.SlotFacts:
    from dataclasses import replace

    return replace(slot, reserved=slot.reserved + 1)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    slot=slot_facts().filter(lambda s: s.reserved < s.capacity),
    needs=st.lists(
        st.tuples(
            need_facts(),
            st.sampled_from(["waiting", "escalated", "offered", "fulfilled"]),
            st.booleans(),
        ),
        max_size=7,
        unique_by=lambda t: t[0].id,
    ),
    now=instants,
    limit=st.integers(min_value=1, max_value=8),
)
async def test_a_slot_is_given_to_the_queue_in_the_rules_order(
    db: Db,
    slot: rules.SlotFacts,
    needs: list[tuple[rules.NeedFacts, str, bool]],
    now: datetime,
    limit: int,
) -> None:
    # _fill_slot asks only for a slot with capacity that is not over yet.
    assume(slot.window_latest > now)
    provider = (slot.provider_kind, slot.provider_id)
    expected = [
        n.id
        for n, state, excluded in sorted(needs, key=lambda t: rules.queue_key(t[0]))
        if rules.NeedState(state) in rules.MATCHABLE
        and rules.slot_fits(n, slot, excluded=frozenset({provider} if excluded else ()), now=now)
    ][:limit]
    async with db.pool.acquire() as conn:
        try:
            async with conn.transaction():
                await _insert_slot(conn, slot)
                for n, state, excluded in needs:
                    await _insert_need(conn, n, state)
                    if excluded:
                        await _exclude(conn, n.id, provider)
                row = await conn.fetchrow(
                    f"SELECT {store.SLOT_COLUMNS} FROM slots WHERE id = $1",  # noqa: S608
                    slot.id,
                )
                got = await store.needs_for_slot(conn, row, now, limit)
                assert [r["id"] for r in got] == expected
                raise _Rollback
        except _Rollback:
            pass
