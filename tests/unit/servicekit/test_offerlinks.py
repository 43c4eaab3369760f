"""servicekit's signed offer links (ADR 0043): what a token says, and every way a token
that is not ours, altered or expired is refused alike."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from linli.servicekit.offerlinks import (
    DEVELOPMENT_KEY,
    InvalidLink,
    LinkAction,
    OfferLinks,
    OfferLinkSettings,
)

KEY = "k" * 40
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=30)


def test_a_token_says_offer_action_and_expiry() -> None:
    links = OfferLinks(KEY)
    offer = uuid.uuid4()
    for action in LinkAction:
        token = links.sign(offer, action, LATER)
        link = links.check(token, NOW)
        assert (link.offer_id, link.action, link.expires_at) == (offer, action, LATER)
        assert len(token) < 64  # short enough for an SMS
        assert token.isascii()
        assert "/" not in token
        assert "+" not in token


def test_accept_and_decline_tokens_differ() -> None:
    links = OfferLinks(KEY)
    offer = uuid.uuid4()
    assert links.sign(offer, LinkAction.ACCEPT, LATER) != links.sign(
        offer, LinkAction.DECLINE, LATER
    )


def test_expired_token_is_refused() -> None:
    links = OfferLinks(KEY)
    token = links.sign(uuid.uuid4(), LinkAction.ACCEPT, LATER)
    with pytest.raises(InvalidLink):
        links.check(token, LATER)
    with pytest.raises(InvalidLink):
        links.check(token, LATER + timedelta(seconds=1))


def test_another_key_is_refused() -> None:
    token = OfferLinks("x" * 40).sign(uuid.uuid4(), LinkAction.ACCEPT, LATER)
    with pytest.raises(InvalidLink):
        OfferLinks(KEY).check(token, NOW)


def test_every_altered_byte_is_refused() -> None:
    links = OfferLinks(KEY)
    token = links.sign(uuid.uuid4(), LinkAction.DECLINE, LATER)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, char in enumerate(token):
        if char == ".":
            continue
        other = alphabet[(alphabet.index(char) + 1) % len(alphabet)]
        tampered = token[:i] + other + token[i + 1 :]
        try:
            link = links.check(tampered, NOW)
        except InvalidLink:
            continue
        # A change only in the unused low bits of the last base64 character decodes to
        # the same bytes: the same link, not a different one.
        assert link == links.check(token, NOW)


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "a.b.c", "!!!!.????", "A" * 200, "AAAA.AAAA", "é.é", "AQ.AQ"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidLink):
        OfferLinks(KEY).check(token, NOW)


def test_a_changed_action_or_expiry_is_refused() -> None:
    """Re-encoding the payload with another action keeps the old MAC: refused."""
    import base64

    links = OfferLinks(KEY)
    token = links.sign(uuid.uuid4(), LinkAction.DECLINE, LATER)
    head, mac = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    raw[17] = 1  # accept
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode() + "." + mac
    with pytest.raises(InvalidLink):
        links.check(forged, NOW)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 characters"):
        OfferLinks("short")


def test_production_refuses_the_placeholder_key() -> None:
    assert OfferLinkSettings(environment="development").offer_link_key.get_secret_value() == (
        DEVELOPMENT_KEY
    )
    with pytest.raises(ValidationError, match="LINLI_OFFER_LINK_KEY"):
        OfferLinkSettings(
            environment="production",
            nats_user="u",
            nats_password="p",
            database_url="postgresql://x@db/linli",
            stream_replicas=3,
        )
    with pytest.raises(ValidationError, match="32 characters"):
        OfferLinkSettings(offer_link_key="too-short")
    ok = OfferLinkSettings(
        environment="production",
        nats_user="u",
        nats_password="p",
        database_url="postgresql://x@db/linli",
        stream_replicas=3,
        offer_link_key="p" * 48,
    )
    assert ok.offer_links().check(ok.offer_links().sign(uuid.uuid4(), LinkAction.VIEW, LATER), NOW)
