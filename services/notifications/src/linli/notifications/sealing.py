"""Sealing webhook secrets at rest.

Secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under `LINLI_SECRETS_KEY`
when the `cryptography` package is installed and a key is set: a database dump then
does not reveal them. Without either, secrets are stored marked `plain:`, and the
settings refuse to start in production (see NotificationsSettings).
"""

from __future__ import annotations

import importlib
from typing import Any

_FERNET = "fernet:"
_PLAIN = "plain:"


def _fernet_class() -> Any | None:
    try:
        return importlib.import_module("cryptography.fernet").Fernet
    except ImportError:
        return None


def encryption_available() -> bool:
    """Whether `cryptography` is installed in this environment."""
    return _fernet_class() is not None


class SecretBox:
    """Seals and opens secrets with one key (or stores them marked plain without one)."""

    def __init__(self, key: str | None) -> None:
        fernet = _fernet_class()
        self._fernet = fernet(key.encode()) if (key and fernet is not None) else None

    @property
    def encrypting(self) -> bool:
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        if self._fernet is None:
            return _PLAIN + secret
        token: bytes = self._fernet.encrypt(secret.encode())
        return _FERNET + token.decode()

    def open(self, sealed: str) -> str:
        if sealed.startswith(_FERNET):
            if self._fernet is None:
                raise RuntimeError("a sealed secret needs LINLI_SECRETS_KEY and cryptography")
            value: bytes = self._fernet.decrypt(sealed[len(_FERNET) :].encode())
            return value.decode()
        if sealed.startswith(_PLAIN):
            return sealed[len(_PLAIN) :]
        raise ValueError("unknown secret format")
