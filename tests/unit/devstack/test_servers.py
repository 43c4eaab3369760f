"""Server helpers that need no running server, plus start-failure reporting."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from linli.devstack.servers import (
    NatsServer,
    ServerAccountHome,
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


def _home(tmp_path: Path) -> ServerAccountHome:
    # Bookkeeping only: chown to our own uid is allowed for any user.
    home = ServerAccountHome(tmp_path / "home", os.getuid(), os.getgid())
    home.areas.mkdir(parents=True)
    return home


def test_a_data_area_is_linked_from_where_it_was_asked_for(tmp_path: Path) -> None:
    home = _home(tmp_path)
    link = tmp_path / "checkout" / ".linli" / "pg"
    pgdata = home.data_dir_for(link)
    assert link.is_symlink()
    assert link.resolve() == pgdata
    assert pgdata.parent.parent == home.areas
    assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
    assert (pgdata.parent / "origin").read_text() == str(link)
    assert home.data_dir_for(link) == pgdata  # found again, not made anew


def test_areas_whose_link_is_gone_are_collected_after_the_grace(tmp_path: Path) -> None:
    home = _home(tmp_path)
    kept_link = tmp_path / "a" / "pg"
    gone_link = tmp_path / "b" / "pg"
    kept = home.data_dir_for(kept_link)
    gone = home.data_dir_for(gone_link)
    gone_link.unlink()  # the checkout (or .linli/) was deleted
    assert home.collect_orphans() == [], "too young: could be an area being set up"
    later = time.time() + 2 * 3600
    assert home.collect_orphans(now=later) == [gone.parent]
    assert kept.exists()
    assert not gone.parent.exists()


def test_an_orphan_with_a_running_server_is_kept(tmp_path: Path) -> None:
    home = _home(tmp_path)
    link = tmp_path / "c" / "pg"
    pgdata = home.data_dir_for(link)
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n")  # a live process
    link.unlink()
    assert home.collect_orphans(now=time.time() + 2 * 3600) == []
    assert pgdata.exists()


def test_removing_the_data_removes_area_and_link(tmp_path: Path) -> None:
    home = _home(tmp_path)
    link = tmp_path / "d" / "pg"
    pgdata = home.data_dir_for(link)
    home.remove(link)
    assert not link.exists()
    assert not link.is_symlink()
    assert not pgdata.parent.exists()


def test_a_home_the_account_cannot_enter_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    home = ServerAccountHome(private / "pg-home", os.getuid(), os.getgid())
    with pytest.raises(ServerStartError, match="LINLI_PG_HOME"):
        home.prepare()
    assert not (private / "pg-home").exists()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
