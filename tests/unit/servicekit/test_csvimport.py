"""The CSV import parser (servicekit csvimport, ADR 0035): lines, columns, keys, lists."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from linli.servicekit.csvimport import (
    ExternalRef,
    ImportRefused,
    check_media_type,
    openapi_body,
    parse_csv,
)

pytestmark = pytest.mark.unit


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    external_ref: ExternalRef
    name: str = Field(min_length=1, description="A name.")
    tags: list[str] = Field(default_factory=list, description="Tags.")
    size: int = Field(default=1, ge=1, description="A size.")


def parse(text: str | bytes, max_rows: int = 100) -> list:
    body = text.encode() if isinstance(text, str) else text
    return parse_csv(body, Row, max_rows=max_rows, key_of=lambda r: r.external_ref)


def refused(text: str | bytes, max_rows: int = 100) -> set[tuple[str, str]]:
    with pytest.raises(ImportRefused) as caught:
        parse(text, max_rows)
    return {(r.field, r.code) for r in caught.value.reasons}


def test_lines_count_blank_lines_and_quoted_line_breaks() -> None:
    rows = parse('\ufeffExternal_Ref , name\r\n\r\nA-1,"two\nlines"\nA-2,b\n\n')
    assert [(r.line, r.key, r.errors) for r in rows] == [(3, "A-1", []), (5, "A-2", [])]
    assert rows[0].value.name == "two\nlines"


def test_empty_cells_take_defaults_and_lists_split_on_semicolons() -> None:
    (row,) = parse("external_ref,name,tags,size\nA-1,x, a ; b;;,\n")
    assert row.value.tags == ["a", "b"]
    assert row.value.size == 1


def test_row_errors_name_columns_never_values() -> None:
    rows = parse("external_ref,name,size\nA-1,,0\nA-1,ok,2\nA-2,only\n!bad,x,1\n")
    assert [(r.line, {(e.field, e.code) for e in r.errors}) for r in rows] == [
        (2, {("name", "missing"), ("size", "greater_than_equal")}),
        (3, set()),
        (4, {("", "column_count")}),
        (5, {("external_ref", "string_pattern_mismatch")}),
    ]
    assert rows[4 - 2].key == "A-2"
    assert rows[5 - 2].key is None  # a ref that does not fit the pattern is not echoed


def test_a_repeated_key_is_an_error_on_the_later_row() -> None:
    rows = parse("external_ref,name\nA-1,x\nA-1,y\n")
    assert [(e.field, e.code) for e in rows[1].errors] == [("external_ref", "duplicate_key")]
    assert "line 2" in rows[1].errors[0].message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", {("body", "empty")}),
        (b"\n\n", {("body", "empty")}),
        (b"\xff\xfeexternal_ref\n", {("body", "encoding")}),
        ("external_ref,name\n", set()),
        ("name\nx\n", {("header.external_ref", "missing_column")}),
        ("external_ref,name,secret\n", {("header.3", "unknown_column")}),
        ("external_ref,name,NAME\n", {("header.3", "duplicate_column")}),
        ('external_ref,name\nA-1,"x"y\n', {("line.2", "malformed_csv")}),
    ],
)
def test_files_that_cannot_be_read(body: str | bytes, expected: set[tuple[str, str]]) -> None:
    if not expected:
        assert parse(body) == []
        return
    assert refused(body) == expected


def test_a_file_without_header_is_refused_by_position_not_value() -> None:
    with pytest.raises(ImportRefused) as caught:
        parse("A-1,王秀兰\n")
    text = str([r.model_dump() for r in caught.value.reasons])
    assert "王秀兰" not in text
    assert ("header.2", "unknown_column") in {(r.field, r.code) for r in caught.value.reasons}


def test_too_many_rows() -> None:
    assert refused("external_ref,name\nA-1,x\nA-2,y\nA-3,z\n", max_rows=2) == {
        ("body", "too_many_rows")
    }
    assert len(parse("external_ref,name\nA-1,x\nA-2,y\n", max_rows=2)) == 2


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("text/csv", True),
        ("text/csv; charset=utf-8", True),
        ("Text/CSV", True),
        ("application/csv", True),
        ("application/json", False),
        (None, False),
    ],
)
def test_media_type(content_type: str | None, ok: bool) -> None:
    if ok:
        check_media_type(content_type)
    else:
        with pytest.raises(ImportRefused) as caught:
            check_media_type(content_type)
        assert caught.value.status == 415


def test_openapi_body_lists_columns() -> None:
    body = openapi_body(Row, "Rows.")["requestBody"]
    assert list(body["content"]) == ["text/csv"]
    assert "`external_ref` (required)" in body["description"]
    assert "`tags` (optional, items separated by ';')" in body["description"]
