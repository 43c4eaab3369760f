"""Unique names per test, so tests can share one NATS and one PostgreSQL server."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

_BASE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_SLUG_BASE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


def _check(base: str, pattern: re.Pattern[str] = _BASE) -> str:
    if not pattern.match(base):
        raise ValueError(f"name base {base!r} must match {pattern.pattern}")
    return base


@dataclass(frozen=True)
class Names:
    """Names derived from one random token, e.g. prefix ``t3fa9c1``.

    Every shape is valid where it is used: SQL identifiers stay lower case and
    short, stream and durable names avoid ``.``/``*``/``>``, community slugs match
    the slug rules.
    """

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @property
    def prefix(self) -> str:
        return f"t{self.token}"

    @property
    def subject_prefix(self) -> str:
        """A single subject token to use as a private root instead of ``linli``."""
        return self.prefix

    def subject(self, *tokens: str) -> str:
        return ".".join([self.subject_prefix, *tokens])

    def schema(self, service: str) -> str:
        return f"{self.prefix}_{_check(service)}"

    def role(self, service: str) -> str:
        return f"{self.prefix}_{_check(service)}"

    def database(self, base: str) -> str:
        return f"{self.prefix}_{_check(base)}"

    def stream(self, base: str) -> str:
        return f"{self.prefix}_{_check(base.lower())}".upper()

    def durable(self, base: str) -> str:
        return f"{self.prefix}_{_check(base)}"

    def community(self, base: str) -> str:
        return f"c{self.token}-{_check(base, _SLUG_BASE)}"
