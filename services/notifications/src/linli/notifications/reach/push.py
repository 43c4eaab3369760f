"""What is pushed to whom: pure functions from an event to a partner's webhook body and
to message intents, plus the partner push the webhooks consumer runs.

* `assignment.offered` to a partner: its webhook gets the event as on the stream with
  three CloudEvents extension attributes, `offerviewurl`, `offeraccepturl` and
  `offerdeclineurl` (signed, expiring at the offer's expiry, one use; no credential);
  its duty contacts get an SMS/e-mail (`partner_offer`) with the accept and decline
  pages. An emergency goes at once, inside quiet hours too.
* `assignment.reminder_due`: the partner's webhook gets the event as is and its duty
  contacts a `reminder`; a volunteer's recipients get a `reminder`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from linli.contracts.events import AssignmentOffered, AssignmentReminderDue, PartyKind
from linli.contracts.types import Urgency
from linli.notifications.messages.plan import Audience, Intent, local_hm
from linli.notifications.webhooks import store as webhooks_store
from linli.servicekit.db import Conn
from linli.servicekit.offerlinks import LinkAction, OfferLinks

OFFERED = "linli.assignment.offered.v1"
REMINDER_DUE = "linli.assignment.reminder_due.v1"


@dataclass(frozen=True)
class LinkMaker:
    """Signed links to partners' public offer routes."""

    links: OfferLinks
    base_url: str

    def urls(self, offer_id: uuid.UUID, expires_at: datetime) -> dict[str, str]:
        base = f"{self.base_url.rstrip('/')}/public/v1/offers"
        accept = self.links.sign(offer_id, LinkAction.ACCEPT, expires_at)
        decline = self.links.sign(offer_id, LinkAction.DECLINE, expires_at)
        return {
            "view": f"{base}/{accept}",
            "accept": f"{base}/{accept}/accept",
            "decline": f"{base}/{decline}/decline",
            "decline_page": f"{base}/{decline}",
        }


def _party(data: Any, field: str) -> tuple[str, uuid.UUID] | None:
    if not isinstance(data, dict) or not isinstance(data.get(field), dict):
        return None
    try:
        return str(data[field]["kind"]), uuid.UUID(str(data[field]["id"]))
    except (KeyError, ValueError):
        return None


def partner_body(
    ce_type: str, data: Any, body: bytes, maker: LinkMaker
) -> tuple[uuid.UUID, bytes] | None:
    """(partner, webhook body) when the event is pushed to a partner, else None."""
    if ce_type == OFFERED:
        party = _party(data, "offered_to")
    elif ce_type == REMINDER_DUE:
        party = _party(data, "assigned_to")
    else:
        return None
    if party is None or party[0] != PartyKind.PARTNER.value:
        return None
    if ce_type == REMINDER_DUE:
        return party[1], body
    try:
        event = json.loads(body)
        offer = AssignmentOffered.model_validate(data)
    except ValueError:
        return None
    urls = maker.urls(offer.assignment_id, offer.expires_at)
    event["offerviewurl"] = urls["view"]
    event["offeraccepturl"] = urls["accept"]
    event["offerdeclineurl"] = urls["decline"]
    return party[1], json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


async def push_to_partner(
    conn: Conn, fields: webhooks_store.DeliveryFields, data: Any, maker: LinkMaker
) -> int:
    """In the webhooks consumer's transaction: one delivery to the partner's endpoint."""
    event_id, ce_type, community, event_time, body = fields
    pushed = partner_body(ce_type, data, body, maker)
    if pushed is None:
        return 0
    partner_id, partner_payload = pushed
    return await webhooks_store.push_to_partner(
        conn, (event_id, ce_type, community, event_time, partner_payload), partner_id
    )


def intents(data: Any, tz: ZoneInfo, maker: LinkMaker | None) -> list[Intent]:
    """Messages to partners' duty contacts and volunteers' reminders (offers to partners
    only with a `maker` for their links)."""
    if isinstance(data, AssignmentOffered):
        if data.offered_to.kind is not PartyKind.PARTNER or maker is None:
            return []
        urls = maker.urls(data.assignment_id, data.expires_at)
        emergency = data.urgency is Urgency.EMERGENCY
        return [
            Intent(
                Audience.PARTNER,
                "partner_offer",
                {
                    "kind": data.kind.value,
                    "compound": data.compound or "",
                    "start": local_hm(data.window.earliest, tz),
                    "end": local_hm(data.window.latest, tz),
                    "expires": local_hm(data.expires_at, tz),
                    "urgent": "yes" if emergency else "",
                    "accept": urls["view"],
                    "decline": urls["decline_page"],
                },
                emergency=emergency,
                partner_id=data.offered_to.id,
            )
        ]
    if isinstance(data, AssignmentReminderDue):
        party = data.assigned_to
        volunteer = party.kind is PartyKind.VOLUNTEER
        return [
            Intent(
                Audience.VOLUNTEER if volunteer else Audience.PARTNER,
                "reminder",
                {
                    "kind": data.kind.value,
                    "compound": data.compound or "",
                    "start": local_hm(data.window.earliest, tz),
                    "end": local_hm(data.window.latest, tz),
                },
                emergency=data.urgency is Urgency.EMERGENCY,
                volunteer_id=party.id if volunteer else None,
                partner_id=None if volunteer else party.id,
            )
        ]
    return []
