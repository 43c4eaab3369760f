"""CSV imports, the part every service shares (ADR 0035).

A service that owns rows (intake's residents, partners' partners, volunteers and
capacity) imports them from a CSV file with one route built from this module: the file
is parsed and each data row is validated against a pydantic model; rows that pass are
applied, one savepoint each, by the service's own use case inside one transaction that
holds an advisory lock per community and kind. A dry run, or a real run with any row
error, rolls that transaction back, so it writes nothing (all or nothing) and reports
exactly what a real run would do.

Personal data: values never leave this module in an error or a log line. Errors name the
line, the column and a code; a header that does not match is described by column
positions, since a file without a header has data (a name, a phone) in its first line.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import types
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from linli.contracts.binding import reasons_from_validation_error
from linli.contracts.types import Reason

from .errors import ErrorBody, JSONBody, error_response

__all__ = [
    "EXTERNAL_REF_PATTERN",
    "IMPORT_PATH",
    "IMPORT_RESPONSES",
    "Action",
    "ExternalRef",
    "ImportRefused",
    "ImportReport",
    "ImportTotals",
    "ParsedRow",
    "RowRejected",
    "RowResult",
    "check_media_type",
    "columns_of",
    "failed_response",
    "handle_import",
    "openapi_body",
    "parse_csv",
    "run_import",
]

log = logging.getLogger(__name__)

IMPORT_PATH = re.compile(r"^(?:/v1/communities/[^/]+/imports/|/c/[^/]+/imports$)")
"""Routes under this path take bodies up to `max_import_bytes` (http.BodyLimitMiddleware):
the services' import routes, and the console's upload form (`/c/{community}/imports`)."""

EXTERNAL_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
ExternalRef = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=EXTERNAL_REF_PATTERN),
    Field(
        description="The row's id in the community's own records (letters, digits and "
        "._:/-, at most 64): the key that makes a second import of the same file change "
        "nothing. It is echoed in import reports, so it must not be a name or a phone."
    ),
]

LIST_SEPARATOR = ";"
"""Cells of list-valued columns hold the items separated by this."""

MAX_REASONS = 1000
"""At most this many row errors in a 422 answer (the dry run lists every row)."""

CSV_MEDIA_TYPES = ("text/csv", "application/csv")

Action = Literal["created", "updated", "unchanged", "error"]
M = TypeVar("M", bound=BaseModel)


class RowResult(BaseModel):
    """What the import did, or would do, with one data row."""

    line: int = Field(description="Line of the file where the row starts (the header is 1).")
    external_ref: str | None = Field(
        default=None, description="The row's key, when it could be read."
    )
    action: Action = Field(description="created, updated, unchanged or error.")
    errors: list[Reason] = Field(
        default_factory=list,
        description="Why the row cannot be imported: field is the column; never its value.",
    )


class ImportTotals(BaseModel):
    """Counts of rows by action."""

    rows: int = Field(description="Data rows in the file.")
    created: int = Field(description="Rows that create something.")
    updated: int = Field(description="Rows that change something that exists.")
    unchanged: int = Field(description="Rows that match what exists already.")
    errors: int = Field(description="Rows with errors.")


class ImportReport(BaseModel):
    """The answer of an import: per-row results and totals."""

    kind: str = Field(description="What was imported, e.g. residents.")
    dry_run: bool = Field(description="True: nothing was written, whatever the rows say.")
    applied: bool = Field(description="True when the changes were committed.")
    totals: ImportTotals
    rows: list[RowResult] = Field(description="One result per data row, in file order.")


@dataclass
class ParsedRow(Generic[M]):
    """One data row: its line, its key and either the validated model or errors."""

    line: int
    key: str | None
    value: M | None
    errors: list[Reason] = field(default_factory=list)


class ImportRefused(Exception):
    """The file as a whole cannot be read: wrong media type, encoding, header, size."""

    def __init__(self, status: int, error: str, reasons: list[Reason]) -> None:
        super().__init__("; ".join(f"{r.field}: {r.code}" for r in reasons))
        self.status = status
        self.error = error
        self.reasons = reasons

    def response(self) -> JSONResponse:
        return error_response(self.status, self.error, [r.model_dump() for r in self.reasons])


class RowRejected(Exception):
    """Raised by a service's apply function: this row cannot be imported, for reasons."""

    def __init__(self, reasons: list[Reason]) -> None:
        super().__init__("; ".join(f"{r.field}: {r.code}" for r in reasons))
        self.reasons = reasons


def _refuse(status: int, error: str, field_: str, code: str, message: str) -> ImportRefused:
    return ImportRefused(status, error, [Reason(field=field_, code=code, message=message)])


def check_media_type(content_type: str | None) -> None:
    """415 unless the body is declared CSV (`text/csv`, any charset parameter)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in CSV_MEDIA_TYPES:
        raise _refuse(
            415,
            "unsupported_media_type",
            "header.content-type",
            "unsupported_media_type",
            "send the file as text/csv",
        )


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return False


def columns_of(model: type[BaseModel]) -> tuple[list[str], set[str], set[str]]:
    """All columns of a row model, the required ones and the list-valued ones."""
    names = list(model.model_fields)
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    lists = {n for n, f in model.model_fields.items() if _is_list(f.annotation)}
    return names, required, lists


def _decode(body: bytes) -> str:
    if not body.strip():
        raise _refuse(422, "validation_failed", "body", "empty", "the file is empty")
    try:
        # utf-8-sig drops a byte-order mark (spreadsheets write one) and keeps the rest.
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refuse(
            422,
            "validation_failed",
            "body",
            "encoding",
            f"the file is not UTF-8 (invalid byte at offset {exc.start}); save it as CSV UTF-8",
        ) from exc


def _header(cells: list[str], model: type[BaseModel]) -> list[str]:
    names, required, _ = columns_of(model)
    header = [c.strip().lower() for c in cells]
    reasons: list[Reason] = []
    seen: set[str] = set()
    expected = ", ".join(names)
    for position, name in enumerate(header, start=1):
        if name not in names:
            # Position only: without a header, this "name" is a resident's data.
            reasons.append(
                Reason(
                    field=f"header.{position}",
                    code="unknown_column",
                    message=f"column {position} is not one of: {expected}",
                )
            )
        elif name in seen:
            reasons.append(
                Reason(
                    field=f"header.{position}",
                    code="duplicate_column",
                    message=f"column {name} appears twice",
                )
            )
        seen.add(name)
    for name in names:
        if name in required and name not in seen:
            reasons.append(
                Reason(
                    field=f"header.{name}",
                    code="missing_column",
                    message=f"required column {name} is missing (the first line must be "
                    "the header)",
                )
            )
    if reasons:
        raise ImportRefused(422, "validation_failed", reasons[:MAX_REASONS])
    return header


def parse_csv(
    body: bytes,
    model: type[M],
    *,
    max_rows: int,
    key_of: Callable[[M], str],
    ref_column: str | None = "external_ref",
) -> list[ParsedRow[M]]:
    """Read a CSV file into validated rows, each with its line number and errors.

    The first non-blank line is the header (column names, any order, case ignored); a
    column may be left out when its field has a default. Empty cells are absent values;
    list-valued fields take items separated by `;`. A key (`key_of`) that repeats an
    earlier row's is an error on the later row. Raises ImportRefused for the file.
    """
    text = _decode(body)
    _, _, lists = columns_of(model)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[ParsedRow[M]] = []
    keys: dict[str, int] = {}
    last_line = 0
    try:
        for cells in reader:
            line = last_line + 1
            last_line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if header is None:
                header = _header(cells, model)
                continue
            if len(rows) >= max_rows:
                raise _refuse(
                    422,
                    "validation_failed",
                    "body",
                    "too_many_rows",
                    f"the file has more than {max_rows} data rows; split it",
                )
            rows.append(_row(line, header, cells, model, lists, key_of, keys, ref_column))
    except csv.Error as exc:
        raise _refuse(
            422,
            "validation_failed",
            f"line.{reader.line_num}",
            "malformed_csv",
            "the file is not valid CSV here (an unclosed quote or a stray character)",
        ) from exc
    if header is None:
        raise _refuse(422, "validation_failed", "body", "empty", "the file has no header")
    return rows


def _row(
    line: int,
    header: list[str],
    cells: list[str],
    model: type[M],
    lists: set[str],
    key_of: Callable[[M], str],
    keys: dict[str, int],
    ref_column: str | None,
) -> ParsedRow[M]:
    ref = None
    if ref_column is not None and ref_column in header:
        raw = (
            cells[header.index(ref_column)].strip() if header.index(ref_column) < len(cells) else ""
        )
        ref = raw if re.match(EXTERNAL_REF_PATTERN, raw) else None
    if len(cells) != len(header):
        reason = Reason(
            field="",
            code="column_count",
            message=f"the row has {len(cells)} cells, the header {len(header)}",
        )
        return ParsedRow(line, ref, None, [reason])
    values: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=True):
        cell = cell.strip()
        if not cell:
            continue
        if name in lists:
            values[name] = [item.strip() for item in cell.split(LIST_SEPARATOR) if item.strip()]
        else:
            values[name] = cell
    try:
        value = model.model_validate(values)
    except ValidationError as exc:
        return ParsedRow(line, ref, None, reasons_from_validation_error(exc))
    key = key_of(value)
    if key in keys:
        reason = Reason(
            field=ref_column or "",
            code="duplicate_key",
            message=f"the same row key is on line {keys[key]} already",
        )
        return ParsedRow(line, ref, None, [reason])
    keys[key] = line
    return ParsedRow(line, ref, value)


class _RollBack(Exception):
    """Leaves the import's transaction without committing (dry run, or row errors)."""


Apply = Callable[[asyncpg.Connection, M], Awaitable[Action]]


async def run_import(
    conn: asyncpg.Connection,
    kind: str,
    rows: Sequence[ParsedRow[M]],
    apply: Apply[M],
    *,
    dry_run: bool,
    lock: str,
) -> ImportReport:
    """Apply every valid row in one transaction; commit only a real run without errors.

    `apply` is the service's use case for one row: it reads what exists by the row's key
    and writes, answering created, updated or unchanged, or raises RowRejected. Each row
    runs in a savepoint. `lock` names an advisory lock held for the transaction, so two
    imports of the same kind into one community never interleave.
    """
    results: list[RowResult] = []
    applied = False
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock)
            for row in rows:
                results.append(await _apply_row(conn, row, apply))
            if dry_run or any(r.action == "error" for r in results):
                raise _RollBack
            applied = True
    except _RollBack:
        pass
    totals = ImportTotals(
        rows=len(results),
        created=sum(r.action == "created" for r in results),
        updated=sum(r.action == "updated" for r in results),
        unchanged=sum(r.action == "unchanged" for r in results),
        errors=sum(r.action == "error" for r in results),
    )
    return ImportReport(kind=kind, dry_run=dry_run, applied=applied, totals=totals, rows=results)


async def _apply_row(conn: asyncpg.Connection, row: ParsedRow[M], apply: Apply[M]) -> RowResult:
    if row.value is None:
        return RowResult(line=row.line, external_ref=row.key, action="error", errors=row.errors)
    try:
        async with conn.transaction():
            action = await apply(conn, row.value)
    except RowRejected as exc:
        return RowResult(line=row.line, external_ref=row.key, action="error", errors=exc.reasons)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
        # A value the database refuses (out of range, a constraint): the row is bad input.
        reason = Reason(field="", code="out_of_range", message="a value is out of range or invalid")
        return RowResult(line=row.line, external_ref=row.key, action="error", errors=[reason])
    return RowResult(line=row.line, external_ref=row.key, action=action)


def failed_response(report: ImportReport) -> JSONResponse:
    """422 for a real run with row errors: every error as `line.<n>.<column>`."""
    reasons: list[dict[str, str]] = []
    for result in report.rows:
        for reason in result.errors:
            where = f"line.{result.line}" + (f".{reason.field}" if reason.field else "")
            reasons.append({"field": where[:200], "code": reason.code, "message": reason.message})
    return error_response(422, "validation_failed", reasons[:MAX_REASONS])


async def handle_import(
    request: Request,
    *,
    kind: str,
    community: str,
    model: type[M],
    apply: Apply[M],
    key_of: Callable[[M], str],
    dry_run: bool,
    lock: str,
    ref_column: str | None = "external_ref",
) -> JSONResponse:
    """The whole of an import route, after the caller's scope and role are checked.

    200 with the report for a dry run and for a real run that committed; 422 (the one
    error shape, errors as `line.<n>.<column>`) for a real run with row errors, which
    wrote nothing; 415/422 for a file that cannot be read; 413 above the size limit.
    """
    runtime = request.app.state.runtime
    try:
        check_media_type(request.headers.get("content-type"))
        body = await request.body()
        rows = parse_csv(
            body,
            model,
            max_rows=runtime.settings.max_import_rows,
            key_of=key_of,
            ref_column=ref_column,
        )
    except ImportRefused as exc:
        log.info(
            "csv import refused",
            extra={
                "community": community,
                "import_kind": kind,
                "codes": [r.code for r in exc.reasons],
            },
        )
        return exc.response()
    async with runtime.pool.acquire() as conn:
        report = await run_import(conn, kind, rows, apply, dry_run=dry_run, lock=lock)
    log.info(
        "csv import",
        extra={
            "community": community,
            "import_kind": kind,
            "dry_run": dry_run,
            "applied": report.applied,
            **{f"rows_{k}": v for k, v in report.totals.model_dump().items()},
        },
    )
    if not dry_run and not report.applied:
        return failed_response(report)
    return JSONBody(report.model_dump(mode="json"))


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "model": ErrorBody}


IMPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The report: a dry run, or a real run that committed every row."},
    401: _error("Missing or invalid bearer token."),
    403: _error("The credential's role may not import."),
    404: _error("The community is not one of the credential's (or does not exist)."),
    413: _error("The file is larger than the import limit (max_import_bytes)."),
    415: _error("The body is not declared text/csv."),
    422: _error(
        "The file cannot be read (encoding, header, malformed CSV, too many rows: field "
        "`body`, `header.<n>` or `line.<n>`), or a real run had row errors "
        "(`line.<n>.<column>`) and wrote nothing."
    ),
    503: _error("A dependency is unavailable; retry later."),
}


def openapi_body(model: type[BaseModel], summary: str) -> dict[str, Any]:
    """OpenAPI `requestBody` for a CSV import of `model` rows, listing its columns."""
    names, required, lists = columns_of(model)
    lines = [summary, "", "Columns (header row first, any order; UTF-8, a BOM is allowed):", ""]
    for name in names:
        info = model.model_fields[name]
        flags = "required" if name in required else "optional"
        if name in lists:
            flags += f", items separated by '{LIST_SEPARATOR}'"
        lines.append(f"- `{name}` ({flags}): {info.description or ''}".rstrip())
    return {
        "requestBody": {
            "required": True,
            "description": "\n".join(lines),
            "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
