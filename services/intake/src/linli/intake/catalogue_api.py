"""`GET /v1/catalogue`: the kinds of need intake accepts, read from the contracts'
catalogue (ADR 0045). It holds no personal data, so every authenticated role may read
it, a street office included; it is not scoped to a community."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from linli.contracts.catalogue import CATALOGUE, describe
from linli.servicekit.auth import CurrentPrincipal
from linli.servicekit.errors import ErrorBody

router = APIRouter(prefix="/v1", tags=["catalogue"])


class KindView(BaseModel):
    kind: str = Field(description="Wire name of the kind, the `kind` of a need.")
    labels: dict[str, str] = Field(description="Display names by locale (zh-CN, en).")
    description: str = Field(description="What the kind is.")
    details_schema: dict[str, Any] = Field(
        description="JSON Schema of `details` as submitted (a need, a recurring plan)."
    )
    shared_details_schema: dict[str, Any] = Field(
        description="JSON Schema of `details` as events and offers carry them."
    )
    private_fields: list[str] = Field(
        description="Fields of the submitted details that stay in intake (ADR 0031)."
    )
    sla: dict[str, Any] = Field(
        description="SLA defaults: `basis` (window or response), the promise's label, "
        "response durations in seconds and the priority groups that count; a "
        "community's SLA policy may override durations."
    )
    completion_event: str = Field(description="CloudEvents type (unversioned) proving it.")
    report_outcome: str = Field(description="Outcome a helper reports to partners.")
    points: int = Field(description="Default points for a volunteer's proven completion.")
    served_by: dict[str, Any] = Field(
        description="Partner organisation kinds that typically serve it, and the volunteer skill."
    )


class CatalogueView(BaseModel):
    items: list[KindView] = Field(description="Every kind of need, in display order.")


@router.get(
    "/catalogue",
    response_model=CatalogueView,
    summary="The kinds of need, with the JSON Schema of their details",
    responses={
        401: {"description": "Missing or invalid bearer token.", "model": ErrorBody},
        403: {"description": "Never for a valid credential.", "model": ErrorBody},
    },
)
async def get_catalogue(principal: CurrentPrincipal) -> Any:
    # Any valid credential: the catalogue is the same for every community and role.
    del principal
    return {"items": [describe(entry) for entry in CATALOGUE.values()]}
