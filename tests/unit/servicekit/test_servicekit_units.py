"""Rules of the shared kit that need no server."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from nats.js import api
from pydantic import ValidationError

from linli.contracts.types import Role
from linli.servicekit.auth import READ_ONLY_ROLES, Principal, scope_problem
from linli.servicekit.http import BodyLimitMiddleware
from linli.servicekit.messaging import Deliveries, consumer_config, stream_configs
from linli.servicekit.settings import ServiceSettings

pytestmark = pytest.mark.unit


def settings(**kw: Any) -> ServiceSettings:
    return ServiceSettings(service_name="kit", **kw)


def test_schema_defaults_to_service_name_and_must_be_an_identifier() -> None:
    assert settings().db_schema == "kit"
    with pytest.raises(ValidationError):
        settings(db_schema="kit; DROP TABLE x")


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"nats_user": "u", "nats_password": "p"},
        {"nats_user": "u", "nats_password": "p", "stream_replicas": 3, "failpoint": "x"},
    ],
    ids=["no-nats-auth", "one-replica", "failpoint"],
)
def test_production_refuses_development_conveniences(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings(environment="production", **overrides)


def test_production_with_auth_and_replicas_is_accepted() -> None:
    s = settings(
        environment="production",
        nats_user="u",
        nats_password="p",
        stream_replicas=3,
        database_url="postgresql://intake:secret@db:5432/linli",
    )
    assert s.environment.value == "production"


def test_stream_scope_covers_all_or_listed_communities() -> None:
    everything = {c.name: c for c in stream_configs(settings())}
    assert everything["LINLI_EVENTS"].subjects == ["linli.events.>"]
    assert everything["LINLI_INGRESS"].subjects == ["linli.ingress.>"]
    # The ingress stream must stay silent so that intake's reply is the answer.
    assert everything["LINLI_INGRESS"].no_ack is True
    assert everything["LINLI_EVENTS"].storage == api.StorageType.FILE
    # MAX_DELIVERIES advisories of both streams' durables are kept until captured.
    assert everything["LINLI_EVENTS_ADVISORIES"].subjects == [
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LINLI_EVENTS.>",
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LINLI_INGRESS.>",
    ]
    scoped = {c.name: c for c in stream_configs(settings(stream_communities="a-1, b-2"))}
    assert scoped["LINLI_EVENTS"].subjects == ["linli.events.a-1.>", "linli.events.b-2.>"]
    with pytest.raises(ValidationError):
        settings(stream_communities="Not A Slug")


def test_consumers_are_bounded_with_backoff() -> None:
    config = consumer_config(settings(consumer_max_deliver=5, consumer_ack_wait_s=10), "d")
    assert config.ack_policy == api.AckPolicy.EXPLICIT
    assert config.max_deliver == 5
    assert config.backoff == [10, 20, 40, 80]
    assert config.max_ack_pending == 1000


def test_retry_delay_grows_and_is_capped() -> None:
    deliveries = Deliveries(lambda: None, settings(retry_base_delay_s=0.5, retry_max_delay_s=4))  # type: ignore[arg-type,return-value]
    assert [deliveries.retry_delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def _echo_app(limit: int) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app.add_middleware(BodyLimitMiddleware, limit=limit)
    return app


async def test_body_limit_refuses_large_bodies_declared_or_streamed() -> None:
    transport = httpx.ASGITransport(app=_echo_app(1024))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/echo", content=b"x" * 1024)).json() == {"size": 1024}
        declared = await client.post("/echo", content=b"x" * 1025)
        assert declared.status_code == 413
        assert declared.json()["error"] == "payload_too_large"

        async def chunks():  # no Content-Length: counted as it arrives
            for _ in range(5):
                yield b"x" * 400

        streamed = await client.post("/echo", content=chunks())
        assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("role", "communities", "refused"),
    [
        (Role.STREET_OFFICE, ["*"], True),
        (Role.STREET_OFFICE, ["a", "*"], True),
        (Role.STREET_OFFICE, ["a", "b"], False),
        (Role.ADMIN, ["*"], False),
        (Role.OPERATOR, ["a"], False),
    ],
)
def test_a_street_office_credential_names_its_communities(
    role: Role, communities: list[str], refused: bool
) -> None:
    assert (scope_problem(role, communities) is not None) is refused


def test_only_a_street_office_is_kept_from_personal_data_and_read_only() -> None:
    def principal(role: Role) -> Principal:
        return Principal(uuid.uuid4(), role, frozenset({"a"}))

    assert not principal(Role.STREET_OFFICE).sees_personal_data
    assert set(READ_ONLY_ROLES) == {Role.STREET_OFFICE}
    for role in Role:
        if role is not Role.STREET_OFFICE:
            assert principal(role).sees_personal_data, role
