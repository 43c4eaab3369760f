"""The console for tests: where it listens, and the browser stand-in (harness.browser)."""

from __future__ import annotations

from .browser import Browser
from .lifecycle import Lifecycle

__all__ = ["Browser", "console_url"]


def console_url(lc: Lifecycle) -> str:
    return lc.services["console"].url
