"""HTTP `Idempotency-Key` (ADR 0008), the part every service shares.

A retried POST with the same key and the same body answers what the first one created
(200 and `Idempotent-Replayed: true`); the same key with another body is refused (409).
A key belongs to one community and one credential, and the body is compared by a
fingerprint of its parsed, canonical form, so JSON formatting does not count.

Each service keeps the keys in its own table (the claim is an `INSERT … ON CONFLICT DO
NOTHING` in the transaction of the effect, in its `store.py`); this module holds the
header, the fingerprint, what a claim carries and the reply.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Response, status

__all__ = [
    "REPLAYED_HEADER",
    "Idempotency",
    "IdempotencyKey",
    "KeyReused",
    "check_replay",
    "mark_replayed",
    "request_fingerprint",
]

REPLAYED_HEADER = "Idempotent-Replayed"
REUSED_MESSAGE = "Idempotency-Key was already used with a different request"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Retry-safe request: the same key with the same body answers the "
        "original result (200, `Idempotent-Replayed: true`); with a different body it is "
        "refused (409).",
    ),
]


class KeyReused(Exception):
    """The key was claimed earlier by a different request (answer 409)."""

    def __init__(self) -> None:
        super().__init__(REUSED_MESSAGE)


def request_fingerprint(community: str, body: dict[str, Any]) -> bytes:
    """A stable digest of a parsed request body, to tell a retry from another request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{community}\n{canonical}".encode()).digest()


@dataclass(frozen=True)
class Idempotency:
    """A key as claimed: whose it is and what request it stands for."""

    credential_id: uuid.UUID
    key: str
    fingerprint: bytes

    @classmethod
    def of(
        cls, key: str | None, credential_id: uuid.UUID, community: str, body: dict[str, Any]
    ) -> Idempotency | None:
        """The claim for a request, or None when it carries no key."""
        if key is None:
            return None
        return cls(credential_id, key, request_fingerprint(community, body))


def check_replay(idempotency: Idempotency, earlier_fingerprint: bytes) -> None:
    """An earlier claim of the same key: a replay if the bodies agree, else KeyReused."""
    if bytes(earlier_fingerprint) != idempotency.fingerprint:
        raise KeyReused()


def mark_replayed(response: Response) -> None:
    """Answer a replay: 200 instead of 201, and say so."""
    response.status_code = status.HTTP_200_OK
    response.headers[REPLAYED_HEADER] = "true"
