"""The seam to the resident's contact details and a repair's description, which only
intake holds.

Partners never stores or logs a resident's name, phone or address, nor what the
resident wrote about a repair. It asks intake at the moment an accepted party looks at
its assignment, and intake answers only when that party is the accepted assignee (and,
for the contact, the resident consented), else 404; intake records each answer
(ADR 0009, ADR 0031).
"""

from __future__ import annotations

import uuid
from typing import Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linli.contracts.events import PartyRef


class Contact(BaseModel):
    """How to reach the resident; personal data, never stored or logged by partners."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True, frozen=True)

    name: str = Field(max_length=100)
    phone: str = Field(max_length=32)
    address: str = Field(max_length=300)
    locale: str | None = Field(default=None, max_length=16, description="Resident's language.")

    def __repr__(self) -> str:
        # A stray log line or traceback must not carry the resident's details.
        return "Contact(<redacted>)"

    __str__ = __repr__


class ContactDirectoryUnavailable(Exception):
    """The directory could not answer now (network, timeout, 5xx); try again later."""


class ContactDirectory(Protocol):
    """Where the contact details of a need's resident come from."""

    async def contact_for(
        self, community: str, need_id: uuid.UUID, party: PartyRef
    ) -> Contact | None:
        """The resident's contact for `party`, or None when intake will not share it."""
        ...

    async def description_for(
        self, community: str, need_id: uuid.UUID, party: PartyRef
    ) -> str | None:
        """A repair's description for `party`, or None when intake will not show it."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class IntakeContactDirectory:
    """Asks intake over HTTP with partners' service token."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout_s: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            transport=transport,
            follow_redirects=False,
        )

    async def contact_for(
        self, community: str, need_id: uuid.UUID, party: PartyRef
    ) -> Contact | None:
        path = f"/v1/communities/{community}/needs/{need_id}/contact"
        response = await self._get(path, party)
        if response is None:
            return None
        try:
            return Contact.model_validate_json(response.content)
        except ValidationError:
            raise ContactDirectoryUnavailable("intake answered an unreadable contact") from None

    async def description_for(
        self, community: str, need_id: uuid.UUID, party: PartyRef
    ) -> str | None:
        path = f"/v1/communities/{community}/needs/{need_id}/description"
        response = await self._get(path, party)
        if response is None:
            return None
        try:
            return _Description.model_validate_json(response.content).description
        except ValidationError:
            raise ContactDirectoryUnavailable("intake answered an unreadable description") from None

    async def _get(self, path: str, party: PartyRef) -> httpx.Response | None:
        params = {"party_kind": party.kind.value, "party_id": str(party.id)}
        try:
            response = await self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ContactDirectoryUnavailable(type(exc).__name__) from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ContactDirectoryUnavailable(f"intake answered {response.status_code}")
        return response

    async def aclose(self) -> None:
        await self._client.aclose()


class _Description(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True, frozen=True)

    description: str = Field(max_length=2000)
