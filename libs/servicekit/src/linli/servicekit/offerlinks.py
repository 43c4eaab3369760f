"""Signed, expiring links that answer one offer without a credential (ADR 0043).

Notifications puts them in what it pushes to a partner (webhook, SMS, e-mail); partners
checks them on its public routes (`/public/v1/offers/{token}`). Both hold the same key,
`LINLI_OFFER_LINK_KEY` (`OfferLinkSettings`). A token is

    base64url(version | offer id (16 bytes) | action (1 byte) | expiry (8 bytes))
    "." base64url(HMAC-SHA256(key, domain | that payload)[:16])

so it names the offer (the assignment id), the action (`view`, `accept` or `decline`)
and when it stops working, and nobody without the key can make or alter one. It carries
no personal data. One use is the partner's business: partners records the first answer
through any link of an offer and refuses the rest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Self

from pydantic import Field, SecretStr, model_validator

from .settings import Environment, ServiceSettings

__all__ = [
    "DEVELOPMENT_KEY",
    "InvalidLink",
    "LinkAction",
    "OfferLink",
    "OfferLinkSettings",
    "OfferLinks",
]

DEVELOPMENT_KEY = "linli-development-offer-link-key-not-secret"
"""The placeholder key of development and tests; production refuses it."""

MIN_KEY_CHARS = 32
_VERSION = 1
_DOMAIN = b"linli-offer-link\x00"
_PAYLOAD = struct.Struct(">B16sBq")
_MAC_BYTES = 16


class LinkAction(StrEnum):
    """What following a link does."""

    VIEW = "view"
    ACCEPT = "accept"
    DECLINE = "decline"


_ACTION_CODES = {LinkAction.VIEW: 0, LinkAction.ACCEPT: 1, LinkAction.DECLINE: 2}
_ACTIONS = {code: action for action, code in _ACTION_CODES.items()}


class InvalidLink(Exception):
    """A token that is forged, altered, malformed or expired. Deliberately one error:
    the public routes answer all of them alike."""


@dataclass(frozen=True)
class OfferLink:
    """What a valid token says."""

    offer_id: uuid.UUID
    action: LinkAction
    expires_at: datetime


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


class OfferLinks:
    """Signs and checks offer links with one key."""

    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"the offer link key needs at least {MIN_KEY_CHARS} characters")
        self._key = key.encode()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _DOMAIN + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, offer_id: uuid.UUID, action: LinkAction, expires_at: datetime) -> str:
        """A token for one action on one offer, valid until `expires_at` (whole seconds)."""
        expiry = int(expires_at.timestamp())
        payload = _PAYLOAD.pack(_VERSION, offer_id.bytes, _ACTION_CODES[action], expiry)
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def check(self, token: str, now: datetime) -> OfferLink:
        """What a token says, or `InvalidLink` when it is not ours, altered or expired."""
        if len(token) > 128 or token.count(".") != 1:
            raise InvalidLink
        head, _, tail = token.partition(".")
        try:
            payload, mac = _unb64(head), _unb64(tail)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise InvalidLink from None
        if len(payload) != _PAYLOAD.size or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidLink
        version, raw_id, code, expiry = _PAYLOAD.unpack(payload)
        if version != _VERSION or code not in _ACTIONS:
            raise InvalidLink
        expires_at = datetime.fromtimestamp(expiry, UTC)
        if now >= expires_at:
            raise InvalidLink
        return OfferLink(uuid.UUID(bytes=raw_id), _ACTIONS[code], expires_at)


class OfferLinkSettings(ServiceSettings):
    """The shared key of offer links, for the services that sign (notifications) or check
    (partners) them."""

    offer_link_key: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_KEY),
        description="HMAC key of the signed offer links (LINLI_OFFER_LINK_KEY), the same in "
        "partners and notifications; at least 32 characters. The default is a development "
        "placeholder that production refuses.",
    )

    @model_validator(mode="after")
    def _check_offer_link_key(self) -> Self:
        key = self.offer_link_key.get_secret_value()
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"offer_link_key needs at least {MIN_KEY_CHARS} characters")
        if self.environment is Environment.PRODUCTION and key == DEVELOPMENT_KEY:
            raise ValueError("production requires LINLI_OFFER_LINK_KEY (not the placeholder)")
        return self

    def offer_links(self) -> OfferLinks:
        return OfferLinks(self.offer_link_key.get_secret_value())
