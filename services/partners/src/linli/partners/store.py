"""All of partners' SQL. Values are always bound parameters; identifiers never vary."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from linli.contracts.events import AssignmentOffered, PartyRef
from linli.servicekit.db import Conn
from linli.servicekit.idempotency import Idempotency

from .models import (
    Availability,
    ContactSpec,
    DirectoryProfile,
    PartnerSpec,
    ServiceSpec,
    SlotSpec,
)

PARTNER_COLUMNS = (
    "id, name, kind, description, communities, created_at, active, deactivated_at, "
    "directory_public, address, latitude, longitude, public_phone, public_email, website, "
    "opening_hours, directory_updated_at"
)
VOLUNTEER_COLUMNS = "id, display_name, skills, communities, active, created_at, updated_at"
SLOT_COLUMNS = (
    "id, community, kind, provider_kind, provider_id, window_earliest, window_latest, "
    "capacity, compounds, published_at, template_id, occurs_on, status, revision, withdrawn_at, "
    "leg"
)
OFFER_COLUMNS = (
    "assignment_id, community, need_id, slot_id, party_kind, party_id, kind, urgency, "
    "window_earliest, window_latest, details, compound, attempt, offered_at, expires_at, "
    "status, status_reason, answered_at, leg"
)
# "Every community" on a credential: the scope filter lets any community through.
_IN_SCOPE = "($1::text[] @> ARRAY['*'] OR community = ANY($1::text[]))"


# --- partners ---------------------------------------------------------------------------


async def insert_partner(
    conn: Conn, partner_id: uuid.UUID, spec: PartnerSpec, communities: list[str], by: str
) -> None:
    await conn.execute(
        "INSERT INTO partners (id, name, kind, description, communities, created_by) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        partner_id,
        spec.name,
        spec.kind.value,
        spec.description,
        communities,
        by,
    )
    await _insert_services(conn, partner_id, spec.services)
    await _insert_contacts(conn, partner_id, spec.contacts)
    await set_directory(conn, partner_id, spec.directory)


async def set_directory(conn: Conn, partner_id: uuid.UUID, entry: DirectoryProfile | None) -> None:
    """Replace a partner's public directory entry (None removes it, ADR 0051)."""
    entry = entry or DirectoryProfile()
    await conn.execute(
        "UPDATE partners SET directory_public = $2, address = $3::jsonb, latitude = $4, "
        "longitude = $5, public_phone = $6, public_email = $7, website = $8, "
        "opening_hours = $9::jsonb, directory_updated_at = now() WHERE id = $1",
        partner_id,
        entry.public,
        json.dumps(entry.address.model_dump(mode="json")) if entry.address else None,
        entry.latitude,
        entry.longitude,
        entry.phone,
        entry.email,
        entry.website,
        json.dumps([h.model_dump(mode="json") for h in entry.opening_hours]),
    )


def directory_of(row: Any) -> DirectoryProfile | None:
    """A partner row's directory entry as the API takes it; None when there is none."""
    hours = row["opening_hours"]
    hours = json.loads(hours) if isinstance(hours, str) else hours
    address = row["address"]
    address = json.loads(address) if isinstance(address, str) else address
    if not (
        row["directory_public"] or address or row["public_phone"] or row["public_email"]
    ) and not (row["website"] or hours or row["latitude"] is not None):
        return None
    return DirectoryProfile.model_validate(
        {
            "public": row["directory_public"],
            "address": address,
            "latitude": row["latitude"],
            "longitude": row["longitude"],
            "phone": row["public_phone"],
            "email": row["public_email"],
            "website": row["website"],
            "opening_hours": hours or [],
        }
    )


async def _insert_services(conn: Conn, partner_id: uuid.UUID, services: list[ServiceSpec]) -> None:
    await conn.executemany(
        "INSERT INTO partner_services (id, partner_id, name, need_kind, cost_option, description) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (
                uuid.uuid4(),
                partner_id,
                s.name,
                s.need_kind.value,
                s.cost_option.value,
                s.description,
            )
            for s in services
        ],
    )


async def _insert_contacts(conn: Conn, partner_id: uuid.UUID, contacts: list[ContactSpec]) -> None:
    await conn.executemany(
        "INSERT INTO partner_contacts (id, partner_id, name, title, phone, email) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        [(uuid.uuid4(), partner_id, c.name, c.title, c.phone, c.email) for c in contacts],
    )


async def get_partner(
    conn: Conn, community: str, partner_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {PARTNER_COLUMNS} FROM partners WHERE id = $1 AND $2 = ANY(communities)"
        + (" FOR UPDATE" if for_update else ""),
        partner_id,
        community,
    )


async def get_partner_by_id(conn: Conn, partner_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {PARTNER_COLUMNS} FROM partners WHERE id = $1", partner_id)


async def list_partners(conn: Conn, community: str, *, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {PARTNER_COLUMNS} FROM partners WHERE $1 = ANY(communities) "
        "ORDER BY created_at DESC, id DESC LIMIT $2",
        community,
        limit,
    )


async def services_of(conn: Conn, partner_ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT partner_id, name, need_kind, cost_option, description FROM partner_services "
        "WHERE partner_id = ANY($1::uuid[]) ORDER BY name, id",
        list(partner_ids),
    )


async def cost_option_for(conn: Conn, partner_id: uuid.UUID, need_kind: str) -> str | None:
    """What a resident pays for this partner's service of this kind; the cheapest when the
    partner registered several services of the kind (the report cannot tell which one)."""
    value: str | None = await conn.fetchval(
        "SELECT cost_option FROM partner_services WHERE partner_id = $1 AND need_kind = $2 "
        "ORDER BY array_position(ARRAY['free', 'low_cost', 'paid'], cost_option) LIMIT 1",
        partner_id,
        need_kind,
    )
    return value


async def contacts_of(conn: Conn, partner_ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT partner_id, name, title, phone, email FROM partner_contacts "
        "WHERE partner_id = ANY($1::uuid[]) ORDER BY name, id",
        list(partner_ids),
    )


# --- volunteers -------------------------------------------------------------------------


async def insert_volunteer(
    conn: Conn,
    volunteer_id: uuid.UUID,
    display_name: str,
    skills: list[str],
    communities: list[str],
    by: str,
) -> None:
    await conn.execute(
        "INSERT INTO volunteers (id, display_name, skills, communities, created_by) "
        "VALUES ($1, $2, $3, $4, $5)",
        volunteer_id,
        display_name,
        skills,
        communities,
        by,
    )


async def replace_availability(
    conn: Conn, volunteer_id: uuid.UUID, periods: list[Availability]
) -> None:
    await conn.execute("DELETE FROM volunteer_availability WHERE volunteer_id = $1", volunteer_id)
    await conn.executemany(
        "INSERT INTO volunteer_availability (volunteer_id, weekday, start_time, end_time) "
        "VALUES ($1, $2, $3, $4)",
        [(volunteer_id, p.weekday, p.start, p.end) for p in periods],
    )


async def update_volunteer(
    conn: Conn,
    volunteer_id: uuid.UUID,
    *,
    display_name: str | None,
    skills: list[str] | None,
    active: bool | None,
) -> None:
    await conn.execute(
        "UPDATE volunteers SET display_name = coalesce($2, display_name), "
        "skills = coalesce($3, skills), active = coalesce($4, active), updated_at = now() "
        "WHERE id = $1",
        volunteer_id,
        display_name,
        skills,
        active,
    )


async def get_volunteer(
    conn: Conn, community: str, volunteer_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {VOLUNTEER_COLUMNS} FROM volunteers WHERE id = $1 AND $2 = ANY(communities){lock}",
        volunteer_id,
        community,
    )


async def get_volunteer_by_id(conn: Conn, volunteer_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {VOLUNTEER_COLUMNS} FROM volunteers WHERE id = $1", volunteer_id
    )


async def list_volunteers(
    conn: Conn, community: str, *, skill: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {VOLUNTEER_COLUMNS} FROM volunteers WHERE $1 = ANY(communities) "
        "AND ($2::text IS NULL OR $2 = ANY(skills)) "
        "ORDER BY created_at DESC, id DESC LIMIT $3",
        community,
        skill,
        limit,
    )


async def availability_of(conn: Conn, volunteer_ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT volunteer_id, weekday, start_time, end_time FROM volunteer_availability "
        "WHERE volunteer_id = ANY($1::uuid[]) ORDER BY weekday, start_time, id",
        list(volunteer_ids),
    )


# --- providers and slots ----------------------------------------------------------------


async def provider_profile(
    conn: Conn, provider: PartyRef
) -> tuple[list[str] | None, set[str], bool]:
    """Communities served, need kinds offered and whether the provider is active."""
    if provider.kind.value == "partner":
        row = await conn.fetchrow(
            "SELECT communities, active FROM partners WHERE id = $1", provider.id
        )
        if row is None:
            return None, set(), False
        kinds = await conn.fetch(
            "SELECT DISTINCT need_kind FROM partner_services WHERE partner_id = $1", provider.id
        )
        return list(row["communities"]), {k["need_kind"] for k in kinds}, bool(row["active"])
    row = await conn.fetchrow(
        "SELECT communities, skills, active FROM volunteers WHERE id = $1", provider.id
    )
    if row is None:
        return None, set(), False
    return list(row["communities"]), set(row["skills"]), bool(row["active"])


async def insert_slot(
    conn: Conn,
    slot_id: uuid.UUID,
    community: str,
    spec: SlotSpec,
    provider: PartyRef,
    by: str,
    at: datetime,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO slots (id, community, kind, provider_kind, provider_id, window_earliest, "
        "window_latest, capacity, compounds, published_by, published_at, leg) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {SLOT_COLUMNS}",
        slot_id,
        community,
        spec.kind.value,
        provider.kind.value,
        provider.id,
        spec.window.earliest,
        spec.window.latest,
        spec.capacity,
        list(spec.compounds),
        by,
        at,
        spec.leg.value if spec.leg else None,
    )
    assert row is not None
    return row


async def get_slot(conn: Conn, community: str, slot_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE community = $1 AND id = $2", community, slot_id
    )


async def list_slots(
    conn: Conn, community: str, *, provider: PartyRef | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE community = $1 "
        "AND ($2::text IS NULL OR (provider_kind = $2 AND provider_id = $3)) "
        "ORDER BY published_at DESC, id DESC LIMIT $4",
        community,
        provider.kind.value if provider else None,
        provider.id if provider else None,
        limit,
    )


# --- CSV imports (ADR 0035) -------------------------------------------------------------


async def imported_id(
    conn: Conn, community: str, entity_kind: str, external_ref: str
) -> uuid.UUID | None:
    """The partner or volunteer a community's import knows by `external_ref`."""
    value: uuid.UUID | None = await conn.fetchval(
        "SELECT entity_id FROM import_refs "
        "WHERE community = $1 AND entity_kind = $2 AND external_ref = $3",
        community,
        entity_kind,
        external_ref,
    )
    return value


async def add_import_ref(
    conn: Conn, community: str, entity_kind: str, external_ref: str, entity_id: uuid.UUID
) -> None:
    await conn.execute(
        "INSERT INTO import_refs (community, entity_kind, external_ref, entity_id) "
        "VALUES ($1, $2, $3, $4)",
        community,
        entity_kind,
        external_ref,
        entity_id,
    )


async def lock_partner(conn: Conn, partner_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {PARTNER_COLUMNS} FROM partners WHERE id = $1 FOR UPDATE", partner_id
    )


async def update_partner(conn: Conn, partner_id: uuid.UUID, spec: PartnerSpec) -> None:
    """Replace a partner's name, kind, description, services and contacts (its directory
    entry is `set_directory`'s: a CSV import does not carry it)."""
    await conn.execute(
        "UPDATE partners SET name = $2, kind = $3, description = $4 WHERE id = $1",
        partner_id,
        spec.name,
        spec.kind.value,
        spec.description,
    )
    await conn.execute("DELETE FROM partner_services WHERE partner_id = $1", partner_id)
    await conn.execute("DELETE FROM partner_contacts WHERE partner_id = $1", partner_id)
    await _insert_services(conn, partner_id, spec.services)
    await _insert_contacts(conn, partner_id, spec.contacts)


async def add_availability(conn: Conn, volunteer_id: uuid.UUID, period: Availability) -> bool:
    """Add one weekly period unless the volunteer has it already; True when added."""
    result: str = await conn.execute(
        "INSERT INTO volunteer_availability (volunteer_id, weekday, start_time, end_time) "
        "SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM volunteer_availability "
        "WHERE volunteer_id = $1 AND weekday = $2 AND start_time = $3 AND end_time = $4)",
        volunteer_id,
        period.weekday,
        period.start,
        period.end,
    )
    return result.endswith(" 1")


async def same_slot(
    conn: Conn,
    community: str,
    provider: PartyRef,
    kind: str,
    earliest: datetime,
    latest: datetime,
) -> asyncpg.Record | None:
    """A slot already published for this provider, kind and window, if any."""
    return await conn.fetchrow(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE community = $1 AND provider_kind = $2 "
        "AND provider_id = $3 AND kind = $4 AND window_earliest = $5 AND window_latest = $6 "
        "ORDER BY published_at LIMIT 1",
        community,
        provider.kind.value,
        provider.id,
        kind,
        earliest,
        latest,
    )


# --- the dispatch inbox -----------------------------------------------------------------


async def insert_offer(
    conn: Conn,
    community: str,
    offer: AssignmentOffered,
    *,
    withdrawn_reason: str | None,
    traceparent: str | None = None,
) -> bool:
    """Store an offer; False when the assignment was stored before."""
    inserted = await conn.fetchval(
        "INSERT INTO offers (assignment_id, community, need_id, slot_id, party_kind, party_id, "
        "kind, urgency, window_earliest, window_latest, details, compound, attempt, offered_at, "
        "expires_at, status, status_reason, traceparent, leg) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15, $16, "
        "$17, $18, $19) ON CONFLICT (assignment_id) DO NOTHING RETURNING true",
        offer.assignment_id,
        community,
        offer.need_id,
        offer.slot_id,
        offer.offered_to.kind.value,
        offer.offered_to.id,
        offer.kind.value,
        offer.urgency.value,
        offer.window.earliest,
        offer.window.latest,
        offer.details.model_dump_json(),
        offer.compound,
        offer.attempt,
        offer.offered_at,
        offer.expires_at,
        "withdrawn" if withdrawn_reason else "open",
        withdrawn_reason,
        traceparent,
        offer.leg.value if offer.leg else None,
    )
    return bool(inserted)


async def withdrawal_for(conn: Conn, assignment_id: uuid.UUID, need_id: uuid.UUID) -> str | None:
    """Why an offer arriving now is already void (expired or need closed), if it is."""
    value = await conn.fetchval(
        "SELECT reason FROM offer_withdrawals WHERE assignment_id = $1 "
        "UNION ALL SELECT reason FROM closed_needs WHERE need_id = $2 LIMIT 1",
        assignment_id,
        need_id,
    )
    return str(value) if value is not None else None


async def lapse_due_offers(conn: Conn, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Move up to `limit` open offers whose expiry has come to `expired`; return them.

    The rows are locked (SKIP LOCKED: another replica's sweep, or an answer holding the
    row, is not waited for; an answer's lock ends with its commit, after which the row
    is no longer open). `answered_at` is the offer's expiry: the moment it lapsed.
    """
    return list(
        await conn.fetch(
            "UPDATE offers SET status = 'expired', status_reason = 'lapsed', "
            "answered_at = expires_at WHERE assignment_id IN ("
            "  SELECT assignment_id FROM offers WHERE status = 'open' AND expires_at <= $1 "
            "  ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
            "RETURNING assignment_id, community, need_id, slot_id, party_kind, party_id, "
            "expires_at, traceparent",
            now,
            limit,
        )
    )


async def next_open_expiry(conn: Conn) -> datetime | None:
    """The earliest expiry of an open offer (None when none is open)."""
    value: datetime | None = await conn.fetchval(
        "SELECT min(expires_at) FROM offers WHERE status = 'open'"
    )
    return value


async def withdraw_offer(
    conn: Conn, community: str, assignment_id: uuid.UUID, reason: str, at: datetime
) -> None:
    """Withdraw an open offer; remember the withdrawal in case the offer comes later.

    Scheduling expires an assignment only on partners' own `offer.lapsed` (ADR 0026), by
    when the offer is `expired` here and this changes nothing. An `accepted` offer is
    withdrawn all the same, as a safety net: should an expiry ever reach partners for an
    offer accepted here (a scheduling from before ADR 0026 during an upgrade), nobody
    may go to the door of a need scheduling gave up on.
    """
    await conn.execute(
        "UPDATE offers SET status = 'withdrawn', status_reason = $3, answered_at = $4 "
        "WHERE assignment_id = $1 AND community = $2 AND status IN ('open', 'accepted')",
        assignment_id,
        community,
        reason,
        at,
    )
    await conn.execute(
        "INSERT INTO offer_withdrawals (assignment_id, reason, at) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING",
        assignment_id,
        reason,
        at,
    )


async def complete_prepare_legs(
    conn: Conn, community: str, need_id: uuid.UUID, at: datetime
) -> None:
    """The carrier delivered (ADR 0044): a canteen's accepted prepare leg is done too."""
    await conn.execute(
        "UPDATE offers SET status = 'completed', status_reason = 'carrier_delivered', "
        "answered_at = COALESCE(answered_at, $3) "
        "WHERE need_id = $1 AND community = $2 AND leg = 'prepare' AND status = 'accepted'",
        need_id,
        community,
        at,
    )


async def production_offers(
    conn: Conn, community: str, partner_id: uuid.UUID, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """A canteen's meal offers it cooks (a prepare leg, or a meal it serves whole) whose
    window starts in [start, end), with their status (the production list; ADR 0044)."""
    return await conn.fetch(
        "SELECT window_earliest, window_latest, compound, details, status FROM offers "
        "WHERE community = $1 AND party_kind = 'partner' AND party_id = $2 "
        "AND kind = 'meal_delivery' AND (leg IS NULL OR leg = 'prepare') "
        "AND window_earliest >= $3 AND window_earliest < $4 "
        "ORDER BY window_earliest, window_latest, compound",
        community,
        partner_id,
        start,
        end,
    )


async def close_need(
    conn: Conn,
    community: str,
    need_id: uuid.UUID,
    reason: str,
    at: datetime,
    statuses: Iterable[str],
) -> None:
    await conn.execute(
        "UPDATE offers SET status = 'withdrawn', status_reason = $3, answered_at = $4 "
        "WHERE need_id = $1 AND community = $2 AND status = ANY($5::text[])",
        need_id,
        community,
        reason,
        at,
        list(statuses),
    )
    await conn.execute(
        "INSERT INTO closed_needs (need_id, community, reason, at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING",
        need_id,
        community,
        reason,
        at,
    )


async def get_offer(
    conn: Conn,
    party: PartyRef,
    communities: list[str],
    assignment_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> asyncpg.Record | None:
    """One offer, only when it was made to `party` in one of its communities (with the
    need's `traceparent`)."""
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {OFFER_COLUMNS}, traceparent FROM offers WHERE {_IN_SCOPE} "
        f"AND assignment_id = $2 AND party_kind = $3 AND party_id = $4{lock}",
        communities,
        assignment_id,
        party.kind.value,
        party.id,
    )


async def list_offers(
    conn: Conn,
    party: PartyRef,
    communities: list[str],
    *,
    status: str | None,
    now: datetime,
    limit: int,
) -> list[asyncpg.Record]:
    # An open offer past its expiry reads as expired before the sweep has lapsed it.
    return await conn.fetch(
        f"SELECT {OFFER_COLUMNS} FROM offers WHERE {_IN_SCOPE} "
        "AND party_kind = $2 AND party_id = $3 "
        "AND ($4::text IS NULL "
        "     OR ($4 = 'open' AND status = 'open' AND expires_at > $5) "
        "     OR ($4 = 'expired' AND (status = 'expired' "
        "                              OR (status = 'open' AND expires_at <= $5))) "
        "     OR ($4 NOT IN ('open', 'expired') AND status = $4)) "
        "ORDER BY offered_at DESC, assignment_id DESC LIMIT $6",
        communities,
        party.kind.value,
        party.id,
        status,
        now,
        limit,
    )


async def set_offer_status(
    conn: Conn, assignment_id: uuid.UUID, status: str, reason: str | None, at: datetime
) -> None:
    await conn.execute(
        "UPDATE offers SET status = $2, status_reason = $3, answered_at = $4 "
        "WHERE assignment_id = $1",
        assignment_id,
        status,
        reason,
        at,
    )


async def insert_report(
    conn: Conn,
    offer: asyncpg.Record,
    outcome: str,
    proof: dict[str, Any],
    at: datetime,
    *,
    offer_status: str,
) -> bool:
    """Keep the report and move the offer to `offer_status` (reason: the outcome), in one
    statement; False when the assignment was reported before (nothing changes then)."""
    inserted = await conn.fetchval(
        "WITH report AS ("
        "INSERT INTO completion_reports (assignment_id, community, need_id, party_kind, "
        "party_id, outcome, proof, reported_at) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) "
        "ON CONFLICT (assignment_id) DO NOTHING RETURNING assignment_id), "
        "moved AS (UPDATE offers SET status = $9, status_reason = $6, answered_at = $8 "
        "WHERE assignment_id = (SELECT assignment_id FROM report)) "
        "SELECT EXISTS (SELECT 1 FROM report)",
        offer["assignment_id"],
        offer["community"],
        offer["need_id"],
        offer["party_kind"],
        offer["party_id"],
        outcome,
        json.dumps(proof),
        at,
        offer_status,
    )
    return bool(inserted)


async def get_report(conn: Conn, assignment_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT outcome, proof, reported_at FROM completion_reports WHERE assignment_id = $1",
        assignment_id,
    )


async def reports_of_need(conn: Conn, community: str, need_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT assignment_id, outcome, party_kind, party_id, proof, reported_at "
        "FROM completion_reports WHERE community = $1 AND need_id = $2 ORDER BY reported_at",
        community,
        need_id,
    )


# --- the points ledger ------------------------------------------------------------------


async def ensure_accounts(conn: Conn, *accounts: tuple[str, str]) -> None:
    """Open the (account, kind) ledger accounts that do not exist yet, in one statement."""
    await conn.execute(
        "INSERT INTO balances (account, account_kind) "
        "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        [a for a, _ in accounts],
        [k for _, k in accounts],
    )


async def post(
    conn: Conn,
    *,
    group: uuid.UUID,
    community: str,
    account: str,
    amount: int,
    entry_kind: str,
    by: str,
    need_id: uuid.UUID | None = None,
    assignment_id: uuid.UUID | None = None,
    note: str | None = None,
) -> int:
    """Post one leg of an entry group and return the account's new balance.

    The balance update is one conditional statement: the CHECK on `balances` refuses a
    volunteer balance below zero (asyncpg raises CheckViolationError), however many
    transactions race; the row lock orders them.
    """
    # One statement: the balance moves and the entry is written only if the account exists.
    balance = await conn.fetchval(
        "WITH moved AS (UPDATE balances SET balance = balance + $2, updated_at = now() "
        "WHERE account = $1 RETURNING balance), "
        "entry AS (INSERT INTO ledger_entries (entry_group, community, account, amount, "
        "entry_kind, need_id, assignment_id, note, created_by) "
        "SELECT $3, $4, $1, $2, $5, $6, $7, $8, $9 FROM moved) "
        "SELECT balance FROM moved",
        account,
        amount,
        group,
        community,
        entry_kind,
        need_id,
        assignment_id,
        note,
        by,
    )
    if balance is None:
        raise LookupError(f"no ledger account {account}")
    return int(balance)


async def volunteer_balances(conn: Conn, volunteer_id: uuid.UUID) -> list[asyncpg.Record]:
    """(account, community, balance) of a volunteer in every community it has points in."""
    return await conn.fetch(
        "SELECT account, split_part(account, ':', 2) AS community, balance FROM balances "
        "WHERE account_kind = 'volunteer' AND split_part(account, ':', 3) = $1 "
        "ORDER BY community",
        str(volunteer_id),
    )


async def claim_idempotency_key(
    conn: Conn,
    operation: str,
    community: str,
    idempotency: Idempotency,
    result_id: uuid.UUID,
) -> asyncpg.Record | None:
    """Claim an Idempotency-Key for `operation` and the id of what it will create (ADR
    0008); returns the earlier claim (`request_sha256`, `result_id`) when the key was used.

    The one key table of partners: points debits (`points.redeem`) and reward
    redemptions with their decisions (`reward.redemption`) claim here. A concurrent
    request with the same key waits on the primary key until the first commits (or rolls
    back), then sees its row: no check-then-insert race.
    """
    inserted = await conn.fetchval(
        "INSERT INTO idempotency_keys (community, credential_id, operation, key, "
        "request_sha256, result_id) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT DO NOTHING RETURNING true",
        community,
        idempotency.credential_id,
        operation,
        idempotency.key,
        idempotency.fingerprint,
        result_id,
    )
    if inserted:
        return None
    return await conn.fetchrow(
        "SELECT request_sha256, result_id FROM idempotency_keys "
        "WHERE community = $1 AND credential_id = $2 AND operation = $3 AND key = $4",
        community,
        idempotency.credential_id,
        operation,
        idempotency.key,
    )


REDEMPTION_COLUMNS = "id, community, volunteer_id, points, balance_after, redeemed_at"


async def insert_redemption(
    conn: Conn,
    *,
    redemption_id: uuid.UUID,
    community: str,
    volunteer_id: uuid.UUID,
    points: int,
    balance_after: int,
    group: uuid.UUID,
    note: str | None,
    by: str,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO redemptions (id, community, volunteer_id, points, balance_after, "
        "entry_group, note, created_by, redeemed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        redemption_id,
        community,
        volunteer_id,
        points,
        balance_after,
        group,
        note,
        by,
        at,
    )


async def get_redemption(
    conn: Conn, community: str, redemption_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE community = $1 AND id = $2",
        community,
        redemption_id,
    )


async def balance_of(conn: Conn, account: str) -> int:
    value = await conn.fetchval("SELECT balance FROM balances WHERE account = $1", account)
    return int(value or 0)


async def entries_of(conn: Conn, accounts: Sequence[str], *, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, entry_group, community, amount, entry_kind, need_id, assignment_id, note, "
        "created_at FROM ledger_entries WHERE account = ANY($1::text[]) ORDER BY id DESC LIMIT $2",
        list(accounts),
        limit,
    )


def details_of(row: asyncpg.Record) -> dict[str, Any]:
    value = row["details"]
    return json.loads(value) if isinstance(value, str) else dict(value)


def proof_of(row: asyncpg.Record) -> dict[str, Any]:
    value = row["proof"]
    return json.loads(value) if isinstance(value, str) else dict(value)


# --- rewards, redemption requests and certificates (ADR 0041) ----------------------------

REWARD_COLUMNS = (
    "r.id, r.community, r.partner_id, p.name AS partner_name, r.title, r.description, "
    "r.points, r.status, r.created_at, r.updated_at, r.withdrawn_at"
)
_REWARD_FROM = "rewards r JOIN partners p ON p.id = r.partner_id"
REQUEST_COLUMNS = (
    "q.id, q.community, q.reward_id, q.volunteer_id, q.points, q.status, q.requested_at, "
    "q.decided_at, q.reject_reason, q.used_at, q.certificate_sealed, r.title AS reward_title, "
    "r.partner_id, p.name AS partner_name"
)
_REQUEST_FROM = (
    "reward_redemptions q JOIN rewards r ON r.id = q.reward_id "
    "JOIN partners p ON p.id = r.partner_id"
)


async def insert_reward(
    conn: Conn,
    *,
    reward_id: uuid.UUID,
    community: str,
    partner_id: uuid.UUID,
    title: str,
    description: str | None,
    points: int,
    by: str,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO rewards (id, community, partner_id, title, description, points, "
        "created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        reward_id,
        community,
        partner_id,
        title,
        description,
        points,
        by,
        at,
    )


async def get_reward(
    conn: Conn,
    community: str,
    reward_id: uuid.UUID,
    *,
    for_update: bool = False,
    for_share: bool = False,
) -> asyncpg.Record | None:
    """One reward; `for_share` keeps it from being withdrawn until the caller commits."""
    lock = " FOR UPDATE OF r" if for_update else " FOR SHARE OF r" if for_share else ""
    return await conn.fetchrow(
        f"SELECT {REWARD_COLUMNS} FROM {_REWARD_FROM} WHERE r.community = $1 AND r.id = $2{lock}",
        community,
        reward_id,
    )


async def list_rewards(
    conn: Conn,
    community: str,
    *,
    status: str | None,
    partner_id: uuid.UUID | None,
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {REWARD_COLUMNS} FROM {_REWARD_FROM} WHERE r.community = $1 "
        "AND ($2::text IS NULL OR r.status = $2) AND ($3::uuid IS NULL OR r.partner_id = $3) "
        "ORDER BY r.created_at DESC, r.id DESC LIMIT $4",
        community,
        status,
        partner_id,
        limit,
    )


async def update_reward(
    conn: Conn,
    reward_id: uuid.UUID,
    *,
    title: str | None,
    description: str | None,
    points: int | None,
    at: datetime,
) -> None:
    await conn.execute(
        "UPDATE rewards SET title = coalesce($2, title), description = coalesce($3, description), "
        "points = coalesce($4, points), updated_at = $5 WHERE id = $1",
        reward_id,
        title,
        description,
        points,
        at,
    )


async def withdraw_reward(conn: Conn, reward_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE rewards SET status = 'withdrawn', withdrawn_at = $2, updated_at = $2 WHERE id = $1",
        reward_id,
        at,
    )


async def hold_points(conn: Conn, account: str, points: int) -> None:
    """Hold points on a volunteer's account; the CHECK `balance >= held` refuses more than
    the balance (asyncpg raises CheckViolationError), however many requests race."""
    await conn.execute(
        "UPDATE balances SET held = held + $2, updated_at = now() WHERE account = $1",
        account,
        points,
    )


async def release_points(conn: Conn, account: str, points: int) -> None:
    await conn.execute(
        "UPDATE balances SET held = held - $2, updated_at = now() WHERE account = $1",
        account,
        points,
    )


async def held_of(conn: Conn, account: str) -> int:
    value = await conn.fetchval("SELECT held FROM balances WHERE account = $1", account)
    return int(value or 0)


async def insert_redemption_request(
    conn: Conn,
    *,
    request_id: uuid.UUID,
    community: str,
    reward_id: uuid.UUID,
    volunteer_id: uuid.UUID,
    points: int,
    by: str,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO reward_redemptions (id, community, reward_id, volunteer_id, points, "
        "requested_by, requested_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        request_id,
        community,
        reward_id,
        volunteer_id,
        points,
        by,
        at,
    )


async def get_redemption_request(
    conn: Conn,
    community: str,
    request_id: uuid.UUID,
    *,
    volunteer_id: uuid.UUID | None = None,
    for_update: bool = False,
) -> asyncpg.Record | None:
    """One request in `community` (only the volunteer's own when `volunteer_id` is given)."""
    lock = " FOR UPDATE OF q" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM {_REQUEST_FROM} WHERE q.community = $1 AND q.id = $2 "
        f"AND ($3::uuid IS NULL OR q.volunteer_id = $3){lock}",
        community,
        request_id,
        volunteer_id,
    )


async def list_redemption_requests(
    conn: Conn,
    community: str,
    *,
    volunteer_id: uuid.UUID | None,
    status: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {REQUEST_COLUMNS} FROM {_REQUEST_FROM} WHERE q.community = $1 "
        "AND ($2::uuid IS NULL OR q.volunteer_id = $2) AND ($3::text IS NULL OR q.status = $3) "
        "ORDER BY q.requested_at DESC, q.id DESC LIMIT $4",
        community,
        volunteer_id,
        status,
        limit,
    )


async def pending_requests_of_reward(conn: Conn, reward_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, community, volunteer_id, points FROM reward_redemptions "
        "WHERE reward_id = $1 AND status = 'requested' ORDER BY requested_at FOR UPDATE",
        reward_id,
    )


async def approve_request(
    conn: Conn,
    request_id: uuid.UUID,
    *,
    by: str,
    at: datetime,
    certificate_sha256: bytes,
    certificate_sealed: str,
) -> None:
    await conn.execute(
        "UPDATE reward_redemptions SET status = 'approved', decided_by = $2, decided_at = $3, "
        "certificate_sha256 = $4, certificate_sealed = $5 WHERE id = $1",
        request_id,
        by,
        at,
        certificate_sha256,
        certificate_sealed,
    )


async def reject_request(
    conn: Conn, request_id: uuid.UUID, *, reason: str, by: str, at: datetime
) -> None:
    await conn.execute(
        "UPDATE reward_redemptions SET status = 'rejected', decided_by = $2, decided_at = $3, "
        "reject_reason = $4 WHERE id = $1",
        request_id,
        by,
        at,
        reason,
    )


async def set_redemption_reward(conn: Conn, redemption_id: uuid.UUID, reward_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE redemptions SET reward_id = $2 WHERE id = $1", redemption_id, reward_id
    )


async def certificate_by_digest(
    conn: Conn, digest: bytes, *, for_update: bool = False
) -> asyncpg.Record | None:
    """The approved request whose certificate code has this SHA-256, in any community."""
    lock = " FOR UPDATE OF q" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM {_REQUEST_FROM} "
        f"WHERE q.certificate_sha256 = $1 AND q.status = 'approved'{lock}",
        digest,
    )


async def mark_certificate_used(
    conn: Conn, request_id: uuid.UUID, *, by: str, at: datetime
) -> bool:
    """Mark used, once; False when it was used before."""
    result: str = await conn.execute(
        "UPDATE reward_redemptions SET used_at = $2, used_by = $3 "
        "WHERE id = $1 AND used_at IS NULL",
        request_id,
        at,
        by,
    )
    return result.endswith(" 1")


# --- a volunteer's statement -----------------------------------------------------------


async def reports_by_volunteer(
    conn: Conn, community: str, volunteer_id: uuid.UUID, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """The volunteer's completion reports in the community, reported in [start, end)."""
    return await conn.fetch(
        "SELECT c.assignment_id, c.need_id, o.kind, c.outcome, c.proof, c.reported_at "
        "FROM completion_reports c JOIN offers o ON o.assignment_id = c.assignment_id "
        "WHERE c.community = $1 AND c.party_kind = 'volunteer' AND c.party_id = $2 "
        "AND c.reported_at >= $3 AND c.reported_at < $4 ORDER BY c.reported_at, c.assignment_id",
        community,
        volunteer_id,
        start,
        end,
    )


async def ledger_sums(conn: Conn, account: str, start: datetime, end: datetime) -> dict[str, int]:
    """Sum of an account's legs per entry kind, created in [start, end)."""
    rows = await conn.fetch(
        "SELECT entry_kind, sum(amount) AS total FROM ledger_entries WHERE account = $1 "
        "AND created_at >= $2 AND created_at < $3 GROUP BY entry_kind",
        account,
        start,
        end,
    )
    return {r["entry_kind"]: int(r["total"]) for r in rows}


# --- signed offer links (ADR 0043) --------------------------------------------------------


async def offer_by_id(
    conn: Conn, assignment_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    """One offer by its id alone, for a signed link (the link names the offer); with the
    first answer given through a link, if any (`link_action`, `link_used_at`)."""
    lock = " FOR UPDATE OF o" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {', '.join('o.' + c.strip() for c in OFFER_COLUMNS.split(','))}, "
        "u.action AS link_action, u.used_at AS link_used_at "
        "FROM offers o LEFT JOIN offer_link_uses u USING (assignment_id) "
        f"WHERE o.assignment_id = $1{lock}",
        assignment_id,
    )
    return row


async def use_offer_link(conn: Conn, assignment_id: uuid.UUID, action: str, at: datetime) -> bool:
    """Record the one use of an offer's links; False when a link was used before."""
    used = await conn.fetchval(
        "INSERT INTO offer_link_uses (assignment_id, action, used_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (assignment_id) DO NOTHING RETURNING true",
        assignment_id,
        action,
        at,
    )
    return bool(used)


# --- recurring capacity: templates, slot edits, deactivation (ADR 0042) ------------------

TEMPLATE_COLUMNS = (
    "id, community, partner_id, kind, weekdays, start_time, end_time, timezone, capacity, "
    "compounds, valid_from, valid_until, status, generated_until, created_at, updated_at"
)
# Offers that hold a unit of their slot, as partners has heard of them: a revision may
# not shrink capacity below these (scheduling releases any it reserved meanwhile).
_HOLDING = "('open', 'accepted', 'completed')"


async def insert_template(
    conn: Conn,
    template_id: uuid.UUID,
    community: str,
    partner_id: uuid.UUID,
    values: dict[str, Any],
    by: str,
    at: datetime,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO slot_templates (id, community, partner_id, kind, weekdays, start_time, "
        "end_time, timezone, capacity, compounds, valid_from, valid_until, created_by, "
        "created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) "
        f"RETURNING {TEMPLATE_COLUMNS}",
        template_id,
        community,
        partner_id,
        values["kind"],
        values["weekdays"],
        values["start"],
        values["end"],
        values["timezone"],
        values["capacity"],
        values["compounds"],
        values["valid_from"],
        values["valid_until"],
        by,
        at,
    )
    assert row is not None
    return row


async def get_template(
    conn: Conn,
    community: str,
    partner_id: uuid.UUID,
    template_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {TEMPLATE_COLUMNS} FROM slot_templates WHERE id = $1 AND community = $2 "
        "AND partner_id = $3 AND status = 'active'" + (" FOR UPDATE" if for_update else ""),
        template_id,
        community,
        partner_id,
    )


async def list_templates(
    conn: Conn, community: str, partner_id: uuid.UUID, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {TEMPLATE_COLUMNS} FROM slot_templates WHERE community = $1 "
        "AND partner_id = $2 AND status = 'active' ORDER BY created_at, id LIMIT $3",
        community,
        partner_id,
        limit,
    )


async def update_template(
    conn: Conn, template_id: uuid.UUID, values: dict[str, Any], at: datetime
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "UPDATE slot_templates SET weekdays = $2, start_time = $3, end_time = $4, "
        "capacity = $5, compounds = $6, valid_from = $7, valid_until = $8, updated_at = $9 "
        f"WHERE id = $1 RETURNING {TEMPLATE_COLUMNS}",
        template_id,
        values["weekdays"],
        values["start"],
        values["end"],
        values["capacity"],
        values["compounds"],
        values["valid_from"],
        values["valid_until"],
        at,
    )
    assert row is not None
    return row


async def delete_template(conn: Conn, template_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE slot_templates SET status = 'deleted', deleted_at = $2, updated_at = $2 "
        "WHERE id = $1",
        template_id,
        at,
    )


async def templates_due(conn: Conn, horizon: Any, limit: int) -> list[asyncpg.Record]:
    """Active templates of active partners not yet generated up to `horizon`, locked;
    templates another replica is generating are skipped."""
    return await conn.fetch(
        f"SELECT {', '.join('t.' + c.strip() for c in TEMPLATE_COLUMNS.split(','))} "
        "FROM slot_templates t JOIN partners p ON p.id = t.partner_id "
        "WHERE t.status = 'active' AND p.active "
        "AND (t.generated_until IS NULL OR t.generated_until < $1) "
        "AND (t.valid_until IS NULL OR t.generated_until IS NULL "
        "     OR t.generated_until < t.valid_until) "
        "ORDER BY t.generated_until NULLS FIRST, t.id LIMIT $2 FOR UPDATE OF t SKIP LOCKED",
        horizon,
        limit,
    )


async def insert_template_slot(
    conn: Conn,
    template: asyncpg.Record,
    day: Any,
    earliest: datetime,
    latest: datetime,
    at: datetime,
) -> asyncpg.Record | None:
    """The template's slot for `day`, unless it exists (then None): exactly once."""
    return await conn.fetchrow(
        "INSERT INTO slots (id, community, kind, provider_kind, provider_id, window_earliest, "
        "window_latest, capacity, compounds, published_by, published_at, template_id, "
        "occurs_on) VALUES ($1, $2, $3, 'partner', $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        f"ON CONFLICT (template_id, occurs_on) DO NOTHING RETURNING {SLOT_COLUMNS}",
        uuid.uuid4(),
        template["community"],
        template["kind"],
        template["partner_id"],
        earliest,
        latest,
        template["capacity"],
        list(template["compounds"]),
        f"template:{template['id']}",
        at,
        template["id"],
        day,
    )


async def set_template_generated(conn: Conn, template_id: uuid.UUID, until: Any) -> None:
    await conn.execute(
        "UPDATE slot_templates SET generated_until = GREATEST(generated_until, $2) WHERE id = $1",
        template_id,
        until,
    )


async def lock_slot(conn: Conn, community: str, slot_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE community = $1 AND id = $2 FOR UPDATE",
        community,
        slot_id,
    )


async def units_held(conn: Conn, slot_id: uuid.UUID) -> int:
    """Offers on the slot that hold a unit of it (open, accepted or served)."""
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM offers WHERE slot_id = $1 AND status IN {_HOLDING}", slot_id
        )
    )


async def revise_slot(
    conn: Conn,
    slot_id: uuid.UUID,
    earliest: datetime,
    latest: datetime,
    capacity: int,
    compounds: list[str],
    at: datetime,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "UPDATE slots SET window_earliest = $2, window_latest = $3, capacity = $4, "
        "compounds = $5, revision = revision + 1, revised_at = $6 "
        f"WHERE id = $1 RETURNING {SLOT_COLUMNS}",
        slot_id,
        earliest,
        latest,
        capacity,
        compounds,
        at,
    )
    assert row is not None
    return row


async def withdraw_slot(conn: Conn, slot_id: uuid.UUID, at: datetime) -> asyncpg.Record | None:
    """Mark a published slot withdrawn; None when it was withdrawn already."""
    return await conn.fetchrow(
        "UPDATE slots SET status = 'withdrawn', withdrawn_at = $2 "
        f"WHERE id = $1 AND status = 'published' RETURNING {SLOT_COLUMNS}",
        slot_id,
        at,
    )


async def future_slots_of(
    conn: Conn, provider_kind: str, provider_id: uuid.UUID, now: datetime
) -> list[asyncpg.Record]:
    """A provider's published slots that have not ended, locked (every community)."""
    return await conn.fetch(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE provider_kind = $1 AND provider_id = $2 "
        "AND status = 'published' AND window_latest > $3 ORDER BY id FOR UPDATE",
        provider_kind,
        provider_id,
        now,
    )


async def set_partner_active(conn: Conn, partner_id: uuid.UUID, active: bool, at: datetime) -> None:
    await conn.execute(
        "UPDATE partners SET active = $2, "
        "deactivated_at = CASE WHEN $2 THEN NULL ELSE $3::timestamptz END WHERE id = $1",
        partner_id,
        active,
        at,
    )


async def set_partner_communities(
    conn: Conn, partner_id: uuid.UUID, communities: list[str]
) -> None:
    await conn.execute(
        "UPDATE partners SET communities = $2 WHERE id = $1", partner_id, communities
    )


# --- the directory: HSDS export and public guide (ADR 0051) -------------------------------


async def record_reservation(
    conn: Conn,
    community: str,
    reservation_id: uuid.UUID,
    slot_id: uuid.UUID,
    *,
    reserved_at: datetime | None = None,
    released_at: datetime | None = None,
) -> None:
    """What partners heard of one of scheduling's reservations; either order of arrival
    ends in the same row (a release stands once heard)."""
    await conn.execute(
        "INSERT INTO slot_reservations (reservation_id, community, slot_id, reserved_at, "
        "released_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reservation_id) DO UPDATE SET "
        "reserved_at = coalesce(slot_reservations.reserved_at, EXCLUDED.reserved_at), "
        "released_at = coalesce(slot_reservations.released_at, EXCLUDED.released_at)",
        reservation_id,
        community,
        slot_id,
        reserved_at,
        released_at,
    )


async def directory_partners(
    conn: Conn, community: str, *, public_only: bool
) -> list[asyncpg.Record]:
    """Active partners serving `community`, oldest first (a stable order for paging)."""
    return await conn.fetch(
        f"SELECT {PARTNER_COLUMNS} FROM partners WHERE $1 = ANY(communities) AND active "
        "AND (directory_public OR NOT $2) ORDER BY created_at, id",
        community,
        public_only,
    )


async def directory_services(conn: Conn, partner_ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT partner_id, name, need_kind, cost_option, description FROM partner_services "
        "WHERE partner_id = ANY($1::uuid[]) ORDER BY partner_id, need_kind, name, id",
        list(partner_ids),
    )


async def directory_templates(
    conn: Conn, community: str, partner_ids: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """Active slot templates of these partners in `community` (weekly schedules)."""
    return await conn.fetch(
        f"SELECT {TEMPLATE_COLUMNS} FROM slot_templates WHERE community = $1 "
        "AND partner_id = ANY($2::uuid[]) AND status = 'active' "
        "AND (valid_until IS NULL OR valid_until >= current_date) ORDER BY created_at, id",
        community,
        list(partner_ids),
    )


async def live_capacity(
    conn: Conn, community: str, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """Per partner and kind: places (capacity) and places left of the published slots
    in `community` that have not ended by `since` and start before `until`. Places left
    are the capacity less the reservations scheduling holds, as partners heard them."""
    return await conn.fetch(
        "SELECT s.provider_id AS partner_id, s.kind, sum(s.capacity)::bigint AS maximum, "
        "sum(greatest(s.capacity - coalesce(h.held, 0), 0))::bigint AS available, "
        "count(*)::int AS slots FROM slots s LEFT JOIN LATERAL ("
        "SELECT count(*) AS held FROM slot_reservations r WHERE r.slot_id = s.id "
        "AND r.reserved_at IS NOT NULL AND r.released_at IS NULL) h ON true "
        "WHERE s.community = $1 AND s.status = 'published' AND s.provider_kind = 'partner' "
        "AND s.window_latest > $2 AND s.window_earliest < $3 "
        "GROUP BY s.provider_id, s.kind",
        community,
        since,
        until,
    )


async def compounds_served(
    conn: Conn, community: str, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """Per partner and kind, the compounds its active templates and upcoming slots name."""
    return await conn.fetch(
        "SELECT DISTINCT partner_id, kind, compound FROM ("
        "SELECT provider_id AS partner_id, kind, unnest(compounds) AS compound FROM slots "
        "WHERE community = $1 AND status = 'published' AND provider_kind = 'partner' "
        "AND window_latest > $2 AND window_earliest < $3 "
        "UNION ALL SELECT partner_id, kind, unnest(compounds) FROM slot_templates "
        "WHERE community = $1 AND status = 'active') c ORDER BY partner_id, kind, compound",
        community,
        since,
        until,
    )


async def one_off_slots(
    conn: Conn, community: str, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """Partners' published slots in the horizon that no template generated."""
    return await conn.fetch(
        "SELECT id, provider_id AS partner_id, kind, window_earliest, window_latest, capacity "
        "FROM slots WHERE community = $1 AND status = 'published' AND provider_kind = 'partner' "
        "AND template_id IS NULL AND window_latest > $2 AND window_earliest < $3 "
        "ORDER BY window_earliest, id",
        community,
        since,
        until,
    )
