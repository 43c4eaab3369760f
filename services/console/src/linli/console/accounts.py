"""Staff accounts, sign-in and sessions (ADR 0033, ADR 0036).

Passwords are argon2id hashes (argon2-cffi's defaults, RFC 9106's second recommended
parameter set). A session is a random 256-bit id held in an HttpOnly cookie; the
database keeps only its SHA-256, with the account, a CSRF token and the language.
Failed sign-ins are counted per login (known or not) in the database, so every replica
sees the same count.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from linli.contracts.types import Role
from linli.servicekit.db import Conn
from linli.servicekit.sealing import SecretBox

from . import store

LOGIN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
COMMUNITY = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
MIN_PASSWORD = 10
LOCALES = ("zh-CN", "en")

_hasher = PasswordHasher()
# Verifying against this when the login is unknown takes as long as a real check, so the
# answer's timing does not tell which logins exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class StaffRole(StrEnum):
    COMMUNITY_OPERATOR = "community_operator"
    STREET_OFFICE = "street_office"


class AccountError(ValueError):
    """An account cannot be created as asked (the CLI prints why)."""


@dataclass(frozen=True)
class Staff:
    """A signed-in staff member, as the pages need them."""

    id: uuid.UUID
    login: str
    display_name: str
    role: StaffRole
    communities: tuple[str, ...]
    street_office: str | None
    service_token: str
    """The credential the console calls the services with (`service_role`); never leaves
    the server."""

    @property
    def sees_personal_data(self) -> bool:
        """Street-office staff see aggregates and escalations, no resident's data."""
        return self.role is StaffRole.COMMUNITY_OPERATOR

    @property
    def service_role(self) -> Role:
        return service_role(self.role)

    def holds(self, community: str) -> bool:
        return community in self.communities


def service_role(role: StaffRole) -> Role:
    """The role of the credential an account's service token is registered with: a
    street office's is `street_office`, which the services themselves limit to reads
    without personal data (ADR 0040); a community operator's is `operator`."""
    return Role.STREET_OFFICE if role is StaffRole.STREET_OFFICE else Role.OPERATOR


@dataclass(frozen=True)
class Session:
    id_sha256: bytes
    staff: Staff
    csrf_token: str
    locale: str


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def session_digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def _staff(r: Any, box: SecretBox) -> Staff:
    return Staff(
        id=r["id"],
        login=r["login"],
        display_name=r["display_name"],
        role=StaffRole(r["role"]),
        communities=tuple(r["communities"]),
        street_office=r["street_office"],
        service_token=box.open(r["service_token"]),
    )


async def add_staff(
    conn: Conn,
    box: SecretBox,
    *,
    login: str,
    display_name: str,
    password: str,
    role: StaffRole,
    communities: list[str],
    street_office: str | None,
    service_token: str,
) -> uuid.UUID:
    """Create an account; `AccountError` says what is wrong with the request."""
    if not LOGIN.match(login):
        raise AccountError("login: 2-63 characters a-z 0-9 . _ -, starting with a letter or digit")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    if not service_token.startswith("lnl_") or len(service_token) < 36:
        raise AccountError("service token: lnl_ followed by 32+ random characters")
    if role is StaffRole.COMMUNITY_OPERATOR:
        if street_office or not communities:
            raise AccountError("a community operator has communities and no street office")
        bad = [c for c in communities if not COMMUNITY.match(c)]
        if bad:
            raise AccountError(f"not community slugs: {bad}")
    else:
        if communities or not street_office:
            raise AccountError("a street-office account names its street office only")
        if not await store.street_office_exists(conn, street_office):
            raise AccountError(f"no street office {street_office!r} (add it first)")
    if await store.staff_by_login(conn, login) is not None:
        raise AccountError(f"login {login!r} exists")
    return await store.insert_staff(
        conn,
        login=login,
        display_name=display_name or login,
        password_hash=hash_password(password),
        role=role.value,
        communities=communities,
        street_office=street_office,
        sealed_token=box.seal(service_token),
    )


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: a new session id (for the cookie), or why not."""

    session_id: str | None = None
    throttled: bool = False


async def sign_in(
    conn: Conn,
    login: str,
    password: str,
    *,
    locale: str,
    max_failures: int,
    window_s: float,
    session_max_s: float,
) -> SignIn:
    """Check a login and password; a session when they match and the login is not
    throttled. A throttled login is refused without checking the password."""
    login = login.strip().lower()[:100]
    if await store.failures(conn, login, window_s) >= max_failures:
        return SignIn(throttled=True)
    row = await store.staff_by_login(conn, login) if LOGIN.match(login) else None
    if row is None or row["disabled_at"] is not None:
        check_password(_DUMMY_HASH, password)
        await store.record_failure(conn, login, window_s)
        return SignIn()
    if not check_password(row["password_hash"], password):
        await store.record_failure(conn, login, window_s)
        return SignIn()
    if _hasher.check_needs_rehash(row["password_hash"]):
        await store.set_password_hash(conn, row["id"], hash_password(password))
    await store.clear_failures(conn, login)
    session_id = secrets.token_urlsafe(32)
    await store.create_session(
        conn,
        id_sha256=session_digest(session_id),
        staff_id=row["id"],
        csrf_token=secrets.token_urlsafe(32),
        locale=locale if locale in LOCALES else LOCALES[0],
        expires_at=datetime.now(UTC) + timedelta(seconds=session_max_s),
    )
    return SignIn(session_id=session_id)


async def resolve_session(
    conn: Conn, session_id: str, box: SecretBox, *, idle_s: float
) -> Session | None:
    """The session behind a cookie value, refreshed; None when it is over."""
    if not session_id or len(session_id) > 100:
        return None
    digest = session_digest(session_id)
    row = await store.touch_session(conn, digest, idle_s)
    if row is None:
        return None
    staff = await store.staff_by_id(conn, row["staff_id"])
    if staff is None:
        return None
    return Session(digest, _staff(staff, box), row["csrf_token"], row["locale"])


async def list_accounts(conn: Conn) -> list[dict[str, object]]:
    """Accounts for `staff list` (never a hash or a token)."""
    return [
        {
            "login": r["login"],
            "display_name": r["display_name"],
            "role": r["role"],
            "communities": list(r["communities"]),
            "street_office": r["street_office"],
            "disabled": r["disabled_at"] is not None,
            "created_at": r["created_at"].isoformat(),
        }
        for r in await store.list_staff(conn)
    ]
