"""IntakeContactDirectory against a mock intake: the request it makes and how it reads
intake's answers."""

from __future__ import annotations

import uuid

import httpx
import pytest

from linli.contracts.events import PartyKind, PartyRef
from linli.partners.contacts import (
    Contact,
    ContactDirectoryUnavailable,
    IntakeContactDirectory,
)

pytestmark = pytest.mark.unit

NEED = uuid.uuid4()
PARTY = PartyRef(kind=PartyKind.VOLUNTEER, id=uuid.uuid4())
BODY = {"name": "王秀兰", "phone": "+8613800138001", "address": "致远小区 3号楼 401"}


def directory(handler) -> IntakeContactDirectory:
    return IntakeContactDirectory(
        "http://intake.test/", "lnl_secret", transport=httpx.MockTransport(handler)
    )


async def test_asks_intake_with_the_service_token_and_the_party() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={**BODY, "locale": "zh-CN", "extra": "ignored"})

    contacts = directory(handler)
    contact = await contacts.contact_for("taian-zhiyuan", NEED, PARTY)
    await contacts.aclose()
    assert contact == Contact(**BODY, locale="zh-CN")
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == f"/v1/communities/taian-zhiyuan/needs/{NEED}/contact"
    assert dict(request.url.params) == {"party_kind": "volunteer", "party_id": str(PARTY.id)}
    assert request.headers["Authorization"] == "Bearer lnl_secret"


async def test_404_means_not_shared() -> None:
    contacts = directory(lambda _r: httpx.Response(404, json={"error": "not_found"}))
    assert await contacts.contact_for("c", NEED, PARTY) is None


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503),
        httpx.Response(401),
        httpx.Response(302, headers={"Location": "http://elsewhere"}),
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json={"name": "x"}),
    ],
)
async def test_anything_else_is_unavailable(answer: httpx.Response) -> None:
    contacts = directory(lambda _r: answer)
    with pytest.raises(ContactDirectoryUnavailable):
        await contacts.contact_for("c", NEED, PARTY)


async def test_network_errors_are_unavailable_without_details() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ContactDirectoryUnavailable, match="ConnectError"):
        await directory(handler).contact_for("c", NEED, PARTY)


def test_a_contact_does_not_print_itself() -> None:
    contact = Contact(**BODY)
    assert "王秀兰" not in repr(contact)
    assert "13800138001" not in f"{contact}"


async def test_a_repair_description_comes_from_intake_for_the_party() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"need_id": str(NEED), "description": "水管爆裂"})

    contacts = directory(handler)
    assert await contacts.description_for("taian-zhiyuan", NEED, PARTY) == "水管爆裂"
    (request,) = seen
    assert request.url.path == f"/v1/communities/taian-zhiyuan/needs/{NEED}/description"
    assert dict(request.url.params) == {"party_kind": "volunteer", "party_id": str(PARTY.id)}
    assert request.headers["Authorization"] == "Bearer lnl_secret"
    not_shown = directory(lambda _r: httpx.Response(404, json={"error": "not_found"}))
    assert await not_shown.description_for("c", NEED, PARTY) is None
    with pytest.raises(ContactDirectoryUnavailable):
        await directory(lambda _r: httpx.Response(503)).description_for("c", NEED, PARTY)
    with pytest.raises(ContactDirectoryUnavailable):
        await directory(lambda _r: httpx.Response(200, json={})).description_for("c", NEED, PARTY)
