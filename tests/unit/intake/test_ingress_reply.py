"""need.submit's reply is the documented `NeedSubmitReply` (ADR 0048), byte for byte as before."""

from __future__ import annotations

import uuid

import orjson
import pytest

from linli.contracts.needs import NeedSubmitAccepted, NeedSubmitRejected, NeedSubmitReply
from linli.contracts.types import Reason
from linli.intake.ingress import Outcome

pytestmark = pytest.mark.unit


def test_an_accepted_reply_is_a_need_submit_reply() -> None:
    need_id = str(uuid.uuid4())
    body = Outcome(True, need_id, duplicate=True).reply()
    assert orjson.loads(body) == {"status": "accepted", "need_id": need_id, "duplicate": True}
    reply = NeedSubmitReply.model_validate_json(body).root
    assert isinstance(reply, NeedSubmitAccepted)
    assert str(reply.need_id) == need_id


def test_a_rejected_reply_is_a_need_submit_reply() -> None:
    letter = str(uuid.uuid4())
    reason = Reason(field="data.window", message="window is in the past", code="past")
    body = Outcome(False, reasons=(reason,), dead_letter_id=letter).reply()
    assert orjson.loads(body) == {
        "status": "rejected",
        "reasons": [{"field": "data.window", "message": "window is in the past", "code": "past"}],
        "dead_letter_id": letter,
    }
    reply = NeedSubmitReply.model_validate_json(body).root
    assert isinstance(reply, NeedSubmitRejected)
    assert reply.reasons == [reason]
