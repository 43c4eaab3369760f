"""NATS-level ingress security: a community's system submits only for itself.

RELIABILITY.md row 11 and DESIGN.md section 7: each NATS user is allowed only the
subjects it needs. A private nats-server runs the permissions `linli.devstack.natsconf`
renders; the broker itself refuses community A's publishes on community B's ingress
subjects, so intake never sees them (intake is not needed for this proof).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from harness.names import Names
from harness.natsclient import Client, connect_as
from nats.aio.msg import Msg

from linli.contracts.subjects import ingress_subject
from linli.devstack.natsconf import NatsUser, admin_user, community_system_user, render_config
from linli.devstack.servers import NatsServer
from linli.devstack.stack import inbox_prefix

pytestmark = pytest.mark.integration

DENIED_WAIT = 0.5  # how long a refused request waits for a reply that cannot come


@contextlib.asynccontextmanager
async def connect(server: NatsServer, user: NatsUser, **options: Any) -> AsyncIterator[Client]:
    assert isinstance(user.password, str)
    async with connect_as(server.url, user.name, user.password, **options) as client:
        yield client


def submit_subject(community: str) -> str:
    return ingress_subject(community, "need", "submit", 1)


async def test_community_system_user_cannot_submit_for_another_community(
    nats_server_factory: Callable[..., NatsServer], names: Names
) -> None:
    a, b = names.community("a"), names.community("b")
    users = {
        "a": community_system_user(a, "a-pw", inbox_prefix=f"_INBOX.{a}"),
        "b": community_system_user(b, "b-pw", inbox_prefix=f"_INBOX.{b}"),
        "admin": admin_user("admin-pw"),
    }
    server = nats_server_factory(config=render_config(users=list(users.values())))
    stream = names.stream("ingress")

    async with (
        connect(server, users["admin"]) as admin,
        connect(server, users["a"], inbox_prefix=f"_INBOX.{a}") as system_a,
    ):
        js_admin = admin.nc.jetstream()
        # Like intake's ingress stream: it keeps commands but does not answer them.
        await js_admin.add_stream(name=stream, subjects=["linli.ingress.>"], no_ack=True)
        received: list[Msg] = []

        async def respond(msg: Msg) -> None:
            # Stands in for intake's request handler: everything that arrives is answered.
            received.append(msg)
            await msg.respond(b'{"status":"accepted"}')

        await admin.nc.subscribe("linli.ingress.>", cb=respond)
        await admin.nc.flush()

        # Its own community: a request and a fire-and-forget publish both go through.
        reply = await system_a.nc.request(submit_subject(a), b"own", timeout=2)
        assert reply.data == b'{"status":"accepted"}'
        await system_a.nc.publish(submit_subject(a), b"own-fire-and-forget")

        # Another community: the broker refuses the publish and says so.
        forged = submit_subject(b)
        await system_a.nc.publish(forged, b"forged")
        await system_a.nc.flush()
        assert await system_a.violations(forged), system_a.errors
        with pytest.raises(nats.errors.TimeoutError):
            await system_a.nc.request(forged, b"forged-request", timeout=DENIED_WAIT)
        # Nor may it forge events, reach the JetStream API or read B's commands.
        events = f"linli.events.{b}.need.submitted.v1"
        await system_a.nc.publish(events, b"forged-event")
        await system_a.nc.subscribe(f"linli.ingress.{b}.>")
        await system_a.nc.flush()
        assert await system_a.violations(events)
        assert await system_a.violations(f"linli.ingress.{b}.>")
        with pytest.raises(nats.errors.TimeoutError):
            await system_a.nc.jetstream(timeout=DENIED_WAIT).stream_info(stream)

        # The connection survives the violations and still works for its own subjects.
        assert system_a.nc.is_connected
        reply = await system_a.nc.request(submit_subject(a), b"own-again", timeout=2)
        assert reply.data == b'{"status":"accepted"}'

        await admin.nc.flush()
        await asyncio.sleep(0.1)
        assert {m.subject for m in received} == {submit_subject(a)}
        assert sorted(m.data for m in received) == [b"own", b"own-again", b"own-fire-and-forget"]
        info = await js_admin.stream_info(stream)
        assert info.state.messages == 3
        stored = [await js_admin.get_msg(stream, seq) for seq in range(1, 4)]
        assert {m.subject for m in stored} == {submit_subject(a)}
        assert b"forged" not in b"".join(m.data or b"" for m in stored)

        # B's own user, for contrast, can submit for B.
        async with connect(server, users["b"], inbox_prefix=f"_INBOX.{b}") as system_b:
            reply = await system_b.nc.request(submit_subject(b), b"b-own", timeout=2)
            assert reply.data == b'{"status":"accepted"}'
            assert not system_b.errors


async def replies_seen_by_a(
    server: NatsServer, a: NatsUser, b: NatsUser, admin: NatsUser, *, prefixes: dict[str, str]
) -> tuple[list[bytes], list[str]]:
    """B asks its own ingress subject; what does A, listening on every inbox, get?"""
    b_slug = b.name.removeprefix("community-")
    async with (
        connect(server, admin) as responder,
        connect(server, a, **({"inbox_prefix": prefixes["a"]} if prefixes else {})) as system_a,
        connect(server, b, **({"inbox_prefix": prefixes["b"]} if prefixes else {})) as system_b,
    ):

        async def respond(msg: Msg) -> None:
            await msg.respond(b'{"status":"accepted","need_id":"b-secret-need"}')

        await responder.nc.subscribe("linli.ingress.>", cb=respond)
        await responder.nc.flush()
        snooped = await system_a.nc.subscribe("_INBOX.>")
        await system_a.nc.flush()
        reply = await system_b.nc.request(submit_subject(b_slug), b"b-command", timeout=2)
        assert b"b-secret-need" in reply.data
        seen: list[bytes] = []
        with contextlib.suppress(nats.errors.TimeoutError):
            while True:
                seen.append((await snooped.next_msg(timeout=0.3)).data)
        return seen, [str(e) for e in system_a.errors]


async def test_per_community_inbox_prefix_keeps_replies_private(
    nats_server_factory: Callable[..., NatsServer], names: Names
) -> None:
    a, b = names.community("a"), names.community("b")
    prefixes = {"a": f"_INBOX.{a}", "b": f"_INBOX.{b}"}
    users = [
        community_system_user(a, "a-pw", inbox_prefix=prefixes["a"]),
        community_system_user(b, "b-pw", inbox_prefix=prefixes["b"]),
        admin_user("admin-pw"),
    ]
    server = nats_server_factory(config=render_config(users=users))
    seen, errors = await replies_seen_by_a(server, *users, prefixes=prefixes)
    assert seen == []
    assert any("permissions violation" in e.lower() and "_inbox.>" in e.lower() for e in errors)


async def test_devstack_community_users_cannot_read_each_others_replies(
    nats_server_factory: Callable[..., NatsServer], names: Names
) -> None:
    a, b = names.community("a"), names.community("b")
    # As linli.devstack.stack renders them: one reply prefix per community.
    users = [
        community_system_user(a, "a-pw", inbox_prefix=inbox_prefix(a)),
        community_system_user(b, "b-pw", inbox_prefix=inbox_prefix(b)),
        admin_user("admin-pw"),
    ]
    server = nats_server_factory(config=render_config(users=users))
    seen, _ = await replies_seen_by_a(
        server, *users, prefixes={"a": inbox_prefix(a), "b": inbox_prefix(b)}
    )
    assert seen == []
