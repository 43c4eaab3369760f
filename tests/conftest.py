"""Shared fixtures: real NATS (JetStream) and PostgreSQL for the whole session.

Server fixtures are synchronous and session-scoped on purpose: they own
processes, not event-loop objects, so no async fixture has to outlive a loop.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

# `harness` lives next to this file; make it importable under any --import-mode.
_TESTS_DIR = str(Path(__file__).parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from harness.names import Names  # noqa: E402
from harness.procs import ProcessGroup  # noqa: E402
from harness.stack import postgres_data_dir, session_database_url, session_nats_url  # noqa: E402

from linli.devstack.servers import NatsServer, PostgresServer  # noqa: E402

MARKERS = {
    "unit": "fast, in-process tests with no servers",
    "integration": "needs real NATS and/or PostgreSQL",
    "e2e": "runs services as processes against real servers",
    "fault": "kills or pauses servers and services",
    "slow": "takes more than a few seconds",
}

_phase_reports = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Fixtures consult this in teardown to print service logs only when a test failed.
    report = yield
    item.stash.setdefault(_phase_reports, {})[report.when] = report
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_phase_reports, {})
    return any(r.failed for r in reports.values())


@pytest.fixture(scope="session")
def _session_stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory, _session_stack: ExitStack) -> str:
    """NATS with JetStream: NATS_URL, else a testcontainer, else an embedded nats-server."""
    url, how = session_nats_url(tmp_path_factory.mktemp("nats"), _session_stack)
    sys.stderr.write(f"\n[linli tests] NATS at {url} via {how}\n")
    return url


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory, _session_stack: ExitStack) -> str:
    """Superuser DSN to database linli_test (DATABASE_URL is used as given)."""
    url, how = session_database_url(tmp_path_factory.mktemp("postgres"), _session_stack)
    sys.stderr.write(f"\n[linli tests] PostgreSQL via {how}\n")
    return url


@pytest.fixture
def names() -> Names:
    return Names()


@pytest_asyncio.fixture
async def db_schema(database_url: str, names: Names) -> AsyncIterator[str]:
    """A fresh schema in linli_test for this test, dropped with everything in it afterwards."""
    schema = names.schema("test")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    yield schema
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessGroup]:
    """Start services with `procs.start("linli.intake", env={...})`; all stopped at teardown."""
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        if group.processes and _test_failed(request):
            sys.stdout.write("\n" + group.log_tails() + "\n")
        group.stop_all()


@pytest.fixture
def nats_server_factory(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    """Private nats-servers for tests that kill or reconfigure them; started, and stopped after."""
    servers: list[NatsServer] = []

    def make(name: str = "nats", **kwargs: Any) -> NatsServer:
        kwargs.setdefault("log_file", tmp_path / f"{name}.log")
        server = NatsServer(tmp_path / name, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def postgres_server_factory(tmp_path: Path) -> Iterator[Callable[..., PostgresServer]]:
    """Private PostgreSQL servers (fast=True unless given); started, and stopped after."""
    servers: list[PostgresServer] = []

    def make(name: str = "pg", **kwargs: Any) -> PostgresServer:
        kwargs.setdefault("fast", True)
        kwargs.setdefault("log_file", tmp_path / f"{name}.log")
        server = PostgresServer(postgres_data_dir(stack, name), **kwargs)
        servers.append(server)
        server.start()
        return server

    with ExitStack() as stack:
        yield make
        for server in reversed(servers):
            server.delete_data()
