"""Rate limits per client address for endpoints anyone may call (ADR 0041).

A fixed window per bucket and client, counted in the service's database
(`rate_limit_hits`), so every replica shares one count and a restart forgets nothing.
The client is stored as a SHA-256 of bucket and address, never the address, and rows
of windows that are over are pruned as new hits arrive.

The client address is the ASGI client: behind a proxy, uvicorn takes it from
`X-Forwarded-For` only for proxies named in `FORWARDED_ALLOW_IPS` (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from fastapi import HTTPException, Request, status

from .db import Conn

__all__ = ["RateLimit", "TooManyRequests"]

_PRUNE_BATCH = 100


class TooManyRequests(HTTPException):
    """429 in the one error shape, with `Retry-After` in whole seconds."""

    def __init__(self, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="too many requests; retry later",
            headers={"Retry-After": str(seconds)},
        )


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` requests per client in `window_s` seconds for one `bucket`."""

    bucket: str
    limit: int
    window_s: float

    def client_key(self, address: str) -> bytes:
        return hashlib.sha256(f"{self.bucket}\n{address}".encode()).digest()

    async def hit(self, conn: Conn, address: str) -> float | None:
        """Count one request of `address`; None when it is within the limit, else the
        seconds until the window ends."""
        window = timedelta(seconds=self.window_s)
        row = await conn.fetchrow(
            "INSERT INTO rate_limit_hits (bucket, client_sha256, hits, window_start) "
            "VALUES ($1, $2, 1, now()) ON CONFLICT (bucket, client_sha256) DO UPDATE SET "
            "hits = CASE WHEN rate_limit_hits.window_start > now() - $3::interval "
            "THEN rate_limit_hits.hits + 1 ELSE 1 END, "
            "window_start = CASE WHEN rate_limit_hits.window_start > now() - $3::interval "
            "THEN rate_limit_hits.window_start ELSE now() END "
            "RETURNING hits, extract(epoch FROM window_start + $3::interval - now()) AS left_s",
            self.bucket,
            self.client_key(address),
            window,
        )
        assert row is not None
        await conn.execute(
            "DELETE FROM rate_limit_hits WHERE ctid IN (SELECT ctid FROM rate_limit_hits "
            "WHERE bucket = $1 AND window_start <= now() - $2::interval LIMIT $3)",
            self.bucket,
            window,
            _PRUNE_BATCH,
        )
        if int(row["hits"]) <= self.limit:
            return None
        return float(row["left_s"])

    def dependency(self) -> Callable[[Request], Awaitable[None]]:
        """A FastAPI dependency: 429 with `Retry-After` once the caller's address spent
        the window's requests."""

        async def check(request: Request) -> None:
            address = request.client.host if request.client else "unknown"
            async with request.app.state.runtime.pool.acquire() as conn:
                retry_after = await self.hit(conn, address)
            if retry_after is not None:
                raise TooManyRequests(retry_after)

        return check
