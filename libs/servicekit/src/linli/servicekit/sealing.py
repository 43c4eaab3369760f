"""Sealing secrets at rest (webhook secrets in notifications, service credentials in the console).

Secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under `LINLI_SECRETS_KEY`:
a database dump then does not reveal them. Without a key (development only; production
settings require one) they are stored marked `plain:`, with a warning at start.
"""

from __future__ import annotations

from cryptography.fernet import Fernet

_FERNET = "fernet:"
_PLAIN = "plain:"


class SecretBox:
    """Seals and opens secrets with one key (or stores them marked plain without one)."""

    def __init__(self, key: str | None) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    @property
    def encrypting(self) -> bool:
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        if self._fernet is None:
            return _PLAIN + secret
        token = self._fernet.encrypt(secret.encode())
        return _FERNET + token.decode()

    def open(self, sealed: str) -> str:
        if sealed.startswith(_FERNET):
            if self._fernet is None:
                raise RuntimeError("a sealed secret needs LINLI_SECRETS_KEY")
            return self._fernet.decrypt(sealed[len(_FERNET) :].encode()).decode()
        if sealed.startswith(_PLAIN):
            return sealed[len(_PLAIN) :]
        raise ValueError("unknown secret format")
