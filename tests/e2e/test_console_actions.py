"""Staff actions through the console's forms (ADR 0037) on real servers: the five
services as processes (Lifecycle), pages parsed with harness.html, forms submitted as a
browser without JavaScript would (harness.browser). The truth is read afterwards from
the services' APIs and tables.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from harness.browser import Browser
from harness.console import escalated_need
from harness.html import Element, parse
from harness.lifecycle import Lifecycle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "correct horse battery"
LABEL = "console:op-home"
"""The label of op-home's service credential (Lifecycle.add_staff): the actor on timelines."""


async def _escalation(lc: Lifecycle, escalation_id: str) -> dict[str, Any]:
    found: dict[str, Any] = lc.ok(
        await lc.http.get(lc.c("scheduling", f"/escalations/{escalation_id}"))
    )
    return found


async def _page(browser: Browser, path: str) -> Element:
    response = await browser.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return parse(response.text)


def _errors(page: Element, form_key: str) -> list[Element]:
    return [
        e
        for box in page.find_all(data_testid="action-errors", data_form=form_key)
        for e in box.find_all(data_testid="action-error")
    ]


async def test_escalation_and_need_actions_through_the_console(lifecycle: Any) -> None:
    lc: Lifecycle = await lifecycle(console=True)
    await lc.add_staff("op-home", PASSWORD, communities=[lc.home])
    await lc.add_staff("op-other", PASSWORD, communities=[lc.other])
    need_id, volunteer = await escalated_need(lc)
    idle = await lc.create_volunteer("老赵 Lao Zhao", ["meal_delivery"])  # no capacity
    home = Browser(lc.services["console"].url)
    other = Browser(lc.services["console"].url)
    try:
        for browser, login in ((home, "op-home"), (other, "op-other")):
            assert (await browser.sign_in(login, PASSWORD)).status_code == 303
        need_path = f"/c/{lc.home}/needs/{need_id}"

        # The live page's escalation panel offers the actions for this need's escalation.
        live = await _page(home, f"/c/{lc.home}")
        panel = live.testid("panel-escalations")
        (actions,) = panel.find_all(data_testid="escalation-actions")
        escalation_id = actions.attrs["data-escalation-id"]
        assert actions.attrs["data-state"] == "open"
        acknowledge = actions.testid("escalation-acknowledge")
        assert (
            acknowledge.attrs["action"] == f"/c/{lc.home}/escalations/{escalation_id}/acknowledge"
        )

        # Without the session's CSRF token, or from another origin: 403, nothing changes.
        refused = await home.submit(acknowledge, csrf_token="forged")
        assert refused.status_code == 403
        evil = Browser(lc.services["console"].url, origin="http://evil.example")
        evil.cookies = dict(home.cookies)
        assert (await evil.submit(acknowledge)).status_code == 403
        await evil.close()
        assert (await _escalation(lc, escalation_id))["state"] == "open"

        # Another community's operator, with their own valid token: 404 on every action
        # URL of this community, and nothing changes.
        own = await _page(other, f"/c/{lc.other}")
        token = own.find_all("input", name="csrf_token")[0].attrs["value"]
        for path, data in (
            (f"/c/{lc.home}/escalations/{escalation_id}/acknowledge", {"need_id": need_id}),
            (
                f"/c/{lc.home}/escalations/{escalation_id}/resolve",
                {"need_id": need_id, "outcome": "resident_well"},
            ),
            (f"/c/{lc.home}/needs/{need_id}/dispatch", {"party": f"volunteer:{volunteer}"}),
            (f"/c/{lc.home}/needs/{need_id}/reoffer", {}),
            (f"/c/{lc.home}/needs/{need_id}/cancel", {"reason": "x"}),
            (f"/c/{lc.home}/imports", {"kind": "residents"}),
        ):
            response = await other.post(path, {"csrf_token": token, **data})
            assert response.status_code == 404, (path, response.status_code)
        assert (await other.get(f"/c/{lc.home}/imports")).status_code == 404
        assert (await _escalation(lc, escalation_id))["state"] == "open"
        assert await lc.need_status(need_id) == "escalated"

        # A refusal from the live page's forms is shown on the live page, by the form.
        response = await home.submit(actions.testid("escalation-resolve"), outcome="other", note="")
        assert response.status_code == 422
        again = parse(response.text)
        assert again.one("body").attrs["data-testid"] == "page-community"
        shown = _errors(again.testid("panel-escalations"), f"escalation-{escalation_id}-resolve")
        assert [e.attrs["data-code"] for e in shown] == ["value_error"]

        # Acknowledge from the live page: back to the live page.
        done = await home.submit(acknowledge)
        assert done.status_code == 303
        assert done.headers["location"] == f"/c/{lc.home}"
        assert (await _escalation(lc, escalation_id))["state"] == "acknowledged"

        # Assign from the need's page; the assignee defaults to the signed-in staff member.
        page = await _page(home, need_path)
        (item,) = page.testid("need-escalations").find_all(data_testid="escalation")
        assign = item.testid("escalation-assign")
        assert item.testid("escalation-assignee").attrs["value"] == "op-home"
        assert (await home.submit(assign)).status_code == 303
        assigned = await _escalation(lc, escalation_id)
        assert (assigned["state"], assigned["assignee"]) == ("assigned", "op-home")

        # Resolve with `other` and no note: scheduling's 422 is shown next to the form,
        # translated (zh-CN by default), and nothing changes.
        page = await _page(home, need_path)
        resolve = page.testid("escalation-resolve")
        response = await home.submit(resolve, outcome="other", note="")
        assert response.status_code == 422
        shown = _errors(parse(response.text), f"escalation-{escalation_id}-resolve")
        assert [e.attrs["data-code"] for e in shown] == ["value_error"]
        assert shown[0].text == "此处理结果须填写备注。"
        assert (await _escalation(lc, escalation_id))["state"] == "assigned"

        # Resolve with an outcome and a note.
        response = await home.submit(resolve, outcome="resident_well", note="电话回访,一切安好")
        assert response.status_code == 303
        resolved = await _escalation(lc, escalation_id)
        assert (resolved["state"], resolved["outcome"]) == ("resolved", "resident_well")

        # Once resolved, another outcome is scheduling's 409, shown translated.
        response = await home.submit(resolve, outcome="ambulance_called", note="x")
        assert response.status_code == 409
        shown = _errors(parse(response.text), f"escalation-{escalation_id}-resolve")
        assert [e.attrs["data-code"] for e in shown] == ["conflict"]
        assert (await _escalation(lc, escalation_id))["outcome"] == "resident_well"

        # Accountability: scheduling's history on the page names the staff member at
        # once; intake's timeline (which follows scheduling's events) names them too.
        page = await _page(home, need_path)
        (item,) = page.testid("need-escalations").find_all(data_testid="escalation")
        steps = item.find_all(data_testid="escalation-step")
        assert [s.attrs["data-action"] for s in steps] == ["acknowledged", "assigned", "resolved"]
        assert {s.testid("escalation-step-actor").text for s in steps} == {LABEL}

        async def timeline_with(*fragments: str) -> Element | None:
            page = await _page(home, need_path)
            rows = page.find_all(data_testid="timeline-entry")
            mine = [r for r in rows if r.testid("timeline-actor").text == LABEL]
            text = " ".join(r.text for r in mine)
            return page if all(f in text for f in fragments) else None

        await lc.wait_for(
            lambda: timeline_with(
                "acknowledged by", "assigned to op-home", "resolved (resident_well)"
            ),
            what="the escalation's steps on intake's timeline with the staff label",
        )

        # Dispatch by hand: the select lists the community's volunteers. One without
        # published capacity is scheduling's 422 `unknown_party`, shown by the form.
        page = await _page(home, need_path)
        dispatch = page.testid("need-dispatch")
        options = {o.attrs["value"] for o in dispatch.find_all("option")}
        assert {f"volunteer:{volunteer}", f"volunteer:{idle}"} <= options
        response = await home.submit(dispatch, party=f"volunteer:{idle}")
        assert response.status_code == 422
        shown = _errors(parse(response.text), "dispatch")
        assert [(e.attrs["data-code"], e.attrs["data-field"]) for e in shown] == [
            ("unknown_party", "body.party")
        ]
        assert await lc.need_status(need_id) == "escalated"

        # To the volunteer who declined before: naming them overrides the exclusion.
        response = await home.submit(dispatch, party=f"volunteer:{volunteer}")
        assert response.status_code == 303
        assert response.headers["location"] == need_path
        (dispatched,) = await lc.wait_events("need.dispatched", need_id=need_id)
        assert dispatched.data["offered_to"] == {"kind": "volunteer", "id": volunteer}
        assert dispatched.data["actor"]["label"] == LABEL
        page = await _page(home, need_path)
        (step,) = page.find_all(data_testid="need-action")
        assert (step.attrs["data-action"], step.testid("need-action-actor").text) == (
            "dispatched",
            LABEL,
        )
        await lc.wait_for(
            lambda: timeline_with(f"dispatched by hand to volunteer:{volunteer}"),
            what="the dispatch on intake's timeline",
        )

        # Cancel with a reason (intake): without the token nothing happens; with it the
        # need is cancelled and the timeline says who and why.
        page = await _page(home, need_path)
        cancel = page.testid("need-cancel")
        assert (await home.submit(cancel, csrf_token="", reason="x")).status_code == 403
        assert await lc.need_status(need_id) != "cancelled"
        response = await home.submit(cancel, reason="家属已接走")
        assert response.status_code == 303
        page = await _page(home, need_path)
        assert page.testid("need-status").text == "已取消"
        (entry,) = page.find_all(data_testid="timeline-entry", data_status="cancelled")
        assert entry.testid("timeline-actor").text == LABEL
        assert "家属已接走" in entry.text
        assert not page.find_all(data_testid="need-dispatch"), "no actions on a final need"
    finally:
        await home.close()
        await other.close()


RESIDENTS = "external_ref,name,phone,address,compound,priority_group,consent_to_share_contact\n"
CANARY = "ZZCANARY"
FIRST = f"R-001,{CANARY}王秀兰,13800138001,致远小区 3号楼 401,致远小区,elderly_living_alone,true\n"


async def test_csv_import_dry_run_then_import(lifecycle: Any) -> None:
    lc: Lifecycle = await lifecycle(console=True)
    await lc.add_staff("op-home", PASSWORD, communities=[lc.home])
    await lc.add_staff("street", PASSWORD, street_office=("jiedao", [lc.home, lc.other]))
    home = Browser(lc.services["console"].url)
    street = Browser(lc.services["console"].url)
    count = "SELECT count(*) FROM residents WHERE community = $1"
    try:
        for browser, login in ((home, "op-home"), (street, "street")):
            assert (await browser.sign_in(login, PASSWORD)).status_code == 303

        # Street-office accounts cannot import: 403 page, also with a valid token.
        assert (await street.get(f"/c/{lc.home}/imports")).status_code == 403
        overview = await _page(street, f"/c/{lc.home}")
        token = overview.find_all("input", name="csrf_token")[0].attrs["value"]
        files = {"file": ("r.csv", RESIDENTS.encode(), "text/csv")}
        refused = await street.post(
            f"/c/{lc.home}/imports", {"csrf_token": token, "kind": "residents"}, files
        )
        assert refused.status_code == 403
        assert not overview.find_all(data_testid="imports-link")
        # Nor act on escalations or needs (the console keeps personal data from them).
        assert not overview.find_all(data_testid="escalation-actions")
        for path in (
            f"/c/{lc.home}/escalations/{uuid.uuid4()}/acknowledge",
            f"/c/{lc.home}/needs/{uuid.uuid4()}/cancel",
        ):
            response = await street.post(path, {"csrf_token": token, "need_id": str(uuid.uuid4())})
            assert response.status_code == 403, path

        # The community operator's form; a dry run of a file with a bad phone on line 3.
        live = await _page(home, f"/c/{lc.home}")
        assert live.testid("imports-link").attrs["href"] == f"/c/{lc.home}/imports"
        form = (await _page(home, f"/c/{lc.home}/imports")).testid("import-form")
        bad = (
            RESIDENTS
            + FIRST
            + "R-002,李建国,not-a-phone,致远小区 5号楼 602,致远小区,disabled,false\n"
        )
        response = await home.submit(
            form, {"file": ("r.csv", bad.encode(), "text/csv")}, kind="residents"
        )
        assert response.status_code == 200
        page = parse(response.text)
        report = page.testid("import-report")
        assert report.attrs["data-dry-run"] == "true"
        assert report.testid("total-errors").text == "1"
        (error,) = report.find_all(data_testid="import-error")
        assert (error.attrs["data-line"], error.attrs["data-field"]) == ("3", "phone")
        assert not page.find_all(data_testid="import-confirm"), "no import of a file with errors"
        assert CANARY not in response.text, "the report carries no cell values"
        assert await lc.sql_value("intake", count, lc.home) == 0

        # A clean file: the dry run counts two residents to create and writes nothing;
        # the file waits server-side for the explicit import (its URL names only an id).
        clean = (
            RESIDENTS
            + FIRST
            + "R-002,李建国,13800138002,致远小区 5号楼 602,致远小区,disabled,false\n"
        )
        response = await home.submit(
            form, {"file": ("r.csv", clean.encode(), "text/csv")}, kind="residents"
        )
        assert response.status_code == 200
        page = parse(response.text)
        report = page.testid("import-report")
        assert (report.attrs["data-dry-run"], report.testid("total-created").text) == ("true", "2")
        confirm = page.testid("import-confirm")
        action = confirm.attrs["action"]
        assert action.startswith(f"/c/{lc.home}/imports/")
        assert CANARY not in action
        assert "13800138001" not in action
        assert await lc.sql_value("intake", count, lc.home) == 0
        assert await lc.sql_value("console", "SELECT count(*) FROM import_uploads") == 1

        # The import needs the CSRF token too.
        assert (await home.submit(confirm, csrf_token="forged")).status_code == 403
        assert await lc.sql_value("intake", count, lc.home) == 0

        # The explicit import re-sends the same file with dry_run=false.
        response = await home.submit(confirm)
        assert response.status_code == 200
        report = parse(response.text).testid("import-report")
        assert (report.attrs["data-dry-run"], report.attrs["data-applied"]) == ("false", "true")
        assert report.testid("total-created").text == "2"
        rows = await lc.sql(
            "intake",
            "SELECT external_ref, name FROM residents WHERE community = $1 ORDER BY 1",
            lc.home,
        )
        assert [(r["external_ref"], r["name"]) for r in rows] == [
            ("R-001", f"{CANARY}王秀兰"),
            ("R-002", "李建国"),
        ]
        # The file is gone: the same import again is not found.
        assert await lc.sql_value("console", "SELECT count(*) FROM import_uploads") == 0
        assert (await home.submit(confirm)).status_code == 404
    finally:
        await home.close()
        await street.close()
