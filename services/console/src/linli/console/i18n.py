"""Message catalogues: `messages/<locale>.json` in this package, zh-CN first.

Templates say `t("key")`; no UI text lives in code. A key missing in a catalogue shows
the zh-CN text (and a unit test fails, so it is caught before it ships).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

DEFAULT_LOCALE = "zh-CN"
LOCALES = ("zh-CN", "en")


@cache
def catalogue(locale: str) -> dict[str, str]:
    text = (
        resources.files("linli.console").joinpath("messages", f"{locale}.json").read_text("utf-8")
    )
    data: dict[str, str] = json.loads(text)
    return data


def translate(locale: str, key: str, **values: Any) -> str:
    """The text of `key` in `locale`, with `{name}` placeholders filled."""
    chosen = locale if locale in LOCALES else DEFAULT_LOCALE
    text = catalogue(chosen).get(key) or catalogue(DEFAULT_LOCALE).get(key) or key
    return text.format(**values) if values else text
