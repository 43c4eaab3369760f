"""The console for tests: where it listens, and the browser stand-in (harness.browser)."""

from __future__ import annotations

from pathlib import Path

from linli.devstack.browser import executable

from .browser import Browser
from .intake import meal_need
from .lifecycle import Lifecycle, window

__all__ = ["Browser", "chromium", "console_url", "escalated_need"]


def console_url(lc: Lifecycle) -> str:
    return lc.services["console"].url


def chromium() -> Path:
    """The Chromium Playwright launches (`make browser`; ADR 0039): /usr/bin/chromium, else
    the checkout's .tools/bin/chromium. Missing: the test fails and says how to get one."""
    found = executable()
    if found is None:
        raise AssertionError(
            "no Chromium for the browser tests: run `make browser` (make test does), which "
            "unpacks Debian's chromium into .tools/chromium"
        )
    return found


async def escalated_need(lc: Lifecycle, volunteer_name: str = "小刘 Xiao Liu") -> tuple[str, str]:
    """A lunch whose only volunteer declines: escalated `no_taker`. (need, volunteer)"""
    volunteer = await lc.create_volunteer(volunteer_name, ["meal_delivery"])
    token = await lc.party_token("volunteer", volunteer)
    slots = await lc.sql_value("scheduling", "SELECT count(*) FROM slots")
    await lc.publish_slot("meal_delivery", window=window(20, 150), token=token)
    await lc.wait_slots(slots + 1)
    resident = await lc.create_resident(priority_group="elderly_living_alone")
    need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
    offer = await lc.wait_offer(token, need_id)
    lc.ok(await lc.answer(token, offer["assignment_id"], "decline"))
    await lc.wait_events("need.escalated", need_id=need_id, reason="no_taker")
    return need_id, volunteer
