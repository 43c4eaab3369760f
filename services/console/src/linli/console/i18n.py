"""Message catalogues: `messages/<locale>.json` in this package, zh-CN first.

Templates say `t("key")`; no UI text lives in code. A key missing in a catalogue shows
the zh-CN text (and a unit test fails, so it is caught before it ships).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from linli.contracts.catalogue import CATALOGUE

DEFAULT_LOCALE = "zh-CN"
LOCALES = ("zh-CN", "en")


@cache
def catalogue(locale: str) -> dict[str, str]:
    text = (
        resources.files("linli.console").joinpath("messages", f"{locale}.json").read_text("utf-8")
    )
    data: dict[str, str] = json.loads(text)
    # A kind's label comes from the contracts' catalogue (ADR 0045) unless the console
    # words it its own way here (助餐 rather than 送餐).
    for kind, entry in CATALOGUE.items():
        data.setdefault(f"kind.{kind}", entry.labels.get(locale) or entry.labels["en"])
    return data


def translate(locale: str, key: str, **values: Any) -> str:
    """The text of `key` in `locale`, with `{name}` placeholders filled."""
    chosen = locale if locale in LOCALES else DEFAULT_LOCALE
    text = catalogue(chosen).get(key) or catalogue(DEFAULT_LOCALE).get(key) or key
    return text.format(**values) if values else text
