from __future__ import annotations

import pytest

from linli.contracts.registry import lookup
from linli.contracts.subjects import (
    ParsedSubject,
    SubjectError,
    community_events_filter,
    event_subject,
    ingress_subject,
    parse_subject,
    subject_for,
)


def test_build_event_and_ingress_subjects() -> None:
    assert (
        event_subject("taian-zhiyuan", "need", "submitted", 1)
        == "linli.events.taian-zhiyuan.need.submitted.v1"
    )
    assert (
        ingress_subject("taian-zhiyuan", "need", "submit", 1)
        == "linli.ingress.taian-zhiyuan.need.submit.v1"
    )
    assert community_events_filter("taian-zhiyuan") == "linli.events.taian-zhiyuan.>"


def test_subject_for_uses_kind() -> None:
    assert subject_for(lookup("linli.need.submit.v1"), "c1") == "linli.ingress.c1.need.submit.v1"
    assert (
        subject_for(lookup("linli.meal.delivered.v1"), "c1") == "linli.events.c1.meal.delivered.v1"
    )


@pytest.mark.parametrize("community", ["", "Taian", "a.b", "a>", "*", "-x", "a b", "x\n"])
def test_build_rejects_bad_community(community: str) -> None:
    with pytest.raises(ValueError, match="community"):
        event_subject(community, "need", "submitted", 1)


@pytest.mark.parametrize(
    ("aggregate", "name", "version"),
    [
        ("Need", "submitted", 1),
        ("need", "sub.mitted", 1),
        ("need", "submitted", 0),
        ("need", "", 1),
    ],
)
def test_build_rejects_bad_tokens(aggregate: str, name: str, version: int) -> None:
    with pytest.raises(ValueError, match="must"):
        event_subject("c1", aggregate, name, version)


def test_parse_round_trip() -> None:
    parsed = parse_subject("linli.ingress.taian-zhiyuan.need.submit.v12")
    assert parsed == ParsedSubject(
        space="ingress", community="taian-zhiyuan", aggregate="need", name="submit", version=12
    )
    assert parsed.type == "linli.need.submit.v12"
    assert parsed.subject == "linli.ingress.taian-zhiyuan.need.submit.v12"
    for spec in (lookup("linli.need.submitted.v1"), lookup("linli.need.submit.v1")):
        again = parse_subject(subject_for(spec, "c1"))
        assert again.type == spec.type
        assert again.community == "c1"


BAD_SUBJECTS = [
    "",
    "linli",
    "linli.events",
    "linli.events.c1.need.submitted",
    "linli.events.c1.need.submitted.v1.extra",
    "linli.events.c1.need.submitted.1",
    "linli.events.c1.need.submitted.v0",
    "linli.events.c1.need.submitted.v01",
    "linli.events.c1.need.submitted.vx",
    "linli.events.c1.need.submitted.v",
    "linli.other.c1.need.submitted.v1",
    "other.events.c1.need.submitted.v1",
    "linli.events.C1.need.submitted.v1",
    "linli.events.-c1.need.submitted.v1",
    "linli.events.*.need.submitted.v1",
    "linli.events.c1.>",
    "linli.events.c1.need.*.v1",
    "linli.events..need.submitted.v1",
    "linli.events.c1.need.submitted.v1.",
    ".linli.events.c1.need.submitted.v1",
    "linli.events.c1.need.sub mitted.v1",
    "linli.events.c1.need.submitted.v1\n",
    "linli.events.c1.need.submitted.v1\r\n",
    "linli.events.c1.Need.submitted.v1",
    "linli.events.c1.need.submitted;drop.v1",
    "linli.events.社区.need.submitted.v1",
    "linli.events.c1.need.submitted.v1\x00",
    "linli.events." + "a" * 300 + ".need.submitted.v1",
]


@pytest.mark.parametrize("subject", BAD_SUBJECTS)
def test_parse_rejects_malformed(subject: str) -> None:
    with pytest.raises(SubjectError) as info:
        parse_subject(subject)
    assert str(info.value)
    assert isinstance(info.value, ValueError)
