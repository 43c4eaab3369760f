"""Settings of messages to people, read from `LINLI_*` variables."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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


class PeopleSettings(BaseSettings):
    """Providers, retries and time zone of messages to people.

    `register()` builds it from the service's settings object when that object has
    these fields (a settings class may inherit from this one), else from the environment.
    """

    model_config = SettingsConfigDict(env_prefix="LINLI_", extra="ignore")

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


def people_settings_from(settings: Any) -> PeopleSettings:
    """The people settings carried by `settings`, or read from the environment."""
    if isinstance(settings, PeopleSettings):
        return settings
    names = PeopleSettings.model_fields
    if all(hasattr(settings, name) for name in names):
        return PeopleSettings.model_validate({n: getattr(settings, n) for n in names})
    return PeopleSettings()
