"""Rendered nats-server configs are valid and give least privilege."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from linli.devstack.natsconf import (
    EnvRef,
    NatsUser,
    ServiceAccess,
    admin_user,
    community_system_user,
    linli_services,
    provisioner_user,
    render_config,
    service_user,
    subject_matches,
)
from linli.devstack.servers import find_nats_server

pytestmark = pytest.mark.unit


def _users() -> list[NatsUser]:
    return [
        service_user(ServiceAccess("intake", ("need", "case")), 'pa$$"word\\'),
        community_system_user("taian", "$2a$11$notreallybcrypt"),
        community_system_user("other-town", "pw2"),
        admin_user("admin-pw"),
    ]


def test_rendered_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(
        render_config(users=_users(), jetstream_dir=str(tmp_path / "js"), sync_always=True)
    )
    result = subprocess.run(
        [find_nats_server(), "-c", str(conf), "-t"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dollar_subjects_and_passwords_are_quoted() -> None:
    text = render_config(users=[*_users()[1:], *_services()])
    assert '"$JS.API.CONSUMER.MSG.NEXT.LINLI_EVENTS.scheduling"' in text
    assert '"$2a$11$notreallybcrypt"' in text
    assert "sync_interval" not in text


def test_community_user_is_confined_to_its_own_ingress() -> None:
    taian = community_system_user("taian", "pw")
    assert taian.can_publish("linli.ingress.taian.need.submitted")
    assert not taian.can_publish("linli.ingress.other-town.need.submitted")
    assert not taian.can_publish("linli.events.taian.need.created")
    assert not taian.can_subscribe("linli.ingress.taian.need.submitted")
    assert all("other-town" not in p for p in taian.publish + taian.subscribe)
    assert taian.can_subscribe("_INBOX.abc.1")


def _services() -> list[NatsUser]:
    return [service_user(a, f"{a.name}-pw") for a in linli_services()]


def _service(name: str) -> NatsUser:
    return next(u for u in _services() if u.name == name)


def test_service_user_publishes_only_its_aggregates() -> None:
    intake = _service("intake")
    assert intake.can_publish("linli.events.taian.need.created")
    assert not intake.can_publish("linli.events.taian.case.opened")
    assert not intake.can_publish("linli.ingress.taian.need.submitted")
    assert intake.can_publish("$JS.ACK.LINLI_EVENTS.intake-lifecycle.1.2.3.4.5")
    assert not intake.can_publish("$JS.ACK.LINLI_EVENTS.scheduling.1.2.3.4.5")
    # Consumers pull: events reach them on their inbox, never by a subscription.
    assert not intake.can_subscribe("linli.events.taian.case.opened")
    publisher = service_user(ServiceAccess("notify", ()), "pw")
    assert not publisher.can_subscribe("linli.events.taian.need.created")
    assert not publisher.can_publish("$JS.ACK.LINLI_EVENTS.x.1.2.3.4.5")


def test_no_service_administers_jetstream() -> None:
    for user in _services():
        assert not any(p in ("$JS.API.>", ">", "$JS.>") for p in user.publish), user.name
        for verb in ("STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE", "STREAM.PURGE"):
            assert not user.can_publish(f"$JS.API.{verb}.LINLI_EVENTS"), (user.name, verb)
        assert not user.can_publish("$JS.API.CONSUMER.DELETE.LINLI_EVENTS.scheduling")
    scheduling = _service("scheduling")
    assert scheduling.can_publish("$JS.API.CONSUMER.MSG.NEXT.LINLI_EVENTS.scheduling")
    assert not scheduling.can_publish("$JS.API.CONSUMER.MSG.NEXT.LINLI_EVENTS.partners")
    assert not scheduling.can_publish("$JS.API.CONSUMER.DURABLE.CREATE.LINLI_EVENTS.partners")
    # Only notifications opens ephemeral (SSE) consumers; only intake answers requests.
    assert [
        u.name for u in _services() if u.can_publish("$JS.API.CONSUMER.CREATE.LINLI_EVENTS")
    ] == ["notifications"]
    assert [u.name for u in _services() if u.allow_responses] == ["intake"]
    assert [u.name for u in _services() if u.can_subscribe("linli.ingress.taian.x")] == ["intake"]


def test_provisioner_only_manages_the_streams() -> None:
    prov = provisioner_user("pw")
    assert prov.can_publish("$JS.API.STREAM.CREATE.LINLI_EVENTS")
    assert prov.can_publish("$JS.API.STREAM.UPDATE.LINLI_INGRESS")
    assert not prov.can_publish("$JS.API.STREAM.DELETE.LINLI_EVENTS")
    assert not prov.can_publish("linli.events.taian.need.submitted.v1")
    assert not prov.can_subscribe("linli.events.>")


def _registered_durables(name: str) -> set[tuple[str, str]]:
    """The (stream, durable) pairs the service's runtime registers at build time."""
    import importlib

    app_module = importlib.import_module(f"linli.{name}.app")
    app = app_module.build_app(app_module.default_settings())
    return set(app.state.runtime.durables)


@pytest.mark.parametrize("access", linli_services(), ids=lambda a: a.name)
def test_granted_durables_are_the_ones_the_services_register(
    access: ServiceAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("LINLI_EVENTS_STREAM", "LINLI_INGRESS_STREAM", "LINLI_STREAM_COMMUNITIES"):
        monkeypatch.delenv(var, raising=False)
    assert set(access.durables) == _registered_durables(access.name)


def test_env_references_are_unquoted_and_checked() -> None:
    text = render_config(users=[admin_user(EnvRef("NATS_ADMIN_PASSWORD"))])
    assert "password: $NATS_ADMIN_PASSWORD" in text
    with pytest.raises(ValueError, match="invalid"):
        EnvRef("not a name")


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.b", "a.b.c", False),
        (">", "anything.at.all", True),
    ],
)
def test_subject_matches(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


@pytest.mark.parametrize(
    "bad",
    [
        lambda: community_system_user("Tai An", "x"),
        lambda: service_user(ServiceAccess("s", ("need.>",)), "x"),
        lambda: service_user(ServiceAccess("s", (), durables=(("EVENTS", "a.>"),)), "x"),
    ],
)
def test_unsafe_tokens_are_rejected(bad: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="invalid"):
        bad()


def test_duplicate_users_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        render_config(users=[admin_user("a"), admin_user("b")])
