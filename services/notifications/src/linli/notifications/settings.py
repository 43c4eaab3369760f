"""Notifications' one settings class: the shared ones plus webhooks, streams and messages."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, SecretStr, model_validator

from linli.servicekit.offerlinks import OfferLinkSettings
from linli.servicekit.settings import Environment

DEFAULT_RETRY_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0]


class EmailProviderName(StrEnum):
    SMTP = "smtp"
    CONSOLE = "console"


class SmsProviderName(StrEnum):
    FILE = "file"
    CONSOLE = "console"


class SmtpTls(StrEnum):
    """How to secure the SMTP connection."""

    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class NotificationsSettings(OfferLinkSettings):
    """Notifications' settings (LINLI_*): webhooks and streams, then messages to people."""

    service_name: str = "notifications"
    http_port: int = 8104

    # --- webhooks and streams ---------------------------------------------------------
    allow_insecure_endpoints: bool = Field(
        default=False,
        description="Development only: allow http and loopback/private webhook receivers. "
        "`make run` turns it on; production refuses it.",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key (LINLI_SECRETS_KEY) sealing webhook secrets at rest; "
        "required in production.",
    )
    webhook_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="Deadline of one whole attempt: address check, connect, send and the "
        "complete response. A receiver still answering then fails with `timeout`.",
    )
    webhook_response_max_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        le=16 * 1024 * 1024,
        description="Most response body bytes read per attempt (the body is discarded). "
        "A longer answer fails with `response too large` and its connection is closed.",
    )
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE),
        min_length=1,
        max_length=50,
        description="Delay before each retry (seconds, before jitter); about a day in all. "
        "A delivery is abandoned when the schedule is spent.",
    )
    retry_jitter: float = Field(
        default=0.2, ge=0, le=1, description="Each delay is scaled by 1 +/- this fraction."
    )
    retry_after_max_s: float = Field(
        default=24 * 3600.0, gt=0, description="Longest Retry-After honoured."
    )
    disable_after_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="An endpoint failing without a single success for this long is disabled.",
    )
    max_in_flight_per_endpoint: int = Field(default=4, ge=1, le=100)
    delivery_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    delivery_endpoints_per_pass: int = Field(default=500, ge=1, le=10000)
    run_delivery: bool = Field(default=True, description="Send webhooks from this process.")
    rotation_overlap_s: float = Field(
        default=24 * 3600.0,
        ge=0,
        le=7 * 24 * 3600.0,
        description="How long the previous secret still signs after a rotation.",
    )
    sse_heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    deliveries_retention_s: float = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description="Finished (delivered or failed) webhook deliveries and their attempts are "
        "kept this long: the horizon of `POST /v1/subscriptions/{id}/replay` (ADR 0029).",
    )

    # --- partners reached (ADR 0043) ------------------------------------------------------
    offer_link_base_url: str = Field(
        default="http://127.0.0.1:8102",
        max_length=200,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Public base URL of partners, in the signed offer links pushed to "
        "partners (`<base>/public/v1/offers/<token>`).",
    )

    # --- messages to people -----------------------------------------------------------
    email_provider: EmailProviderName = Field(default=EmailProviderName.CONSOLE)
    sms_provider: SmsProviderName = Field(default=SmsProviderName.CONSOLE)
    smtp_host: str = Field(default="127.0.0.1")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = Field(default="Linli <noreply@linli.local>")
    smtp_username: str | None = Field(default=None)
    smtp_password: SecretStr | None = Field(default=None)
    smtp_tls: SmtpTls = Field(default=SmtpTls.NONE)
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=120)
    sms_file: str = Field(default=".linli/sms.jsonl", description="Development SMS provider.")
    people_timezone: str = Field(
        default="Asia/Shanghai", description="Local time of the communities in messages."
    )
    people_max_attempts: int = Field(default=6, ge=1, le=50)
    people_retry_base_s: float = Field(default=30.0, gt=0)
    people_retry_max_s: float = Field(default=3600.0, gt=0)
    people_poll_interval_s: float = Field(default=2.0, gt=0, le=60)
    people_batch: int = Field(default=50, ge=1, le=1000)
    people_send_concurrency: int = Field(default=8, ge=1, le=100)
    people_run_sender: bool = Field(default=True, description="Send due messages here.")
    people_messages_retention_s: float = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description="Sent and failed messages to people are kept this long (ADR 0029).",
    )

    @model_validator(mode="after")
    def _check_notifications(self) -> Self:
        if self.environment is Environment.PRODUCTION:
            if self.allow_insecure_endpoints:
                raise ValueError("allow_insecure_endpoints is refused in production")
            if self.secrets_key is None:
                raise ValueError("production requires LINLI_SECRETS_KEY (a Fernet key)")
        return self
