"""Bearer credentials scoped to communities and a role.

Tokens are random (256 bits), shown once when issued, and stored only as a SHA-256
digest: a database dump does not reveal a usable token, and a high-entropy secret
needs no slow password hash (ADR 0005). A caller reaches only the communities its
credential names; another community's resources answer 404, as if they did not exist.

A street office's credential (`street_office`, ADR 0040) is read-only: the middleware
refuses every request but GET and HEAD before a route runs. A route admits it only by
naming the role, and one that does shows it nothing of a resident's personal data
(`Principal.sees_personal_data`).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from linli.contracts.types import Role

from .db import TRANSIENT_ERRORS, Conn
from .errors import error_response

TOKEN_PREFIX = "lnl_"
ALL_COMMUNITIES = "*"

READ_ONLY_ROLES = frozenset({Role.STREET_OFFICE})
"""Roles refused on every request that is not a read (ADR 0040)."""

READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Principal:
    """Who is calling, as far as authorisation cares."""

    credential_id: uuid.UUID
    role: Role
    communities: frozenset[str]
    subject_id: uuid.UUID | None = None
    label: str = ""
    """The credential's label as issued (`credentials issue --label`): which staff desk or
    member acts, for accountability records (ADR 0034); never a secret."""

    def can_access(self, community: str) -> bool:
        return ALL_COMMUNITIES in self.communities or community in self.communities

    def require_community(self, community: str) -> None:
        """404 (not 403) so a caller cannot learn which other communities exist."""
        if not self.can_access(community):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="community not found")

    def require_role(self, *roles: Role) -> None:
        if self.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="role not allowed")

    @property
    def sees_personal_data(self) -> bool:
        """False for a street office: a route that admits it leaves out residents' (and
        helpers') names, phones, addresses, contacts and free text (ADR 0040)."""
        return self.role is not Role.STREET_OFFICE


def scope_problem(role: Role, communities: list[str]) -> str | None:
    """Why a credential of `role` may not be issued for `communities`, or None.

    A street office names its communities: `*` would make it a city-wide reader."""
    if role is Role.STREET_OFFICE and ALL_COMMUNITIES in communities:
        return "a street_office credential names its communities; * is refused"
    return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def issue_credential(
    conn: Conn,
    *,
    role: Role,
    communities: list[str],
    label: str = "",
    subject_id: uuid.UUID | None = None,
    token: str | None = None,
) -> tuple[uuid.UUID, str]:
    """Create a credential; the token is returned once and never stored in clear.

    `token` registers a given token (at least 32 random characters after the prefix)
    instead of a new one, so one operator token can be provisioned in several services.
    """
    if token is None:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    elif not token.startswith(TOKEN_PREFIX) or len(token) < len(TOKEN_PREFIX) + 32:
        raise ValueError("a provisioned token must be lnl_ followed by 32+ random characters")
    cred_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO credentials (id, token_sha256, role, communities, subject_id, label) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        cred_id,
        _digest(token),
        role.value,
        sorted(set(communities)),
        subject_id,
        label,
    )
    return cred_id, token


async def revoke_credential(conn: Conn, cred_id: uuid.UUID) -> tuple[bool, bytes | None]:
    """Revoke a credential here: (True when it was active, its digest; None when unknown).

    The digest is what the other services know it by (`revocations.publish_revocation`).
    """
    row = await conn.fetchrow(
        "UPDATE credentials SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 "
        "RETURNING token_sha256, revoked_at = now() AS fresh",
        cred_id,
    )
    if row is None:
        return False, None
    return bool(row["fresh"]), bytes(row["token_sha256"])


async def lookup_principal(
    conn: Conn, token: str, revoked: Callable[[bytes], bool] | None = None
) -> Principal | None:
    """The principal of an active token, or None.

    `revoked`: the revocations seen in the whole system (ADR 0030), checked before the
    row, whose `revoked_at` this service may not have marked yet.
    """
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    if revoked is not None and revoked(_digest(token)):
        return None
    row = await conn.fetchrow(
        "SELECT id, role, communities, subject_id, label FROM credentials "
        "WHERE token_sha256 = $1 AND revoked_at IS NULL",
        _digest(token),
    )
    if row is None:
        return None
    return Principal(
        credential_id=row["id"],
        role=Role(row["role"]),
        communities=frozenset(row["communities"]),
        subject_id=row["subject_id"],
        label=row["label"] or "",
    )


_bearer = HTTPBearer(auto_error=False, description="A Linli API token (lnl_...)")

_UNAUTHORIZED = "missing or invalid bearer token"


class AuthMiddleware:
    """Authenticate API requests before anything reads their bodies.

    Without this a caller with no token would learn from a 422 how the API parses
    bodies; with it, an unauthenticated request gets 401 and nothing else. The
    principal is left in the request state for `current_principal`.
    """

    def __init__(self, app: ASGIApp, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        try:
            principal = await _principal_for(scope["app"].state.runtime, token)
        except _UNAVAILABLE:
            response = error_response(503, "unavailable", "retry later", {"Retry-After": "2"})
            await response(scope, receive, send)
            return
        if principal is None:
            response = error_response(
                401, "unauthorized", _UNAUTHORIZED, {"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        if principal.role in READ_ONLY_ROLES and scope["method"] not in READ_METHODS:
            # Before the route and the body: a read-only credential changes nothing,
            # whatever a route's own checks say (ADR 0040).
            response = error_response(
                403, "forbidden", f"a {principal.role.value} credential may only read"
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


class RevocationsNotLoaded(Exception):
    """The process has not read the revocations yet: it cannot tell a revoked token."""


_UNAVAILABLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, RevocationsNotLoaded)


async def _principal_for(runtime: Any, token: str | None) -> Principal | None:
    if token is None:
        return None
    watcher = runtime.revocations
    if not watcher.loaded.is_set():
        raise RevocationsNotLoaded
    pool: asyncpg.Pool = runtime.pool
    async with pool.acquire() as conn:
        return await lookup_principal(conn, token, watcher.is_revoked)


async def current_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the authenticated caller, or 401."""
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal):
        return principal
    token = creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else None
    try:
        principal = await _principal_for(request.app.state.runtime, token)
    except RevocationsNotLoaded as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail="retry later", headers={"Retry-After": "2"}
        ) from exc
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
