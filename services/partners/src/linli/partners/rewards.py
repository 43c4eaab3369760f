"""Points worth something (issue #12, ADR 0041): partners' rewards, a volunteer's request
to redeem one with its points held, an operator's approval (the ledger debit and a
certificate) or rejection, the public check of a certificate code and a volunteer's
statement of hours and points.

Each use case runs in one transaction with the events it causes (outbox). Holds live on
the volunteer's `balances` row (`held`, CHECK `balance >= held`), so racing requests,
and an operator's direct debit, can never spend held points twice.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from linli.contracts.events import (
    CertificateUsed,
    PartyKind,
    PartyRef,
    RedemptionRejected,
    RedemptionRequested,
    RewardPublished,
    RewardRevised,
    RewardWithdrawn,
)
from linli.contracts.types import Reason, Role
from linli.servicekit import outbox
from linli.servicekit.clock import Clock
from linli.servicekit.db import Conn
from linli.servicekit.idempotency import Idempotency, check_replay
from linli.servicekit.sealing import SecretBox

from . import rules, store
from .models import RewardPatch, RewardRedemptionSpec, RewardSpec
from .service import Actor, Conflict, NotFound, Rejected, _event, debit

OPERATORS = (Role.OPERATOR, Role.ADMIN)
WITHDRAWN_REASON = "the reward was withdrawn"


# --- certificate codes ------------------------------------------------------------------

_CODE_BYTES = 16  # 128 random bits
_NOT_CODE = re.compile(r"[\s-]+")


def new_certificate_code() -> str:
    """A random 128-bit code in base32, grouped by four for reading aloud or typing."""
    raw = base64.b32encode(secrets.token_bytes(_CODE_BYTES)).decode().rstrip("=")
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def code_digest(code: str) -> bytes:
    """What is stored and looked up: SHA-256 of the code without case, spaces or dashes.

    Any input, well-formed or not, takes the same path (one digest, one index lookup),
    so a tampered code and an unknown one are answered alike.
    """
    canonical = _NOT_CODE.sub("", code).upper()
    return hashlib.sha256(canonical.encode()).digest()


# --- rewards ----------------------------------------------------------------------------


def _may_manage(actor_role: Role, own: PartyRef | None, partner_id: uuid.UUID) -> bool:
    """Operators manage every reward of their community; a partner only its own."""
    if actor_role in OPERATORS:
        return True
    return own is not None and own.kind is PartyKind.PARTNER and own.id == partner_id


async def create_reward(
    conn: Conn,
    community: str,
    spec: RewardSpec,
    actor: Actor,
    own: PartyRef | None,
    *,
    clock: Clock,
) -> asyncpg.Record:
    """Publish a reward of a partner serving `community` (`reward.published`)."""
    partner_id = spec.partner_id or (own.id if own and own.kind is PartyKind.PARTNER else None)
    if partner_id is None:
        raise Rejected(
            [Reason(field="body.partner_id", message="partner_id is required", code="missing")]
        )
    if not _may_manage(actor.role, own, partner_id):
        raise Rejected(
            [
                Reason(
                    field="body.partner_id",
                    message="a partner offers only its own rewards",
                    code="not_own_partner",
                )
            ],
            status=403,
        )
    now = clock.now()
    async with conn.transaction():
        if await store.get_partner(conn, community, partner_id) is None:
            raise Rejected(
                [
                    Reason(
                        field="body.partner_id",
                        message="no such partner in this community",
                        code="unknown_partner",
                    )
                ]
            )
        reward_id = uuid.uuid4()
        await store.insert_reward(
            conn,
            reward_id=reward_id,
            community=community,
            partner_id=partner_id,
            title=spec.title,
            description=spec.description,
            points=spec.points,
            by=actor.label(),
            at=now,
        )
        data = RewardPublished(
            reward_id=reward_id,
            partner_id=partner_id,
            title=spec.title,
            points=spec.points,
            published_at=now,
        )
        await outbox.enqueue(conn, _event(data, community, reward_id, now))
        row = await store.get_reward(conn, community, reward_id)
    assert row is not None
    return row


async def _managed_reward(
    conn: Conn, community: str, reward_id: uuid.UUID, actor: Actor, own: PartyRef | None
) -> asyncpg.Record:
    row = await store.get_reward(conn, community, reward_id, for_update=True)
    # Another partner's reward does not exist for this partner.
    if row is None or not _may_manage(actor.role, own, row["partner_id"]):
        raise NotFound("reward")
    return row


async def revise_reward(
    conn: Conn,
    community: str,
    reward_id: uuid.UUID,
    patch: RewardPatch,
    actor: Actor,
    own: PartyRef | None,
    *,
    clock: Clock,
) -> asyncpg.Record:
    """Change an active reward (`reward.revised`); pending requests keep their price."""
    now = clock.now()
    async with conn.transaction():
        row = await _managed_reward(conn, community, reward_id, actor, own)
        if row["status"] != "active":
            raise Conflict("reward was withdrawn")
        changes = patch.model_dump(exclude_unset=True, exclude_none=True)
        if changes and any(row[k] != v for k, v in changes.items()):
            await store.update_reward(
                conn,
                reward_id,
                title=patch.title,
                description=patch.description,
                points=patch.points,
                at=now,
            )
            data = RewardRevised(
                reward_id=reward_id,
                partner_id=row["partner_id"],
                title=patch.title or row["title"],
                points=patch.points or row["points"],
                revised_at=now,
            )
            await outbox.enqueue(conn, _event(data, community, reward_id, now))
        updated = await store.get_reward(conn, community, reward_id)
    assert updated is not None
    return updated


async def withdraw_reward(
    conn: Conn,
    community: str,
    reward_id: uuid.UUID,
    actor: Actor,
    own: PartyRef | None,
    *,
    clock: Clock,
) -> None:
    """Withdraw a reward (`reward.withdrawn`), once; its pending requests are rejected and
    their points released (`redemption.rejected` each). Approved ones stand."""
    now = clock.now()
    async with conn.transaction():
        row = await _managed_reward(conn, community, reward_id, actor, own)
        if row["status"] == "withdrawn":
            return
        await store.withdraw_reward(conn, reward_id, now)
        for pending in await store.pending_requests_of_reward(conn, reward_id):
            await _reject(conn, pending, reward_id, WITHDRAWN_REASON, actor, now)
        data = RewardWithdrawn(reward_id=reward_id, partner_id=row["partner_id"], withdrawn_at=now)
        await outbox.enqueue(conn, _event(data, community, reward_id, now))


# --- redemption requests ----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A request as it stands; `created` is False for a replayed Idempotency-Key."""

    row: asyncpg.Record
    created: bool


async def _replayed(
    conn: Conn, community: str, idempotency: Idempotency | None, request_id: uuid.UUID
) -> Answer | None:
    """Claim the key for `request_id`; the earlier request when it was used before."""
    if idempotency is None:
        return None
    earlier = await store.claim_idempotency_key(
        conn, "reward.redemption", community, idempotency, request_id
    )
    if earlier is None:
        return None
    check_replay(idempotency, earlier["request_sha256"])
    row = await store.get_redemption_request(conn, community, earlier["result_id"])
    assert row is not None
    return Answer(row, created=False)


async def request_redemption(
    conn: Conn,
    community: str,
    volunteer_id: uuid.UUID,
    spec: RewardRedemptionSpec,
    actor: Actor,
    idempotency: Idempotency,
    *,
    clock: Clock,
) -> Answer:
    """A volunteer asks for a reward: its price is held on the volunteer's balance in
    `community` until an operator decides (`redemption.requested`).

    Refused with 422 on `body.reward_id` when the reward is not active here or the
    balance less what is already held does not cover it; nothing changes then and the
    key stays unused.
    """
    now = clock.now()
    async with conn.transaction():
        request_id = uuid.uuid4()
        if (replay := await _replayed(conn, community, idempotency, request_id)) is not None:
            return replay
        volunteer = await store.get_volunteer(conn, community, volunteer_id)
        if volunteer is None or not volunteer["active"]:
            raise NotFound("volunteer")
        # A share lock: a withdrawal waits for this request and then rejects it too.
        reward = await store.get_reward(conn, community, spec.reward_id, for_share=True)
        if reward is None or reward["status"] != "active":
            raise Rejected(
                [
                    Reason(
                        field="body.reward_id",
                        message="no such active reward in this community",
                        code="unknown_reward",
                    )
                ]
            )
        points = int(reward["points"])
        account = rules.volunteer_account(community, volunteer_id)
        await store.ensure_accounts(conn, (account, "volunteer"))
        try:
            await store.hold_points(conn, account, points)
        except asyncpg.CheckViolationError:
            raise Rejected(
                [
                    Reason(
                        field="body.reward_id",
                        message=f"the reward costs {points} points: more than the balance "
                        "here, less points held for pending requests",
                        code="insufficient_points",
                    )
                ]
            ) from None
        await store.insert_redemption_request(
            conn,
            request_id=request_id,
            community=community,
            reward_id=spec.reward_id,
            volunteer_id=volunteer_id,
            points=points,
            by=actor.label(),
            at=now,
        )
        data = RedemptionRequested(
            redemption_id=request_id,
            reward_id=spec.reward_id,
            volunteer_id=volunteer_id,
            points=points,
            requested_at=now,
        )
        await outbox.enqueue(conn, _event(data, community, request_id, now))
        row = await store.get_redemption_request(conn, community, request_id)
    assert row is not None
    return Answer(row, created=True)


async def _pending(conn: Conn, community: str, request_id: uuid.UUID) -> asyncpg.Record:
    row = await store.get_redemption_request(conn, community, request_id, for_update=True)
    if row is None:
        raise NotFound("redemption")
    if row["status"] != "requested":
        raise Conflict(f"redemption is {row['status']}")
    return row


async def approve(
    conn: Conn,
    community: str,
    request_id: uuid.UUID,
    actor: Actor,
    *,
    box: SecretBox,
    clock: Clock,
    idempotency: Idempotency | None = None,
) -> Answer:
    """Approve a pending request, once: the held points are debited through the ledger
    (`points.redeemed` with the reward id) and a certificate is issued. A retry with the
    same key answers the approval; without a key, a second approval is 409."""
    now = clock.now()
    async with conn.transaction():
        if (replay := await _replayed(conn, community, idempotency, request_id)) is not None:
            return replay
        row = await _pending(conn, community, request_id)
        volunteer_id, points = row["volunteer_id"], int(row["points"])
        await store.release_points(conn, rules.volunteer_account(community, volunteer_id), points)
        await debit(
            conn,
            community,
            volunteer_id,
            points,
            redemption_id=request_id,
            note=f"reward {row['reward_id']}",
            by=actor.label(),
            now=now,
            reward_id=row["reward_id"],
        )
        code = new_certificate_code()
        await store.approve_request(
            conn,
            request_id,
            by=actor.label(),
            at=now,
            certificate_sha256=code_digest(code),
            certificate_sealed=box.seal(code),
        )
        updated = await store.get_redemption_request(conn, community, request_id)
    assert updated is not None
    return Answer(updated, created=True)


async def _reject(
    conn: Conn,
    row: asyncpg.Record,
    reward_id: uuid.UUID,
    reason: str,
    actor: Actor,
    now: datetime,
) -> None:
    community, volunteer_id, points = row["community"], row["volunteer_id"], int(row["points"])
    await store.release_points(conn, rules.volunteer_account(community, volunteer_id), points)
    await store.reject_request(conn, row["id"], reason=reason, by=actor.label(), at=now)
    # The reason stays here: free text may name people.
    data = RedemptionRejected(
        redemption_id=row["id"],
        reward_id=reward_id,
        volunteer_id=volunteer_id,
        points=points,
        rejected_at=now,
    )
    await outbox.enqueue(conn, _event(data, community, row["id"], now))


async def reject(
    conn: Conn,
    community: str,
    request_id: uuid.UUID,
    reason: str,
    actor: Actor,
    *,
    clock: Clock,
    idempotency: Idempotency | None = None,
) -> Answer:
    """Reject a pending request with a reason: the held points are free again
    (`redemption.rejected`)."""
    now = clock.now()
    async with conn.transaction():
        if (replay := await _replayed(conn, community, idempotency, request_id)) is not None:
            return replay
        row = await _pending(conn, community, request_id)
        await _reject(conn, row, row["reward_id"], reason, actor, now)
        updated = await store.get_redemption_request(conn, community, request_id)
    assert updated is not None
    return Answer(updated, created=True)


# --- certificates -----------------------------------------------------------------------


async def certificate_of(
    conn: Conn,
    community: str,
    request_id: uuid.UUID,
    volunteer_id: uuid.UUID,
    box: SecretBox,
) -> tuple[asyncpg.Record, str]:
    """The volunteer's own approved request and its code (opened from its sealed copy)."""
    row = await store.get_redemption_request(conn, community, request_id, volunteer_id=volunteer_id)
    if row is None or row["status"] != "approved":
        raise NotFound("certificate")
    return row, box.open(row["certificate_sealed"])


async def check(conn: Conn, code: str) -> asyncpg.Record | None:
    """The approved request a code belongs to, or None (tampered and unknown alike)."""
    return await store.certificate_by_digest(conn, code_digest(code))


async def use_certificate(
    conn: Conn,
    community: str,
    code: str,
    actor: Actor,
    own: PartyRef | None,
    *,
    clock: Clock,
) -> asyncpg.Record:
    """The partner honours a certificate: marked used, once (`certificate.used`).

    Another community's certificate, or another partner's, is not found, as an unknown
    code is; a second use is 409."""
    now = clock.now()
    async with conn.transaction():
        row = await store.certificate_by_digest(conn, code_digest(code), for_update=True)
        if (
            row is None
            or row["community"] != community
            or not _may_manage(actor.role, own, row["partner_id"])
        ):
            raise NotFound("certificate")
        if not await store.mark_certificate_used(conn, row["id"], by=actor.label(), at=now):
            raise Conflict("certificate was already used")
        data = CertificateUsed(
            redemption_id=row["id"],
            reward_id=row["reward_id"],
            partner_id=row["partner_id"],
            used_at=now,
        )
        await outbox.enqueue(conn, _event(data, community, row["id"], now))
        updated = await store.get_redemption_request(conn, community, row["id"])
    assert updated is not None
    return updated


# --- a volunteer's statement ------------------------------------------------------------


def duration_minutes(outcome: str, proof: dict[str, Any]) -> int | None:
    """Minutes of work a report proves, where it measures them (visits and repairs)."""
    bounds = {
        "visit_completed": ("started_at", "ended_at"),
        "repair_completed": ("arrived_at", "completed_at"),
    }.get(outcome)
    if bounds is None or not all(proof.get(b) for b in bounds):
        return None
    start, end = (datetime.fromisoformat(proof[b]) for b in bounds)
    if end <= start:
        return None
    return int((end - start) / timedelta(minutes=1))


@dataclass(frozen=True)
class Statement:
    services: list[dict[str, Any]]
    awarded: int
    redeemed: int
    held: int
    balance: int


async def statement(
    conn: Conn, community: str, volunteer_id: uuid.UUID, start: datetime, end: datetime
) -> Statement:
    """Services delivered (with durations where measured) and points awarded and redeemed
    in [start, end); held and balance as they are now."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        reports = await store.reports_by_volunteer(conn, community, volunteer_id, start, end)
        account = rules.volunteer_account(community, volunteer_id)
        sums = await store.ledger_sums(conn, account, start, end)
        held = await store.held_of(conn, account)
        balance = await store.balance_of(conn, account)
    services = []
    for r in reports:
        proof = store.proof_of(r)
        services.append(
            {
                "assignment_id": r["assignment_id"],
                "need_id": r["need_id"],
                "kind": r["kind"],
                "outcome": r["outcome"],
                "reported_at": r["reported_at"],
                "minutes": duration_minutes(r["outcome"], proof),
            }
        )
    return Statement(
        services=services,
        awarded=sums.get("award", 0),
        redeemed=-sums.get("redemption", 0),
        held=held,
        balance=balance,
    )
