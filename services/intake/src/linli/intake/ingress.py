"""Commands from other systems over NATS: `linli.ingress.<community>.need.submit.v1`.

Two paths lead here (ADR 0004). A request with a reply subject is answered by a core
queue-group subscriber after the need is committed, so "accepted" means stored. Every
ingress message is also kept by the ingress stream and consumed by a durable consumer,
so a command published while intake was down is processed when it comes back. Both
paths run the same use case, and the CloudEvent (source, id) makes the second one a
no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from pydantic import ValidationError

from linli.contracts.binding import from_nats, parse_data, reasons_from_validation_error
from linli.contracts.envelope import CloudEvent, EnvelopeError
from linli.contracts.needs import NeedSpecAdapter, NeedSubmitAccepted, NeedSubmitRejected
from linli.contracts.registry import UnknownEventType, lookup
from linli.contracts.subjects import SubjectError, parse_subject
from linli.contracts.types import Reason, Role
from linli.servicekit.telemetry import current_traceparent

from . import service

log = logging.getLogger(__name__)

CONSUMER = "intake-ingress"
SUBMIT_TYPE = "linli.need.submit.v1"


@dataclass(frozen=True)
class Outcome:
    """What the submitting system is told."""

    accepted: bool
    need_id: str | None = None
    duplicate: bool = False
    reasons: tuple[Reason, ...] = ()
    dead_letter_id: str | None = None

    def reply(self) -> bytes:
        """The answer on the reply subject (`NeedSubmitReply`, in the AsyncAPI document)."""
        answer: NeedSubmitAccepted | NeedSubmitRejected
        if self.accepted:
            answer = NeedSubmitAccepted(
                status="accepted", need_id=UUID(self.need_id or ""), duplicate=self.duplicate
            )
        else:
            answer = NeedSubmitRejected(
                status="rejected",
                reasons=list(self.reasons),
                dead_letter_id=UUID(self.dead_letter_id) if self.dead_letter_id else None,
            )
        return orjson.dumps(answer.model_dump(mode="json"))


def _check_envelope(subject: str, event: CloudEvent[Any]) -> tuple[str | None, list[Reason]]:
    """Cross-check the subject, the type and the community; returns the community."""
    reasons: list[Reason] = []
    community: str | None = None
    try:
        parsed = parse_subject(subject)
        community = parsed.community
        if parsed.space != "ingress" or parsed.type != event.type:
            reasons.append(
                Reason(
                    field="subject",
                    message=f"subject does not carry {event.type}",
                    code="subject_mismatch",
                )
            )
    except SubjectError as exc:
        reasons.append(Reason(field="subject", message=str(exc)[:500], code="invalid_subject"))
    try:
        spec = lookup(event.type)
        if spec.type != SUBMIT_TYPE:
            reasons.append(
                Reason(
                    field="type",
                    message=f"intake accepts {SUBMIT_TYPE}, not {event.type}",
                    code="unsupported_type",
                )
            )
    except UnknownEventType as exc:
        reasons.append(Reason(field="type", message=str(exc)[:500], code="unknown_type"))
    if community is not None and event.community != community:
        reasons.append(
            Reason(
                field="community",
                message="community attribute differs from the subject's community",
                code="community_mismatch",
            )
        )
    return community, reasons


def _community_from_subject(subject: str) -> str | None:
    try:
        return parse_subject(subject).community
    except SubjectError:
        return None


async def handle_submit(
    pool: asyncpg.Pool,
    *,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    clock: service.Clock,
) -> Outcome:
    """Validate a `need.submit` command and accept or reject it (never raise for input).

    Only infrastructure errors (database down) escape, so the caller retries later.
    """
    event: CloudEvent[Any] | None = None
    community = _community_from_subject(subject)
    reasons: list[Reason] = []
    try:
        event = from_nats(payload, headers)
    except EnvelopeError as exc:
        reasons = list(exc.reasons)
    if event is not None:
        community, reasons = _check_envelope(subject, event)
        if not reasons:
            try:
                spec = parse_data(event, NeedSpecAdapter)
            except EnvelopeError as exc:
                reasons = list(exc.reasons)
            except ValidationError as exc:  # pragma: no cover - parse_data wraps these
                reasons = reasons_from_validation_error(exc, prefix="data")
        if not reasons:
            actor = service.Actor(Role.SYSTEM, event.source[:100])
            try:
                async with pool.acquire() as conn:
                    result = await service.submit_need(
                        conn,
                        event.community,
                        spec,
                        actor,
                        clock=clock,
                        ingress=(event.source, event.id),
                        # Our own span (a child of the sender's, when it sent one) so the
                        # published event continues this trace.
                        traceparent=current_traceparent() or event.traceparent,
                    )
                return Outcome(True, str(result.need_id), duplicate=not result.created)
            except service.Rejected as exc:
                reasons = [r.model_copy(update={"field": f"data.{r.field}"}) for r in exc.reasons]
            except service.NotFound:
                reasons = [
                    Reason(field="community", message="unknown community", code="unknown_community")
                ]
            except asyncpg.exceptions.DataError:
                reasons = [
                    Reason(field="data", message="a value is out of range", code="out_of_range")
                ]
    async with pool.acquire() as conn:
        rejected = await service.reject_ingress(
            conn,
            consumer=CONSUMER,
            subject=subject,
            headers=headers,
            payload=payload,
            reasons=reasons,
            community=community,
            event=event,
            clock=clock,
        )
    if rejected.new:
        # Both ingress paths see every command; log the rejection once.
        log.info(
            "ingress command rejected",
            extra={
                "dead_letter_id": str(rejected.dead_letter_id),
                "codes": [r.code for r in reasons],
            },
        )
    return Outcome(False, reasons=tuple(reasons), dead_letter_id=str(rejected.dead_letter_id))
