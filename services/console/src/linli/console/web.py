"""The console's pages: sign-in and sessions, the live community page, a need's page,
the monthly reports (JSON, CSV, printable; ADR 0038).

Sessions are server-side (`accounts.py`); the cookie is HttpOnly, SameSite=Strict, Path=/
and Secure outside development. Every POST carries the session's CSRF token (the sign-in
form: a double-submit cookie) and an Origin that is the console's own. No service token
ever reaches a page or a URL.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from linli.servicekit.errors import JSONBody, error_response
from linli.servicekit.sealing import SecretBox

from . import accounts, pages, reports, store, views
from .accounts import Session, StaffRole
from .i18n import DEFAULT_LOCALE, LOCALES, translate
from .settings import ConsoleSettings
from .upstream import Upstream, UpstreamFailed

SESSION_COOKIE = "linli_console_session"
SIGN_IN_COOKIE = "linli_console_signin"
"""Double-submit CSRF token of the sign-in form (there is no session yet)."""

router = APIRouter(include_in_schema=False)


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("linli.console", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hhmm"] = lambda value, zone: (
        value.astimezone(zone).strftime("%H:%M") if value else ""
    )
    env.filters["when"] = lambda value, zone: (
        value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else ""
    )
    env.filters["iso"] = lambda value: value.isoformat() if value else ""
    env.filters["dt"] = lambda value: datetime.fromisoformat(value) if value else None
    env.globals["outcomes"] = views.OUTCOMES
    return env


def _local(value: datetime | None, zone: ZoneInfo, pattern: str) -> str:
    return value.astimezone(zone).strftime(pattern) if value else ""


class Console:
    """What the routes share (`app.state.console`)."""

    def __init__(self, settings: ConsoleSettings, runtime: Any) -> None:
        self.settings = settings
        self.runtime = runtime
        self.box = SecretBox(
            settings.secrets_key.get_secret_value() if settings.secrets_key else None
        )
        self.upstream = Upstream(settings)
        self.env = templates()
        self.zone = ZoneInfo(settings.timezone)

    def render(
        self,
        request: Request,
        name: str,
        *,
        session: Session | None = None,
        status: int = 200,
        locale: str | None = None,
        **context: Any,
    ) -> HTMLResponse:
        chosen = locale or (session.locale if session else DEFAULT_LOCALE)

        def t(key: str, **values: Any) -> str:
            return translate(chosen, key, **values)

        html = self.env.get_template(name).render(
            t=t,
            locale=chosen,
            session=session,
            staff=session.staff if session else None,
            csrf=session.csrf_token if session else "",
            zone=self.zone,
            path=request.url.path,
            this_month=datetime.now(self.zone).strftime("%Y-%m"),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        return response

    def fragment(self, name: str, locale: str, **context: Any) -> str:
        def t(key: str, **values: Any) -> str:
            return translate(locale, key, **values)

        return self.env.get_template(name).render(t=t, locale=locale, zone=self.zone, **context)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=bool(self.settings.cookie_secure),
            httponly=True,
            samesite="strict",
        )


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


ConsoleDep = Annotated[Console, Depends(console_of)]


async def current_session(request: Request) -> Session | None:
    console = console_of(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    async with console.runtime.pool.acquire() as conn:
        return await accounts.resolve_session(
            conn, cookie, console.box, idle_s=console.settings.session_idle_s
        )


SessionDep = Annotated[Session | None, Depends(current_session)]


class Refused(Exception):
    """A POST failed the CSRF or Origin check (403, nothing changed)."""


def check_origin(request: Request, settings: ConsoleSettings) -> None:
    """The request comes from a page of this console (Origin, or Referer without one)."""
    expected = (
        settings.public_origin.rstrip("/")
        or f"{request.url.scheme}://{request.headers.get('host', '')}"
    )
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer", "")
        origin = "/".join(referer.split("/")[:3]) if referer else None
    if origin != expected:
        raise Refused("origin")


def check_csrf(request: Request, settings: ConsoleSettings, expected: str, given: str) -> None:
    check_origin(request, settings)
    if not expected or not secrets.compare_digest(expected.encode(), given.encode()):
        raise Refused("csrf")


def to_sign_in() -> RedirectResponse:
    return RedirectResponse("/sign-in", status_code=303)


# --- sign-in and out ---------------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_form(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    if session is not None:
        return RedirectResponse("/", status_code=303)
    return _sign_in_page(request, console, None, 200)


def _sign_in_page(request: Request, console: Console, error: str | None, status: int) -> Response:
    token = secrets.token_urlsafe(32)
    locale = request.cookies.get("linli_console_locale", DEFAULT_LOCALE)
    response = console.render(
        request,
        "sign_in.html",
        status=status,
        locale=locale if locale in LOCALES else DEFAULT_LOCALE,
        sign_in_token=token,
        error=error,
    )
    console.set_cookie(response, SIGN_IN_COOKIE, token, 3600)
    return response


@router.post("/sign-in")
async def sign_in(
    request: Request,
    console: ConsoleDep,
    login: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    try:
        check_csrf(request, console.settings, request.cookies.get(SIGN_IN_COOKIE, ""), csrf_token)
    except Refused:
        return _sign_in_page(request, console, "sign_in.expired", 403)
    settings = console.settings
    locale = request.cookies.get("linli_console_locale", DEFAULT_LOCALE)
    async with console.runtime.pool.acquire() as conn:
        outcome = await accounts.sign_in(
            conn,
            login,
            password,
            locale=locale,
            max_failures=settings.sign_in_max_failures,
            window_s=settings.sign_in_window_s,
            session_max_s=settings.session_max_s,
        )
    if outcome.throttled:
        return _sign_in_page(request, console, "sign_in.throttled", 429)
    if outcome.session_id is None:
        return _sign_in_page(request, console, "sign_in.failed", 401)
    response = RedirectResponse("/", status_code=303)
    console.set_cookie(response, SESSION_COOKIE, outcome.session_id, int(settings.session_max_s))
    response.delete_cookie(SIGN_IN_COOKIE, path="/")
    return response


@router.post("/sign-out")
async def sign_out(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    if session is None:
        return to_sign_in()
    check_csrf(request, console.settings, session.csrf_token, csrf_token)
    async with console.runtime.pool.acquire() as conn:
        await store.delete_session(conn, session.id_sha256)
    response = to_sign_in()
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/locale")
async def set_locale(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    locale: Annotated[str, Form(max_length=10)] = DEFAULT_LOCALE,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next_: Annotated[str, Form(alias="next", max_length=300)] = "/",
) -> Response:
    if session is None:
        return to_sign_in()
    check_csrf(request, console.settings, session.csrf_token, csrf_token)
    if locale not in LOCALES:
        locale = DEFAULT_LOCALE
    async with console.runtime.pool.acquire() as conn:
        await store.set_locale(conn, session.id_sha256, locale)
    # Only a path of this console: never an open redirect.
    safe = next_.startswith("/") and not next_.startswith("//") and "\\" not in next_
    target = next_ if safe else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        "linli_console_locale",
        locale,
        max_age=365 * 86400,
        path="/",
        samesite="strict",
        secure=bool(console.settings.cookie_secure),
        httponly=True,
    )
    return response


# --- pages -------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    if session is None:
        return to_sign_in()
    staff = session.staff
    if staff.sees_personal_data and len(staff.communities) == 1:
        return RedirectResponse(f"/c/{staff.communities[0]}", status_code=303)
    found = await pages.summaries(console.upstream, staff)
    return console.render(request, "home.html", session=session, summaries=found)


@router.get("/c/{community}")
async def community_page(
    request: Request, community: str, console: ConsoleDep, session: SessionDep
) -> Response:
    if session is None:
        return to_sign_in()
    view = await pages.community_view(
        console.upstream, session.staff, community, console.zone, session.locale
    )
    return console.render(request, "community.html", session=session, view=view)


@router.get("/c/{community}/needs/{need_id}")
async def need_page(
    request: Request, community: str, need_id: str, console: ConsoleDep, session: SessionDep
) -> Response:
    if session is None:
        return to_sign_in()
    try:
        uuid.UUID(need_id)
    except ValueError as exc:
        raise pages.NotFound(need_id) from exc
    page = await pages.need_page(console.upstream, session.staff, community, need_id)
    return console.render(
        request,
        "need.html",
        session=session,
        community=community,
        page=page,
        idempotency_key=str(uuid.uuid4()),
    )


# --- reports (ADR 0038) -------------------------------------------------------------------

REPORT_FORMATS = ("", ".json", ".csv")


def _split_report_name(name: str) -> tuple[str, str]:
    """`2026-11`, `2026-11.json` or `2026-11.csv` → (month, format); NotFound otherwise."""
    for fmt in (".json", ".csv"):
        if name.endswith(fmt):
            return name[: -len(fmt)], fmt
    if "." in name:
        raise pages.NotFound(name)
    return name, ""


async def _report(
    request: Request,
    console: Console,
    session: Session | None,
    name: str,
    scope: dict[str, str],
    communities: list[str] | None,
) -> Response:
    """One month's report of `communities` (None: the account may not see this scope)."""
    month, fmt = _split_report_name(name)
    if session is None:
        if fmt:
            return error_response(401, "unauthenticated", "sign in to the console first")
        return to_sign_in()
    if communities is None:
        if fmt:
            return error_response(404, "not_found", "no such report")
        raise pages.NotFound(name)
    try:
        start, end = reports.month_bounds(month, console.zone)
    except ValueError as exc:
        detail = [{"field": "month", "message": str(exc), "code": "malformed"}]
        if fmt:
            return error_response(422, "validation_failed", detail)
        return console.render(
            request, "error.html", session=session, status=422, message="report.bad_month"
        )
    async with console.runtime.pool.acquire() as conn:
        rows = await store.report_rows(conn, communities, start, end)
    report = reports.build(
        rows,
        month=month,
        scope=scope,
        communities=communities,
        timezone=console.settings.timezone,
        now=datetime.now(UTC),
        meal_minutes=console.settings.report_meal_minutes,
    )
    slug = "-".join(f"{k}-{v}" for k, v in scope.items())
    if fmt == ".json":
        response: Response = JSONBody(report)
    elif fmt == ".csv":
        response = Response(
            reports.to_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="linli-report-{slug}-{month}.csv"'
            },
        )
    else:
        base = request.url.path
        response = console.render(request, "report.html", session=session, report=report, base=base)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/c/{community}/reports/{name}")
async def community_report(
    request: Request, community: str, name: str, console: ConsoleDep, session: SessionDep
) -> Response:
    """A community's month: its operators, and the street office it belongs to."""
    held = session is not None and session.staff.holds(community)
    return await _report(
        request, console, session, name, {"community": community}, [community] if held else None
    )


@router.get("/s/{street_office}/reports/{name}")
async def street_office_report(
    request: Request, street_office: str, name: str, console: ConsoleDep, session: SessionDep
) -> Response:
    """A street office's month: the sum of its communities, for its own staff only."""
    staff = session.staff if session is not None else None
    mine = (
        staff is not None
        and staff.role is StaffRole.STREET_OFFICE
        and staff.street_office == street_office
    )
    communities = list(staff.communities) if mine and staff is not None else None
    return await _report(
        request, console, session, name, {"street_office": street_office}, communities
    )


def install_error_pages(app: Any) -> None:
    """404 for what the staff member may not see, 403 for refused POSTs, 502 for a
    service that cannot answer: HTML pages, never a stack trace."""

    async def not_found(request: Request, _exc: Exception) -> Response:
        session = await current_session(request)
        return console_of(request).render(
            request, "error.html", session=session, status=404, message="error.not_found"
        )

    async def refused(request: Request, _exc: Exception) -> Response:
        session = await current_session(request)
        return console_of(request).render(
            request, "error.html", session=session, status=403, message="error.forbidden"
        )

    async def upstream(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UpstreamFailed)
        session = await current_session(request)
        return console_of(request).render(
            request,
            "error.html",
            session=session,
            status=502,
            message="error.upstream",
            service=exc.service,
        )

    app.add_exception_handler(pages.NotFound, not_found)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(UpstreamFailed, upstream)
