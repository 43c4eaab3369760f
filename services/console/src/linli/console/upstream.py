"""Calls to the four services with the signed-in staff member's credential.

The console reads everything through the services' HTTP APIs (it never touches another
service's tables) with the credential kept for the account (an operator's, or a street
office's, which the services limit to reads without personal data, ADR 0040): the
services scope every answer to that credential's communities themselves (ADR 0033).
The token goes in the Authorization header of server-side requests only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from .settings import ConsoleSettings


class UpstreamNotFound(Exception):
    """The service answered 404: for the caller the thing does not exist."""


class UpstreamFailed(Exception):
    """The service refused the call or is unreachable (the page says so, briefly)."""

    def __init__(self, service: str, status: int | None) -> None:
        super().__init__(f"{service} answered {status}")
        self.service = service
        self.status = status


class ServiceRefused(Exception):
    """The service refused an action with a reason the staff member can act on (409,
    413, 415, 422): the page shows it next to the form. `reasons` are the one error
    shape's field reasons (`{field, code, message}`), empty for a sentence."""

    def __init__(self, service: str, status: int, error: str, detail: Any) -> None:
        super().__init__(f"{service} answered {status} {error}")
        self.service = service
        self.status = status
        self.error = error
        self.reasons: list[dict[str, str]] = detail if isinstance(detail, list) else []
        self.sentence: str = detail if isinstance(detail, str) else ""


REFUSALS = (409, 413, 415, 422)
"""Answers to an action that are the staff member's to read, not a failure of the page."""


@dataclass(frozen=True)
class SseFrame:
    """One frame of notifications' community stream."""

    id: str | None
    event: str | None
    data: str


class Upstream:
    """One pooled HTTP client for the services; opened at start, closed at stop."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.bases = {
            "intake": settings.intake_url.rstrip("/"),
            "partners": settings.partners_url.rstrip("/"),
            "scheduling": settings.scheduling_url.rstrip("/"),
            "notifications": settings.notifications_url.rstrip("/"),
        }
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self.settings.upstream_timeout_s, follow_redirects=False
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("upstream client not started")
        return self._client

    async def get(
        self, service: str, path: str, token: str, params: dict[str, Any] | None = None
    ) -> Any:
        """GET JSON; `UpstreamNotFound` on 404, `UpstreamFailed` on anything else not 200."""
        try:
            response = await self.client.get(
                self.bases[service] + path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise UpstreamFailed(service, None) from exc
        if response.status_code == 404:
            raise UpstreamNotFound(path)
        if response.status_code != 200:
            raise UpstreamFailed(service, response.status_code)
        return response.json()

    async def post(
        self,
        service: str,
        path: str,
        token: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """POST an action; its JSON answer. `UpstreamNotFound` on 404, `ServiceRefused`
        on 409/413/415/422 (with the service's reasons), `UpstreamFailed` otherwise."""
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = await self.client.post(
                self.bases[service] + path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=headers,
                json=json,
                content=content,
            )
        except httpx.HTTPError as exc:
            raise UpstreamFailed(service, None) from exc
        if response.status_code == 404:
            raise UpstreamNotFound(path)
        if response.status_code in REFUSALS:
            try:
                body = response.json()
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            raise ServiceRefused(
                service, response.status_code, str(body.get("error", "")), body.get("detail")
            )
        if response.status_code not in (200, 201):
            raise UpstreamFailed(service, response.status_code)
        return response.json()

    @contextlib.asynccontextmanager
    async def events(
        self, community: str, token: str, last_event_id: str | None
    ) -> AsyncIterator[AsyncIterator[SseFrame]]:
        """Notifications' SSE stream of a community, resumed after `last_event_id`."""
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        url = f"{self.bases['notifications']}/v1/communities/{community}/events"
        timeout = httpx.Timeout(self.settings.upstream_timeout_s, read=None)
        try:
            async with self.client.stream("GET", url, headers=headers, timeout=timeout) as resp:
                if resp.status_code == 404:
                    raise UpstreamNotFound(url)
                if resp.status_code != 200:
                    raise UpstreamFailed("notifications", resp.status_code)
                yield parse_sse(resp.aiter_lines())
        except httpx.HTTPError as exc:
            raise UpstreamFailed("notifications", None) from exc


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[SseFrame]:
    """Server-Sent Events frames from lines (comments and pings skipped)."""
    frame_id: str | None = None
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield SseFrame(frame_id, event, "\n".join(data))
            frame_id, event, data = None, None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            frame_id = value
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)
