"""Bearer credentials scoped to communities and a role.

Tokens are random (256 bits), shown once when issued, and stored only as a SHA-256
digest: a database dump does not reveal a usable token, and a high-entropy secret
needs no slow password hash (ADR 0005). A caller reaches only the communities its
credential names; another community's resources answer 404, as if they did not exist.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from linli.contracts.types import Role

from .db import Conn

TOKEN_PREFIX = "lnl_"
ALL_COMMUNITIES = "*"


@dataclass(frozen=True)
class Principal:
    """Who is calling, as far as authorisation cares."""

    credential_id: uuid.UUID
    role: Role
    communities: frozenset[str]
    subject_id: uuid.UUID | None = None

    def can_access(self, community: str) -> bool:
        return ALL_COMMUNITIES in self.communities or community in self.communities

    def require_community(self, community: str) -> None:
        """404 (not 403) so a caller cannot learn which other communities exist."""
        if not self.can_access(community):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="community not found")

    def require_role(self, *roles: Role) -> None:
        if self.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="role not allowed")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def issue_credential(
    conn: Conn,
    *,
    role: Role,
    communities: list[str],
    label: str = "",
    subject_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, str]:
    """Create a credential; the token is returned once and never stored in clear."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
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


async def revoke_credential(conn: Conn, cred_id: uuid.UUID) -> bool:
    """Revoke a credential; True when it existed and was active."""
    result: str = await conn.execute(
        "UPDATE credentials SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", cred_id
    )
    return result.endswith(" 1")


async def lookup_principal(conn: Conn, token: str) -> Principal | None:
    """The principal of an active token, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = await conn.fetchrow(
        "SELECT id, role, communities, subject_id FROM credentials "
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
    )


_bearer = HTTPBearer(auto_error=False, description="A Linli API token (lnl_...)")


async def current_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the authenticated caller, or 401."""
    unauthorized = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="missing or invalid bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if creds is None or creds.scheme.lower() != "bearer":
        raise unauthorized
    pool: asyncpg.Pool = request.app.state.runtime.pool
    async with pool.acquire() as conn:
        principal = await lookup_principal(conn, creds.credentials)
    if principal is None:
        raise unauthorized
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
