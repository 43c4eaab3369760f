"""`python -m faults`: drive needs through injected faults, drain, check, report.

    make faults                                       # 10,000 needs, 100 faults, docs/
    python -m faults --needs 200 --faults 10 --pg-outage 3 --out /tmp/f   # the short run

Writes `<out>/faults.json` and a Markdown report (`--doc`, default `<out>/reliability.md`).
Exits 1 when a required zero is not zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.harness.communities import attacker, seed_community, snapshot, templates
from tests.harness.lifecycle import Lifecycle, window
from tests.harness.names import Names
from tests.harness.notifications import receiver
from tests.harness.otlp import otlp_env
from tests.harness.procs import ProcessGroup

from . import attacks, invariants, report
from .cross_community import attack
from .inject import KINDS, Injector
from .world import Servers, Traffic

REQUIRED_ZEROS = ("needs_lost", "effects_duplicated", "places_oversold", "dead_letters_not_poison")
ATTACK_ZEROS = (
    "cross_community_2xx",
    "canaries_leaked",
    "nats_outside_permissions",
    "ssrf_reached",
)
RESIDENTS = ("elderly_living_alone", "disabled", "low_income", "none")
STALL_S = 180.0
"""The drain gives up when what is left has not changed for this long."""
OFFERS_PAGE = 200
"""The most offers one page of a volunteer's inbox lists."""
ACK_WAIT_S = 5.0
"""The services' consumer ack_wait here (the harness's); a pause lasts longer."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m faults", description="Needs driven through injected faults."
    )
    parser.add_argument("--needs", type=int, default=10_000, help="needs to submit (10000)")
    parser.add_argument("--faults", type=int, default=100, help="faults to inject (100)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the schedule (1)")
    parser.add_argument("--rate", type=float, default=10.0, help="needs per second (10)")
    parser.add_argument(
        "--pg-outage", type=float, default=300.0, help="seconds of the first PostgreSQL outage"
    )
    parser.add_argument("--drain", type=float, default=900.0, help="longest drain wait, s (900)")
    parser.add_argument("--replicas", type=int, default=2, help="processes per service (2)")
    parser.add_argument("--volunteers", type=int, default=10, help="volunteers (>= needs/400)")
    parser.add_argument("--out", type=Path, help="JSON dir (default: a temp dir)")
    parser.add_argument("--doc", type=Path, help="Markdown report (default <out>/reliability.md)")
    args = parser.parse_args(argv)
    if args.needs < 1 or args.faults < 0 or args.rate <= 0 or args.replicas < 1:
        parser.error("--needs >= 1, --faults >= 0, --rate > 0, --replicas >= 1")
    return args


async def run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    began = time.monotonic()
    names = Names()
    servers = await Servers.start(names)
    procs = ProcessGroup(log_dir)
    canaries = attacks.Canaries()
    async with (
        receiver() as app,
        attacks.span_sink(canaries.needles(len(RESIDENTS))) as spans,
    ):
        lc = Lifecycle(
            names,
            servers.nats_url,
            servers.database_url,
            procs,
            notifications=True,
            nats_users=servers.credentials,
            metrics=True,
            env=otlp_env(spans.endpoint),
        )
        try:
            return await drive(args, rng, began, servers, lc, app, spans, canaries, log_dir)
        finally:
            await asyncio.wait_for(lc.close(), 120)
            servers.stop()


async def drive(
    args: argparse.Namespace,
    rng: random.Random,
    began: float,
    servers: Servers,
    lc: Lifecycle,
    app: Any,
    spans: attacks.SpanSink,
    canaries: attacks.Canaries,
    log_dir: Path,
) -> dict[str, Any]:
    await lc.prepare()
    await lc.start(replicas=args.replicas)
    app.secret = (await lc.subscribe_webhook(app.url))["secret"]
    # Places for about half the needs: the rest are escalated (also final). A
    # slot holds at most OFFERS_PAGE places, so every open offer of a volunteer
    # fits in one page of its inbox (the API lists the newest first, no cursor).
    count = max(args.volunteers, -(-args.needs // 2 // OFFERS_PAGE))
    volunteers = [
        await lc.create_volunteer(f"volunteer {i}", ["meal_delivery"]) for i in range(count)
    ]
    tokens = [await lc.party_token("volunteer", v) for v in volunteers]
    per_slot = max(1, min(OFFERS_PAGE, args.needs // 2 // count))
    for i, v in enumerate(volunteers):
        await lc.publish_slot(
            "meal_delivery",
            provider=("volunteer", v),
            window=window(20 + i, 240),
            capacity=per_slot,
        )
    # Every resident carries canaries (attacks.Canaries), searched for at the end.
    residents = [
        await lc.create_resident(**canaries.resident(i, priority_group=g))
        for i, g in enumerate(RESIDENTS)
    ]
    setup_s = time.monotonic() - began
    traffic = Traffic(lc, rng, residents, tokens)
    injector = Injector(lc, servers, rng, pg_outage_s=args.pg_outage, pause_s=ACK_WAIT_S + 3)
    plan = injector.schedule(args.faults)
    over_s = args.needs / args.rate
    stop = asyncio.Event()
    helpers = [asyncio.create_task(traffic.helper(t, stop)) for t in tokens]
    driving = time.monotonic()
    try:
        await asyncio.gather(traffic.submit(args.needs, args.rate), injector.run(plan, over_s))
        drove_s = time.monotonic() - driving
        await injector.heal()
        drained, still = await drain(lc, traffic.submitted, args.drain)
    finally:
        stop.set()
        await asyncio.gather(*helpers, return_exceptions=True)
    checks = await invariants.check(lc, traffic.submitted, injector.stored_again)
    letters = await invariants.poison_dead_letters(lc)
    found = await run_attacks(lc, servers, app, spans, canaries, residents, log_dir)
    return {
        "command": "python -m faults " + shlex.join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "setup_s": round(setup_s, 1),
        "drive_s": round(drove_s, 1),
        "drained": drained,
        "not_drained": still,
        "needs_driven": len(traffic.submitted),
        "needs_unsubmitted": traffic.unsubmitted,
        "requests_retried": traffic.errors,
        "offers_accepted": len(traffic.accepted),
        "offers_declined": len(traffic.declined),
        "reports": len(traffic.reported),
        "faults_planned": len(plan),
        "faults_injected": sum(injector.done.values()),
        "faults_by_kind": {k: injector.done.get(k, 0) for k in KINDS},
        "fault_notes": injector.notes,
        "republished_new_id": sum(injector.republished_new_id.values()),
        "republished_same_id_stored_again": len(injector.stored_again),
        "poison_published": len(injector.poison_ids),
        "dead_letters_total": letters,
        "invariants": {name: c.as_dict() for name, c in checks.items()},
        "attacks": found,
        "total_s": round(time.monotonic() - began, 1),
    }


def _plans_generated(reads: dict[str, Any]) -> bool:
    """Every plan B reads has generated its occurrences once."""
    plans = reads.get("intake plans") or []
    if isinstance(plans, dict):
        plans = plans.get("items", [])
    return all(isinstance(p, dict) and p.get("generated_until") for p in plans)


def _differences(before: Any, after: Any, at: str = "") -> str:
    """Where two reads differ, field by field (a whole value only where a field differs)."""
    if isinstance(before, dict) and isinstance(after, dict):
        parts = [
            _differences(before.get(k), after.get(k), f"{at}.{k}")
            for k in sorted(set(before) | set(after), key=str)
            if before.get(k) != after.get(k)
        ]
        return "; ".join(parts)
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return "; ".join(
            _differences(b, a, f"{at}[{i}]")
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            if b != a
        )
    return f"{at or '.'}: {before!r:.300} -> {after!r:.300}"


async def cross_community(lc: Lifecycle, examples: int = 8) -> dict[str, Any]:
    """Community A's six kinds of credential against community B's ids on every route
    (schemathesis; docs/adr/0032); B is seeded now, through the APIs, on the drained
    system. Counted: 2xx answers, answers holding B's canary, and a change in what B's
    own credentials read."""
    a = await attacker(lc)
    b = await seed_community(lc, lc.other)
    # B's own events may still be in flight: the baseline is what B reads once two reads
    # a second apart agree (bounded).
    # B's recurring plan must have generated its needs too (intake's plans loop runs on
    # its own clock; on a loaded machine it may not have run within a second).
    before = await snapshot(lc, b)
    for _ in range(60):
        await asyncio.sleep(1.0)
        again = await snapshot(lc, b)
        if again == before and _plans_generated(again):
            break
        before = again
    bases = {name: svc.url for name, svc in lc.services.items()}
    found = await attack(
        bases,
        a.tokens,
        b.ids,
        examples=examples,
        community_a=lc.home,
        canaries_b=b.canaries,
        bodies=templates(b),
    )
    after = await snapshot(lc, b)
    changed = sorted(str(k) for k in set(before) | set(after) if before.get(k) != after.get(k))
    return {
        "count": found["two_xx"] + found["leaks"] + len(changed),
        "examples": [str(v) for v in found["violations"]]
        + [str(v) for v in found["leak_samples"]]
        + [f"B's read changed: {k}: {_differences(before.get(k), after.get(k))}" for k in changed],
        "requests": found["requests"],
        "two_xx": found["two_xx"],
        "leaks": found["leaks"],
        "b_changed": changed,
        "inert_two_xx": found["inert_two_xx"],
        "server_errors": found["server_errors"],
        "operations": len(found["by_operation"]),
        "by_status": dict(sum_statuses(found)),
    }


def sum_statuses(found: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for seen in found["by_service"].values():
        for status, n in seen.get("by_status", {}).items():
            total[str(status)] = total.get(str(status), 0) + n
    return dict(sorted(total.items()))


async def run_attacks(
    lc: Lifecycle,
    servers: Servers,
    app: Any,
    spans: attacks.SpanSink,
    canaries: attacks.Canaries,
    residents: list[str],
    log_dir: Path,
) -> dict[str, Any]:
    """RELIABILITY.md rows 11, 13 and 15 against the drained system (faults/attacks.py,
    faults/cross_community.py)."""
    crossed = await cross_community(lc)
    repair = await attacks.repair_with_canaries(lc, canaries, residents[0])
    nats_probe = await attacks.nats_attack(lc, servers.users)
    ssrf = await attacks.ssrf_attack(lc, residents[0])
    metrics = await attacks.scrape_metrics(lc)
    await lc.stop()  # every span exported, every log line written
    finds = await attacks.search_canaries(
        lc,
        canaries,
        len(residents),
        # The services' output, nats-server's and PostgreSQL's logs.
        log_files=sorted(log_dir.glob("*.log")) + sorted(servers.root.glob("*.log")),  # noqa: ASYNC240
        spans=spans,
        webhooks=app,
        metrics=metrics,
    )
    return {
        "cross_community_2xx": crossed,
        "canaries_leaked": {
            "count": finds.total,
            "examples": finds.examples,
            "places": finds.places,
            "where_they_belong": finds.belong,
            "searched": finds.searched,
            "repair_contact_shown": repair.contact_shown,
            "repair_fulfilled": repair.fulfilled,
        },
        "nats_outside_permissions": {
            "count": len(nats_probe.allowed),
            "examples": nats_probe.allowed,
            "attempts": nats_probe.attempts,
            "denied": nats_probe.denied,
        },
        "ssrf_reached": {
            "count": ssrf.canary_connections + len(ssrf.accepted) + (not ssrf.stored_blocked),
            "examples": ssrf.accepted
            + ([] if ssrf.stored_blocked else [f"stored: {ssrf.connect_error or 'no attempt'}"])
            + [f"the canary heard: {b}" for b in ssrf.canary_heard],
            "registrations": ssrf.registrations,
            "refused": ssrf.refused,
            "stored_blocked": ssrf.stored_blocked,
            "canary_connections": ssrf.canary_connections,
        },
    }


async def drain(lc: Lifecycle, submitted: list[str], budget_s: float) -> tuple[bool, str]:
    """Wait (bounded) until every need is final, outboxes empty, consumers caught up."""
    deadline = time.monotonic() + budget_s
    still = "not checked"
    since = time.monotonic()
    while time.monotonic() < deadline:
        try:
            left = await invariants.settled(lc, submitted)
        except Exception as exc:  # a pool still reconnecting after an outage
            left = f"{type(exc).__name__}: {exc}"
        if left is None:
            return True, ""
        if left != still:
            still, since = left, time.monotonic()
        elif time.monotonic() - since > STALL_S:
            return False, f"{still} (unchanged for {STALL_S:.0f} s)"
        print(f"draining: {still}", file=sys.stderr, flush=True)
        await asyncio.sleep(2.0)
    return False, still


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "node": platform.node(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="linli-faults-out-"))
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    result = asyncio.run(run(args, log_dir))
    (out / "faults.json").write_text(json.dumps(result, indent=2) + "\n")
    doc = args.doc or out / "reliability.md"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(report.markdown(result))
    print(report.summary(result))
    print(f"wrote {out / 'faults.json'} and {doc}; service logs in {log_dir}")
    failed = [n for n in REQUIRED_ZEROS if result["invariants"][n]["count"]]
    failed += [n for n in ATTACK_ZEROS if result["attacks"][n]["count"]]
    return 1 if failed or not result["drained"] else 0


if __name__ == "__main__":
    sys.exit(main())
