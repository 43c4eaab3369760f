"""The console's one settings class: the shared ones plus sign-in, sessions and the
services it calls."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

from linli.servicekit.settings import Environment, ServiceSettings


class ConsoleSettings(ServiceSettings):
    """Console settings (LINLI_*)."""

    service_name: str = "console"
    http_port: int = 8105

    intake_url: str = Field(default="http://127.0.0.1:8101", description="Intake's base URL.")
    partners_url: str = Field(default="http://127.0.0.1:8102", description="Partners' base URL.")
    scheduling_url: str = Field(
        default="http://127.0.0.1:8103", description="Scheduling's base URL."
    )
    notifications_url: str = Field(
        default="http://127.0.0.1:8104", description="Notifications' base URL (the SSE relay)."
    )
    upstream_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="Deadline of one call to a service."
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key (LINLI_SECRETS_KEY) sealing the staff's service credentials "
        "at rest; required in production.",
    )
    public_origin: str = Field(
        default="",
        description="The origin browsers see (https://console.example.org). POSTs whose "
        "Origin differs are refused; empty: the request's own Host (scheme http in "
        "development, https otherwise).",
    )
    session_idle_s: float = Field(
        default=30 * 60.0, gt=0, description="A session unused this long ends."
    )
    session_max_s: float = Field(
        default=12 * 3600.0, gt=0, description="A session ends this long after sign-in."
    )
    sign_in_max_failures: int = Field(
        default=5, ge=1, le=100, description="Failed sign-ins per login within the window."
    )
    sign_in_window_s: float = Field(
        default=15 * 60.0, gt=0, description="Window of the sign-in rate limit."
    )
    live_settle_s: float = Field(
        default=1.0,
        ge=0,
        le=30,
        description="After an event from partners, panels are read once more this much later "
        "(scheduling and intake apply it a moment after it is on the stream).",
    )
    timezone: str = Field(
        default="Asia/Shanghai", description="Local day of the meal round; reports' months."
    )
    report_meal_minutes: int = Field(
        default=30,
        ge=0,
        le=600,
        description="Minutes a volunteer's meal delivery counts for in reports (meal events "
        "carry no start time, so these hours are approximated; ADR 0038).",
    )
    cookie_secure: bool | None = Field(
        default=None,
        description="Secure flag on the session cookie; unset: on outside development.",
    )

    @model_validator(mode="after")
    def _check_console(self) -> Self:
        if self.cookie_secure is None:
            self.cookie_secure = self.environment is not Environment.DEVELOPMENT
        if self.environment is Environment.PRODUCTION:
            if self.secrets_key is None:
                raise ValueError("production requires LINLI_SECRETS_KEY (a Fernet key)")
            if not self.cookie_secure:
                raise ValueError("production requires Secure session cookies")
            if not self.public_origin.startswith("https://"):
                raise ValueError("production requires LINLI_PUBLIC_ORIGIN (https://...)")
        if self.session_idle_s > self.session_max_s:
            raise ValueError("session_idle_s must not exceed session_max_s")
        return self
