"""Session servers for tests: env var, else testcontainers, else the embedded servers."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from linli.devstack.servers import NatsServer, PostgresServer, ensure_database, run_sync

log = logging.getLogger("linli.tests.stack")

TEST_DATABASE = "linli_test"


def _docker_wanted() -> bool:
    # LINLI_TEST_DOCKER=0 skips the Docker probe even where an engine exists.
    return os.environ.get("LINLI_TEST_DOCKER", "1").lower() not in ("0", "false", "no")


def _docker_engine_may_exist() -> bool:
    # Without any sign of an engine, skip testcontainers altogether: its failed
    # probe costs half a second and leaks a socket (a ResourceWarning).
    if os.environ.get("DOCKER_HOST") or (Path.home() / ".testcontainers.properties").exists():
        return True
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
    candidates = [
        Path("/var/run/docker.sock"),
        Path.home() / ".docker" / "run" / "docker.sock",
        Path.home() / ".docker" / "desktop" / "docker.sock",
        Path(runtime_dir) / "docker.sock" if runtime_dir else None,
    ]
    return any(p is not None and p.exists() for p in candidates)


def _import_first(*candidates: tuple[str, str]) -> Any:
    import importlib

    if not _docker_wanted() or not _docker_engine_may_exist():
        return None
    for module, attr in candidates:
        # Broad on purpose: a testcontainers import can also fail on its own
        # deprecation warnings when tests run with -W error.
        with contextlib.suppress(Exception):
            return getattr(importlib.import_module(module), attr)
    return None


def _start_container(factory: Any, stack: ExitStack) -> Any | None:
    """Start a container, or None when there is no Docker engine (or anything else fails)."""
    if factory is None:
        return None
    container = None
    try:
        # testcontainers raises DockerException already here when no engine answers.
        container = factory()
        container.start()
    except Exception as exc:
        log.info("Docker unavailable (%s: %s); using embedded servers", type(exc).__name__, exc)
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop()
        return None
    stack.callback(container.stop)
    return container


def postgres_data_dir(stack: ExitStack, name: str = "pg") -> Path:
    """A data directory path under a new temp dir, which is removed when `stack` closes.

    As root, PostgresServer turns this path into a link to a data area of its own
    (see ServerAccountHome); `PostgresServer.delete_data()` removes that area.
    """
    path = Path(tempfile.mkdtemp(prefix=f"linli-{name}-"))
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    return path / "data"


def session_nats_url(workdir: Path, stack: ExitStack) -> tuple[str, str]:
    """(url, how) for the session's NATS server with JetStream."""
    if url := os.environ.get("NATS_URL"):
        return url, "NATS_URL"
    nats_cls = _import_first(
        ("testcontainers.community.nats", "NatsContainer"), ("testcontainers.nats", "NatsContainer")
    )
    if nats_cls is not None:
        container = _start_container(lambda: nats_cls(jetstream=True), stack)
        if container is not None:
            return str(container.nats_uri()), "testcontainers"
    server = NatsServer(workdir / "nats", log_file=workdir / "nats.log")
    server.start()
    stack.callback(server.stop)
    return server.url, f"embedded nats-server (log {server.log_file})"


def session_database_url(workdir: Path, stack: ExitStack) -> tuple[str, str]:
    """(superuser DSN to database linli_test, how). DATABASE_URL is used as given."""
    if url := os.environ.get("DATABASE_URL"):
        return url, "DATABASE_URL"
    pg_cls = _import_first(
        ("testcontainers.community.postgres", "PostgresContainer"),
        ("testcontainers.postgres", "PostgresContainer"),
    )
    if pg_cls is not None:
        container = _start_container(
            lambda: pg_cls(
                "postgres:17-alpine",
                username="postgres",
                password="postgres",
                dbname=TEST_DATABASE,
                driver=None,
            ),
            stack,
        )
        if container is not None:
            return str(container.get_connection_url()), "testcontainers"
    server = PostgresServer(postgres_data_dir(stack), fast=True, log_file=workdir / "postgres.log")
    stack.callback(server.delete_data)
    server.start()
    run_sync(ensure_database(server.dsn(), TEST_DATABASE))
    return server.dsn(database=TEST_DATABASE), f"embedded PostgreSQL (log {server.log_file})"
