"""The one background loop: a pass, run again when woken, on a poll, or at once.

The outbox relay, scheduling's timers, the webhook worker and every `periodic` task run
on `WakeLoop`; each supplies only its pass. The loop's rules, written once:

* **Wake-ups.** A pass runs when the loop is woken: by PostgreSQL `NOTIFY` on a channel
  (on a dedicated connection, when a channel is given), by an in-process `wake()` (a
  consumer's `on_commit`, an API call), or when the poll interval has passed. A
  `next_sleep` callable may shorten the wait ("until the next timer is due"); the poll
  interval caps it, so a lost notification only ever delays work.
* **The flag is cleared before the pass**, so a wake-up that arrives while a pass runs
  (its rows were committed after the pass read) makes the loop run again at once instead
  of waiting for the next poll.
* **A full batch runs again at once**: a pass returns True when it filled its batch and
  more may wait.
* **A failed pass backs off** exponentially (from twice the poll interval, capped), logs
  one WARNING with the error's class (never its message, which may carry data), and
  closes the listener, which the next pass opens afresh. Wake-ups do not cut a backoff
  short: a failing dependency gets its pause.
* **A listener that dies** (the server restarted, the backend was terminated) wakes the
  loop; the next pass opens a new one. Notifications sent while no one listened are
  covered by that pass.
* `stop()` cancels the running pass and closes the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

Pass = Callable[[], Awaitable[bool]]
"""One pass of work; True when it filled its batch (run again at once)."""

NextSleep = Callable[[], Awaitable[float | None]]
"""Seconds until work is due (None: nothing known); capped by the poll interval."""

DEFAULT_MAX_BACKOFF_S = 30.0


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """The pause after `failures` failed passes in a row: base * 2**failures, capped.

    The cap never makes the pause shorter than `base` (a loop polling every minute does
    not poll faster because it fails).
    """
    return float(min(base * 2 ** min(max(failures, 1), 32), max(cap, base)))


class Every:
    """Housekeeping inside a pass (a retention purge): at most once per `seconds`."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._done_at: float | None = None

    async def run(self, job: Callable[[], Awaitable[object]]) -> None:
        """Run `job` if it never succeeded or last succeeded `seconds` ago."""
        now = time.monotonic()
        if self._done_at is None or now - self._done_at > self._seconds:
            await job()
            self._done_at = now


class WakeLoop:
    """Runs `work` until stopped, by the rules in this module's docstring."""

    def __init__(
        self,
        name: str,
        work: Pass,
        *,
        poll_interval: float,
        channel: str | None = None,
        dsn: str | None = None,
        next_sleep: NextSleep | None = None,
        max_backoff: float = DEFAULT_MAX_BACKOFF_S,
        flag: asyncio.Event | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if (channel is None) != (dsn is None):
            raise ValueError("LISTEN needs both a channel and a dsn")
        self.name = name
        self._work = work
        self._poll = poll_interval
        self._channel = channel
        self._dsn = dsn
        self._next_sleep = next_sleep
        self._max_backoff = max_backoff
        self._flag = flag if flag is not None else asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._listener_warned = False
        self.passes = 0
        """Passes that completed (a probe for tests and metrics)."""
        self.failures = 0
        """Failed passes in a row; 0 after a pass succeeds."""
        self.failed = 0
        """Failed passes since the loop was made (a probe for tests)."""

    def wake(self, *_: object) -> None:
        """Run a pass as soon as the current one (if any) ends.

        Accepts and ignores arguments, so it serves directly as an asyncpg listener or
        a `Subscriptions.on_commit` callback.
        """
        self._flag.set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Run the loop in a task of its own (once)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop (also mid-pass) and close its listener."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_listener()

    async def run(self) -> None:
        """Run in the calling task until cancelled (for `ServiceRuntime.background`)."""
        try:
            while True:
                self._flag.clear()
                try:
                    await self._listen()
                    more = await self._work()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.failures += 1
                    self.failed += 1
                    delay = backoff_delay(self.failures, self._poll, self._max_backoff)
                    log.warning(
                        "loop pass failed",
                        extra={
                            "loop": self.name,
                            "error": type(exc).__name__,
                            "failures": self.failures,
                            "retry_in_s": round(delay, 3),
                        },
                    )
                    await self._close_listener()
                    await asyncio.sleep(delay)
                    continue
                self.passes += 1
                self.failures = 0
                if more:
                    await asyncio.sleep(0)  # let the rest of the process run between batches
                    continue
                await self._wait(await self._sleep_for())
        finally:
            await self._close_listener()

    async def _sleep_for(self) -> float:
        if self._next_sleep is None:
            return self._poll
        try:
            wanted = await self._next_sleep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("next sleep unknown", extra={"loop": self.name, "error": type(exc).__name__})
            return self._poll
        if wanted is None:
            return self._poll
        return min(max(wanted, 0.0), self._poll)

    async def _wait(self, seconds: float) -> None:
        if self._flag.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flag.wait(), timeout=seconds)

    async def _listen(self) -> None:
        if self._channel is None or self._dsn is None:
            return
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = None
        try:
            conn = await asyncpg.connect(self._dsn, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._listener_unavailable(exc)
            return
        try:
            await conn.add_listener(self._channel, self.wake)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
            self._listener_unavailable(exc)
            return
        # A listener that dies wakes the loop, whose next pass listens again.
        conn.add_termination_listener(self.wake)
        self._listener = conn
        self._listener_warned = False

    def _listener_unavailable(self, exc: Exception) -> None:
        # Polling still works; LISTEN is only a shortcut. One warning per outage.
        if not self._listener_warned:
            log.warning(
                "loop listener unavailable", extra={"loop": self.name, "error": type(exc).__name__}
            )
        self._listener_warned = True

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            conn.remove_termination_listener(self.wake)
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
