"""The staff console in a real browser: Chromium (make browser, ADR 0039) driven by
Playwright against the five services as processes on real NATS and PostgreSQL, as in
`make run`. One Lifecycle and one Chromium for the module; each test its own browser
context (cookies), signed in through the sign-in form.

What a browser adds to the httpx-based tests (test_console*.py): htmx really swaps the
live fragments relayed over SSE into the page, forms are clicked, the CSV is a download.
`LINLI_SCREENSHOTS=docs/console` writes the staff guide's screenshots (docs/console.md)
there; otherwise they go to a temporary directory (they are taken either way).
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from harness.common import consumer_settled
from harness.console import chromium, console_url, escalated_need
from harness.lifecycle import Lifecycle
from harness.names import Names
from harness.procs import ProcessGroup
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]

PASSWORD = "correct horse battery"
LABEL = "console:op-home"
CANARY = f"ZZCANARY-{uuid.uuid4().hex[:6]}王秀兰"
PHONE = "13900" + str(uuid.uuid4().int)[:6]
ADDRESS = f"{CANARY} 致远小区 7号楼 302"
WAIT_MS = 30_000


@dataclass
class Stack:
    lc: Lifecycle
    browser: Browser
    other_token: str
    canary_need: str
    escalated: str
    volunteer: str
    resident: str = ""
    """The canary resident of home (CANARY, PHONE, ADDRESS)."""
    visits: dict[str, int] = field(default_factory=dict)
    """Visit needs submitted per community in this module (the report's figures)."""

    @property
    def url(self) -> str:
        return console_url(self.lc)


def visit(resident_id: str) -> dict[str, Any]:
    """An elder-care visit nobody in this module can serve (no visit capacity)."""
    start = datetime.now(UTC) + timedelta(hours=3)
    return {
        "kind": "elder_care_visit",
        "resident_id": resident_id,
        "window": {
            "earliest": start.isoformat(),
            "latest": (start + timedelta(hours=2)).isoformat(),
        },
        "details": {"purpose": "companionship", "duration_minutes": 45},
    }


async def submit_visit(stack: Stack, community: str | None = None) -> str:
    """A visit need for the canary resident (home) or a new resident of `community`."""
    lc = stack.lc
    if community is None or community == lc.home:
        if not stack.resident:
            stack.resident = await lc.create_resident(name=CANARY, phone=PHONE, address=ADDRESS)
        need = await lc.submit_need(visit(stack.resident))
        community = lc.home
    else:
        headers = lc.bearer(stack.other_token)
        created = lc.ok(
            await lc.http.post(
                lc.c("intake", "/residents", community),
                json={
                    "name": "其他居民",
                    "phone": "13700137000",
                    "address": "别处 1号楼",
                    "compound": "别处小区",
                    "priority_group": "disabled",
                    "consent_to_share_contact": False,
                },
                headers=headers,
            ),
            201,
        )
        need = lc.ok(
            await lc.http.post(
                lc.c("intake", "/needs", community), json=visit(created["id"]), headers=headers
            ),
            201,
        )
    stack.visits[community] = stack.visits.get(community, 0) + 1
    return str(need["id"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    nats_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    procs = ProcessGroup(tmp_path_factory.mktemp("browser-logs"))
    lc = Lifecycle(Names(), nats_url, database_url, procs, console=True)
    try:
        await lc.prepare()
        await lc.start()
        await lc.add_staff("op-home", PASSWORD, communities=[lc.home])
        other_token = await lc.add_staff("op-other", PASSWORD, communities=[lc.other])
        await lc.add_staff("street", PASSWORD, street_office=("jiedao", [lc.home, lc.other]))
        escalated, volunteer = await escalated_need(lc)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(chromium()))
            made = Stack(lc, browser, other_token, "", escalated, volunteer)
            made.canary_need = await submit_visit(made)
            try:
                yield made
            finally:
                await browser.close()
    except BaseException:
        print("\n" + procs.log_tails())
        raise
    finally:
        await lc.close()
        procs.stop_all()


async def sign_in(stack: Stack, login: str) -> tuple[BrowserContext, Page]:
    """A fresh browser (context) signed in through the form, on the page it lands on."""
    context = await stack.browser.new_context(
        base_url=stack.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(WAIT_MS)
    # Counts the live stream's frames that htmx received (htmx events bubble to document).
    await context.add_init_script(
        "window.__linliLiveFrames = 0;"
        "document.addEventListener('htmx:sseMessage', () => { window.__linliLiveFrames++; });"
    )
    page = await context.new_page()
    await page.goto("/sign-in")
    await page.get_by_test_id("sign-in-login").fill(login)
    await page.get_by_test_id("sign-in-password").fill(PASSWORD)
    await page.get_by_test_id("sign-in-submit").click()
    await expect(page.get_by_test_id("staff-name")).to_be_visible()
    return context, page


def screenshots_dir(tmp_path: Path) -> Path:
    wanted = os.environ.get("LINLI_SCREENSHOTS")
    target = Path(wanted) if wanted else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    return target


async def shot(page: Page, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True, scale="css")
    assert path.stat().st_size > 5_000, f"{name}: an empty screenshot"
    return path


def row(page: Page, need_id: str) -> Any:
    return page.locator(f'[data-testid="need-row"][data-need-id="{need_id}"]')


async def test_a_need_appears_live_zh_cn_by_default_and_en(stack: Stack) -> None:
    lc = stack.lc
    context, page = await sign_in(stack, "op-home")
    try:
        assert page.url.endswith(f"/c/{lc.home}")
        assert await page.locator("html").get_attribute("lang") == "zh-CN"
        await expect(page.get_by_test_id("panel-needs")).to_contain_text("未完成需求")
        # A mark in this document: still there after the need shows, so no reload happened.
        await page.evaluate("window.__linliNoReload = true")
        await expect(page.get_by_test_id("live")).to_be_visible()
        # htmx has connected the live stream (its first frame swapped the panels) before
        # the need is submitted, so what follows can only arrive live.
        await page.wait_for_function("window.__linliLiveFrames > 0")
        need_id = await submit_visit(stack)
        await expect(row(page, need_id).first).to_be_visible()
        feed = page.locator(
            f'[data-testid="event"][data-need-id="{need_id}"][data-type="need.submitted"]'
        )
        await expect(feed).to_have_count(1)
        assert await page.evaluate("window.__linliNoReload === true"), "the page was reloaded"
        # The live page shows no resident's name (that is on the need's page).
        assert CANARY not in await page.content()

        # English, and back.
        await page.get_by_test_id("locale-switch").click()
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await expect(page.get_by_test_id("panel-needs")).to_contain_text("Open needs")
        await expect(row(page, need_id).first).to_be_visible()
        await page.get_by_test_id("locale-switch").click()
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    finally:
        await context.close()


async def test_acknowledge_and_resolve_an_escalation(stack: Stack) -> None:
    lc = stack.lc
    context, page = await sign_in(stack, "op-home")
    try:
        # On the live page, the escalation's row and its forms.
        escalations = page.get_by_test_id("panel-escalations")
        await expect(
            escalations.locator(f'[data-testid="need-row"][data-need-id="{stack.escalated}"]')
        ).to_be_visible()
        actions = escalations.locator(
            f'tr[data-need-id="{stack.escalated}"] + tr [data-testid="escalation-actions"]'
        )
        await expect(actions).to_have_attribute("data-state", "open")
        await actions.get_by_test_id("escalation-acknowledge").locator("button").click()
        await page.wait_for_url(f"**/c/{lc.home}")
        await expect(actions).to_have_attribute("data-state", "acknowledged")
        escalation_id = await actions.get_attribute("data-escalation-id")

        # The need's page: resolve with an outcome and a note.
        await row(page, stack.escalated).first.get_by_test_id("need-link").click()
        await page.wait_for_url(f"**/c/{lc.home}/needs/{stack.escalated}")
        item = page.locator(f'[data-testid="escalation"][data-escalation-id="{escalation_id}"]')
        await expect(item).to_have_attribute("data-state", "acknowledged")
        # Without the note that `other` needs, scheduling's refusal is shown by the form.
        resolve = page.get_by_test_id("escalation-resolve")
        await resolve.get_by_test_id("escalation-outcome").select_option("other")
        await resolve.locator("button").click()
        await expect(page.get_by_test_id("action-error")).to_have_text("此处理结果须填写备注。")
        resolve = page.get_by_test_id("escalation-resolve")
        await resolve.get_by_test_id("escalation-outcome").select_option("resident_well")
        await resolve.get_by_test_id("escalation-note").fill("电话回访,一切安好")
        await resolve.locator("button").click()
        await page.wait_for_url(f"**/c/{lc.home}/needs/{stack.escalated}")
        await expect(item).to_have_attribute("data-state", "resolved")
        await expect(item.get_by_test_id("escalation-note-shown")).to_have_text("电话回访,一切安好")
        steps = item.get_by_test_id("escalation-step")
        await expect(steps).to_have_count(2)
        await expect(item.get_by_test_id("escalation-step-actor")).to_have_text([LABEL, LABEL])

        # Intake's timeline follows scheduling's events: reload until it names the staff
        # member for the resolution (bounded).
        mine = page.locator('[data-testid="timeline-entry"]').filter(
            has=page.locator(f'[data-testid="timeline-actor"]:text-is("{LABEL}")')
        )
        for _ in range(60):
            if "resolved (resident_well)" in " ".join(await mine.all_inner_texts()):
                break
            await page.wait_for_timeout(500)
            await page.reload()
        texts = " ".join(await mine.all_inner_texts())
        assert "acknowledged by" in texts
        assert "resolved (resident_well)" in texts
    finally:
        await context.close()


async def test_dispatch_by_hand_and_download_the_months_csv(stack: Stack) -> None:
    lc = stack.lc
    context, page = await sign_in(stack, "op-home")
    try:
        # Dispatch the escalated lunch by hand to the volunteer chosen in the select.
        await page.goto(f"/c/{lc.home}/needs/{stack.escalated}")
        dispatch = page.get_by_test_id("need-dispatch")
        await dispatch.get_by_test_id("dispatch-party").select_option(
            f"volunteer:{stack.volunteer}"
        )
        await dispatch.locator("button").click()
        await page.wait_for_url(f"**/c/{lc.home}/needs/{stack.escalated}")
        step = page.locator('[data-testid="need-action"][data-action="dispatched"]')
        await expect(step.get_by_test_id("need-action-actor")).to_have_text(LABEL)
        (dispatched,) = await lc.wait_events("need.dispatched", need_id=stack.escalated)
        assert dispatched.data["offered_to"] == {"kind": "volunteer", "id": stack.volunteer}

        # The month's report from the live page's link; the CSV is a download.
        await consumer_settled(lc.nats.jetstream(), lc.events_stream, "console-reports", timeout=30)
        month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
        await page.goto(f"/c/{lc.home}")
        await page.get_by_test_id("report-link").click()
        await page.wait_for_url(f"**/c/{lc.home}/reports/{month}")
        await expect(page.get_by_test_id("report")).to_have_attribute("data-month", month)
        async with page.expect_download() as info:
            await page.get_by_test_id("report-csv").click()
        download = await info.value
        assert download.suggested_filename == f"linli-report-community-{lc.home}-{month}.csv"
        with open(await download.path(), "rb") as saved:
            raw = saved.read()
        assert raw.startswith("\ufeff".encode())
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
        needs: dict[str, int] = {}
        for r in rows:
            if r["section"] == "needs":
                needs[r["kind"]] = needs.get(r["kind"], 0) + int(r["value"])
        # Every need this module submitted in home, none of the other community's.
        assert needs == {"meal_delivery": 1, "elder_care_visit": stack.visits[lc.home]}
        (escalation,) = [
            r for r in rows if r["section"] == "escalations" and r["item"] == "no_taker"
        ]
        assert (escalation["kind"], escalation["value"]) == ("meal_delivery", "1")
        text = raw.decode("utf-8-sig")
        for secret in (CANARY, PHONE, ADDRESS):
            assert secret not in text
    finally:
        await context.close()


async def test_a_street_office_sees_only_aggregates(stack: Stack) -> None:
    lc = stack.lc
    context, page = await sign_in(stack, "street")
    try:
        # Its home page: both communities' counts, no form but language and sign-out.
        assert page.url.endswith("/")
        card = page.get_by_test_id(f"community-{lc.home}")
        await expect(card.get_by_test_id("open-count")).not_to_have_text("0")
        pages = [
            "/",
            f"/c/{lc.home}",
            f"/c/{lc.home}/needs/{stack.canary_need}",
            f"/c/{lc.home}/needs/{stack.escalated}",
        ]
        for path in pages:
            response = await page.goto(path)
            assert response is not None
            assert response.status == 200, path
            if path == f"/c/{lc.home}":
                # The live page shows the canary's need (so the check below means something).
                await expect(row(page, stack.canary_need).first).to_be_visible()
                await page.wait_for_function("window.__linliLiveFrames > 0")
            if "/needs/" in path:
                await expect(page.get_by_test_id("need-timeline")).to_be_visible()
                await expect(page.get_by_test_id("need-resident")).to_have_count(0)
            dom = await page.content()
            for secret in (CANARY, PHONE, ADDRESS, "13800138001"):
                assert secret not in dom, (path, secret)
            # No action form at all: only the language switch and sign-out post.
            actions = await page.locator("form").evaluate_all(
                "forms => forms.map(f => f.getAttribute('action'))"
            )
            assert set(actions) <= {"/locale", "/sign-out"}, (path, actions)
            for testid in ("imports-link", "escalation-actions", "need-dispatch", "need-cancel"):
                await expect(page.get_by_test_id(testid)).to_have_count(0)
    finally:
        await context.close()


async def test_another_communitys_operator_sees_nothing_of_it(stack: Stack) -> None:
    lc = stack.lc
    context, page = await sign_in(stack, "op-other")
    try:
        assert page.url.endswith(f"/c/{lc.other}")
        for path in (
            f"/c/{lc.home}",
            f"/c/{lc.home}/needs/{stack.canary_need}",
            f"/c/{lc.other}/needs/{stack.canary_need}",
            f"/c/{lc.home}/reports/{datetime.now(ZoneInfo('Asia/Shanghai')):%Y-%m}",
        ):
            response = await page.goto(path)
            assert response is not None
            assert response.status == 404, path
            assert CANARY not in await page.content()
        live = await page.request.get(f"/c/{lc.home}/live")
        assert live.status == 404

        # Its own live page, connected: a home need is submitted, then one of its own; its
        # own arrives live, home's never shows.
        await page.goto(f"/c/{lc.other}")
        await page.wait_for_function("window.__linliLiveFrames > 0")
        home_need = await submit_visit(stack)
        own_need = await submit_visit(stack, lc.other)
        await expect(row(page, own_need).first).to_be_visible()
        await expect(
            page.locator(f'[data-testid="event"][data-need-id="{own_need}"]').first
        ).to_be_visible()
        dom = await page.content()
        for secret in (home_need, stack.canary_need, stack.escalated, CANARY):
            assert secret not in dom
    finally:
        await context.close()


async def test_screenshots_for_the_staff_guide(stack: Stack, tmp_path: Path) -> None:
    """The pictures of docs/console.md in zh-CN and en (LINLI_SCREENSHOTS=docs/console
    writes them there): the live page, a need's page, an escalation, the month's report."""
    lc = stack.lc
    directory = screenshots_dir(tmp_path)
    context, page = await sign_in(stack, "op-home")
    month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    try:
        for locale in ("zh-CN", "en"):
            if await page.locator("html").get_attribute("lang") != locale:
                await page.get_by_test_id("locale-switch").click()
                await expect(page.locator("html")).to_have_attribute("lang", locale)
            suffix = "zh" if locale == "zh-CN" else "en"
            await page.goto(f"/c/{lc.home}")
            await page.wait_for_function("window.__linliLiveFrames > 0")
            await expect(row(page, stack.canary_need).first).to_be_visible()
            await shot(page, directory, f"live-{suffix}")
            await page.goto(f"/c/{lc.home}/needs/{stack.canary_need}")
            await expect(page.get_by_test_id("resident-name")).to_have_text(CANARY)
            await shot(page, directory, f"need-{suffix}")
            await page.goto(f"/c/{lc.home}/needs/{stack.escalated}")
            await expect(page.get_by_test_id("need-escalations")).to_be_visible()
            await page.get_by_test_id("need-escalations").scroll_into_view_if_needed()
            await shot(page, directory, f"escalation-{suffix}")
            await page.goto(f"/c/{lc.home}/reports/{month}")
            await expect(page.get_by_test_id("report")).to_be_visible()
            await shot(page, directory, f"report-{suffix}")
            assert await page.locator("html").get_attribute("lang") == locale
        await page.get_by_test_id("locale-switch").click()
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    finally:
        await context.close()
