"""docs/reliability.md from one run's result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TITLES = {
    "needs_lost": "needs lost",
    "effects_duplicated": "effects duplicated",
    "places_oversold": "places oversold",
    "dead_letters_not_poison": "dead letters that were not poison",
}

ATTACK_TITLES = {
    "cross_community_2xx": "cross-community reads (2xx on B's ids with A's credentials)",
    "canaries_leaked": "canaries leaked",
    "nats_outside_permissions": "NATS operations outside a user's permissions not refused",
    "ssrf_reached": "SSRF: registrations accepted or connections reaching the canary",
}

ROWS = Path(__file__).with_name("rows.md")
"""Which run figure or test proves each row of RELIABILITY.md."""


def summary(result: dict[str, Any]) -> str:
    inv = result["invariants"]
    parts = [f"{TITLES[k]}: {v['count']}" for k, v in inv.items()]
    return (
        f"{result['needs_driven']} needs, {result['faults_injected']} faults, "
        f"drained: {result['drained']}; " + "; ".join(parts)
    )


def markdown(result: dict[str, Any]) -> str:
    inv = result["invariants"]
    m = result["machine"]
    lines = [
        "# Reliability: needs driven through injected faults",
        "",
        "Written by `python -m faults` (`make faults`); the figures below are from one run.",
        "The invariants are read from PostgreSQL and JetStream after the system drained,",
        "never from logs. What each fault is and how it is caused: `faults/README.md` and",
        "`../shared/RELIABILITY.md`.",
        "",
        f"* command: `{result['command']}`",
        f"* date: {result['date']}",
        f"* machine: {m['platform']}, Python {m['python']}, {m['cpus']} CPUs",
        f"* services: intake, partners, scheduling, notifications, "
        f"{result['config']['replicas']} replicas each, on their own nats-server and PostgreSQL",
        f"* time: setup {result['setup_s']} s, driving {result['drive_s']} s, "
        f"total {result['total_s']} s; drained: {'yes' if result['drained'] else 'NO'}"
        + (f" ({result['not_drained']})" if not result["drained"] else ""),
        "",
        "## Figures",
        "",
        "| figure | value | required |",
        "| --- | ---: | --- |",
        f"| needs driven | {result['needs_driven']} | |",
        f"| needs whose submission never got an answer | {result['needs_unsubmitted']} | |",
        f"| faults injected | {result['faults_injected']} of {result['faults_planned']} planned"
        " | |",
    ]
    for key, value in inv.items():
        lines.append(f"| {TITLES[key]} | {value['count']} | 0 |")
    found = result.get("attacks", {})
    for key, title in ATTACK_TITLES.items():
        value = found[key]["count"] if key in found else "not measured"
        lines.append(f"| {title} | {value} | 0 |")
    lines += [
        "",
        "## Faults by kind",
        "",
        "| kind | injected |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {n} |" for k, n in result["faults_by_kind"].items()]
    lines += [
        "",
        f"Requests retried by the simulated clients (5xx, timeouts, refused): "
        f"{result['requests_retried']}. Offers accepted {result['offers_accepted']}, "
        f"declined {result['offers_declined']}, reports {result['reports']}. "
        f"Events republished under a new message id: {result['republished_new_id']}, "
        f"with their own id but stored again (window passed): "
        f"{result.get('republished_same_id_stored_again', 0)}; "
        f"poison messages published: {result['poison_published']}; "
        f"dead letters in all: {result['dead_letters_total']}.",
        "",
    ]
    lines += attack_lines(found)
    failing = {TITLES[k]: v for k, v in inv.items() if v["count"]}
    failing |= {ATTACK_TITLES[k]: v for k, v in found.items() if v["count"]}
    if failing:
        lines += ["## Examples of what failed", ""]
        for title, value in failing.items():
            lines.append(f"* {title}:")
            lines += [f"  * `{e}`" for e in value["examples"]]
        lines.append("")
    lines += ["## Fault log", ""]
    lines += [f"* {n}" for n in result["fault_notes"]]
    lines += ["", ROWS.read_text()]
    return "\n".join(lines)


def attack_lines(found: dict[str, Any]) -> list[str]:
    """What the attacks did, so a zero can be told from nothing tried."""
    if not found:
        return []
    lines = ["## Attacks", ""]
    if "canaries_leaked" in found:
        c = found["canaries_leaked"]
        searched = ", ".join(f"{n} {k}" for k, n in c["searched"].items())
        belong = ", ".join(f"{k} {n}" for k, n in c["where_they_belong"].items()) or "none"
        lines.append(
            f"* canaries: searched {searched}; found where they belong (the control): "
            f"{belong}; a repair with canary free text carried through partners: contact "
            f"shown to the assignee {c['repair_contact_shown']}, fulfilled "
            f"{c['repair_fulfilled']}."
        )
    if "nats_outside_permissions" in found:
        n = found["nats_outside_permissions"]
        lines.append(
            f"* NATS: {n['attempts']} publishes and subscriptions outside the permissions "
            f"of service, community system and community app users; refused {n['denied']}."
        )
    if "ssrf_reached" in found:
        s = found["ssrf_reached"]
        lines.append(
            f"* SSRF: {s['registrations']} URLs registered as a community app against a "
            f"notifications replica in production mode, refused {s['refused']}; a stored "
            f"subscription to 127.0.0.1 blocked at connect: {s['stored_blocked']}; "
            f"connections the canary listener saw: {s['canary_connections']}."
        )
    if "cross_community_2xx" in found:
        x = found["cross_community_2xx"]
        lines.append(
            f"* cross-community: {x['requests']} requests over {x['operations']} operations, "
            f"generated by schemathesis with community A's operator, app, admin, volunteer "
            f"and partner credentials against community B's ids (docs/adr/0032); answers by "
            f"status {x['by_status']}; 2xx {x['two_xx']}, answers holding B's canary "
            f"{x['leaks']}, B changed: {x['b_changed']}; recipients of A naming B's ids "
            f"(inert, ADR 0032): {x['inert_two_xx']}."
        )
    return [*lines, ""]
