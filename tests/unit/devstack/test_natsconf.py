"""Rendered nats-server configs are valid and give least privilege."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from linli.devstack.natsconf import (
    NatsUser,
    admin_user,
    community_system_user,
    render_config,
    service_user,
    subject_matches,
)
from linli.devstack.servers import find_nats_server

pytestmark = pytest.mark.unit


def _users() -> list[NatsUser]:
    return [
        service_user("intake", 'pa$$"word\\', ["need", "case"]),
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
    text = render_config(users=_users())
    assert '"$JS.API.>"' in text
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


def test_service_user_publishes_only_its_aggregates() -> None:
    intake = service_user("intake", "pw", ["need"])
    assert intake.can_publish("linli.events.taian.need.created")
    assert not intake.can_publish("linli.events.taian.case.opened")
    assert not intake.can_publish("linli.ingress.taian.need.submitted")
    assert intake.can_publish("$JS.ACK.EVENTS.intake.1.2.3.4.5")
    assert intake.can_subscribe("linli.events.taian.case.opened")
    publisher = service_user("notify", "pw", [], consume=False)
    assert not publisher.can_subscribe("linli.events.taian.need.created")
    assert not publisher.can_publish("$JS.ACK.EVENTS.x.1.2.3.4.5")


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
    [lambda: community_system_user("Tai An", "x"), lambda: service_user("s", "x", ["need.>"])],
)
def test_unsafe_tokens_are_rejected(bad: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="invalid"):
        bad()


def test_duplicate_users_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        render_config(users=[admin_user("a"), admin_user("b")])
