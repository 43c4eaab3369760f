"""The services' narrowed NATS users, on a real nats-server, with servicekit's own calls.

`natsconf.service_user` grants no `$JS.API.>`: only the JetStream API subjects of a
service's own durables. Each test runs what servicekit does (provision, create a durable,
bind, pull, ack, keep a dead letter after MAX_DELIVERIES, read ordered for SSE, answer an
ingress request) under those permissions, and shows that the neighbouring rights (another
service's durable, another aggregate's events, stream administration) are refused by the
server. The whole stack under the same permissions is `tests/e2e/test_local_stack.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from harness.names import Names
from harness.natsclient import Client, connect_as
from nats.js import api

from linli.devstack.natsconf import (
    NatsUser,
    ServiceAccess,
    admin_user,
    community_system_user,
    kv_stream,
    linli_services,
    provisioner_user,
    render_config,
    service_user,
)
from linli.devstack.servers import NatsServer
from linli.servicekit.consume import DeadLetterCapture
from linli.servicekit.messaging import Deliveries, consumer_config, provision_streams
from linli.servicekit.revocations import RevocationWatcher, publish_revocation
from linli.servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration

DENIED_WAIT = 0.5  # a refused JetStream API request waits this long for a reply that never comes


@contextlib.asynccontextmanager
async def connect(server: NatsServer, user: NatsUser, **options: Any) -> AsyncIterator[Client]:
    assert isinstance(user.password, str)
    async with connect_as(server.url, user.name, user.password, **options) as client:
        yield client


def _settings(names: Names, **overrides: Any) -> ServiceSettings:
    return ServiceSettings(
        service_name="permissions",
        events_stream=names.stream("events"),
        ingress_stream=names.stream("ingress"),
        revocations_bucket=_bucket(names),
        **overrides,
    )


def _bucket(names: Names) -> str:
    return names.stream("revocations")


def _streams(names: Names) -> tuple[str, ...]:
    """Events, ingress, the advisories stream servicekit derives from the events one, and
    the revocations bucket's stream."""
    settings = _settings(names)
    return (
        settings.events_stream,
        settings.ingress_stream,
        settings.advisories_stream,
        kv_stream(_bucket(names)),
    )


def _services(names: Names) -> dict[str, ServiceAccess]:
    return {
        a.name: a
        for a in linli_services(names.stream("events"), names.stream("ingress"), _bucket(names))
    }


@pytest.fixture
def server(nats_server_factory: Callable[..., NatsServer], names: Names) -> NatsServer:
    users = [service_user(a, f"{a.name}-pw") for a in _services(names).values()]
    users += [
        provisioner_user("prov-pw", _streams(names)),
        admin_user("admin-pw"),
        community_system_user("taian", "taian-pw", inbox_prefix="_INBOX.taian"),
    ]
    return nats_server_factory(config=render_config(users=users))


def _user(names: Names, name: str) -> NatsUser:
    return service_user(_services(names)[name], f"{name}-pw")


async def _provision(server: NatsServer, names: Names) -> None:
    prov = provisioner_user("prov-pw", _streams(names))
    async with connect(server, prov) as client:
        await provision_streams(client.nc.jetstream(), _settings(names))
        # Twice: the second run converges (STREAM.UPDATE) instead of failing.
        await provision_streams(client.nc.jetstream(), _settings(names))
        assert client.all_violations() == []


async def test_streams_are_provisioned_by_the_provisioner_only(
    server: NatsServer, names: Names
) -> None:
    await _provision(server, names)
    async with connect(server, _user(names, "scheduling")) as scheduling:
        with pytest.raises(nats.errors.TimeoutError):
            await provision_streams(scheduling.nc.jetstream(timeout=DENIED_WAIT), _settings(names))
        assert await scheduling.violations(f"$JS.API.STREAM.CREATE.{names.stream('events')}")
        with pytest.raises(nats.errors.TimeoutError):
            await scheduling.nc.jetstream(timeout=DENIED_WAIT).delete_stream(names.stream("events"))
        assert await scheduling.violations("$JS.API.STREAM.DELETE")


async def test_a_service_consumes_its_own_durable_and_keeps_dead_letters(
    server: NatsServer, names: Names
) -> None:
    await _provision(server, names)
    stream = names.stream("events")
    settings = _settings(names, consumer_max_deliver=2, consumer_ack_wait_s=0.3)
    async with (
        connect(server, admin_user("admin-pw")) as admin,
        connect(server, _user(names, "scheduling")) as scheduling,
    ):
        js = scheduling.nc.jetstream(timeout=2)
        # What EventConsumer.start does: create or converge, then bind (servicekit.consume).
        config = consumer_config(
            settings, "scheduling", filter_subjects=["linli.events.*.need.submitted.v1"]
        )
        await js.add_consumer(stream, config=config)
        await js.add_consumer(stream, config=config)
        sub = await js.pull_subscribe_bind(durable="scheduling", stream=stream)
        # What DeadLetterCapture does: its own durable on the advisories stream.
        capture = DeadLetterCapture(
            stream=stream,
            durable="scheduling",
            settings=settings,
            pool=lambda: None,  # type: ignore[arg-type,return-value]
            deliveries=Deliveries(lambda: None, settings),  # type: ignore[arg-type,return-value]
        )
        await js.add_consumer(settings.advisories_stream, config=capture.config())
        advisories = await js.pull_subscribe_bind(
            durable="scheduling-dlq", stream=settings.advisories_stream
        )
        # The lag metrics read the consumer's info.
        assert (await js.consumer_info(stream, "scheduling")).config.durable_name == "scheduling"

        admin_js = admin.nc.jetstream()
        await admin_js.publish("linli.events.taian.need.submitted.v1", b'{"n":1}')
        await admin_js.publish("linli.events.taian.need.submitted.v1", b'{"n":2}')

        first = (await sub.fetch(1, timeout=2))[0]
        await first.ack_sync()
        # The second is never acked: after two deliveries the server gives up and says so.
        for _ in range(2):
            msgs = await sub.fetch(1, timeout=5)
            assert json.loads(msgs[0].data) == {"n": 2}
        # The server notices when it would deliver a third time, i.e. on the next pull.
        with contextlib.suppress(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1.5)
        # The advisory was kept by the advisories stream, whoever listened at the time.
        kept = (await advisories.fetch(1, timeout=5))[0]
        advisory = json.loads(kept.data)
        # The dead letter is fetched by sequence, as DeadLetterCapture does, then acked.
        stored = await js.get_msg(stream, int(advisory["stream_seq"]))
        assert json.loads(stored.data or b"") == {"n": 2}
        await kept.ack_sync()

        # Its own aggregates' events go out through the outbox relay's JetStream publish.
        ack = await js.publish("linli.events.taian.assignment.offered.v1", b"{}")
        assert ack.stream == stream
        assert scheduling.all_violations() == []

        # Neighbouring rights are refused: another aggregate, another service's durable.
        await scheduling.nc.publish("linli.events.taian.notification.sent.v1", b"{}")
        assert await scheduling.violations("linli.events.taian.notification.sent.v1")
        other = consumer_config(settings, "partners", filter_subjects=["linli.events.>"])
        with pytest.raises(nats.errors.TimeoutError):
            await scheduling.nc.jetstream(timeout=DENIED_WAIT).add_consumer(stream, config=other)
        assert await scheduling.violations(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.partners")
        await scheduling.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.partners", b"1")
        assert await scheduling.violations(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.partners")
        # Nor another service's dead letters.
        advisories_stream = settings.advisories_stream
        await scheduling.nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{advisories_stream}.partners-dlq", b"1"
        )
        assert await scheduling.violations(
            f"$JS.API.CONSUMER.MSG.NEXT.{advisories_stream}.partners-dlq"
        )
        await scheduling.nc.subscribe("linli.events.>")
        assert await scheduling.violations("linli.events.>")


async def test_notifications_reads_the_stream_ordered_for_sse(
    server: NatsServer, names: Names
) -> None:
    await _provision(server, names)
    stream = names.stream("events")
    async with (
        connect(server, admin_user("admin-pw")) as admin,
        connect(server, _user(names, "notifications")) as notifications,
        connect(server, _user(names, "partners")) as partners,
    ):
        for n in range(300):
            await admin.nc.jetstream().publish(
                "linli.events.taian.slot.published.v1", json.dumps({"n": n}).encode()
            )
        # What the SSE endpoint opens (webhooks/stream.py): an ephemeral ordered consumer
        # with flow control (its answers go to $JS.FC.<stream>.>).
        sub = await notifications.nc.jetstream().subscribe(
            "linli.events.taian.>",
            stream=stream,
            ordered_consumer=True,
            config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL),
            idle_heartbeat=5.0,
        )
        got = [json.loads((await sub.next_msg(timeout=5)).data)["n"] for _ in range(300)]
        assert got == list(range(300))
        await sub.unsubscribe()
        assert notifications.all_violations() == []
        # Partners has no business reading the stream that way.
        with pytest.raises(nats.errors.TimeoutError):
            await partners.nc.jetstream(timeout=DENIED_WAIT).subscribe(
                "linli.events.taian.>", stream=stream, ordered_consumer=True
            )
        assert await partners.violations(f"$JS.API.CONSUMER.CREATE.{stream}")


async def test_intake_answers_a_community_request_once(server: NatsServer, names: Names) -> None:
    async with (
        connect(server, _user(names, "intake")) as intake,
        connect(
            server, community_system_user("taian", "taian-pw"), inbox_prefix="_INBOX.taian"
        ) as system,
    ):
        answered: list[bool] = []

        async def respond(msg: Any) -> None:
            await msg.respond(b'{"status":"accepted"}')
            # A second answer to the same request is refused (allow_responses max 1).
            await intake.nc.publish(msg.reply, b'{"status":"forged"}')
            answered.append(True)

        await intake.nc.subscribe("linli.ingress.>", queue="intake", cb=respond)
        await intake.nc.flush()
        reply = await system.nc.request("linli.ingress.taian.need.submit.v1", b"{}", timeout=2)
        assert reply.data == b'{"status":"accepted"}'
        assert answered == [True]
        assert await intake.violations("_INBOX.taian")
        # Intake may not write to anyone's inbox unasked.
        await intake.nc.publish("_INBOX.taian.unasked", b"{}")
        assert len(await intake.violations("_INBOX.taian.unasked")) == 1


async def test_every_service_watches_and_puts_revocations_and_nothing_more(
    server: NatsServer, names: Names
) -> None:
    """What `credentials revoke` and the RevocationWatcher do (ADR 0030), as each service."""
    await _provision(server, names)
    bucket = _bucket(names)
    digest = bytes(range(32))
    for name in ("intake", "partners", "scheduling", "notifications"):
        async with connect(server, _user(names, name)) as client:
            js = client.nc.jetstream(timeout=2)
            # Put (the CLI), then watch: stream info, an ordered consumer, its flow control.
            await publish_revocation(js, bucket, digest)
            watcher = RevocationWatcher(
                _settings(names), lambda js=js: js, _no_pool, lambda c=client: c.nc
            )
            watcher.hooks.clear()
            watcher._apply = _remember(watcher)  # type: ignore[method-assign]
            task = asyncio.create_task(watcher.run())
            try:
                await asyncio.wait_for(watcher.loaded.wait(), 5)
                assert watcher.is_revoked(digest)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert client.all_violations() == [], name
            # Neighbouring rights: no purge or delete of a key, no bucket administration.
            kv = kv_stream(bucket)
            with pytest.raises(nats.errors.TimeoutError):
                await client.nc.jetstream(timeout=DENIED_WAIT).purge_stream(kv)
            assert await client.violations(f"$JS.API.STREAM.PURGE.{kv}")
            with pytest.raises(nats.errors.TimeoutError):
                await client.nc.jetstream(timeout=DENIED_WAIT).delete_stream(kv)
            assert await client.violations(f"$JS.API.STREAM.DELETE.{kv}")
            await client.nc.publish(f"$KV.{bucket}.a.b", b"x")
            assert await client.violations(f"$KV.{bucket}.a.b")


def _no_pool() -> Any:
    raise AssertionError("no database in this test")


def _remember(watcher: RevocationWatcher) -> Callable[[list[bytes]], Any]:
    async def apply(digests: list[bytes]) -> None:
        watcher.revoked.update(digests)

    return apply
