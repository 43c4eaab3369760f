"""Errors with field-level problems that never repeat the input they reject."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["BindingError", "Problem"]


class Problem(NamedTuple):
    """One thing wrong with a message: where, what, and a stable machine-readable code.

    `field` is an attribute name (`"id"`, `"data"`, `"data_base64"`) or `""` for the
    message as a whole. `message` never contains the offending value, so a problem can
    be logged or returned to the sender without echoing what it sent.
    """

    field: str
    message: str
    code: str


class BindingError(ValueError):
    """A message that is not a CloudEvent under the NATS binding, or an event that cannot
    be encoded; `problems` says why, one entry per field."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        text = "; ".join(f"{p.field or '<message>'}: {p.message}" for p in self.problems[:10])
        super().__init__("invalid CloudEvent: " + text)

    @classmethod
    def single(cls, field: str, message: str, code: str) -> BindingError:
        """An error with exactly one problem."""
        return cls([Problem(field, message, code)])
