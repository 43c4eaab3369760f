"""Messages to people: families, operators and volunteers told in words they understand.

Wiring (in the notifications composition root, after `create_http_app`)::

    from linli.notifications import people
    people.register(runtime, settings, app)

`register(runtime, settings, app, *, providers=None, people_settings=None)`:

* includes the recipients API (`/v1/communities/{community}/recipients`) into `app`;
* subscribes the durable consumer `notifications-people` on the events stream;
* runs the sender as a runtime background task (unless LINLI_PEOPLE_RUN_SENDER=false).

Its tables come from migration `0002_people.sql` in `linli.notifications.migrations`,
which `service_migrations("linli.notifications", ...)` picks up with the others.
Settings (`PeopleSettings`, `LINLI_*`) are taken from `settings` when it has the
fields, else read from the environment.
"""

from __future__ import annotations

from fastapi import FastAPI

from linli.servicekit.consume import EventConsumer
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

    def __init__(self, settings: PeopleSettings, sender: Sender, consumer: EventConsumer) -> None:
        self.settings = settings
        self.sender = sender
        self.consumer = consumer


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

    events = runtime.consume(consumer.subscriptions(tz, on_commit=sender.wake.set))
    if people.people_run_sender:
        runtime.background("notifications-people-sender", sender.run)
    app.include_router(api.router)
    result = People(people, sender, events)
    app.state.people = result
    return result
