"""NATS subject names for events and ingress commands.

Events: `linli.events.<community>.<aggregate>.<name>.v<N>`; commands from other
systems: `linli.ingress.<community>.<aggregate>.<name>.v<N>`. The community is the
third token so that subscriptions and NATS permissions can be scoped per community
(`linli.events.taian-zhiyuan.>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from linli.contracts.registry import TYPE_PREFIX, EventSpec
from linli.contracts.types import COMMUNITY_SLUG_PATTERN

__all__ = [
    "EVENTS_PREFIX",
    "INGRESS_PREFIX",
    "MAX_SUBJECT_LENGTH",
    "ParsedSubject",
    "SubjectError",
    "community_events_filter",
    "community_ingress_filter",
    "event_subject",
    "ingress_subject",
    "parse_subject",
    "subject_for",
    "validate_community",
]

EVENTS_PREFIX = "linli.events"
INGRESS_PREFIX = "linli.ingress"
MAX_SUBJECT_LENGTH = 256

_COMMUNITY_RE = re.compile(COMMUNITY_SLUG_PATTERN)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_VERSION_RE = re.compile(r"^v([1-9][0-9]{0,5})$")


class SubjectError(ValueError):
    """A subject that does not follow the Linli naming scheme."""


def validate_community(community: str) -> str:
    """Return the community slug unchanged, or raise ValueError."""
    if not isinstance(community, str) or not _COMMUNITY_RE.fullmatch(community):
        raise ValueError(
            "community must be a lowercase slug of 1-64 characters [a-z0-9-], "
            "not starting or ending with '-'"
        )
    return community


def _check_token(value: str, what: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(f"{what} must match [a-z][a-z0-9_]* (at most 64 characters)")


def _build(prefix: str, community: str, aggregate: str, name: str, version: int) -> str:
    validate_community(community)
    _check_token(aggregate, "aggregate")
    _check_token(name, "name")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError("version must be a positive integer")
    return f"{prefix}.{community}.{aggregate}.{name}.v{version}"


def event_subject(community: str, aggregate: str, name: str, version: int) -> str:
    """Subject of a domain event, e.g. `linli.events.taian-zhiyuan.need.submitted.v1`."""
    return _build(EVENTS_PREFIX, community, aggregate, name, version)


def ingress_subject(community: str, aggregate: str, name: str, version: int) -> str:
    """Subject of an ingress command, e.g. `linli.ingress.taian-zhiyuan.need.submit.v1`."""
    return _build(INGRESS_PREFIX, community, aggregate, name, version)


def subject_for(spec: EventSpec, community: str) -> str:
    """Subject for a registered type: events space for events, ingress for commands."""
    build = event_subject if spec.kind == "event" else ingress_subject
    return build(community, spec.aggregate, spec.name, spec.version)


def community_events_filter(community: str) -> str:
    """Wildcard subject for every event of one community."""
    return f"{EVENTS_PREFIX}.{validate_community(community)}.>"


def community_ingress_filter(community: str) -> str:
    """Wildcard subject for every ingress command of one community."""
    return f"{INGRESS_PREFIX}.{validate_community(community)}.>"


@dataclass(frozen=True)
class ParsedSubject:
    """The parts of a concrete (wildcard-free) Linli subject."""

    space: Literal["events", "ingress"]
    community: str
    aggregate: str
    name: str
    version: int

    @property
    def type(self) -> str:
        """The CloudEvents type this subject carries, e.g. `linli.need.submitted.v1`."""
        return f"{TYPE_PREFIX}.{self.aggregate}.{self.name}.v{self.version}"

    @property
    def short(self) -> str:
        """Aggregate and name, e.g. `need.submitted`."""
        return f"{self.aggregate}.{self.name}"

    @property
    def subject(self) -> str:
        """The subject string again."""
        return (
            f"{TYPE_PREFIX}.{self.space}.{self.community}."
            f"{self.aggregate}.{self.name}.v{self.version}"
        )


def parse_subject(subject: str) -> ParsedSubject:
    """Split a subject into its parts; raises SubjectError on anything malformed."""
    if not isinstance(subject, str):
        raise SubjectError("subject must be a string")
    if not subject:
        raise SubjectError("subject is empty")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise SubjectError(f"subject is longer than {MAX_SUBJECT_LENGTH} characters")
    if not subject.isascii() or not subject.isprintable() or " " in subject:
        raise SubjectError("subject must be printable ASCII without spaces")
    tokens = subject.split(".")
    if any(t == "" for t in tokens):
        raise SubjectError("subject has an empty token")
    if any(t in ("*", ">") for t in tokens):
        raise SubjectError("subject must not contain wildcards")
    if len(tokens) != 6:
        raise SubjectError(
            "subject must have 6 tokens: linli.<events|ingress>.<community>.<aggregate>.<name>.v<N>"
        )
    root, space, community, aggregate, name, version = tokens
    if root != TYPE_PREFIX:
        raise SubjectError(f"subject must start with '{TYPE_PREFIX}.'")
    if space not in ("events", "ingress"):
        raise SubjectError("second token must be 'events' or 'ingress'")
    if not _COMMUNITY_RE.fullmatch(community):
        raise SubjectError("community token is not a valid community slug")
    if not _NAME_RE.fullmatch(aggregate):
        raise SubjectError("aggregate token must match [a-z][a-z0-9_]*")
    if not _NAME_RE.fullmatch(name):
        raise SubjectError("name token must match [a-z][a-z0-9_]*")
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise SubjectError("last token must be a version like v1")
    return ParsedSubject(
        space="events" if space == "events" else "ingress",
        community=community,
        aggregate=aggregate,
        name=name,
        version=int(match.group(1)),
    )
