"""Typed settings read from `LINLI_*` variables (and the standard `OTEL_*` ones).

Nothing reads the environment at import time: `ServiceSettings()` is called by the
composition root of each service.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Environment(StrEnum):
    """Where a process runs; production refuses development conveniences."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ServiceSettings(BaseSettings):
    """Settings every Linli service shares."""

    model_config = SettingsConfigDict(env_prefix="LINLI_", extra="ignore")

    service_name: str = Field(default="linli", description="Service name (logs, traces, durables).")
    environment: Environment = Field(default=Environment.DEVELOPMENT)
    instance_id: str = Field(default="", description="Replica id; defaults to host and pid.")

    nats_url: str = Field(default="nats://127.0.0.1:4222")
    nats_user: str | None = Field(default=None)
    nats_password: SecretStr | None = Field(default=None)
    nats_creds_file: str | None = Field(default=None, description="NATS .creds file (production).")

    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/linli"),
        description="PostgreSQL DSN; contains the password, so it is a secret.",
    )
    db_schema: str = Field(default="", description="Schema owned by this service.")
    db_pool_min: int = Field(default=2, ge=1, le=100)
    db_pool_max: int = Field(default=10, ge=1, le=200)

    http_host: str = Field(default="127.0.0.1")
    http_port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=65536, ge=1024, le=10 * 1024 * 1024)
    max_import_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest CSV file a `/imports/` route takes (413 above); ADR 0035.",
    )
    max_import_rows: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="Most data rows in one CSV import (422 above); ADR 0035.",
    )

    events_stream: str = Field(default="LINLI_EVENTS")
    ingress_stream: str = Field(default="LINLI_INGRESS")
    stream_communities: str = Field(
        default="",
        description=(
            "Comma-separated communities the streams cover; empty covers all. Tests use "
            "their own communities and streams so that they never overlap."
        ),
    )
    revocations_bucket: str = Field(
        default="linli-revocations",
        pattern=r"^[A-Za-z0-9_-]{1,60}$",
        description="JetStream key-value bucket of revoked credential digests (ADR 0030).",
    )
    revocations_wait_s: float = Field(
        default=15.0,
        gt=0,
        description="How long start waits for the revocations to load; requests get 503 "
        "until they have.",
    )
    stream_replicas: int = Field(default=1, ge=1, le=5)
    duplicate_window_s: float = Field(default=120.0, gt=0)
    events_max_age_s: float = Field(default=3 * 24 * 3600.0, gt=0)
    ingress_max_age_s: float = Field(default=24 * 3600.0, gt=0)
    advisories_stream: str = Field(
        default="",
        description=(
            "Stream keeping the MAX_DELIVERIES advisories of the events and ingress "
            "durables until their dead letters are stored; empty: <events_stream>_ADVISORIES."
        ),
    )
    provision_streams: bool = Field(
        default=True,
        description="Create or update streams at start (off when an operator owns them).",
    )

    consumer_ack_wait_s: float = Field(default=30.0, gt=0)
    consumer_max_deliver: int = Field(default=8, ge=2, le=100)
    consumer_max_ack_pending: int = Field(default=1000, ge=1)
    consumer_batch: int = Field(
        default=64, ge=1, le=1000, description="Events pulled, and handled in one transaction."
    )
    consumer_fetch_wait_s: float = Field(
        default=5.0, gt=0, le=60, description="How long an idle pull waits for an event."
    )
    retry_base_delay_s: float = Field(default=0.5, gt=0)
    retry_max_delay_s: float = Field(default=60.0, gt=0)
    outage_probe_max_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "While PostgreSQL is unreachable, consumers hold their messages and probe it "
            "with a delay growing from retry_base_delay_s up to this (ADR 0027)."
        ),
    )

    outbox_batch: int = Field(default=200, ge=1, le=5000)
    outbox_poll_interval_s: float = Field(default=1.0, gt=0)
    outbox_publish_timeout_s: float = Field(default=5.0, gt=0)
    outbox_max_attempts: int = Field(
        default=8,
        ge=1,
        le=1000,
        description=(
            "Refusals by the server (no stream for the subject, over max payload, "
            "permission denied) after which an outbox row is quarantined. Outages "
            "(NATS unreachable, timeouts) never count."
        ),
    )
    outbox_retry_base_s: float = Field(
        default=2.0,
        gt=0,
        description="Delay before a refused row is tried again; doubles per refusal.",
    )
    outbox_retry_max_s: float = Field(
        default=60.0, gt=0, description="Longest delay between two tries of a refused row."
    )
    outbox_retention_s: float = Field(
        default=3 * 24 * 3600.0,
        gt=0,
        description="Sent rows are kept this long so a gap in the stream can be re-published.",
    )
    inbox_retention_s: float = Field(
        default=14 * 24 * 3600.0,
        gt=0,
        description=(
            "Inbox rows are kept this long. At least the events stream's max age plus the "
            "duplicate window, and the outbox re-publish window: an event that comes back "
            "after its inbox row is gone would be applied twice (ADR 0029)."
        ),
    )
    dead_letter_retention_s: float = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description="Replayed dead letters are kept this long after the replay; open ones "
        "are never purged.",
    )
    retention_interval_s: float = Field(
        default=300.0, gt=0, description="How often each replica runs the retention purge."
    )
    retention_batch: int = Field(
        default=5000, ge=1, le=100_000, description="Rows deleted per purge statement."
    )
    run_relay: bool = Field(default=True)
    migrate_on_start: bool = Field(
        default=True,
        description=(
            "Apply migrations at start under an advisory lock. Off in Kubernetes, where a "
            "Job runs `migrate` once: a replica then waits for the migrations to appear."
        ),
    )
    migrations_wait_s: float = Field(
        default=600.0, gt=0, description="How long a replica waits for migrations it does not run."
    )

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port (apart from the API); unset: none.",
    )
    metrics_refresh_s: float = Field(
        default=15.0, gt=0, description="How often gauges read from PostgreSQL and JetStream."
    )

    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=True)
    failpoint: str | None = Field(default=None, description="Test-only crash point (faults).")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.db_schema:
            self.db_schema = self.service_name.replace("-", "_")
        if not self.advisories_stream:
            self.advisories_stream = f"{self.events_stream}_ADVISORIES"
        if not _IDENT.match(self.db_schema):
            raise ValueError("db_schema must be a lowercase SQL identifier")
        horizon = max(self.events_max_age_s, self.outbox_retention_s) + self.duplicate_window_s
        if self.inbox_retention_s < horizon:
            raise ValueError(
                f"inbox_retention_s ({self.inbox_retention_s:g}) must be at least the events "
                f"stream's max age or the outbox retention, whichever is longer, plus the "
                f"duplicate window ({horizon:g} s): an event that comes back after its inbox "
                "row is purged would be applied twice"
            )
        for community in self.communities_scope:
            if not re.match(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$", community):
                raise ValueError("stream_communities must hold community slugs")
        if self.environment is Environment.PRODUCTION:
            if self.failpoint:
                raise ValueError("failpoints are refused in production")
            has_nats_auth = self.nats_creds_file or (self.nats_user and self.nats_password)
            if not has_nats_auth:
                raise ValueError("production requires NATS credentials (user/password or creds)")
            if "database_url" not in self.model_fields_set:
                raise ValueError("production requires LINLI_DATABASE_URL to be set explicitly")
            if self.stream_replicas < 3:
                raise ValueError("production requires stream_replicas >= 3")
        return self

    @property
    def communities_scope(self) -> list[str]:
        """Communities the streams cover; empty means all."""
        return [c.strip() for c in self.stream_communities.split(",") if c.strip()]

    @property
    def instance(self) -> str:
        """A replica id for logs and traces."""
        if self.instance_id:
            return self.instance_id
        import os
        import socket

        return f"{socket.gethostname()}-{os.getpid()}"
