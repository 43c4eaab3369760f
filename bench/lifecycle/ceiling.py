"""The raw ceiling: what the same nats-server and PostgreSQL do without Linli around them.

Two figures, measured in the same run on the same servers (and the same two cores):

- a two-hop JetStream pipeline written with plain nats-py: a producer publishes with a
  `Nats-Msg-Id`, a pull consumer republishes each message to a second subject and acks
  it, a final pull consumer acks; messages per second through the whole pipeline. This
  is the messaging a need's events ride on, with no framework, no database and no
  CloudEvents decoding.
- an asyncpg "reserve a slot" transaction: a conditional `UPDATE … WHERE remaining > 0`
  and two inserts (reservation and outbox row), from a pool of 10 connections over 100
  slots; transactions per second. This is the database work a reservation cannot avoid.

Both use scratch names (a stream `BENCH_RAW_<hex>`, a schema `bench_raw_<hex>`) that are
deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
import uuid
from typing import Any

import asyncpg
import nats
import nats.errors
from nats.js.api import StorageType, StreamConfig


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def jetstream_two_hop(
    url: str,
    user: str,
    password: str,
    *,
    seconds: float,
    max_messages: int = 200_000,
    publishers: int = 64,
    batch: int = 256,
    max_outstanding: int = 4096,
) -> dict[str, Any]:
    """Messages per second through publish → republishing consumer → final consumer."""
    nc = await nats.connect(url, user=user, password=password, name="linli-bench-raw")
    js = nc.jetstream()
    tag = secrets.token_hex(4)
    stream = f"BENCH_RAW_{tag.upper()}"
    first, second = f"bench.raw.{tag}.in", f"bench.raw.{tag}.out"
    # About the size of a Linli event (a CloudEvent with a need's data).
    payload = json.dumps({"type": "bench.raw", "data": {"pad": "x" * 600}}).encode()
    await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=[f"bench.raw.{tag}.>"],
            storage=StorageType.FILE,
            duplicate_window=120.0,
        )
    )
    published = 0
    delivered = 0
    producing = True
    began = time.perf_counter()
    last = began
    try:
        hop = await js.pull_subscribe(first, durable="hop", stream=stream)
        final = await js.pull_subscribe(second, durable="final", stream=stream)

        # At most `window` messages between producer and final consumer: the pipeline
        # runs in a steady state instead of piling up a backlog to drain at the end.
        window = asyncio.Semaphore(max_outstanding)
        stop_at = time.perf_counter() + seconds

        async def produce() -> None:
            nonlocal published
            while time.perf_counter() < stop_at and published < max_messages:
                await window.acquire()
                published += 1
                await js.publish(first, payload, headers={"Nats-Msg-Id": uuid.uuid4().hex})

        async def forward() -> None:
            forwarded = 0
            while producing or forwarded < published:
                try:
                    msgs = await hop.fetch(batch, timeout=0.5)
                except nats.errors.TimeoutError:
                    continue
                await asyncio.gather(
                    *(
                        js.publish(second, m.data, headers={"Nats-Msg-Id": uuid.uuid4().hex})
                        for m in msgs
                    )
                )
                for m in msgs:
                    await m.ack()
                forwarded += len(msgs)

        async def consume() -> None:
            nonlocal delivered, last
            while producing or delivered < published:
                try:
                    msgs = await final.fetch(batch, timeout=0.5)
                except nats.errors.TimeoutError:
                    continue
                for m in msgs:
                    await m.ack()
                    window.release()
                delivered += len(msgs)
                last = time.perf_counter()

        workers = [asyncio.create_task(forward()), asyncio.create_task(consume())]
        try:
            await asyncio.gather(*(produce() for _ in range(publishers)))
            producing = False
            # Bounded: the consumers catch up with what was published, or we give up
            # and report what arrived.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*workers), timeout=seconds + 30)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await nc.close()
    elapsed = last - began
    return {
        "messages": delivered,
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(delivered / elapsed, 1) if elapsed > 0 else None,
        "publishers": publishers,
        "batch": batch,
        "max_outstanding": max_outstanding,
        "payload_bytes": len(payload),
    }


async def reserve_transactions(
    dsn: str, *, seconds: float, pool_size: int = 10, slots: int = 100
) -> dict[str, Any]:
    """Reserve-a-slot transactions per second (conditional update + two inserts)."""
    schema = f"bench_raw_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    try:
        # The schema name is ours (hex digits), never input, so formatting it in is safe.
        await admin.execute(f"CREATE SCHEMA {schema}; SET search_path TO {schema}")
        await admin.execute(
            "CREATE TABLE slots (id int PRIMARY KEY, remaining int NOT NULL "
            "CHECK (remaining >= 0));"
            "CREATE TABLE reservations (id uuid PRIMARY KEY, slot_id int NOT NULL "
            "REFERENCES slots, need_id uuid NOT NULL, "
            "reserved_at timestamptz NOT NULL DEFAULT now());"
            "CREATE TABLE outbox (id uuid PRIMARY KEY, subject text NOT NULL, "
            "payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        await admin.execute(
            "INSERT INTO slots SELECT g, 1000000 FROM generate_series(1, $1::int) g", slots
        )
        latencies: list[float] = []
        pool = await asyncpg.create_pool(
            dsn,
            min_size=pool_size,
            max_size=pool_size,
            server_settings={"search_path": schema},
        )
        try:
            stop_at = time.perf_counter() + seconds

            async def worker() -> None:
                rng = random.Random()
                while time.perf_counter() < stop_at:
                    t0 = time.perf_counter()
                    async with pool.acquire() as conn, conn.transaction():
                        slot = rng.randint(1, slots)
                        left = await conn.fetchval(
                            "UPDATE slots SET remaining = remaining - 1 "
                            "WHERE id = $1 AND remaining > 0 RETURNING remaining",
                            slot,
                        )
                        need = uuid.uuid4()
                        await conn.execute(
                            "INSERT INTO reservations (id, slot_id, need_id) VALUES ($1, $2, $3)",
                            uuid.uuid4(),
                            slot,
                            need,
                        )
                        await conn.execute(
                            "INSERT INTO outbox (id, subject, payload) VALUES ($1, $2, $3::jsonb)",
                            uuid.uuid4(),
                            "linli.events.bench.slot.reserved.v1",
                            json.dumps({"need_id": str(need), "remaining": left}),
                        )
                    latencies.append(time.perf_counter() - t0)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(pool_size)))
            elapsed = time.perf_counter() - began
        finally:
            await pool.close()
    finally:
        with contextlib.suppress(Exception):
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
    p50, p99 = _pct(latencies, 0.5), _pct(latencies, 0.99)
    return {
        "transactions": len(latencies),
        "seconds": round(elapsed, 2),
        "tx_per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
        "p50_ms": round(p50 * 1000, 2) if p50 is not None else None,
        "p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
        "pool": pool_size,
        "slots": slots,
    }
