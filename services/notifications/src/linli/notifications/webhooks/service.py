"""Webhook use cases: community apps register, pause, rotate and replay subscriptions.

A credential (role `system` for a community app, or `admin`) sees and manages only the
subscriptions it created, and only for communities it is scoped to; anything else is
`NotFound`, as if it did not exist. The role check is the API's (`MANAGERS`).
"""

from __future__ import annotations

import base64
import binascii
import secrets as random_secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg

from linli.contracts.registry import REGISTRY
from linli.contracts.subjects import validate_community
from linli.contracts.types import Role
from linli.notifications.errors import NotFound, Rejected
from linli.notifications.settings import NotificationsSettings
from linli.servicekit.auth import Principal
from linli.servicekit.clock import Clock
from linli.servicekit.sealing import SecretBox

from . import store
from .ssrf import Resolver, UnsafeUrl, check_endpoint

MANAGERS = (Role.SYSTEM, Role.ADMIN)
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 24 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(24)).decode()


def check_secret(secret: str) -> str:
    """A given secret: `whsec_` and 24 to 64 bytes in base64; ValueError otherwise."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("secret must start with whsec_")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("secret must be whsec_ followed by base64") from exc
    if not 24 <= len(raw) <= 64:
        raise ValueError("secret must hold 24 to 64 random bytes")
    return secret


def _given_or_new(secret: str | None) -> str:
    if secret is None:
        return new_secret()
    try:
        return check_secret(secret)
    except ValueError as exc:
        raise Rejected("body.secret", str(exc), "invalid") from exc


class WebhookService:
    """The subscriptions use cases of one process."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        settings: NotificationsSettings,
        box: SecretBox,
        *,
        resolver: Resolver,
        clock: Clock,
        wake: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._box = box
        self._resolver = resolver
        self.clock = clock
        self._wake = wake
        """Tells the delivery worker that rows became due."""

    async def _check_url(self, url: str) -> None:
        try:
            await check_endpoint(
                url, allow_insecure=self._settings.allow_insecure_endpoints, resolver=self._resolver
            )
        except UnsafeUrl as exc:
            raise Rejected("body.url", str(exc), "unsafe_url") from exc

    async def check_url(self, url: str) -> None:
        """The SSRF guard of every endpoint (also a partner's own, ADR 0043)."""
        await self._check_url(url)

    def given_or_new(self, secret: str | None) -> str:
        """A checked given secret, or a new one (`Rejected` when malformed)."""
        return _given_or_new(secret)

    def seal(self, secret: str) -> str:
        return self._box.seal(secret)

    async def _owned(self, principal: Principal, sub_id: uuid.UUID) -> asyncpg.Record:
        async with self._pool().acquire() as conn:
            row = await store.owned_subscription(conn, sub_id, principal.credential_id)
        if row is None or not all(principal.can_access(c) for c in row["communities"]):
            raise NotFound("subscription not found")
        return row

    async def create(
        self,
        principal: Principal,
        *,
        url: str,
        communities: list[str],
        event_types: list[str],
        need_kinds: list[str],
        description: str,
        secret: str | None,
    ) -> tuple[asyncpg.Record, str]:
        """Register an endpoint; returns it with its secret (shown this once)."""
        scoped = sorted(set(communities))
        for index, community in enumerate(scoped):
            try:
                validate_community(community)
            except ValueError as exc:
                raise Rejected(f"body.communities.{index}", str(exc), "invalid") from exc
            principal.require_community(community)
        for index, ce_type in enumerate(event_types):
            spec = REGISTRY.get(ce_type)
            if spec is None or spec.kind != "event":
                raise Rejected(
                    f"body.event_types.{index}", "not a registered event type", "unknown_type"
                )
        secret = _given_or_new(secret)
        await self._check_url(url)
        async with self._pool().acquire() as conn:
            row = await store.insert_subscription(
                conn,
                owner=principal.credential_id,
                url=url,
                communities=scoped,
                event_types=sorted(set(event_types)),
                need_kinds=sorted(set(need_kinds)),
                description=description,
                secret_sealed=self._box.seal(secret),
            )
        return row, secret

    async def list_owned(self, principal: Principal) -> list[asyncpg.Record]:
        """The caller's subscriptions (in communities it may still access)."""
        async with self._pool().acquire() as conn:
            rows = await store.subscriptions_of(conn, principal.credential_id)
        return [r for r in rows if all(principal.can_access(c) for c in r["communities"])]

    async def list_in_community(self, principal: Principal, community: str) -> list[asyncpg.Record]:
        """Every subscription covering a community, for its operators (their state and why
        they were disabled, e.g. a revoked credential); the role check is the API's."""
        principal.require_community(community)
        async with self._pool().acquire() as conn:
            return await store.subscriptions_in(conn, community)

    async def get(self, principal: Principal, sub_id: uuid.UUID) -> asyncpg.Record:
        return await self._owned(principal, sub_id)

    async def set_state(
        self, principal: Principal, sub_id: uuid.UUID, state: str
    ) -> asyncpg.Record:
        """Pause (events keep queueing) or resume (the URL is checked again; waiting rows
        are sent at once, and a disabled endpoint is enabled)."""
        current = await self._owned(principal, sub_id)
        if state == "active":
            await self._check_url(current["url"])
        async with self._pool().acquire() as conn, conn.transaction():
            row = await store.set_state(conn, sub_id, state)
            if state == "active":
                await store.send_pending_now(conn, sub_id)
        if state == "active":
            self._wake()
        return row

    async def rotate_secret(
        self,
        principal: Principal,
        sub_id: uuid.UUID,
        *,
        secret: str | None,
        overlap_s: float | None,
    ) -> tuple[asyncpg.Record, str]:
        """A new secret; the old one keeps signing for the overlap."""
        await self._owned(principal, sub_id)
        secret = _given_or_new(secret)
        overlap = overlap_s if overlap_s is not None else self._settings.rotation_overlap_s
        until = self.clock.now() + timedelta(seconds=overlap)
        async with self._pool().acquire() as conn:
            row = await store.rotate_secret(conn, sub_id, self._box.seal(secret), until)
        return row, secret

    async def delete(self, principal: Principal, sub_id: uuid.UUID) -> None:
        """Delete a subscription and its queue."""
        await self._owned(principal, sub_id)
        async with self._pool().acquire() as conn:
            await store.delete_subscription(conn, sub_id)

    async def attempts(
        self, principal: Principal, sub_id: uuid.UUID, *, limit: int, event_id: str | None
    ) -> tuple[int, list[asyncpg.Record]]:
        """(rows still pending, the attempts log newest first)."""
        await self._owned(principal, sub_id)
        async with self._pool().acquire() as conn:
            rows = await store.attempts(conn, sub_id, limit, event_id)
            pending = await store.pending_count(conn, sub_id)
        return pending, rows

    async def replay(
        self,
        principal: Principal,
        sub_id: uuid.UUID,
        *,
        event_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> int:
        """Send recorded events again (same `webhook-id`); how many."""
        await self._owned(principal, sub_id)
        if event_id is None and since is None:
            raise Rejected("body", "give event_id or since (and optionally until)", "missing")
        async with self._pool().acquire() as conn:
            count = await store.replay(conn, sub_id, event_id=event_id, since=since, until=until)
        if event_id is not None and count == 0:
            raise NotFound("event not recorded for this endpoint")
        self._wake()
        return count
