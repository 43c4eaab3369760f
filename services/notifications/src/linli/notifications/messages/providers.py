"""Where messages go: e-mail over SMTP, SMS to a file, or the console (development).

A provider raises `PermanentError` when retrying cannot help (the server refused the
address); any other exception is retried with backoff. Errors carry no address or
text, so they are safe to store and log.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol

import aiosmtplib

from linli.notifications.settings import (
    EmailProviderName,
    NotificationsSettings,
    SmsProviderName,
    SmtpTls,
)


@dataclass(frozen=True)
class Message:
    """One message to one person."""

    id: uuid.UUID
    channel: str  # "email" | "sms"
    to: str
    subject: str
    body: str
    locale: str


class PermanentError(Exception):
    """Retrying will not help; the message fails at once."""


class Provider(Protocol):
    async def send(self, message: Message) -> None: ...


class SmtpProvider:
    """E-mail through an SMTP server (aiosmtplib)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        tls: SmtpTls = SmtpTls.NONE,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.tls = tls
        self.username = username
        self.password = password
        self.timeout = timeout

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = make_msgid(idstring=message.id.hex)
        mail["Content-Language"] = message.locale
        mail.set_content(message.body, charset="utf-8")
        return mail

    async def send(self, message: Message) -> None:
        try:
            await aiosmtplib.send(
                self.build(message),
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.tls is SmtpTls.TLS,
                start_tls=self.tls is SmtpTls.STARTTLS,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({r.code for r in exc.recipients})
            if codes and all(code >= 500 for code in codes):
                raise PermanentError(f"smtp {codes[0]}") from None
            raise RuntimeError(f"smtp {codes[0] if codes else 'refused'}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise PermanentError(f"smtp {exc.code}") from None
            raise RuntimeError(f"smtp {exc.code}") from None


class FileSmsProvider:
    """The development SMS provider: one JSON line per message in a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = asyncio.Lock()

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    async def send(self, message: Message) -> None:
        line = json.dumps(
            {
                "id": str(message.id),
                "to": message.to,
                "text": message.body,
                "locale": message.locale,
                "sent_at": datetime.now(UTC).isoformat(),
            },
            ensure_ascii=False,
        )
        async with self._lock:
            await asyncio.to_thread(self._append, line)


class ConsoleProvider:
    """Prints messages to stdout (development only; never to the logs)."""

    async def send(self, message: Message) -> None:
        sys.stdout.write(f"[{message.channel} to {message.to}] {message.subject}: {message.body}\n")
        sys.stdout.flush()


def build_providers(settings: NotificationsSettings) -> dict[str, Provider]:
    """The e-mail and SMS providers the settings choose."""
    email: Provider
    if settings.email_provider is EmailProviderName.SMTP:
        email = SmtpProvider(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=(
                settings.smtp_password.get_secret_value() if settings.smtp_password else None
            ),
            timeout=settings.smtp_timeout_s,
        )
    else:
        email = ConsoleProvider()
    sms: Provider
    if settings.sms_provider is SmsProviderName.FILE:
        sms = FileSmsProvider(settings.sms_file)
    else:
        sms = ConsoleProvider()
    return {"email": email, "sms": sms}
