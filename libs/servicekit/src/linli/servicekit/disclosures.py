"""The audit of personal data and free text a service shows to someone (ADR 0031).

A service that serves such data (intake: a resident's contact details and a repair's
description; partners: the notes of completion reports) records each read in its own
`personal_data_reads` table, in the transaction that reads the data: who (role and
credential id, and the helper a service asked for), which need, what, when. Operators of
the community list the reads with `GET /v1/communities/{community}/personal-data-reads`.
The rows hold ids and item names only, never the data itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from linli.contracts.types import CommunitySlug, Role

from .auth import CurrentPrincipal, Principal
from .db import Conn
from .errors import error_response

CONTACT = "contact"
"""A resident's name, phone and address (intake)."""
REPAIR_DESCRIPTION = "repair_description"
"""A repair's description in the requester's words (intake)."""
REPORT_NOTES = "report_notes"
"""The free text of a need's completion reports: observations, summary, detail (partners)."""


@dataclass(frozen=True)
class Reader:
    """Who is shown the data: the caller, and the helper a service asked on behalf of."""

    role: Role
    credential_id: uuid.UUID
    on_behalf_of: str | None = None

    @classmethod
    def of(cls, principal: Principal, on_behalf_of: str | None = None) -> Reader:
        return cls(principal.role, principal.credential_id, on_behalf_of)


async def record(conn: Conn, community: str, need_id: uuid.UUID, item: str, reader: Reader) -> None:
    """Record one read; call it in the transaction that reads the data."""
    await conn.execute(
        "INSERT INTO personal_data_reads "
        "(community, need_id, item, reader_role, reader_credential, on_behalf_of) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        community,
        need_id,
        item,
        reader.role.value,
        reader.credential_id,
        reader.on_behalf_of,
    )


async def reads(
    conn: Conn,
    community: str,
    *,
    need_id: uuid.UUID | None,
    before: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    """A community's recorded reads, newest first (of one need, when given)."""
    return await conn.fetch(
        "SELECT id, need_id, item, reader_role, reader_credential, on_behalf_of, read_at "
        "FROM personal_data_reads WHERE community = $1 "
        "AND ($2::uuid IS NULL OR need_id = $2) AND ($3::bigint IS NULL OR id < $3) "
        "ORDER BY id DESC LIMIT $4",
        community,
        need_id,
        before,
        limit,
    )


class ReadView(BaseModel):
    id: int = Field(description="Position in the record; pass as `before` for older reads.")
    need_id: uuid.UUID = Field(description="Need whose data was read.")
    item: str = Field(description="What was read: contact, repair_description or report_notes.")
    reader_role: str = Field(description="Role of the credential that read it.")
    reader_credential: uuid.UUID = Field(description="Id of that credential in this service.")
    on_behalf_of: str | None = Field(
        default=None, description="The helper (kind:id) a service credential asked for."
    )
    read_at: datetime = Field(description="When it was read.")


class ReadPage(BaseModel):
    items: list[ReadView] = Field(description="Reads, newest first.")
    next_before: int | None = Field(default=None, description="Pass as `before` for more.")


async def _any_read(conn: Conn, community: str, need_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM personal_data_reads "
            "WHERE community = $1 AND need_id = $2)",
            community,
            need_id,
        )
    )


def router() -> APIRouter:
    """`GET /v1/communities/{community}/personal-data-reads` for the community's operators."""
    routes = APIRouter(prefix="/v1/communities/{community}", tags=["audit"])

    @routes.get(
        "/personal-data-reads",
        response_model=ReadPage,
        summary="Who read personal data or free text of this community's needs",
        responses={
            404: {
                "description": "Community not held, or `need_id` names a need "
                "of which this community has no reads recorded."
            }
        },
    )
    async def list_reads(
        request: Request,
        community: Annotated[CommunitySlug, Path(description="Community slug")],
        principal: CurrentPrincipal,
        need_id: Annotated[uuid.UUID | None, Query(description="Only this need.")] = None,
        before: Annotated[
            int | None, Query(ge=1, description="Only reads older than this id.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Any:
        principal.require_community(community)
        principal.require_role(Role.OPERATOR, Role.ADMIN)
        async with request.app.state.runtime.pool.acquire() as conn:
            rows = await reads(conn, community, need_id=need_id, before=before, limit=limit + 1)
            if need_id is not None and not rows and not await _any_read(conn, community, need_id):
                # A need named in the filter answers like a need in the path: 404 when
                # this community has nothing of it (so another community's need id tells
                # nothing; found by the cross-community attack: 200 with an empty page).
                return error_response(404, "not_found", "no reads recorded for this need")
        more = len(rows) > limit
        rows = rows[:limit]
        return ReadPage(
            items=[ReadView(**dict(r)) for r in rows],
            next_before=rows[-1]["id"] if more else None,
        )

    return routes
