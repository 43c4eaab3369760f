"""CSV import of residents (issue #11 item 4, ADR 0035) on real NATS and PostgreSQL.

A dry run reports every row with its line and writes nothing; a real run writes all
rows or none; the same file twice changes nothing; a changed row updates; one
community's operator cannot import into another, and the same `external_ref` in two
communities is two residents. Unreadable files get a 4xx in the one error shape, and
no resident's name, phone or address reaches a response or a log record.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CANARY = "ZZCANARY"
HEADER = "external_ref,name,phone,address,compound,priority_group,consent_to_share_contact"

CLEAN = (
    "\ufeff"  # spreadsheets save CSV UTF-8 with a byte-order mark
    f"{HEADER}\n"
    "R-001,王秀兰,13800138001,致远小区 3号楼 401,致远小区,elderly_living_alone,true\n"
    'R-002,李建国,13800138002,"致远小区 5号楼\n602",致远小区,disabled,false\n'
    "R-003,张桂英,+8613800138003,和平里 1-101,,low_income,yes\n"
)


def url(world: Any, community: str | None = None, *, dry_run: bool) -> str:
    community = community or world.home
    flag = "true" if dry_run else "false"
    return f"/v1/communities/{community}/imports/residents?dry_run={flag}"


async def post_csv(
    intake: Any,
    body: str | bytes,
    *,
    dry_run: bool,
    who: str = "operator",
    community: str | None = None,
    content_type: str = "text/csv; charset=utf-8",
) -> Any:
    data = body.encode() if isinstance(body, str) else body
    return await intake.http.post(
        url(intake.world, community, dry_run=dry_run),
        content=data,
        headers={**intake.world.auth(who), "Content-Type": content_type},
    )


async def residents(intake: Any, community: str) -> dict[str, dict[str, Any]]:
    rows = await intake.app.state.runtime.pool.fetch(
        "SELECT external_ref, name, phone, address, compound, priority_group, "
        "consent_to_share_contact FROM residents WHERE community = $1",
        community,
    )
    return {r["external_ref"]: dict(r) for r in rows}


async def resident_count(intake: Any) -> int:
    return int(await intake.app.state.runtime.pool.fetchval("SELECT count(*) FROM residents"))


def actions(report: dict[str, Any]) -> list[tuple[int, str | None, str]]:
    return [(r["line"], r["external_ref"], r["action"]) for r in report["rows"]]


async def test_dry_run_lists_row_errors_by_line_and_writes_nothing(intake: Any) -> None:
    bad = (
        f"{HEADER}\n"
        "R-001,王秀兰,13800138001,致远小区 3号楼 401,致远小区,elderly_living_alone,true\n"
        "\n"  # a blank line is skipped but still counts for the line numbers
        f"R-002,{CANARY}-李建国,not-a-phone,{CANARY} 5-602,,disabled,false\n"
        "R-003,张桂英,13800138003,,,royalty,maybe\n"
        "R-001,王秀兰,13800138001,致远小区 3号楼 401,致远小区,elderly_living_alone,true\n"
        "R-004,only,three\n"
        "bad ref!,赵六,13800138006,和平里 2-202,,none,false\n"
    )
    before = await resident_count(intake)

    response = await post_csv(intake, bad, dry_run=True)

    assert response.status_code == 200, response.text
    report = response.json()
    assert report["dry_run"] is True
    assert report["applied"] is False
    assert actions(report) == [
        (2, "R-001", "created"),
        (4, "R-002", "error"),
        (5, "R-003", "error"),
        (6, "R-001", "error"),
        (7, "R-004", "error"),
        (8, None, "error"),
    ]
    errors = {r["line"]: {(e["field"], e["code"]) for e in r["errors"]} for r in report["rows"]}
    assert ("phone", "value_error") in errors[4]
    assert {f for f, _ in errors[5]} == {"address", "priority_group", "consent_to_share_contact"}
    assert errors[6] == {("external_ref", "duplicate_key")}
    assert errors[7] == {("", "column_count")}
    assert ("external_ref", "string_pattern_mismatch") in errors[8]
    assert report["totals"] == {
        "rows": 6,
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "errors": 5,
    }
    # The report names lines, keys and columns; never a value of the rows.
    for value in (CANARY, "李建国", "not-a-phone", "王秀兰", "royalty", "bad ref!"):
        assert value not in response.text
    assert await resident_count(intake) == before


async def test_clean_import_creates_and_the_same_file_again_changes_nothing(intake: Any) -> None:
    world = intake.world
    dry = await post_csv(intake, CLEAN, dry_run=True)
    assert dry.status_code == 200, dry.text
    created = [(2, "R-001", "created"), (3, "R-002", "created"), (5, "R-003", "created")]
    assert actions(dry.json()) == created
    assert await resident_count(intake) == 0

    first = await post_csv(intake, CLEAN, dry_run=False)
    assert first.status_code == 200, first.text
    assert first.json()["applied"] is True
    assert first.json()["totals"]["created"] == 3
    stored = await residents(intake, world.home)
    assert set(stored) == {"R-001", "R-002", "R-003"}
    assert stored["R-002"]["address"] == "致远小区 5号楼\n602"
    assert stored["R-003"]["phone"] == "+8613800138003"
    assert stored["R-003"]["compound"] is None
    assert stored["R-003"]["consent_to_share_contact"] is True
    # Imported residents are ordinary residents: the API lists them.
    listed = await intake.http.get(f"/v1/communities/{world.home}/residents", headers=world.auth())
    assert len(listed.json()["items"]) == 3

    second = await post_csv(intake, CLEAN, dry_run=False)
    assert second.status_code == 200, second.text
    assert [r["action"] for r in second.json()["rows"]] == ["unchanged"] * 3
    assert second.json()["totals"]["unchanged"] == 3
    assert await residents(intake, world.home) == stored
    assert await resident_count(intake) == 3


async def test_a_changed_row_updates_only_that_resident(intake: Any) -> None:
    world = intake.world
    assert (await post_csv(intake, CLEAN, dry_run=False)).status_code == 200
    before = await residents(intake, world.home)
    changed = CLEAN.replace("和平里 1-101,,low_income", "和平里 1-102,和平里,low_income")

    dry = await post_csv(intake, changed, dry_run=True)
    assert [r["action"] for r in dry.json()["rows"]] == ["unchanged", "unchanged", "updated"]
    assert await residents(intake, world.home) == before

    response = await post_csv(intake, changed, dry_run=False)
    assert response.status_code == 200, response.text
    assert response.json()["totals"] == {
        "rows": 3,
        "created": 0,
        "updated": 1,
        "unchanged": 2,
        "errors": 0,
    }
    after = await residents(intake, world.home)
    assert after["R-003"]["address"] == "和平里 1-102"
    assert after["R-003"]["compound"] == "和平里"
    assert {k: v for k, v in after.items() if k != "R-003"} == {
        k: v for k, v in before.items() if k != "R-003"
    }
    assert await resident_count(intake) == 3


async def test_a_real_run_with_one_bad_row_writes_nothing(intake: Any) -> None:
    world = intake.world
    assert (await post_csv(intake, CLEAN, dry_run=False)).status_code == 200
    before = await residents(intake, world.home)
    mixed = (
        CLEAN.replace("和平里 1-101", "和平里 9-909")
        + "R-004,赵六,13800138006,和平里 2-202,,none,false\n"
        + f"R-005,{CANARY},{CANARY}-phone,x,,none,false\n"
    )

    response = await post_csv(intake, mixed, dry_run=False)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    assert {(d["field"], d["code"]) for d in body["detail"]} == {("line.7.phone", "value_error")}
    assert CANARY not in response.text
    assert await residents(intake, world.home) == before


async def test_other_communitys_operator_cannot_import_here_and_rows_never_cross(
    intake: Any,
) -> None:
    world = intake.world
    for dry_run in (True, False):
        response = await post_csv(intake, CLEAN, dry_run=dry_run, who="other_operator")
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"
    assert await resident_count(intake) == 0
    # A system credential may submit needs but not import personal data.
    refused = await post_csv(intake, CLEAN, dry_run=True, who="system")
    assert refused.status_code == 403
    # Without a token: 401 before the body is read.
    anonymous = await intake.http.post(
        url(world, dry_run=True), content=CLEAN.encode(), headers={"Content-Type": "text/csv"}
    )
    assert anonymous.status_code == 401

    # The same external_refs in two communities are two sets of residents.
    assert (await post_csv(intake, CLEAN, dry_run=False)).status_code == 200
    theirs = CLEAN.replace("王秀兰", "周敏")
    other = await post_csv(
        intake, theirs, dry_run=False, who="other_operator", community=world.other
    )
    assert other.status_code == 200, other.text
    assert [r["action"] for r in other.json()["rows"]] == ["created"] * 3
    home_rows, other_rows = (
        await residents(intake, world.home),
        await residents(intake, world.other),
    )
    assert home_rows["R-001"]["name"] == "王秀兰"
    assert other_rows["R-001"]["name"] == "周敏"
    assert await resident_count(intake) == 6


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field", "code"),
    [
        ("王秀兰".encode("gb18030") + b",x\n", "text/csv", 422, "body", "encoding"),
        (b"", "text/csv", 422, "body", "empty"),
        (
            b"R-001,Wang,13800138001,addr,,none,true\n",
            "text/csv",
            422,
            "header.1",
            "unknown_column",
        ),
        (
            b"external_ref,name,phone\nR-1,a,13800138001\n",
            "text/csv",
            422,
            "header.address",
            "missing_column",
        ),
        (f"{HEADER},shoe_size\n".encode(), "text/csv", 422, "header.8", "unknown_column"),
        (f"{HEADER},name\n".encode(), "text/csv", 422, "header.8", "duplicate_column"),
        (f'{HEADER}\nR-1,"a"b,c\n'.encode(), "text/csv", 422, "line.2", "malformed_csv"),
        (CLEAN.encode(), "application/json", 415, "header.content-type", "unsupported_media_type"),
    ],
    ids=[
        "gbk",
        "empty",
        "no-header",
        "missing-column",
        "unknown-column",
        "duplicate-column",
        "bad-quote",
        "not-csv",
    ],
)
async def test_unreadable_files_get_a_clear_4xx_and_change_nothing(
    intake: Any, body: bytes, content_type: str, status: int, field: str, code: str
) -> None:
    for dry_run in (True, False):
        response = await post_csv(intake, body, dry_run=dry_run, content_type=content_type)
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert (field, code) in {(d["field"], d["code"]) for d in detail}, detail
    # Without a header, the first row is data: the answer names positions, not values.
    assert "Wang" not in response.text
    assert "13800138001" not in response.text
    assert await resident_count(intake) == 0


async def test_limits_on_bytes_and_rows(intake: Any) -> None:
    settings = intake.world.settings
    line = "R-{n},王秀兰,13800138001,致远小区 3号楼 401,致远小区,none,true\n"
    too_many = (
        HEADER + "\n" + "".join(line.format(n=n) for n in range(settings.max_import_rows + 1))
    )
    assert len(too_many.encode()) < settings.max_import_bytes

    rows = await post_csv(intake, too_many, dry_run=True)
    assert rows.status_code == 422, rows.text
    assert rows.json()["detail"][0]["code"] == "too_many_rows"

    # Over the byte limit: 413 before the file is parsed, though within the row limit.
    padded = HEADER + "\n" + line.format(n=1).replace("401", "4" * settings.max_import_bytes)
    big = await post_csv(intake, padded, dry_run=True)
    assert big.status_code == 413, big.text
    assert big.json()["error"] == "payload_too_large"
    # Other routes keep the ordinary, smaller limit.
    assert settings.max_body_bytes < settings.max_import_bytes
    other = await intake.http.post(
        f"/v1/communities/{intake.world.home}/residents",
        content=b"{" + b" " * settings.max_body_bytes + b"}",
        headers={**intake.world.auth(), "Content-Type": "application/json"},
    )
    assert other.status_code == 413
    assert await resident_count(intake) == 0


async def test_no_personal_data_in_logs(intake: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("nats", "faststream", "asyncpg", "httpx", "httpcore", "linli"):
        caplog.set_level(logging.DEBUG, logger=name)
    canaries = f"{HEADER}\nC-1,{CANARY}-name,13800138077,{CANARY} address,,none,true\n"
    broken = f"{HEADER}\nC-2,{CANARY}-name,{CANARY}-phone,{CANARY} addr,,{CANARY},true\n"
    headless = f"C-3,{CANARY}-name,13800138078,{CANARY} address,,none,true\n"

    for body, dry_run in ((canaries, True), (canaries, False), (broken, False), (headless, True)):
        response = await post_csv(intake, body, dry_run=dry_run)
        assert response.status_code in (200, 422), response.text
        assert CANARY not in response.text
        assert "13800138077" not in response.text
    assert await resident_count(intake) == 1

    imports = [r for r in caplog.records if r.getMessage().startswith("csv import")]
    assert len(imports) == 4, "the imports were not logged; the capture is not working"
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        assert CANARY not in text, record
        assert "13800138077" not in text, record
    assert CANARY not in caplog.text


async def test_openapi_documents_the_csv_body_and_every_status(intake: Any) -> None:
    spec = (await intake.http.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/communities/{community}/imports/residents"]["post"]
    body = operation["requestBody"]
    assert list(body["content"]) == ["text/csv"]
    for column in ("external_ref", "name", "phone", "address", "priority_group"):
        assert f"`{column}`" in body["description"]
    assert {"200", "401", "403", "404", "413", "415", "422", "503"} <= set(operation["responses"])
    assert [p["name"] for p in operation["parameters"]] == ["community", "dry_run"]
