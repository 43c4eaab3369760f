"""`python -m bench.lifecycle`: run the lifecycle benchmark and write its report.

    make bench                                # the full ladder, into docs/
    python -m bench.lifecycle --smoke --out /tmp/b   # a few needs, for the tests

Writes `<out>/lifecycle.json`, a Markdown report (`--doc`) and a PNG chart (`--chart`).
Without `--doc` / `--chart` both go into `--out`, so only `make bench` rewrites docs/.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import shlex
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from . import ceiling, report, world
from .load import Helpers, Observer, run_rung
from .procstat import cpu_snapshot, memory_snapshot
from .report import memory_dict
from .stack import RunningStack, start, stop

DEFAULT_RATES = [5.0, 10.0, 20.0, 50.0, 100.0, 150.0, 200.0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lifecycle",
        description="Whole-lifecycle benchmark of the local stack (docs/benchmarks.md).",
    )
    parser.add_argument(
        "--rates", type=float, nargs="+", help="offered rates, needs/s (default: a ladder)"
    )
    parser.add_argument("--duration", type=float, help="seconds of submissions per rung (20)")
    parser.add_argument("--drain", type=float, help="longest wait for fulfilments (30)")
    parser.add_argument(
        "--stop-below",
        type=float,
        default=90.0,
        help="stop the ladder after a rung with fewer %% fulfilled (90)",
    )
    parser.add_argument("--max-in-flight", type=int, default=256, help="submission cap (256)")
    parser.add_argument(
        "--ceiling-seconds", type=float, help="seconds for each raw-ceiling measurement (5)"
    )
    parser.add_argument(
        "--idle-seconds", type=float, help="seconds of idle CPU measured before the ladder (5)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="JSON dir")
    parser.add_argument("--doc", type=Path, help="Markdown report (default <out>/lifecycle.md)")
    parser.add_argument("--chart", type=Path, help="PNG chart (default <out>/lifecycle.png)")
    parser.add_argument(
        "--smoke", action="store_true", help="a few needs at one low rate, short raw ceiling"
    )
    args = parser.parse_args(argv)
    smoke = {
        "rates": [2.0],
        "duration": 3.0,
        "drain": 30.0,
        "ceiling_seconds": 1.0,
        "idle_seconds": 1.0,
    }
    full = {
        "rates": DEFAULT_RATES,
        "duration": 20.0,
        "drain": 30.0,
        "ceiling_seconds": 5.0,
        "idle_seconds": 5.0,
    }
    for key, value in (smoke if args.smoke else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if any(r <= 0 for r in args.rates) or args.duration <= 0 or args.drain < 0:
        parser.error("rates and duration must be positive, drain not negative")
    args.doc = args.doc or args.out / "lifecycle.md"
    args.chart = args.chart or args.out / "lifecycle.png"
    return args


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(pages / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def measure(stack: RunningStack, args: argparse.Namespace) -> dict[str, Any]:
    """Everything that needs the running stack: world, raw ceiling, ladder, memory."""
    info = stack.info
    admin = info["nats"]["admin"]
    procs = stack.processes
    async with httpx.AsyncClient(timeout=30) as client:
        bench_world = await world.create(info, client)
        observer = Observer()
        await observer.start(info["nats"]["url"], admin["user"], admin["password"])
        helpers = Helpers(bench_world)
        observer.helpers = helpers
        helpers.start()
        try:
            memory_idle = memory_snapshot(procs)
            log(f"idle for {args.idle_seconds:g} s")
            idle_before = cpu_snapshot(procs)
            began = time.perf_counter()
            await asyncio.sleep(args.idle_seconds)
            idle_after = cpu_snapshot(procs)
            idle_wall = time.perf_counter() - began
            idle = {
                "seconds": args.idle_seconds,
                "cores": {
                    name: round((idle_after[name] - idle_before[name]) / idle_wall, 3)
                    for name in idle_after
                },
            }
            log("raw ceiling: nats-py two-hop JetStream pipeline")
            two_hop = await ceiling.jetstream_two_hop(
                info["nats"]["url"], admin["user"], admin["password"], seconds=args.ceiling_seconds
            )
            log(f"  {two_hop['msgs_per_s']} msgs/s")
            log("raw ceiling: asyncpg reserve-a-slot transactions")
            reserve = await ceiling.reserve_transactions(
                info["postgres"]["url"], seconds=args.ceiling_seconds
            )
            log(f"  {reserve['tx_per_s']} tx/s")
            rungs: list[dict[str, Any]] = []
            stopped_early = None
            for rate in args.rates:
                await world.publish_capacity(bench_world, client, round(rate * args.duration))
                await asyncio.sleep(1.0)  # let every consumer take the slot.published events
                log(f"rung {rate:g} needs/s for {args.duration:g} s")
                cpu_before = cpu_snapshot(procs)
                helpers_before = copy.deepcopy(helpers.stats)
                run = await run_rung(
                    bench_world,
                    observer,
                    rate=rate,
                    duration_s=args.duration,
                    drain_s=args.drain,
                    max_in_flight=args.max_in_flight,
                )
                summary = report.summarise_rung(
                    run,
                    observer,
                    cpu_before=cpu_before,
                    cpu_after=cpu_snapshot(procs),
                    memory=memory_snapshot(procs),
                    helpers=report.helper_delta(helpers_before, helpers.stats),
                )
                rungs.append(summary)
                log(
                    f"  fulfilled {summary['fulfilled_pct']} %, POST p99 "
                    f"{summary['http_post_ms']['p99_ms']} ms, reserved p99 "
                    f"{summary['stages_ms']['slot.reserved']['p99_ms']} ms, services "
                    f"{summary['cpu']['ms_per_fulfilled_need']['services']} ms CPU/need"
                )
                if summary["fulfilled_pct"] < args.stop_below and rate != args.rates[-1]:
                    stopped_early = {
                        "after_rate": rate,
                        "reason": (
                            f"{summary['fulfilled_pct']} % fulfilled, under {args.stop_below:g} %"
                        ),
                    }
                    log(f"  stopping the ladder: {stopped_early['reason']}")
                    break
            memory_after = memory_snapshot(procs)
            observer_errors = dict(observer.errors)
        finally:
            await helpers.stop()
            await observer.stop()
    sust = report.sustained(rungs)
    ceiling_figures = {"jetstream_two_hop": two_hop, "reserve_tx": reserve}
    after = memory_dict(memory_after)
    return {
        "setup": {
            "stack_started_in_s": round(stack.started_in_s, 1),
            "community": bench_world.community,
            "need_kind": world.KIND,
            "need_window": bench_world.need_window,
            "slot_window": bench_world.slot_window,
            "parties": [{"kind": p.kind, "name": p.name} for p in bench_world.parties],
            "time_scale": 1,
        },
        "rungs": rungs,
        "stopped_early": stopped_early,
        "sustained": sust,
        "raw_ceiling": ceiling_figures,
        "ratios": report.ratios(sust, ceiling_figures),
        "idle": idle,
        "memory_idle": memory_dict(memory_idle),
        "memory_after": after,
        "targets": report.targets(rungs, sust, after),
        "observer_errors": observer_errors,
    }


def write_outputs(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Path]:
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "lifecycle.json"
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    report.render_chart(result, args.chart)
    doc_dir = args.doc.absolute().parent
    json_abs = json_path.absolute()
    json_name = (
        str(json_abs.relative_to(Path.cwd()))
        if json_abs.is_relative_to(Path.cwd())
        else str(json_abs)
    )
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(
        report.render_markdown(
            result,
            chart_link=os.path.relpath(args.chart.absolute(), doc_dir),
            json_name=json_name,
            json_link=os.path.relpath(json_abs, doc_dir),
        )
    )
    return {"json": json_path, "doc": args.doc, "chart": args.chart}


def _stop_on_sigterm(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so every finally runs and the stack is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Set both: a parent may start us with SIGINT ignored (a background job, some
    # runners), and then Python would go on ignoring Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    command = "python -m bench.lifecycle " + shlex.join(sys.argv[1:] if argv is None else argv)
    started_at = datetime.now(UTC)
    host = machine()
    log("starting the local stack (python -m linli.devstack run --no-actors)")
    try:
        stack = start()
    except KeyboardInterrupt:
        log("interrupted; the stack is stopped")
        return 130
    log(f"stack up in {stack.started_in_s:.0f} s")
    try:
        measured = asyncio.run(measure(stack, args))
    except KeyboardInterrupt:
        log("interrupted: nothing is written")
        return 130
    except Exception:
        print(stack.log_tails(), file=sys.stderr)
        raise
    finally:
        log("stopping the stack")
        stop(stack)
    # Other work on a shared machine shows here; the report prints both.
    host["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "schema_version": 1,
        "command": command.strip(),
        # make exports MAKELEVEL to what it runs (through uv run too).
        "run_by_make": "MAKELEVEL" in os.environ,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": host,
        "config": {
            "rates": args.rates,
            "duration_s": args.duration,
            "drain_s": args.drain,
            "stop_below_pct": args.stop_below,
            "max_in_flight": args.max_in_flight,
            "ceiling_seconds": args.ceiling_seconds,
            "idle_seconds": args.idle_seconds,
            "smoke": args.smoke,
        },
        **measured,
    }
    paths = write_outputs(result, args)
    for name, path in paths.items():
        log(f"wrote {name}: {path}")
    for t in result["targets"]:
        met = "—" if t["met"] is None else ("met" if t["met"] else "MISSED")
        shown = t["note"] or (
            "not measured" if t["measured"] is None else f"{t['measured']} {t['unit']}"
        )
        log(f"  {t['figure']}: {shown} (target {t['target']}) {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
