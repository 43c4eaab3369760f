"""The staff console on real servers: the five services as processes (Lifecycle).

Pages are checked with an HTML parser (harness.html); a browser comes later (Playwright).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from harness.console import Browser, console_url
from harness.html import Element, parse
from harness.intake import meal_need
from harness.lifecycle import Lifecycle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "correct horse battery"


async def test_sign_in_sessions_csrf_and_rate_limit(lifecycle: Any) -> None:
    lc: Lifecycle = await lifecycle(console=True)
    token = await lc.add_staff("op-home", PASSWORD, communities=[lc.home])
    browser = Browser(console_url(lc))
    try:
        # No session: pages send to the sign-in form; the live stream is refused.
        response = await browser.get(f"/c/{lc.home}")
        assert response.status_code == 303
        assert response.headers["location"] == "/sign-in"
        assert (await browser.get(f"/c/{lc.home}/live")).status_code == 401

        # Wrong password: 401, the form again, no session cookie.
        response = await browser.sign_in("op-home", "wrong password!")
        assert response.status_code == 401
        assert parse(response.text).testid("sign-in-error")
        assert "linli_console_session" not in browser.cookies
        # An unknown login is answered the same way.
        assert (await browser.sign_in("nobody", PASSWORD)).status_code == 401

        # The sign-in form without its CSRF token, or from another origin: 403.
        form = parse((await browser.get("/sign-in")).text)
        good = browser.csrf(form)
        response = await browser.post(
            "/sign-in", {"login": "op-home", "password": PASSWORD, "csrf_token": "x" * 43}
        )
        assert response.status_code == 403
        evil = Browser(console_url(lc), origin="http://evil.example")
        evil.cookies = dict(browser.cookies)
        response = await evil.post(
            "/sign-in", {"login": "op-home", "password": PASSWORD, "csrf_token": good}
        )
        assert response.status_code == 403
        await evil.close()
        assert "linli_console_session" not in browser.cookies

        # Right password: a session cookie with every flag, and the live page.
        response = await browser.sign_in("op-home", PASSWORD)
        assert response.status_code == 303, response.text
        session_header = next(
            h for h in browser.set_cookies if h.startswith("linli_console_session=")
        )
        flags = {f.strip().lower() for f in session_header.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/", "secure"} <= flags
        response = await browser.get("/")
        assert response.status_code == 303
        assert response.headers["location"] == f"/c/{lc.home}"
        response = await browser.get(f"/c/{lc.home}")
        assert response.status_code == 200
        page = parse(response.text)
        assert page.one("html").attrs["lang"] == "zh-CN"
        for panel in ("panel-needs", "panel-escalations", "panel-meals", "panel-load"):
            assert page.testid(panel)
        live = page.testid("live")
        assert live.attrs["sse-connect"] == f"/c/{lc.home}/live"
        # The service token is nowhere in the page, its URLs or cookies.
        assert token not in response.text
        assert all(token not in v for v in browser.cookies.values())

        # Another community's page: 404 (the account holds only home).
        assert (await browser.get(f"/c/{lc.other}")).status_code == 404

        # The language switch is a POST with the CSRF token; without it nothing changes.
        csrf = browser.csrf(page)
        refused = await browser.post(
            "/locale", {"locale": "en", "csrf_token": "nope", "next": f"/c/{lc.home}"}
        )
        assert refused.status_code == 403
        page = parse((await browser.get(f"/c/{lc.home}")).text)
        assert page.one("html").attrs["lang"] == "zh-CN"
        switched = await browser.post(
            "/locale", {"locale": "en", "csrf_token": csrf, "next": f"/c/{lc.home}"}
        )
        assert switched.status_code == 303
        page = parse((await browser.get(f"/c/{lc.home}")).text)
        assert page.one("html").attrs["lang"] == "en"
        assert "Open needs" in page.testid("panel-needs").text

        # Sign-out needs the token too; then the session is gone.
        assert (await browser.post("/sign-out", {"csrf_token": "nope"})).status_code == 403
        assert (await browser.get(f"/c/{lc.home}")).status_code == 200
        session_cookie = browser.cookies["linli_console_session"]
        assert (await browser.post("/sign-out", {"csrf_token": csrf})).status_code == 303
        browser.cookies["linli_console_session"] = session_cookie  # replayed: still over
        assert (await browser.get(f"/c/{lc.home}")).status_code == 303
        del browser.cookies["linli_console_session"]
        rows = await lc.sql("console", "SELECT count(*) AS n FROM sessions")
        assert rows[0]["n"] == 0

        # Five failures lock the login for the window, even for the right password.
        for _ in range(5):
            assert (await browser.sign_in("op-home", "wrong password!")).status_code == 401
        response = await browser.sign_in("op-home", PASSWORD)
        assert response.status_code == 429
        assert "linli_console_session" not in browser.cookies

        # The CLI: an account with a generated password; listed without hash or token;
        # disabling it ends its sessions at once.
        added = json.loads(
            await lc.cli(
                "console",
                "staff",
                "add",
                "--login",
                "cli-op",
                "--name",
                "CLI",
                "--role",
                "community_operator",
                "--community",
                lc.home,
            )
        )
        assert added["service_token"].startswith("lnl_")
        listed = [
            json.loads(line) for line in (await lc.cli("console", "staff", "list")).splitlines()
        ]
        assert {a["login"] for a in listed} == {"op-home", "cli-op"}
        assert all(set(a) & {"password_hash", "service_token"} == set() for a in listed)
        cli_browser = Browser(console_url(lc))
        assert (await cli_browser.sign_in("cli-op", added["password"])).status_code == 303
        assert (await cli_browser.get("/")).status_code == 303
        assert (await cli_browser.get("/")).headers["location"] == f"/c/{lc.home}"
        await lc.cli("console", "staff", "disable", "cli-op")
        response = await cli_browser.get("/")
        assert response.headers["location"] == "/sign-in"
        assert (await cli_browser.sign_in("cli-op", added["password"])).status_code == 401
        await cli_browser.close()
    finally:
        await browser.close()


async def _frames(response: httpx.Response) -> Any:
    """SSE frames (event name, data) of a streamed response."""
    event, data = None, []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))


async def test_isolation_street_office_and_live_relay(lifecycle: Any) -> None:
    # Two console replicas: a session made on one holds on the other.
    lc: Lifecycle = await lifecycle(console=True, replicas={"console": 2})
    await lc.add_staff("op-home", PASSWORD, communities=[lc.home])
    await lc.add_staff("op-other", PASSWORD, communities=[lc.other])
    await lc.add_staff("street", PASSWORD, street_office=("jiedao", [lc.home, lc.other]))
    canary = f"ZZCANARY-{uuid.uuid4().hex[:8]}"
    phone = "13800" + str(uuid.uuid4().int)[:6]
    resident = await lc.create_resident(
        name=canary, phone=phone, address=f"{canary} 致远小区 3号楼"
    )
    home, other, street = (Browser(console_url(lc)) for _ in range(3))
    try:
        for browser, login in ((home, "op-home"), (other, "op-other"), (street, "street")):
            assert (await browser.sign_in(login, PASSWORD)).status_code == 303

        # The live stream of the home operator, open before the need is submitted, on
        # the replica that did not sign them in.
        replicas = [r.url for r in lc.services["console"].running]
        assert len(replicas) == 2
        assert home.base == replicas[0]
        second = Browser(replicas[1])
        second.cookies = dict(home.cookies)
        async with second.client.stream(
            "GET", f"/c/{lc.home}/live", headers=second._headers(False), timeout=60
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            frames = _frames(stream)
            first_event, first = await anext(frames)
            assert first_event == "update"
            assert parse(first).testid("panel-needs").attrs["hx-swap-oob"] == "true"

            need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]

            async def fragment_with_need() -> Element:
                async for event, data in frames:
                    fragment = parse(data)
                    rows = fragment.find_all(data_testid="need-row", data_need_id=need_id)
                    feed = fragment.find_all(data_testid="event", data_need_id=need_id)
                    if event == "update" and rows and feed:
                        return fragment
                raise AssertionError("stream ended")

            fragment = await asyncio.wait_for(fragment_with_need(), 30)
        assert fragment.find_all(data_testid="event", data_type="need.submitted")
        assert canary not in data_of(fragment)
        assert phone not in data_of(fragment)

        # The home operator sees the resident on the need's page (the canary is real).
        page = await home.get(f"/c/{lc.home}/needs/{need_id}")
        assert page.status_code == 200
        assert parse(page.text).testid("resident-name").text == canary

        # The other community's operator: none of home's needs, 404 for its pages.
        assert (await other.get(f"/c/{lc.home}")).status_code == 404
        assert (await other.get(f"/c/{lc.home}/needs/{need_id}")).status_code == 404
        assert (await other.get(f"/c/{lc.other}/needs/{need_id}")).status_code == 404
        assert (await other.get(f"/c/{lc.home}/live")).status_code == 404
        own = await other.get(f"/c/{lc.other}")
        assert own.status_code == 200
        assert need_id not in own.text
        assert canary not in own.text
        assert not parse(own.text).find_all(data_testid="need-row")

        # The street office: both communities' aggregates and the need's course, no
        # resident's name, phone or address anywhere.
        overview = await street.get("/")
        assert overview.status_code == 200
        counts = parse(overview.text).testid(f"community-{lc.home}")
        assert counts.one(data_testid="open-count").text == "1"
        seen = []
        for path in (
            "/",
            f"/c/{lc.home}",
            f"/c/{lc.other}",
            f"/c/{lc.home}/needs/{need_id}",
        ):
            response = await street.get(path)
            assert response.status_code == 200, path
            seen.append(response.text)
            for secret in (canary, phone, "致远小区 3号楼"):
                assert secret not in response.text, (path, secret)
        assert parse(seen[1]).find_all(data_testid="need-row", data_need_id=need_id)
        need_page = parse(seen[3])
        assert not need_page.find_all(data_testid="need-resident")
        assert need_page.find_all(data_testid="timeline-entry", data_status="submitted")

        # A browser that reconnects (to either replica) sends Last-Event-ID; the relay
        # passes it on, so what happened while it was away still arrives: from the
        # stream's start, the need's submission is among the first updates.
        async with home.client.stream(
            "GET",
            f"/c/{lc.home}/live",
            headers={**home._headers(False), "Last-Event-ID": "0"},
            timeout=60,
        ) as resumed:
            replayed = _frames(resumed)

            async def submitted_line() -> None:
                async for _event, data in replayed:
                    lines = parse(data).find_all(
                        data_testid="event", data_need_id=need_id, data_type="need.submitted"
                    )
                    if lines:
                        return
                raise AssertionError("stream ended")

            await asyncio.wait_for(submitted_line(), 30)
        await second.close()
    finally:
        for browser in (home, other, street):
            await browser.close()


def data_of(element: Element) -> str:
    return element.text + " ".join(
        v for e in element.iter() for v in e.attrs.values() if not re.match(r"^\s*$", v)
    )
