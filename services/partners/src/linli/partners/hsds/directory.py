"""Reads one community's directory from partners' store (one snapshot per request)."""

from __future__ import annotations

from datetime import datetime, timedelta

from linli.partners import store
from linli.servicekit.db import Conn

from .mapping import Directory


async def load(
    conn: Conn,
    community: str,
    *,
    now: datetime,
    horizon_days: int,
    timezone: str,
    public_only: bool = False,
) -> Directory:
    """Active partners serving `community` (only those that made their contacts public
    when `public_only`), their services, weekly templates and live capacity from now to
    `horizon_days` ahead. One REPEATABLE READ transaction, so the parts agree."""
    until = now + timedelta(days=horizon_days)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        partners = await store.directory_partners(conn, community, public_only=public_only)
        ids = [p["id"] for p in partners]
        services = await store.directory_services(conn, ids)
        templates = await store.directory_templates(conn, community, ids)
        live = await store.live_capacity(conn, community, now, until)
        compounds = await store.compounds_served(conn, community, now, until)
        one_offs = await store.one_off_slots(conn, community, now, until)
    served: dict[tuple, list[str]] = {}
    for row in compounds:
        served.setdefault((row["partner_id"], row["kind"]), []).append(row["compound"])
    return Directory(
        community=community,
        now=now,
        horizon_days=horizon_days,
        timezone=timezone,
        partners=[dict(p) for p in partners],
        services=[dict(s) for s in services],
        templates=[dict(t) for t in templates],
        capacity={(r["partner_id"], r["kind"]): dict(r) for r in live},
        compounds=served,
        one_offs=[dict(s) for s in one_offs],
    )
