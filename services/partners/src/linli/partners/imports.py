"""Partners' CSV import use cases (ADR 0035): one function per row kind.

Each runs inside the import's transaction (servicekit `csvimport.run_import`), which a
dry run or any row error rolls back; each answers created, updated or unchanged, or
raises `RowRejected` with the columns at fault. A row finds what it changes by its
`external_ref` in this community's `import_refs`, never by a name, so two communities'
files never touch each other's rows.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError

from linli.contracts.binding import reasons_from_validation_error
from linli.contracts.events import PartyKind, PartyRef
from linli.contracts.types import Reason, TimeWindow
from linli.servicekit.clock import Clock
from linli.servicekit.csvimport import Action, RowRejected
from linli.servicekit.db import Conn

from . import store
from .models import (
    Availability,
    CapacityImport,
    PartnerImport,
    PartnerSpec,
    SlotSpec,
    VolunteerImport,
)
from .service import Actor, Rejected, publish_slot

# Where the API's reasons point, in the capacity file's columns.
_SLOT_FIELDS = {
    "body.provider": "provider_ref",
    "body.kind": "kind",
    "body.window.latest": "window_latest",
    "body.window.earliest": "window_earliest",
    "body.window": "window_latest",
}


def _reject(field: str, code: str, message: str) -> RowRejected:
    return RowRejected([Reason(field=field, code=code, message=message)])


def partner_unchanged(
    row: dict[str, Any],
    services: set[tuple[Any, ...]],
    contacts: set[tuple[Any, ...]],
    spec: PartnerSpec,
) -> bool:
    """Whether a stored partner already holds what an import row says."""
    return (
        row["name"] == spec.name
        and row["kind"] == spec.kind.value
        and row["description"] == spec.description
        and services
        == {(s.name, s.need_kind.value, s.cost_option.value, s.description) for s in spec.services}
        and contacts == {(c.name, c.title, c.phone, c.email) for c in spec.contacts}
        # A row without directory columns leaves the entry as it is (ADR 0051).
        and (spec.directory is None or spec.directory == store.directory_of(row))
    )


async def import_partner(conn: Conn, community: str, row: PartnerImport, actor: Actor) -> Action:
    """Create or update the partner this community knows by `external_ref`.

    An imported partner serves the community it was imported into; the file is its
    record here, so services and contacts become those of the row.
    """
    spec = row.spec()
    partner_id = await store.imported_id(conn, community, "partner", row.external_ref)
    if partner_id is None:
        partner_id = uuid.uuid4()
        await store.insert_partner(conn, partner_id, spec, [community], actor.label())
        await store.add_import_ref(conn, community, "partner", row.external_ref, partner_id)
        return "created"
    current = await store.lock_partner(conn, partner_id)
    if current is None:
        raise _reject("external_ref", "unknown_ref", "the partner of this external_ref is gone")
    services = {
        (s["name"], s["need_kind"], s["cost_option"], s["description"])
        for s in await store.services_of(conn, [partner_id])
    }
    contacts = {
        (c["name"], c["title"], c["phone"], c["email"])
        for c in await store.contacts_of(conn, [partner_id])
    }
    if partner_unchanged(dict(current), services, contacts, spec):
        return "unchanged"
    await store.update_partner(conn, partner_id, spec)
    if spec.directory is not None:
        await store.set_directory(conn, partner_id, spec.directory)
    return "updated"


async def import_volunteer(
    conn: Conn, community: str, row: VolunteerImport, actor: Actor
) -> Action:
    """Create or update the volunteer this community knows by `external_ref`."""
    skills = sorted({s.value for s in row.skills})
    volunteer_id = await store.imported_id(conn, community, "volunteer", row.external_ref)
    if volunteer_id is None:
        volunteer_id = uuid.uuid4()
        await store.insert_volunteer(
            conn, volunteer_id, row.display_name, skills, [community], actor.label()
        )
        if not row.active:
            await store.update_volunteer(
                conn, volunteer_id, display_name=None, skills=None, active=False
            )
        await store.add_import_ref(conn, community, "volunteer", row.external_ref, volunteer_id)
        return "created"
    current = await store.get_volunteer(conn, community, volunteer_id, for_update=True)
    if current is None:
        raise _reject("external_ref", "unknown_ref", "the volunteer of this external_ref is gone")
    if (
        current["display_name"] == row.display_name
        and sorted(current["skills"]) == skills
        and current["active"] == row.active
    ):
        return "unchanged"
    await store.update_volunteer(
        conn, volunteer_id, display_name=row.display_name, skills=skills, active=row.active
    )
    return "updated"


def capacity_reasons(row: CapacityImport) -> list[Reason]:
    """The columns a row of its provider kind must fill, and those it must leave empty."""
    needed: dict[str, Any]
    unused: dict[str, Any]
    if row.provider_kind is PartyKind.VOLUNTEER:
        needed = {"weekday": row.weekday, "start": row.start, "end": row.end}
        unused = {
            "kind": row.kind,
            "window_earliest": row.window_earliest,
            "window_latest": row.window_latest,
            "capacity": row.capacity,
            "compounds": row.compounds or None,
        }
    else:
        needed = {
            "kind": row.kind,
            "window_earliest": row.window_earliest,
            "window_latest": row.window_latest,
            "capacity": row.capacity,
        }
        unused = {"weekday": row.weekday, "start": row.start, "end": row.end}
    kind = row.provider_kind.value
    reasons = [
        Reason(field=name, code="missing", message=f"required for a {kind} row")
        for name, value in needed.items()
        if value is None
    ]
    reasons += [
        Reason(field=name, code="not_for_kind", message=f"must be empty for a {kind} row")
        for name, value in unused.items()
        if value is not None
    ]
    return reasons


async def import_capacity(
    conn: Conn, community: str, row: CapacityImport, actor: Actor, *, clock: Clock
) -> Action:
    """Add a volunteer's weekly period, or publish a partner's slot (`slot.published`).

    A period or slot that exists already is `unchanged`. A published slot is never
    changed by an import: scheduling holds it and may have reserved it (a different
    capacity or compounds for the same window is an error on the row).
    """
    if reasons := capacity_reasons(row):
        raise RowRejected(reasons)
    kind = row.provider_kind.value
    provider_id = await store.imported_id(conn, community, kind, row.provider_ref)
    if provider_id is None:
        raise _reject(
            "provider_ref", "unknown_ref", f"no {kind} with this external_ref in this community"
        )
    if row.provider_kind is PartyKind.VOLUNTEER:
        return await _volunteer_period(conn, community, provider_id, row)
    provider = PartyRef(kind=PartyKind.PARTNER, id=provider_id)
    return await _partner_slot(conn, community, provider, row, actor, clock)


async def _volunteer_period(
    conn: Conn, community: str, volunteer_id: uuid.UUID, row: CapacityImport
) -> Action:
    assert row.weekday is not None
    assert row.start is not None
    assert row.end is not None
    try:
        period = Availability(weekday=row.weekday, start=row.start, end=row.end)
    except ValidationError as exc:
        raise RowRejected(_columns(reasons_from_validation_error(exc), {"": "end"})) from exc
    if await store.get_volunteer(conn, community, volunteer_id, for_update=True) is None:
        raise _reject("provider_ref", "unknown_ref", "the volunteer of this external_ref is gone")
    return "created" if await store.add_availability(conn, volunteer_id, period) else "unchanged"


async def _partner_slot(
    conn: Conn,
    community: str,
    provider: PartyRef,
    row: CapacityImport,
    actor: Actor,
    clock: Clock,
) -> Action:
    assert row.kind is not None
    assert row.capacity is not None
    assert row.window_earliest is not None
    assert row.window_latest is not None
    try:
        spec = SlotSpec(
            kind=row.kind,
            provider=provider,
            window=TimeWindow(earliest=row.window_earliest, latest=row.window_latest),
            capacity=row.capacity,
            compounds=row.compounds,
        )
    except ValidationError as exc:
        raise RowRejected(
            _columns(reasons_from_validation_error(exc), {"": "window_latest"})
        ) from exc
    existing = await store.same_slot(
        conn, community, provider, row.kind.value, row.window_earliest, row.window_latest
    )
    if existing is not None:
        if existing["capacity"] == row.capacity and sorted(existing["compounds"]) == sorted(
            row.compounds
        ):
            return "unchanged"
        raise _reject(
            "capacity",
            "slot_published",
            "a slot for this partner, kind and window is published with another capacity or "
            "compounds; an import does not change published capacity",
        )
    try:
        await publish_slot(conn, community, spec, actor, None, clock=clock)
    except Rejected as exc:
        raise RowRejected(_columns(exc.reasons, _SLOT_FIELDS)) from exc
    return "created"


def _columns(reasons: list[Reason], names: dict[str, str]) -> list[Reason]:
    """The API's and models' field paths as the file's column names."""
    out = []
    for reason in reasons:
        field = names.get(reason.field, reason.field)
        if field.startswith("window."):
            field = "window_" + field.removeprefix("window.")
        out.append(Reason(field=field, code=reason.code, message=reason.message))
    return out
