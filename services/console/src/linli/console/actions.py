"""Staff actions from the console (ADR 0037): escalations (acknowledge, assign, resolve),
needs (dispatch by hand, re-offer, cancel) and CSV imports.

Every action is a POST with the session's CSRF token and the console's own Origin; it
calls the owning service's API with the staff member's own credential, so the service
scopes it and records who acted (the credential's label). A community the account does
not hold answers 404 before any call; street-office accounts do not act (403). What a
service refuses (409, 413, 415, 422) is shown next to the form, in the staff member's
language where the code is known; nothing else changes.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from . import pages, store, views
from .accounts import Session, Staff
from .i18n import catalogue, translate
from .upstream import ServiceRefused, UpstreamNotFound
from .web import Console, ConsoleDep, Refused, SessionDep, check_csrf, to_sign_in

router = APIRouter(include_in_schema=False)

ESCALATION_ACTIONS = ("acknowledge", "assign", "resolve")
_PARTY = re.compile(r"^(partner|volunteer):([0-9a-fA-F-]{36})$")

CsrfForm = Annotated[str, Form(max_length=100)]


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise pages.NotFound(value) from exc


def acting_staff(
    request: Request, console: Console, session: Session, community: str, csrf: str
) -> Staff:
    """The staff member acting on `community`: CSRF and Origin first (403), then the
    community (404), then the role: street-office accounts do not act (403)."""
    check_csrf(request, console.settings, session.csrf_token, csrf)
    staff = session.staff
    pages.require_community(staff, community)
    if not staff.sees_personal_data:
        raise Refused("role")
    return staff


def shown(locale: str, refused: ServiceRefused) -> list[dict[str, str]]:
    """A refusal's reasons for the page: the catalogue's text for a known code
    (`problem.<code>`), the service's own sentence otherwise."""
    known = catalogue(locale)
    out = []
    for p in views.problems(refused.status, refused.error, refused.reasons, refused.sentence):
        key = f"problem.{p.code}"
        text = translate(locale, key) if key in known else p.message
        out.append({"field": p.field, "code": p.code, "text": text})
    return out


async def _back_to_need(
    request: Request,
    console: Console,
    session: Session,
    community: str,
    need_id: str,
    errors: dict[str, list[dict[str, str]]],
    status: int,
    values: dict[str, str] | None = None,
) -> Response:
    page = await pages.need_page(console.upstream, session.staff, community, need_id)
    return console.render(
        request,
        "need.html",
        session=session,
        status=status,
        community=community,
        page=page,
        errors=errors,
        values=values or {},
        outcomes=views.OUTCOMES,
        idempotency_key=str(uuid.uuid4()),
    )


async def _back_to_live(
    request: Request,
    console: Console,
    session: Session,
    community: str,
    errors: dict[str, list[dict[str, str]]],
    status: int,
) -> Response:
    view = await pages.community_view(
        console.upstream, session.staff, community, console.zone, session.locale
    )
    return console.render(
        request,
        "community.html",
        session=session,
        status=status,
        view=view,
        errors=errors,
        outcomes=views.OUTCOMES,
    )


# --- escalations -------------------------------------------------------------------------


@router.post("/c/{community}/escalations/{escalation_id}/{action}")
async def escalation_action(
    request: Request,
    community: str,
    escalation_id: str,
    action: str,
    console: ConsoleDep,
    session: SessionDep,
    csrf_token: CsrfForm = "",
    need_id: Annotated[str, Form(max_length=36)] = "",
    back: Annotated[str, Form(max_length=10)] = "need",
    assignee: Annotated[str, Form(max_length=200)] = "",
    outcome: Annotated[str, Form(max_length=40)] = "",
    note: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    if session is None:
        return to_sign_in()
    staff = acting_staff(request, console, session, community, csrf_token)
    if action not in ESCALATION_ACTIONS:
        raise pages.NotFound(action)
    escalation = _uuid(escalation_id)
    need = str(_uuid(need_id))
    body: dict[str, Any] | None = None
    if action == "assign":
        body = {"assignee": assignee.strip() or staff.display_name}
    elif action == "resolve":
        body = {"outcome": outcome, "note": note.strip() or None}
    path = f"/v1/communities/{community}/escalations/{escalation}/{action}"
    try:
        await console.upstream.post("scheduling", path, staff.service_token, json=body)
    except ServiceRefused as refused:
        errors = {f"escalation-{escalation}-{action}": shown(session.locale, refused)}
        if back == "live":
            return await _back_to_live(request, console, session, community, errors, refused.status)
        values = {"note": note, "assignee": assignee}
        return await _back_to_need(
            request, console, session, community, need, errors, refused.status, values
        )
    except UpstreamNotFound as exc:
        raise pages.NotFound(escalation_id) from exc
    target = f"/c/{community}" if back == "live" else f"/c/{community}/needs/{need}"
    return RedirectResponse(target, status_code=303)


# --- needs -------------------------------------------------------------------------------


@router.post("/c/{community}/needs/{need_id}/{action}")
async def need_action(
    request: Request,
    community: str,
    need_id: str,
    action: str,
    console: ConsoleDep,
    session: SessionDep,
    csrf_token: CsrfForm = "",
    party: Annotated[str, Form(max_length=100)] = "",
    reason: Annotated[str, Form(max_length=1000)] = "",
    idempotency_key: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    if session is None:
        return to_sign_in()
    staff = acting_staff(request, console, session, community, csrf_token)
    need = str(_uuid(need_id))
    base = f"/v1/communities/{community}"
    key = idempotency_key if re.fullmatch(r"[A-Za-z0-9-]{8,64}", idempotency_key) else None
    try:
        if action == "dispatch":
            chosen = _PARTY.match(party)
            if chosen is None:
                refusal = ServiceRefused(
                    "console",
                    422,
                    "validation_failed",
                    [{"field": "party", "code": "party_required", "message": "choose a party"}],
                )
                return await _back_to_need(
                    request,
                    console,
                    session,
                    community,
                    need,
                    {"dispatch": shown(session.locale, refusal)},
                    422,
                )
            await console.upstream.post(
                "scheduling",
                f"{base}/needs/{need}/dispatch",
                staff.service_token,
                json={"party": {"kind": chosen.group(1), "id": chosen.group(2)}},
                idempotency_key=key,
            )
        elif action == "reoffer":
            await console.upstream.post(
                "scheduling",
                f"{base}/needs/{need}/reoffer",
                staff.service_token,
                json={},
                idempotency_key=key,
            )
        elif action == "cancel":
            await console.upstream.post(
                "intake",
                f"{base}/needs/{need}/cancel",
                staff.service_token,
                json={"reason": reason.strip() or None},
            )
        else:
            raise pages.NotFound(action)
    except ServiceRefused as refused:
        return await _back_to_need(
            request,
            console,
            session,
            community,
            need,
            {action: shown(session.locale, refused)},
            refused.status,
            {"reason": reason, "party": party},
        )
    except UpstreamNotFound as exc:
        raise pages.NotFound(need_id) from exc
    return RedirectResponse(f"/c/{community}/needs/{need}", status_code=303)


# --- CSV imports -------------------------------------------------------------------------


def _importer(session: Session, community: str) -> Staff:
    staff = session.staff
    pages.require_community(staff, community)
    if not staff.sees_personal_data:
        raise Refused("role")
    return staff


def _import_page(
    request: Request,
    console: Console,
    session: Session,
    community: str,
    *,
    status: int = 200,
    kind: str = "residents",
    report: dict[str, Any] | None = None,
    upload_id: uuid.UUID | None = None,
    errors: list[dict[str, str]] | None = None,
) -> Response:
    return console.render(
        request,
        "imports.html",
        session=session,
        status=status,
        community=community,
        kinds=list(views.IMPORT_KINDS),
        kind=kind,
        report=report,
        failed_rows=[r for r in (report or {}).get("rows", []) if r.get("errors")],
        upload_id=upload_id,
        errors=errors or [],
    )


@router.get("/c/{community}/imports")
async def import_form(
    request: Request, community: str, console: ConsoleDep, session: SessionDep
) -> Response:
    if session is None:
        return to_sign_in()
    _importer(session, community)
    return _import_page(request, console, session, community)


async def _run_import(
    console: Console, staff: Staff, community: str, kind: str, body: bytes, dry_run: bool
) -> dict[str, Any]:
    service = views.IMPORT_KINDS[kind]
    result: dict[str, Any] = await console.upstream.post(
        service,
        f"/v1/communities/{community}/imports/{kind}",
        staff.service_token,
        content=body,
        content_type="text/csv",
        params={"dry_run": "true" if dry_run else "false"},
    )
    return result


@router.post("/c/{community}/imports")
async def import_dry_run(
    request: Request,
    community: str,
    console: ConsoleDep,
    session: SessionDep,
    csrf_token: CsrfForm = "",
    kind: Annotated[str, Form(max_length=20)] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Upload a file and answer the dry run's report; the file is kept for this session
    until the explicit import (never in a URL)."""
    if session is None:
        return to_sign_in()
    check_csrf(request, console.settings, session.csrf_token, csrf_token)
    staff = _importer(session, community)
    if kind not in views.IMPORT_KINDS:
        kind = "residents"
        problem = {
            "field": "kind",
            "code": "kind_unknown",
            "text": translate(session.locale, "problem.kind_unknown"),
        }
        return _import_page(request, console, session, community, status=422, errors=[problem])
    limit = console.settings.max_import_bytes
    body = await file.read(limit + 1) if file is not None else b""
    if not body or len(body) > limit:
        code = "empty" if not body else "file_too_large"
        problem = {
            "field": "file",
            "code": code,
            "text": translate(session.locale, f"problem.{code}"),
        }
        return _import_page(
            request, console, session, community, status=422, kind=kind, errors=[problem]
        )
    try:
        report = await _run_import(console, staff, community, kind, body, dry_run=True)
    except ServiceRefused as refused:
        return _import_page(
            request,
            console,
            session,
            community,
            status=refused.status,
            kind=kind,
            errors=shown(session.locale, refused),
        )
    except UpstreamNotFound as exc:
        raise pages.NotFound(community) from exc
    upload_id = None
    if not report["totals"]["errors"]:
        async with console.runtime.pool.acquire() as conn:
            upload_id = await store.save_upload(conn, session.id_sha256, community, kind, body)
    return _import_page(
        request, console, session, community, kind=kind, report=report, upload_id=upload_id
    )


@router.post("/c/{community}/imports/{upload_id}")
async def import_run(
    request: Request,
    community: str,
    upload_id: str,
    console: ConsoleDep,
    session: SessionDep,
    csrf_token: CsrfForm = "",
) -> Response:
    """The explicit import: the same file again with dry_run=false."""
    if session is None:
        return to_sign_in()
    check_csrf(request, console.settings, session.csrf_token, csrf_token)
    staff = _importer(session, community)
    wanted = _uuid(upload_id)
    async with console.runtime.pool.acquire() as conn:
        row = await store.upload(conn, wanted, session.id_sha256, community)
    if row is None:
        raise pages.NotFound(upload_id)
    kind = row["kind"]
    try:
        report = await _run_import(
            console, staff, community, kind, bytes(row["body"]), dry_run=False
        )
    except ServiceRefused as refused:
        return _import_page(
            request,
            console,
            session,
            community,
            status=refused.status,
            kind=kind,
            errors=shown(session.locale, refused),
        )
    except UpstreamNotFound as exc:
        raise pages.NotFound(community) from exc
    async with console.runtime.pool.acquire() as conn:
        await store.delete_upload(conn, wanted)
    return _import_page(request, console, session, community, kind=kind, report=report)
