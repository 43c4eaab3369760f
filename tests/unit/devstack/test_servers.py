"""Server helpers that need no running server, plus start-failure reporting."""

from __future__ import annotations

from pathlib import Path

import pytest

from linli.devstack.servers import (
    NatsServer,
    ServerStartError,
    find_nats_server,
    find_postgres_bin,
    free_port,
    validate_identifier,
)

pytestmark = pytest.mark.unit


def test_binaries_are_found() -> None:
    assert Path(find_nats_server()).is_file()
    assert (find_postgres_bin() / "initdb").is_file()


def test_free_port_is_bindable() -> None:
    assert 1024 <= free_port() <= 65535


@pytest.mark.parametrize("name", ["intake", "_x", "t3fa9c1_intake", "a" * 63])
def test_valid_identifiers_are_quoted(name: str) -> None:
    assert validate_identifier(name) == f'"{name}"'


@pytest.mark.parametrize("name", ["", "Intake", "1abc", "a-b", 'x"; drop', "a" * 64])
def test_invalid_identifiers_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        validate_identifier(name)


def test_bad_config_fails_fast_with_log_tail(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", config="this is { not valid")
    with pytest.raises(ServerStartError, match="exited with code") as info:
        server.start(timeout=5)
    assert "nats-server" in str(info.value)
    assert not server.running
