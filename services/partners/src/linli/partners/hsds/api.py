"""The HSDS 3.1 API of a community's partner directory and the residents' public guide.

* `/v1/communities/{community}/hsds/…`: read-only, shaped like HSDS's own openapi.json
  (`/services`, `/services/{id}`, `/organizations`, `/organizations/{id}`,
  `/service_at_locations`, paged with `page`, `per_page`, `total_items`, `contents`), for
  operators, admins, systems and street offices of the community; plus `/package`, the
  whole directory as a zip to download.
* `/public/v1/communities/{community}/guide`: the printable "15-minute life circle" guide
  (十五分钟生活圈), no credential, rate-limited, only partners that made their contacts
  public. Any well-formed community answers the same way (an unknown one like a known one
  with no public partner), so the route tells nobody which communities exist.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from linli.contracts.types import CommunitySlug, Role
from linli.servicekit.auth import CurrentPrincipal, Principal
from linli.servicekit.errors import ErrorBody
from linli.servicekit.http import error_response
from linli.servicekit.ratelimit import RateLimit

from . import directory, guide, mapping

router = APIRouter(prefix="/v1/communities/{community}/hsds", tags=["hsds"])
public_router = APIRouter(prefix="/public/v1/communities/{community}", tags=["public"])

READERS = (Role.OPERATOR, Role.ADMIN, Role.SYSTEM, Role.STREET_OFFICE)
"""Who reads the export: it holds only organisations' public data (ADR 0051)."""

Community = Annotated[CommunitySlug, Path(description="Community slug, e.g. taian-zhiyuan")]
PageNumber = Annotated[
    int, Query(ge=1, le=10_000, description="Page number of the paginated result (from 1).")
]
PerPage = Annotated[
    int, Query(ge=1, le=200, description="Number of results requested in a single page.")
]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown id, or not in this community"}
}


class HsdsPage(BaseModel):
    """HSDS's `Page` with its `contents`, each an HSDS 3.1 object of the route's type."""

    total_items: int = Field(description="The total number of entities.")
    total_pages: int = Field(description="Count of total pages.")
    page_number: int = Field(description="The number of the current page.")
    size: int = Field(description="The number of entities in the current page.")
    first_page: bool = Field(description="Whether this is the first page.")
    last_page: bool = Field(description="Whether this is the last page.")
    empty: bool = Field(description="Whether the page holds nothing.")
    contents: list[dict[str, Any]] = Field(
        description="HSDS 3.1 objects (service, organization or service_at_location)."
    )


class HsdsObject(BaseModel):
    """One HSDS 3.1 object; a service validates against service_with_definitions.json."""

    model_config = ConfigDict(extra="allow")

    id: uuid.UUID = Field(description="Identifier.")
    name: str = Field(description="Name.")


class HsdsMeta(BaseModel):
    version: str = Field(description="HSDS version of this API.")
    profile: str = Field(description="URL of the HSDS profile this API follows.")
    community: str = Field(description="The community this directory is of.")
    capacity_horizon_days: int = Field(
        description="service_capacity counts published slots from now to this many days ahead."
    )


def _settings(request: Request) -> dict[str, Any]:
    settings: dict[str, Any] = request.app.state.directory
    return settings


def _reader(principal: Principal, community: str) -> None:
    principal.require_community(community)
    principal.require_role(*READERS)


async def _load(request: Request, community: str, *, public_only: bool = False) -> Any:
    cfg = _settings(request)
    async with request.app.state.runtime.pool.acquire() as conn:
        return await directory.load(
            conn,
            community,
            now=request.app.state.clock.now(),
            horizon_days=cfg["horizon_days"],
            timezone=cfg["timezone"],
            public_only=public_only,
        )


@router.get("", response_model=HsdsMeta, summary="About this HSDS API (HSDS `/`)")
async def hsds_meta(request: Request, community: Community, principal: CurrentPrincipal) -> Any:
    _reader(principal, community)
    return HsdsMeta(
        version=mapping.HSDS_VERSION,
        profile=mapping.PROFILE,
        community=community,
        capacity_horizon_days=_settings(request)["horizon_days"],
    )


@router.get(
    "/services",
    response_model=HsdsPage,
    summary="The community's services, fully nested, with live capacity (HSDS `/services`)",
)
async def hsds_services(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    page: PageNumber = 1,
    per_page: PerPage = 50,
    organization_id: Annotated[
        uuid.UUID | None, Query(description="Only this organisation's services.")
    ] = None,
) -> Any:
    _reader(principal, community)
    d = await _load(request, community)
    rows = mapping.ordered(
        r for r in d.service_rows() if organization_id is None or r["partner_id"] == organization_id
    )
    return mapping.page([mapping.service(d, r) for r in rows], page, per_page)


@router.get(
    "/services/{service_id}",
    response_model=HsdsObject,
    responses=_NOT_FOUND,
    summary="One service as a full HSDS service_with_definitions document",
)
async def hsds_service(
    request: Request, community: Community, service_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    _reader(principal, community)
    d = await _load(request, community)
    for row in d.service_rows():
        if mapping.service_id(row) == str(service_id):
            return mapping.service(d, row)
    return error_response(404, "not_found", "service not found")


@router.get(
    "/organizations",
    response_model=HsdsPage,
    summary="The partner organisations serving the community (HSDS `/organizations`)",
)
async def hsds_organizations(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    page: PageNumber = 1,
    per_page: PerPage = 50,
) -> Any:
    _reader(principal, community)
    d = await _load(request, community)
    return mapping.page(mapping.organizations(d), page, per_page)


@router.get(
    "/organizations/{organization_id}",
    response_model=HsdsObject,
    responses=_NOT_FOUND,
    summary="One partner organisation with its public phones and location",
)
async def hsds_organization(
    request: Request,
    community: Community,
    organization_id: uuid.UUID,
    principal: CurrentPrincipal,
) -> Any:
    _reader(principal, community)
    d = await _load(request, community)
    partner = d.partner(organization_id)
    if partner is None:
        return error_response(404, "not_found", "organization not found")
    return mapping.organization(d, partner)


@router.get(
    "/service_at_locations",
    response_model=HsdsPage,
    summary="Services at the partners' public locations (HSDS `/service_at_locations`)",
)
async def hsds_service_at_locations(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    page: PageNumber = 1,
    per_page: PerPage = 50,
) -> Any:
    _reader(principal, community)
    d = await _load(request, community)
    return mapping.page(mapping.service_at_locations(d), page, per_page)


@router.get(
    "/package",
    response_class=Response,
    responses={
        200: {
            "description": "A zip: datapackage.json, services.json, organizations.json, "
            "service_at_locations.json (HSDS 3.1 JSON)",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    summary="The whole directory of the community as a downloadable zip",
)
async def hsds_package(
    request: Request, community: Community, principal: CurrentPrincipal
) -> Response:
    _reader(principal, community)
    d = await _load(request, community)
    body = package(d)
    stamp = d.now.strftime("%Y%m%d")
    return Response(
        body,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="hsds-{community}-{stamp}.zip"'},
    )


def package(d: mapping.Directory) -> bytes:
    """The directory as a Frictionless data package of HSDS JSON files."""
    tables = {
        "services": [mapping.service(d, r) for r in mapping.ordered(d.service_rows())],
        "organizations": mapping.organizations(d),
        "service_at_locations": mapping.service_at_locations(d),
    }
    meta = {
        "profile": "data-package",
        "name": f"linli-hsds-{d.community}",
        "title": f"Linli partner directory of {d.community} (HSDS {mapping.HSDS_VERSION})",
        "created": d.now.isoformat(),
        "licenses": [{"name": "CC-BY-4.0"}],
        "resources": [
            {
                "name": name,
                "path": f"{name}.json",
                "format": "json",
                "mediatype": "application/json",
                "description": f"HSDS {mapping.HSDS_VERSION} {name} (JSON array)",
            }
            for name in tables
        ],
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("datapackage.json", json.dumps(meta, ensure_ascii=False, indent=2))
        for name, items in tables.items():
            archive.writestr(f"{name}.json", json.dumps(items, ensure_ascii=False, indent=2))
    return out.getvalue()


# --- the public guide ------------------------------------------------------------------------


def guide_limit(limit: int, window_s: float) -> RateLimit:
    return RateLimit("partners:guide", limit, window_s)


async def _rate_limited(request: Request) -> None:
    limit: RateLimit = request.app.state.guide_limit
    await limit.dependency()(request)


@public_router.get(
    "/guide",
    response_model=guide.GuideView,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}},
        429: {"model": ErrorBody, "description": "Too many requests; see Retry-After"},
    },
    summary="The 15-minute life circle guide (no credential; rate-limited): partners that "
    "made their contacts public, as JSON or a printable A4 page",
    dependencies=[Depends(_rate_limited)],
)
async def public_guide(
    request: Request,
    community: Community,
    format: Annotated[
        guide.GuideFormat | None,
        Query(description="html for the printable page; default JSON (or by Accept)."),
    ] = None,
) -> Any:
    d = await _load(request, community, public_only=True)
    view = guide.build(d)
    wants_html = format is guide.GuideFormat.HTML or (
        format is None and "text/html" in request.headers.get("accept", "")
    )
    if wants_html:
        return HTMLResponse(guide.page(view))
    return view


__all__ = ["guide_limit", "package", "public_router", "router"]
