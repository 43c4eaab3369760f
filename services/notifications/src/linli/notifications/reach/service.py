"""Use cases of a partner's delivery preferences: read, replace, remove (ADR 0043).

The webhook is a `subscriptions` row naming the partner (signed, retried and guarded
against SSRF by the webhooks code, like a community app's); the duty contacts are
`people_recipients` rows with role `partner` (sent by the messages sender, with the
partner's quiet hours). One PUT replaces both in one transaction. Notifications does
not own partners and does not check the id: preferences under a wrong id are inert.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from linli.notifications.messages import store as messages_store
from linli.notifications.messages.plan import NewRecipient
from linli.notifications.webhooks import store as webhooks_store
from linli.notifications.webhooks.service import WebhookService
from linli.servicekit.db import Conn

PARTNER_OWNER = uuid.UUID("6c1d3a3e-4f0e-4d7e-9d55-0d4c2a7e0a43")
"""The owner namespace of partner subscriptions: no app credential owns them, so none
lists, pauses or deletes them through `/v1/subscriptions`."""


def partner_owner(partner_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(PARTNER_OWNER, str(partner_id))


@dataclass(frozen=True)
class Preferences:
    """What a PUT asks for."""

    webhook_url: str | None
    webhook_secret: str | None
    contacts: list[NewRecipient]


@dataclass(frozen=True)
class Current:
    """What is registered now; `secret` only when this call made one."""

    endpoint: asyncpg.Record | None
    contacts: list[asyncpg.Record]
    secret: str | None = None


class PartnerDelivery:
    def __init__(self, pool: Callable[[], asyncpg.Pool], webhooks: WebhookService) -> None:
        self._pool = pool
        self._webhooks = webhooks

    async def get(self, community: str, partner_id: uuid.UUID) -> Current:
        async with self._pool().acquire() as conn:
            return await self._current(conn, community, partner_id)

    async def _current(self, conn: Conn, community: str, partner_id: uuid.UUID) -> Current:
        endpoint = await webhooks_store.partner_subscription(conn, community, partner_id)
        contacts = await messages_store.partner_recipients(conn, community, partner_id)
        return Current(endpoint, contacts)

    async def put(self, community: str, partner_id: uuid.UUID, wanted: Preferences) -> Current:
        """Replace the preferences. The same URL without a new secret keeps the endpoint
        (its secret and queue); another URL or a new secret makes a new endpoint."""
        secret: str | None = None
        if wanted.webhook_url is not None:
            if wanted.webhook_secret is not None:
                secret = self._webhooks.given_or_new(wanted.webhook_secret)
            await self._webhooks.check_url(wanted.webhook_url)
        async with self._pool().acquire() as conn, conn.transaction():
            old = await webhooks_store.partner_subscription(conn, community, partner_id)
            keep = (
                old is not None
                and wanted.webhook_url == old["url"]
                and wanted.webhook_secret is None
            )
            if not keep:
                await webhooks_store.delete_partner_subscription(conn, community, partner_id)
                if wanted.webhook_url is not None:
                    secret = secret or self._webhooks.given_or_new(None)
                    await webhooks_store.insert_partner_subscription(
                        conn,
                        owner=partner_owner(partner_id),
                        partner_id=partner_id,
                        community=community,
                        url=wanted.webhook_url,
                        secret_sealed=self._webhooks.seal(secret),
                    )
            await messages_store.replace_partner_recipients(
                conn, community, partner_id, wanted.contacts
            )
            current = await self._current(conn, community, partner_id)
        return Current(current.endpoint, current.contacts, secret)

    async def delete(self, community: str, partner_id: uuid.UUID) -> None:
        async with self._pool().acquire() as conn, conn.transaction():
            await webhooks_store.delete_partner_subscription(conn, community, partner_id)
            await messages_store.replace_partner_recipients(conn, community, partner_id, [])
