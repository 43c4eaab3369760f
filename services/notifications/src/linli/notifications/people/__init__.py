"""Messages to people: families, operators and volunteers told in words they understand.

Wiring (in the notifications composition root, after `create_http_app`)::

    from linli.notifications import people
    people.register(runtime, settings, app)

`register(runtime, settings, app, *, providers=None, people_settings=None)`:

* includes the recipients API (`/v1/communities/{community}/recipients`) into `app`;
* subscribes the durable consumer `notifications-people` (one per community subject
  when LINLI_STREAM_COMMUNITIES names several) on the events stream;
* runs the sender as a runtime background task (unless LINLI_PEOPLE_RUN_SENDER=false).

Its tables come from migration `0002_people.sql` in `linli.notifications.migrations`,
which `service_migrations("linli.notifications", ...)` picks up with the others.
Settings (`PeopleSettings`, `LINLI_*`) are taken from `settings` when it has the
fields, else read from the environment.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from faststream import AckPolicy
from faststream.nats import NatsMessage, PullSub

from linli.contracts.subjects import EVENTS_PREFIX
from linli.servicekit.messaging import consumer_config, jstream, stream_subjects
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import ServiceSettings

from . import api, consumer
from .consumer import CONSUMER
from .providers import (
    ConsoleProvider,
    FileSmsProvider,
    Message,
    PermanentError,
    Provider,
    SmtpProvider,
    build_providers,
)
from .schedule import zone
from .sender import Sender
from .settings import PeopleSettings, people_settings_from
from .templates import render

__all__ = [
    "CONSUMER",
    "ConsoleProvider",
    "FileSmsProvider",
    "Message",
    "People",
    "PeopleSettings",
    "PermanentError",
    "Provider",
    "SmtpProvider",
    "register",
    "render",
]


class People:
    """What `register` wired, for tests and for app.state."""

    def __init__(self, settings: PeopleSettings, sender: Sender, durables: list[str]) -> None:
        self.settings = settings
        self.sender = sender
        self.durables = durables


def register(
    runtime: ServiceRuntime,
    settings: ServiceSettings,
    app: FastAPI,
    *,
    providers: dict[str, Provider] | None = None,
    people_settings: PeopleSettings | None = None,
) -> People:
    """Wire messages to people into a notifications process (see the module doc)."""
    people = people_settings or people_settings_from(settings)
    sender = Sender(lambda: runtime.pool, providers or build_providers(people), people)
    tz = zone(people.people_timezone)
    subjects = stream_subjects(EVENTS_PREFIX, settings)
    durables = []
    for index, subject in enumerate(subjects):
        durable = CONSUMER if len(subjects) == 1 else f"{CONSUMER}-{index}"
        runtime.durable(settings.events_stream, durable)
        _subscribe(runtime, settings, subject, durable, sender, tz)
        durables.append(durable)
    if people.people_run_sender:
        runtime.background("notifications-people-sender", sender.run)
    app.include_router(api.router)
    result = People(people, sender, durables)
    app.state.people = result
    return result


def _subscribe(
    runtime: ServiceRuntime,
    settings: ServiceSettings,
    subject: str,
    durable: str,
    sender: Sender,
    tz: Any,
) -> None:
    @runtime.broker.subscriber(
        subject,
        stream=jstream(settings.events_stream),
        durable=durable,
        config=consumer_config(settings, durable, filter_subject=subject),
        pull_sub=PullSub(batch_size=settings.consumer_batch, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,
        title=f"notifications-people:{subject}",
        description="events that people are told about; one message per event and person",
    )
    async def on_event(msg: NatsMessage) -> None:
        raw = msg.raw_message
        if not consumer.consumes(raw.subject):
            await msg.ack()
            return

        async def work() -> None:
            added = await consumer.handle_message(
                runtime.pool,
                subject=raw.subject,
                payload=raw.data,
                headers=dict(raw.headers or {}),
                tz=tz,
            )
            if added:
                sender.wake.set()

        await runtime.deliveries.process(durable, msg, work)
