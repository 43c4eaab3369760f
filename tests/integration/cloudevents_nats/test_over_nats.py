"""The cloudevents-nats library through a real nats-server: publish in each mode, receive,
decode; headers (non-ASCII, percent-encoded) and payloads arrive as they were sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
import pytest_asyncio
from harness.names import Names
from nats.aio.client import Client
from nats.aio.msg import Msg

from cloudevents_nats import Event, Message, Mode, content_mode, from_msg, to_binary, to_structured

pytestmark = pytest.mark.integration

ENCODERS = {"structured": to_structured, "binary": to_binary}


def _event(data: Any, datacontenttype: str, **extra: Any) -> Event:
    return Event(
        {
            "specversion": "1.0",
            "id": "evt-" + datacontenttype.replace("/", "-"),
            "source": "urn:city-hotline/东城",
            "type": "com.example.need.submitted.v1",
            "time": datetime(2025, 3, 14, 11, 0, 5, tzinfo=UTC),
            "subject": 'Euro € 😀 "42" 100%',
            "datacontenttype": datacontenttype,
            "community": "taian-zhiyuan",
            **extra,
        },
        data,
    )


EVENTS = [
    _event({"note": "少盐", "items": [1, 2.5, None]}, "application/json"),
    _event("第一行\nline two", "text/plain"),
    _event(bytes(range(256)), "application/octet-stream"),
]


@pytest_asyncio.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


def _expected(event: Event) -> dict[str, Any]:
    """The attributes a receiver reads: time as its RFC 3339 string either way."""
    return dict(event.attributes) | {"time": "2025-03-14T11:00:05Z"}


@pytest.mark.parametrize("mode", list(ENCODERS))
async def test_core_nats_carries_each_mode(nc: Client, names: Names, mode: str) -> None:
    subject = names.subject("ce", mode)
    received: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await nc.subscribe(subject, cb=received.put)
    try:
        for event in EVENTS:
            message: Message = ENCODERS[mode](event)
            await nc.publish(subject, message.body, headers=message.headers)
        for event in EVENTS:
            msg = await asyncio.wait_for(received.get(), timeout=10)
            assert content_mode(msg.headers) is Mode(mode)
            decoded = from_msg(msg)
            assert dict(decoded.attributes) == _expected(event)
            assert decoded.data == event.data
    finally:
        await sub.unsubscribe()


@pytest.mark.parametrize("mode", list(ENCODERS))
async def test_jetstream_keeps_each_mode_and_drops_duplicates(
    nc: Client, names: Names, mode: str
) -> None:
    js = nc.jetstream()
    stream = names.stream("ce_" + mode)
    subject = names.subject("js", mode)
    await js.add_stream(name=stream, subjects=[subject])
    try:
        event = EVENTS[0]
        message = ENCODERS[mode](event, with_msg_id=True)
        first = await js.publish(subject, message.body, headers=message.headers)
        again = await js.publish(subject, message.body, headers=message.headers)
        assert again.duplicate
        assert again.seq == first.seq

        sub = await js.pull_subscribe(subject, durable=names.durable("ce_" + mode))
        [msg] = await sub.fetch(1, timeout=10)
        await msg.ack()
        decoded = from_msg(msg)
        assert dict(decoded.attributes) == _expected(event)
        assert decoded.data == event.data
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == event["id"]
    finally:
        await js.delete_stream(stream)
