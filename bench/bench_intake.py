"""Intake benchmark: HTTP submissions, ingress requests, submit-to-stream latency, memory.

Starts its own nats-server and PostgreSQL from the wheels (in a temp dir), runs intake
as a separate process like production, drives it from this process over 127.0.0.1
with a bounded number of requests, and prints a Markdown table.

    make bench        # or: uv run python bench/bench_intake.py --needs 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import nats

from linli.contracts.types import Role
from linli.devstack.servers import NatsServer, PostgresServer, free_port, run_sync
from linli.servicekit.auth import issue_credential
from linli.servicekit.db import migrate, service_migrations

COMMUNITY = "bench-community"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def prepare(dsn: str) -> tuple[str, str]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake,public"})
    await migrate(conn, "intake", service_migrations("linli.intake", "intake"))
    await conn.execute(
        "INSERT INTO communities VALUES ($1, 'Bench') ON CONFLICT DO NOTHING", COMMUNITY
    )
    _, token = await issue_credential(conn, role=Role.OPERATOR, communities=[COMMUNITY])
    resident = uuid.uuid4()
    await conn.execute(
        "INSERT INTO residents (id, community, name, phone, address, priority_group) "
        "VALUES ($1, $2, 'Bench Resident', '+8613800138000', 'Bench Road 1', 'none')",
        resident,
        COMMUNITY,
    )
    await conn.close()
    return token, str(resident)


def need_body(resident: str) -> dict:
    start = datetime.now(UTC) + timedelta(hours=2)
    return {
        "kind": "meal_delivery",
        "resident_id": resident,
        "window": {
            "earliest": start.isoformat(),
            "latest": (start + timedelta(hours=1)).isoformat(),
        },
        "details": {"portions": 1},
    }


async def http_load(url: str, token: str, resident: str, n: int, concurrency: int, nc) -> dict:
    arrivals: dict[str, float] = {}

    async def on_event(msg) -> None:
        arrivals[json.loads(msg.data)["data"]["need_id"]] = time.perf_counter()

    await nc.subscribe(f"linli.events.{COMMUNITY}.need.submitted.v1", cb=on_event)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                t0 = time.perf_counter()
                r = await client.post(
                    f"/v1/communities/{COMMUNITY}/needs", json=need_body(resident)
                )
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)
                sent[r.json()["id"]] = t0

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    deadline = time.monotonic() + 30
    while len(arrivals) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    to_stream = [arrivals[k] - sent[k] for k in sent if k in arrivals]
    return {
        "rate": n / elapsed,
        "p50": pct(latencies, 0.5) * 1000,
        "p99": pct(latencies, 0.99) * 1000,
        "stream_p50": pct(to_stream, 0.5) * 1000,
        "stream_p99": pct(to_stream, 0.99) * 1000,
        "on_stream": len(arrivals),
    }


async def ingress_load(nc, resident: str, n: int, concurrency: int) -> dict:
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "urn:bench",
            "type": "linli.need.submit.v1",
            "time": datetime.now(UTC).isoformat(),
            "community": COMMUNITY,
            "data": need_body(resident),
        }
        async with sem:
            t0 = time.perf_counter()
            reply = await nc.request(
                f"linli.ingress.{COMMUNITY}.need.submit.v1", json.dumps(event).encode(), timeout=30
            )
            latencies.append(time.perf_counter() - t0)
            assert json.loads(reply.data)["status"] == "accepted"

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - start
    return {
        "rate": n / elapsed,
        "p50": pct(latencies, 0.5) * 1000,
        "p99": pct(latencies, 0.99) * 1000,
    }


async def main_async(
    args: argparse.Namespace, url: str, nats_url: str, token: str, resident: str, pid: int
) -> list[str]:
    nc = await nats.connect(nats_url)
    rows = []
    rss_idle = rss_mb(pid)
    for concurrency in args.concurrency:
        h = await http_load(url, token, resident, args.needs, concurrency, nc)
        rows.append(
            f"| HTTP POST /needs, {concurrency} concurrent | {args.needs} | {h['rate']:.0f}/s | "
            f"{h['p50']:.1f} ms | {h['p99']:.1f} ms | "
            f"{h['stream_p50']:.1f} / {h['stream_p99']:.1f} ms |"
        )
    i = await ingress_load(nc, resident, args.needs, 20)
    rows.append(
        f"| NATS need.submit request/reply, 20 in flight | {args.needs} | {i['rate']:.0f}/s | "
        f"{i['p50']:.1f} ms | {i['p99']:.1f} ms | — |"
    )
    rows.append(
        f"| intake RSS idle / after load | | {rss_idle:.0f} MB / {rss_mb(pid):.0f} MB | | | |"
    )
    await nc.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--needs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="linli-bench-") as tmp:
        root = Path(tmp)
        pg = PostgresServer(Path(tempfile.mkdtemp(prefix="linli-pg-bench-")) / "pg")
        nats_server = NatsServer(root / "nats")
        pg.start()
        nats_server.start()
        proc = None
        try:
            dsn = pg.dsn()
            token, resident = run_sync(prepare(dsn))
            port = free_port()
            env = {
                **os.environ,
                "LINLI_DATABASE_URL": dsn,
                "LINLI_DB_SCHEMA": "intake",
                "LINLI_NATS_URL": nats_server.url,
                "LINLI_HTTP_PORT": str(port),
                "LINLI_LOG_LEVEL": "WARNING",
            }
            proc = subprocess.Popen([sys.executable, "-m", "linli.intake", "serve"], env=env)
            url = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    if httpx.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            rows = asyncio.run(main_async(args, url, nats_server.url, token, resident, proc.pid))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)
            nats_server.stop()
            pg.delete_data()
    print("| workload | requests | throughput | p50 | p99 | request → on stream p50 / p99 |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"\n({os.cpu_count()} cores; uv run python bench/bench_intake.py --needs {args.needs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
