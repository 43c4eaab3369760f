"""A scripted pass for `WakeLoop` tests: it records when it ran and returns (or raises)
the results it was given, then False."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

LONG = 60.0
"""A poll interval no test waits for: a pass that follows at once was woken."""


@dataclass
class ScriptedPass:
    results: list[bool | Exception] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    async def __call__(self) -> bool:
        self.times.append(time.monotonic())
        result = self.results.pop(0) if self.results else False
        if isinstance(result, Exception):
            raise result
        return result

    @property
    def count(self) -> int:
        return len(self.times)
