"""Partners' business rules as plain functions: no database, no broker, no clock."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from linli.contracts.catalogue import CATALOGUE
from linli.contracts.events import PartyKind, PartyRef
from linli.contracts.types import Reason, Role

# Which report outcome proves which kind of need (the catalogue's report outcome, ADR
# 0045); a failed attempt fits every kind.
OUTCOME_FOR_KIND: Mapping[str, str] = {
    kind: entry.report.outcome for kind, entry in CATALOGUE.items()
}
FAILED = "failed"
MEAL_PREPARED = "meal_prepared"
PREPARE_LEG = "prepare"
"""A canteen's leg of a two-leg meal (ADR 0044): reported as `meal_prepared` or failed."""

# Offer states in which the party may still act.
ANSWERABLE = frozenset({"open"})
REPORTABLE = frozenset({"accepted"})


def party_of(role: Role, subject_id: uuid.UUID | None) -> PartyRef | None:
    """The partner or volunteer a credential speaks for, if any."""
    if subject_id is None:
        return None
    if role is Role.PARTNER:
        return PartyRef(kind=PartyKind.PARTNER, id=subject_id)
    if role is Role.VOLUNTEER:
        return PartyRef(kind=PartyKind.VOLUNTEER, id=subject_id)
    return None


def offer_status(status: str, expires_at: datetime, now: datetime) -> str:
    """What a party sees: an open offer past its expiry reads as expired.

    The lapse sweep stores `expired` a moment later (ADR 0026); from its expiry on, the
    offer can no longer be answered either way.
    """
    if status == "open" and expires_at <= now:
        return "expired"
    return status


def answer_refusal(status: str, expires_at: datetime, now: datetime) -> str | None:
    """Why an offer cannot be accepted or declined now, or None when it can."""
    shown = offer_status(status, expires_at, now)
    if shown in ANSWERABLE:
        return None
    return f"offer is {shown}"


def report_reasons(offer_kind: str, outcome: str, leg: str | None = None) -> list[Reason]:
    """A report must prove the kind of work that was offered; a canteen's prepare leg
    proves a prepared meal, never a delivered one (the carrier delivers, ADR 0044)."""
    expected = MEAL_PREPARED if leg == PREPARE_LEG else OUTCOME_FOR_KIND.get(offer_kind, "?")
    if outcome in (FAILED, expected):
        return []
    what = f"a {offer_kind} {leg} leg" if leg else f"a {offer_kind}"
    return [
        Reason(
            field="body.outcome",
            message=f"{what} assignment is reported as {expected} or failed",
            code="outcome_mismatch",
        )
    ]


def points_for(kind: str, party: PartyRef, outcome: str, table: Mapping[str, int]) -> int:
    """Points a completion earns: only volunteers, only proven completions."""
    if party.kind is not PartyKind.VOLUNTEER or outcome in (FAILED, MEAL_PREPARED):
        return 0
    return max(int(table.get(kind, 0)), 0)


def points_table(overrides: Mapping[str, int | None]) -> dict[str, int]:
    """Points per kind: the catalogue's defaults, with the configured overrides applied."""
    table = {kind: entry.points for kind, entry in CATALOGUE.items()}
    table.update({kind: int(v) for kind, v in overrides.items() if v is not None})
    return table


def provider_reasons(
    kind: str,
    provider_communities: list[str] | None,
    provider_kinds: set[str],
    community: str,
    *,
    active: bool = True,
) -> list[Reason]:
    """Capacity must come from a provider that serves the community and the kind."""
    if provider_communities is None or community not in provider_communities or not active:
        return [
            Reason(
                field="body.provider",
                message="no such provider in this community",
                code="unknown_provider",
            )
        ]
    if kind not in provider_kinds:
        return [
            Reason(
                field="body.kind",
                message="the provider does not offer this kind of service",
                code="kind_not_offered",
            )
        ]
    return []


def may_publish_for(role: Role, own: PartyRef | None, provider: PartyRef) -> bool:
    """Operators publish for any provider; a partner or volunteer only for itself."""
    if role in (Role.OPERATOR, Role.ADMIN):
        return True
    return own is not None and own == provider


def volunteer_account(community: str, volunteer_id: uuid.UUID) -> str:
    """A volunteer's points in one community: earned there, redeemable only there."""
    return f"volunteer:{community}:{volunteer_id}"


def pool_account(community: str) -> str:
    return f"pool:{community}"


def redeemed_account(community: str) -> str:
    return f"redeemed:{community}"
