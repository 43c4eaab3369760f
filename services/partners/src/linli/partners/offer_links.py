"""Use cases of signed offer links (ADR 0043): what a link shows, and its one use.

A link (servicekit `offerlinks`) names an offer and an action; whoever holds it may do
that action once, before the offer expires, with no credential. Answering goes through
`service.answer_offer`, the same use case as the party's own `/v1/me/offers/.../accept`,
as the party the offer was made to: `partner.accepted` (or a decline) is emitted exactly
as there, and an answer at or after the offer's expiry is refused the same way. The
link's one use is recorded in the same transaction (`offer_link_uses`): when the answer
is refused nothing is recorded, and a second use of any link of the offer is refused.
"""

from __future__ import annotations

import asyncpg

from linli.contracts.events import PartyKind, PartyRef
from linli.servicekit.db import Conn
from linli.servicekit.offerlinks import LinkAction, OfferLink

from . import service, store
from .service import Clock


class LinkUsed(Exception):
    """A link of this offer was used already (410)."""


class OfferNotYetKnown(Exception):
    """The link is genuine but the offer has not reached partners yet (503, retry)."""


async def view(conn: Conn, link: OfferLink) -> asyncpg.Record:
    offer = await store.offer_by_id(conn, link.offer_id)
    if offer is None:
        raise OfferNotYetKnown
    return offer


async def answer(conn: Conn, link: OfferLink, *, clock: Clock) -> asyncpg.Record:
    """Accept or decline the link's offer as the party it was made to, once."""
    if link.action is LinkAction.VIEW:
        raise ValueError("a view link answers nothing")
    async with conn.transaction():
        offer = await store.offer_by_id(conn, link.offer_id)
        if offer is None:
            raise OfferNotYetKnown
        if not await store.use_offer_link(conn, link.offer_id, link.action.value, clock.now()):
            raise LinkUsed
        party = PartyRef(kind=PartyKind(offer["party_kind"]), id=offer["party_id"])
        # Raises Conflict (answered already, expired) or NotFound: the use rolls back too.
        await service.answer_offer(
            conn,
            party,
            [offer["community"]],
            link.offer_id,
            accept=link.action is LinkAction.ACCEPT,
            clock=clock,
        )
    answered = await store.offer_by_id(conn, link.offer_id)
    assert answered is not None
    return answered
