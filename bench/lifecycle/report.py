"""From raw observations to figures: percentiles, targets, JSON, Markdown and a chart.

`docs/benchmarks.md` is written whole by `render_markdown`, so what it says about the
method lives here, next to the code that measures.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .load import STAGES, HelperStats, Observer, RungRun
from .procstat import SERVICES, Memory

# Sustained: the highest offered rate meeting both (issue #8).
SUSTAINED_MIN_FULFILLED_PCT = 99.0
SUSTAINED_MAX_RESERVED_P99_MS = 100.0
TARGET_RATE = 20.0  # the rung the latency and CPU targets are read at
LATE_START_MS = 10.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    return {
        "count": len(seconds),
        "p50_ms": _ms(percentile(seconds, 0.50)),
        "p95_ms": _ms(percentile(seconds, 0.95)),
        "p99_ms": _ms(percentile(seconds, 0.99)),
        "max_ms": _ms(max(seconds) if seconds else None),
    }


def memory_dict(snapshot: dict[str, Memory]) -> dict[str, dict[str, float | None]]:
    return {name: asdict(m) for name, m in snapshot.items()}


def helper_delta(before: HelperStats, after: HelperStats) -> dict[str, Any]:
    return {
        "accepted": after.accepted - before.accepted,
        "reported": after.reported - before.reported,
        "inbox_reads": after.polls - before.polls,
        "gave_up": after.gave_up - before.gave_up,
        "errors": dict(after.errors - before.errors),
    }


def summarise_rung(
    run: RungRun,
    observer: Observer,
    *,
    cpu_before: dict[str, float],
    cpu_after: dict[str, float],
    memory: dict[str, Memory],
    helpers: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one rung (all latencies from the time a submission was due)."""
    accepted = [s for s in run.submissions if s.need_id is not None]
    due_of = {s.need_id: s.due for s in accepted if s.need_id is not None}
    http = [s.finished - s.due for s in accepted if s.finished is not None]
    lags = [s.started - s.due for s in run.submissions]
    stages = {}
    for stage in STAGES:
        seconds = [
            observer.arrivals[n][stage] - due
            for n, due in due_of.items()
            if stage in observer.arrivals.get(n, {})
        ]
        stages[stage] = latency_summary(seconds)
    fulfilled = stages["need.fulfilled"]["count"]
    # Accepted needs per second of the submission phase: the rung's duration, or longer
    # when the last answers came in after it.
    last_answer = max((s.finished for s in accepted if s.finished is not None), default=None)
    submit_span = max(run.duration_s, (last_answer or 0.0) - run.submit_began)
    wall = run.drain_ended - run.submit_began
    cpu_s = {name: round(cpu_after[name] - cpu_before[name], 3) for name in cpu_after}
    services_s = sum(cpu_s[name] for name in SERVICES)
    per_need = {
        name: (round(seconds * 1000 / fulfilled, 2) if fulfilled else None)
        for name, seconds in [*cpu_s.items(), ("services", services_s)]
    }
    trouble: Counter[str] = Counter()
    for (event, need_id), _count in observer.trouble.items():
        if need_id in due_of:
            trouble[event] += 1
    reasons: Counter[str] = Counter()
    for (reason, need_id), _count in observer.escalation_reasons.items():
        if need_id in due_of:
            reasons[reason] += 1
    events = sum(observer.events_per_need[n] for n in due_of)
    return {
        "offered_rate": run.rate,
        "duration_s": run.duration_s,
        "planned": run.planned,
        "started": len(run.submissions),
        "skipped_at_cap": run.skipped_at_cap,
        "abandoned_in_flight": run.abandoned,
        "accepted_201": len(accepted),
        "submit_errors": dict(run.errors),
        "achieved_submit_rate": round(len(accepted) / submit_span, 1),
        "start_lag_ms": {
            "p50": _ms(percentile(lags, 0.5)),
            "p99": _ms(percentile(lags, 0.99)),
            "max": _ms(max(lags) if lags else None),
            "late_over_10ms": sum(1 for lag in lags if lag * 1000 > LATE_START_MS),
        },
        "fulfilled": fulfilled,
        "fulfilled_pct": round(100 * fulfilled / run.planned, 2),
        "http_post_ms": latency_summary(http),
        "stages_ms": stages,
        "wall_s": round(wall, 1),
        "cpu": {
            "seconds": cpu_s,
            "cores": {name: round(s / wall, 3) for name, s in cpu_s.items()} if wall > 0 else {},
            "ms_per_fulfilled_need": per_need,
        },
        "memory": memory_dict(memory),
        "events_per_need": round(events / len(due_of), 2) if due_of else None,
        "trouble_needs": dict(trouble),
        "escalation_reasons": dict(reasons),
        "helpers": helpers,
    }


def _throughput(rung: dict[str, Any] | None) -> dict[str, Any]:
    if rung is None:
        return {"needs_per_s": None, "events_per_need": None, "events_per_s": None}
    epn = rung["events_per_need"]
    return {
        "needs_per_s": rung["offered_rate"],
        "events_per_need": epn,
        "events_per_s": round(rung["offered_rate"] * epn, 1) if epn else None,
    }


def sustained(rungs: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest offered rate with ≥ 99 % fulfilled and p99 to slot.reserved ≤ 100 ms.

    Beside it, the highest rate with ≥ 99 % fulfilled whatever the latency: when the
    latency bound rules out every rung, that still says how much work got done.
    """
    fulfilled = [r for r in rungs if r["fulfilled_pct"] >= SUSTAINED_MIN_FULFILLED_PCT]
    passing = [
        r
        for r in fulfilled
        if r["stages_ms"]["slot.reserved"]["p99_ms"] is not None
        and r["stages_ms"]["slot.reserved"]["p99_ms"] <= SUSTAINED_MAX_RESERVED_P99_MS
    ]
    criteria = (
        f"highest offered rate with ≥ {SUSTAINED_MIN_FULFILLED_PCT:g} % of needs fulfilled "
        f"and p99 submit → slot.reserved ≤ {SUSTAINED_MAX_RESERVED_P99_MS:g} ms"
    )

    def highest(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
        return max(candidates, key=lambda r: r["offered_rate"]) if candidates else None

    return {
        "criteria": criteria,
        **_throughput(highest(passing)),
        "fulfilled_only": _throughput(highest(fulfilled)),
    }


def ratios(sust: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, float | None]:
    """Linli's rates as a share of the raw ceiling (None when there is no rate)."""
    tx = ceiling["reserve_tx"].get("tx_per_s")
    msgs = ceiling["jetstream_two_hop"].get("msgs_per_s")

    def share(value: float | None, of: float | None) -> float | None:
        return round(value / of, 4) if value is not None and of else None

    only = sust["fulfilled_only"]
    return {
        "sustained_needs_per_s_to_reserve_tx_per_s": share(sust["needs_per_s"], tx),
        "sustained_events_per_s_to_two_hop_msgs_per_s": share(sust["events_per_s"], msgs),
        "fulfilled_needs_per_s_to_reserve_tx_per_s": share(only["needs_per_s"], tx),
        "fulfilled_events_per_s_to_two_hop_msgs_per_s": share(only["events_per_s"], msgs),
    }


def _rung_at(rungs: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    return next((r for r in rungs if r["offered_rate"] == rate), None)


def targets(
    rungs: list[dict[str, Any]], sust: dict[str, Any], memory_after: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The issue's targets beside what this run measured (None: not measured in this run)."""
    at20 = _rung_at(rungs, TARGET_RATE)

    def from20(path: tuple[str, ...]) -> float | None:
        value: Any = at20
        for key in path:
            if value is None:
                return None
            value = value.get(key)
        return value if isinstance(value, (int, float)) else None

    service_rss = [memory_after[s]["rss_mb"] for s in SERVICES if s in memory_after]
    rows = [
        ("sustained full lifecycle", "needs/s", ">=", 100.0, sust["needs_per_s"]),
        (
            "p99 submit → slot.reserved at 20 needs/s",
            "ms",
            "<=",
            25.0,
            from20(("stages_ms", "slot.reserved", "p99_ms")),
        ),
        (
            "p99 HTTP POST /needs at 20 needs/s",
            "ms",
            "<=",
            50.0,
            from20(("http_post_ms", "p99_ms")),
        ),
        (
            "CPU per need, all services (at 20 needs/s)",
            "ms",
            "<=",
            10.0,
            from20(("cpu", "ms_per_fulfilled_need", "services")),
        ),
        (
            "RSS per service after the run (largest)",
            "MiB",
            "<=",
            150.0,
            max(service_rss) if service_rss else None,
        ),
    ]
    out = []
    for figure, unit, op, target, measured in rows:
        met = None
        note = None
        if measured is not None:
            met = measured >= target if op == ">=" else measured <= target
        elif figure.startswith("sustained") and rungs:
            # No rung met the criteria: the sustained rate is below the ladder's lowest.
            met = False
            note = f"below {min(r['offered_rate'] for r in rungs):g} needs/s (no rung met it)"
        out.append(
            {
                "figure": figure,
                "unit": unit,
                "target": f"{'≥' if op == '>=' else '≤'} {target:g} {unit}",
                "measured": measured,
                "met": met,
                "note": note,
            }
        )
    return out


# --- Markdown -----------------------------------------------------------------------------


def _f(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return f"{text} {unit}".strip()


def _rate(value: float) -> str:
    return f"{value:g}"


def _lat(stage: dict[str, Any], *keys: str) -> str:
    return " / ".join(_f(stage.get(k)) for k in keys) + " ms"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


PROCESS_ORDER = [*SERVICES, "nats-server", "postgres", "loadgen"]
PROCESS_LABEL = {
    "postgres": "postgres (all processes)",
    "loadgen": "load generator (incl. observer and helpers)",
}


def render_markdown(result: dict[str, Any], chart_link: str, json_name: str, json_link: str) -> str:
    """The whole of docs/benchmarks.md for one run."""
    cfg = result["config"]
    machine = result["machine"]
    setup = result["setup"]
    rungs = result["rungs"]
    sust = result["sustained"]
    ceiling = result["raw_ceiling"]
    rat = result["ratios"]
    out: list[str] = [
        "# Benchmarks",
        "",
        "<!-- Written by `make bench` (bench/lifecycle/report.py); a new run rewrites it. -->",
        "",
        "`make bench` measures the whole lifecycle of a need on the local stack: all four",
        "services started as `make run` starts them, without the demo actors. A load",
        "generator submits needs over HTTP at a ladder of offered rates (open loop), a",
        "simulated canteen and volunteers accept and report every offer through the",
        "partners API, and every event is watched on NATS. Beside Linli's figures it",
        "measures the raw ceiling of the same nats-server and PostgreSQL in the same run.",
        "",
        "## Latest run",
        "",
        f"- **When:** {result['started_at']} to {result['finished_at']} (UTC).",
        f"- **Command:** `{result['command']}`"
        + (", run by `make bench`." if result.get("run_by_make") else "."),
        f"- **Machine:** {machine['cores']} cores ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}, Python {machine['python']}; "
        f"1/5/15-minute load average {machine['load_average_before']} before the run and "
        f"{machine.get('load_average_after')} after it (its own load included). The load "
        "generator, its observer and the simulated helpers share these cores with the services, "
        "nats-server and PostgreSQL (fsync on). The machine is shared with other work, so "
        "figures are noisy: compare runs by their order of magnitude, not their last digit.",
        f"- **Ladder:** {', '.join(_rate(r) for r in cfg['rates'])} needs/s offered, "
        f"{cfg['duration_s']:g} s each, then up to {cfg['drain_s']:g} s for the last "
        f"fulfilments; the ladder stops after a rung with under {cfg['stop_below_pct']:g} % "
        f"fulfilled. At most {cfg['max_in_flight']} submissions in flight.",
        f"- **Stack start:** {setup['stack_started_in_s']:.0f} s (initdb, migrations, "
        "demo data, tokens).",
        "",
        "### Against the targets (issue #8)",
        "",
    ]
    out += _table(
        ["figure", "target", "measured", "met"],
        [
            [
                t["figure"],
                t["target"],
                t.get("note") or _f(t["measured"], t["unit"]),
                "—" if t["met"] is None else ("yes" if t["met"] else "**no**"),
            ]
            for t in result["targets"]
        ],
    )
    two_hop = ceiling["jetstream_two_hop"]
    reserve = ceiling["reserve_tx"]
    only = sust["fulfilled_only"]
    lowest = _rate(min(cfg["rates"]))
    out += [
        "",
        "A target measured at 20 needs/s shows — when the ladder has no 20 needs/s rung.",
        "",
        "### Sustained throughput and the raw ceiling",
        "",
        f"Sustained: the {sust['criteria']}. Beside it, the highest offered rate with "
        f"≥ {SUSTAINED_MIN_FULFILLED_PCT:g} % fulfilled whatever the latency.",
        "",
    ]
    out += _table(
        ["figure", "sustained", "≥ 99 % fulfilled, latency aside"],
        [
            [
                "needs/s",
                f"{_rate(sust['needs_per_s'])}"
                if sust["needs_per_s"] is not None
                else f"none (below {lowest})",
                f"{_rate(only['needs_per_s'])}"
                if only["needs_per_s"] is not None
                else f"none (below {lowest})",
            ],
            [
                "events per need on the stream (at that rung)",
                _f(sust["events_per_need"], digits=2),
                _f(only["events_per_need"], digits=2),
            ],
            ["events/s", _f(sust["events_per_s"]), _f(only["events_per_s"])],
            [
                f"needs/s ÷ raw reserve tx/s ({_f(reserve['tx_per_s'])})",
                _f(rat["sustained_needs_per_s_to_reserve_tx_per_s"], digits=4),
                _f(rat["fulfilled_needs_per_s_to_reserve_tx_per_s"], digits=4),
            ],
            [
                f"events/s ÷ raw two-hop msgs/s ({_f(two_hop['msgs_per_s'])})",
                _f(rat["sustained_events_per_s_to_two_hop_msgs_per_s"], digits=4),
                _f(rat["fulfilled_events_per_s_to_two_hop_msgs_per_s"], digits=4),
            ],
        ],
    )
    out += ["", "The raw ceiling, measured in this run on the same servers:", ""]
    out += _table(
        ["raw workload", "rate", "detail"],
        [
            [
                "nats-py two-hop JetStream pipeline",
                f"{_f(two_hop['msgs_per_s'])} msgs/s",
                f"{_f(two_hop['messages'])} messages in {two_hop['seconds']:g} s, "
                f"{two_hop['payload_bytes']} B payload",
            ],
            [
                f"asyncpg reserve-a-slot transaction, pool of {reserve['pool']}",
                f"{_f(reserve['tx_per_s'])} tx/s",
                f"{_f(reserve['transactions'])} transactions in {reserve['seconds']:g} s, p50 "
                f"{_f(reserve['p50_ms'], 'ms', 2)}, p99 {_f(reserve['p99_ms'], 'ms', 2)}",
            ],
        ],
    )
    if result.get("stopped_early"):
        stop = result["stopped_early"]
        out += [
            "",
            f"The ladder stopped after {_rate(stop['after_rate'])} needs/s: {stop['reason']}.",
        ]
    out += ["", "### Rungs at a glance", ""]
    out += _table(
        [
            "offered",
            "achieved submit",
            "submitted / skipped",
            "fulfilled",
            "POST p50 / p99",
            "→ slot.reserved p50 / p99",
            "→ need.fulfilled p50 / p99",
            "CPU ms/need, services",
        ],
        [
            [
                f"{_rate(r['offered_rate'])}/s",
                f"{_f(r['achieved_submit_rate'])}/s",
                f"{r['accepted_201']} / {r['skipped_at_cap']}",
                f"{_f(r['fulfilled_pct'], '%')}",
                _lat(r["http_post_ms"], "p50_ms", "p99_ms"),
                _lat(r["stages_ms"]["slot.reserved"], "p50_ms", "p99_ms"),
                _lat(r["stages_ms"]["need.fulfilled"], "p50_ms", "p99_ms"),
                _f(r["cpu"]["ms_per_fulfilled_need"]["services"]),
            ]
            for r in rungs
        ],
    )
    out += ["", f"![latency against offered rate]({chart_link})", ""]
    for r in rungs:
        out += _rung_section(r)
    out += [
        "### Idle cost and memory",
        "",
        f"Idle: CPU over {result['idle']['seconds']:g} s with the stack up and nothing "
        "submitted (timers, relays, consumers polling), before the raw ceiling and the ladder.",
        "",
    ]
    idle, after = result["memory_idle"], result["memory_after"]
    idle_cores = result["idle"]["cores"]
    out += _table(
        ["process", "idle cores busy", "RSS before the ladder", "RSS after the run", "peak RSS"],
        [
            [
                PROCESS_LABEL.get(name, name),
                _f(idle_cores.get(name), digits=3),
                _f(idle.get(name, {}).get("rss_mb"), "MiB"),
                _f(after.get(name, {}).get("rss_mb"), "MiB"),
                _f(after.get(name, {}).get("peak_mb"), "MiB"),
            ]
            for name in PROCESS_ORDER
            if name in after
        ],
    )
    out += ["", *METHOD.strip("\n").splitlines()]
    out += [
        "",
        "## Files",
        "",
        f"- [`{json_name}`]({json_link}): every figure of the run above (per rung, per stage,",
        "  per process),"
        "  with the configuration and machine. It is committed together with this page and",
        "  the chart, so the page can be checked against the data it was written from.",
        "- A new `make bench` rewrites all three; `python -m bench.lifecycle --help` lists",
        "  the options (`--rates`, `--duration`, `--drain`, `--out`, `--smoke`, …). The",
        "  intake-only bench that this one replaces (`bench/bench_intake.py`) is gone; its",
        "  figures are the HTTP POST column here.",
        "",
    ]
    return "\n".join(out)


def _rung_section(r: dict[str, Any]) -> list[str]:
    lag = r["start_lag_ms"]
    trouble = ", ".join(f"{k}: {v}" for k, v in sorted(r["trouble_needs"].items())) or "none"
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(r["escalation_reasons"].items()))
    helpers = r["helpers"]

    def listed(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))

    lines = [
        f"### {_rate(r['offered_rate'])} needs/s offered",
        "",
        f"{r['planned']} needs due over {r['duration_s']:g} s; {r['accepted_201']} accepted "
        f"(201), {r['skipped_at_cap']} not sent (in-flight cap), {r['abandoned_in_flight']} "
        f"still unanswered when the drain ended; {r['fulfilled']} fulfilled "
        f"({_f(r['fulfilled_pct'], '%')}) within {r['wall_s']:g} s. Submissions started "
        f"{_f(lag['p50'])} / {_f(lag['p99'])} ms (p50 / p99) after they were due, "
        f"{lag['late_over_10ms']} more than 10 ms late. Needs off the happy path: {trouble}"
        + (f" (escalations: {reasons})" if reasons else "")
        + f". Helpers (who answer every meal offer in the parties' inboxes, the demo's own "
        f"included): {helpers['accepted']} accepted, {helpers['reported']} reported, "
        f"{helpers['inbox_reads']} inbox reads "
        f"({_f(helpers['inbox_reads'] / max(1, r['accepted_201']), digits=1)} per need), "
        f"{helpers['gave_up']} offers never seen in the inbox"
        + (f"; helper errors: {listed(helpers['errors'])}" if helpers["errors"] else "")
        + (f". Submission errors: {listed(r['submit_errors'])}" if r["submit_errors"] else "")
        + f". Events per need on the stream: {_f(r['events_per_need'], digits=2)}.",
        "",
    ]
    stage_rows = [["HTTP POST /needs answered", *_stage_cells(r["http_post_ms"])]]
    stage_rows += [[f"→ {stage}", *_stage_cells(r["stages_ms"][stage])] for stage in STAGES]
    lines += _table(["from due time to", "reached", "p50", "p95", "p99", "max"], stage_rows)
    lines.append("")
    cpu = r["cpu"]
    rows = []
    for name in PROCESS_ORDER:
        if name not in cpu["seconds"]:
            continue
        mem = r["memory"].get(name, {})
        rows.append(
            [
                PROCESS_LABEL.get(name, name),
                _f(cpu["seconds"][name], "s", 2),
                _f(cpu["cores"].get(name), digits=2),
                _f(cpu["ms_per_fulfilled_need"][name], "ms", 2),
                _f(mem.get("rss_mb"), "MiB"),
            ]
        )
        if name == SERVICES[-1]:
            services = sum(cpu["seconds"][s] for s in SERVICES)
            rows.append(
                [
                    "**all four services**",
                    _f(services, "s", 2),
                    _f(services / r["wall_s"] if r["wall_s"] else None, digits=2),
                    "**" + _f(cpu["ms_per_fulfilled_need"]["services"], "ms", 2) + "**",
                    "",
                ]
            )
    lines += _table(
        ["process", "CPU", "cores busy", "CPU per fulfilled need", "RSS after the rung"], rows
    )
    lines.append("")
    return lines


def _stage_cells(s: dict[str, Any]) -> list[str]:
    return [
        str(s["count"]),
        _f(s["p50_ms"], "ms"),
        _f(s["p95_ms"], "ms"),
        _f(s["p99_ms"], "ms"),
        _f(s["max_ms"], "ms"),
    ]


METHOD = """
## How it measures

- **Stack.** `python -m linli.devstack run --no-actors` in a fresh temporary directory,
  on free ports, with `LINLI_TIME_SCALE=1` so that offer and SLA clocks run in real time
  (the demo's 60x clock would expire offers while the services catch up). Demo data is
  loaded as in `make run`. The bench registers three residents of its own with intake;
  the demo's canteen and its two meal-delivering volunteers (tokens from `stack.json`,
  whom the actors would play in `make run`) are the parties. Before each rung they
  publish meal slots for 110 % of the rung's needs, each with its own token, two slots
  per party in turn, so that each of them serves part of every rung (scheduling takes
  the earliest-starting slot, and the bench's slots all start together). The bench's
  needs are tomorrow's dinners (17:30-19:00, UTC+8), which the demo's lunch capacity
  never overlaps. A rung starts once scheduling lists its new slots. Afterwards the
  stack gets Ctrl-C and its PostgreSQL data is deleted.
- **Open loop.** The i-th need of a rung is due at start + i / rate and is sent then,
  whatever happened to earlier ones. Every latency is measured from the time the need
  was due, so time a submission waited in the load generator counts against the
  system; how late submissions started is shown per rung. A submission due while the
  in-flight cap is reached is not sent and counts as not fulfilled.
- **Stages.** One core NATS subscription on `linli.events.>` (the stack's admin user)
  records the first arrival of each event per `data.need_id`: `need.submitted`,
  `slot.reserved`, `assignment.offered`, accepted (`partner.accepted` or
  `volunteer.confirmed`), delivered (`meal.delivered`), `need.fulfilled`.
- **Helpers.** `assignment.offered` for one of those parties is the push its app
  gets: the helper reads that party's inbox (`GET /v1/me/offers?status=open`) and
  accepts and reports (meal delivered) every open offer there through the partners API,
  with the party's own token and no think time, so acceptance and delivery times are
  the system's. Partners stores an offer when its own consumer reads the same event, so
  while an offer the helper was told about is not in the inbox yet, it reads again, at
  most every 50 ms per party. Those reads are requests partners serves and its CPU
  figure includes; their number per need is given for each rung.
- **CPU.** utime + stime from `/proc/<pid>/stat` before the rung (after its capacity is
  in place) and after its drain, for each service (pids from `stack.json`),
  nats-server, PostgreSQL (postmaster, its live children, and children it reaped in
  between) and the load generator itself. CPU per need divides by the rung's fulfilled
  needs; "cores busy" divides by the rung's wall time (submission plus drain).
- **Memory.** VmRSS and VmHWM (peak) from `/proc/<pid>/status`; for PostgreSQL the sum of
  Pss over its processes (shared buffers are mapped into every backend).
- **Sustained throughput.** The highest offered rate with at least 99 % of its needs
  fulfilled within the drain and p99 submit → `slot.reserved` at most 100 ms.
- **Raw ceiling.** Before the ladder, on the same servers: a two-hop JetStream pipeline
  in plain nats-py (64 concurrent publishers with `Nats-Msg-Id`, a pull consumer that
  republishes each message and acks it, a final pull consumer that acks, batches of
  256, at most 4,096 messages in the pipeline, a ~650-byte payload, file storage), and
  an asyncpg transaction that reserves a slot (`UPDATE … WHERE remaining > 0` and two
  inserts) from a pool of 10 over 100 slots. Each uses a scratch stream or schema,
  deleted afterwards. The ratios compare Linli's sustained needs/s with reserve
  transactions/s (one reservation per need) and its events/s with the pipeline's
  messages/s. The raw figures run on the same shared cores, with the idle services
  beside them, but without the load generator.
"""


# --- Chart ---------------------------------------------------------------------------------


def render_chart(result: dict[str, Any], path: Path) -> None:
    """p50 and p99 latency of each stage against the offered rate, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rungs = result["rungs"]
    rates = [r["offered_rate"] for r in rungs]
    series: list[tuple[str, list[dict[str, Any]]]] = [
        ("HTTP POST /needs", [r["http_post_ms"] for r in rungs])
    ]
    series += [(f"→ {stage}", [r["stages_ms"][stage] for r in rungs]) for stage in STAGES]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, key, title in ((axes[0], "p50_ms", "p50"), (axes[1], "p99_ms", "p99")):
        # Distinct markers: stages that arrive together (slot.reserved and
        # assignment.offered) draw on top of each other.
        for (label, stats), marker in zip(series, "os^vDPX", strict=False):
            ys = [s[key] if s[key] is not None else float("nan") for s in stats]
            ax.plot(rates, ys, marker=marker, markersize=5, label=label)
        ax.axhline(SUSTAINED_MAX_RESERVED_P99_MS, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (needs/s)")
        ax.set_title(f"{title} latency from due time")
        ax.grid(True, which="both", alpha=0.3)
        for r in rungs:
            ax.annotate(
                f"{r['fulfilled_pct']:.0f}%",
                (r["offered_rate"], 1),
                xycoords=("data", "axes fraction"),
                xytext=(0, -12),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color="grey",
            )
    axes[0].set_ylabel("ms (log scale)")
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(
        f"Linli lifecycle, {result['machine']['cores']} cores, {result['started_at'][:10]} "
        f"(dotted: {SUSTAINED_MAX_RESERVED_P99_MS:g} ms; grey %: fulfilled)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
