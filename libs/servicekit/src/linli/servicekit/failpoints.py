"""Named crash points for fault tests.

`LINLI_FAILPOINT=outbox.after_publish_before_mark` makes the process exit with status
137 exactly there, the way kill -9 would. Production settings refuse failpoints.
"""

from __future__ import annotations

import os
import sys

_active: str | None = None


def configure(name: str | None) -> None:
    """Arm one failpoint (or none) for this process."""
    global _active
    _active = name or None


def hit(name: str) -> None:
    """Exit at once, without cleanup, when `name` is the armed failpoint."""
    if _active is not None and _active == name:
        sys.stderr.write(f"failpoint {name} hit\n")
        sys.stderr.flush()
        os._exit(137)
