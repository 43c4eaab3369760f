"""The wake loop's rules that need no server: flag before the pass, full batches, backoff."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from linli.servicekit.wake import WakeLoop, backoff_delay

pytestmark = pytest.mark.unit

LONG = 60.0
"""A poll interval no test waits for: a pass that follows at once was woken."""


async def wait_until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


def counting(results: list[bool | Exception]) -> tuple[Callable[[], Awaitable[bool]], list[float]]:
    """A pass that returns (or raises) the given results in turn, then False; and the
    monotonic times at which it ran."""
    times: list[float] = []

    async def work() -> bool:
        times.append(time.monotonic())
        result = results.pop(0) if results else False
        if isinstance(result, Exception):
            raise result
        return result

    return work, times


async def test_a_wake_during_a_pass_is_not_lost() -> None:
    times: list[float] = []
    loop: WakeLoop

    async def work() -> bool:
        times.append(time.monotonic())
        if len(times) == 1:
            # A NOTIFY arriving while the pass runs (its rows committed after the read).
            loop.wake()
            await asyncio.sleep(0.01)
        return False

    loop = WakeLoop("test", work, poll_interval=LONG)
    await loop.start()
    try:
        await wait_until(lambda: len(times) >= 2)
        await asyncio.sleep(0.1)
        assert len(times) == 2  # then it waits: the flag was cleared before the second pass
    finally:
        await loop.stop()


async def test_wake_runs_a_pass_and_the_poll_interval_runs_one_anyway() -> None:
    work, times = counting([])
    loop = WakeLoop("test", work, poll_interval=LONG)
    await loop.start()
    try:
        await wait_until(lambda: len(times) == 1)
        loop.wake()
        await wait_until(lambda: len(times) == 2)
    finally:
        await loop.stop()

    work, times = counting([])
    loop = WakeLoop("test", work, poll_interval=0.05)
    await loop.start()
    try:
        await wait_until(lambda: len(times) >= 3)
    finally:
        await loop.stop()


async def test_a_full_batch_runs_again_at_once() -> None:
    work, times = counting([True, True, True, False])
    loop = WakeLoop("test", work, poll_interval=LONG)
    await loop.start()
    try:
        await wait_until(lambda: len(times) == 4)
        await asyncio.sleep(0.1)
        assert len(times) == 4
        assert loop.passes == 4
    finally:
        await loop.stop()


async def test_next_sleep_shortens_the_wait_and_the_poll_interval_caps_it() -> None:
    work, times = counting([])

    async def soon() -> float | None:
        return 0.02

    loop = WakeLoop("test", work, poll_interval=LONG, next_sleep=soon)
    await loop.start()
    try:
        await wait_until(lambda: len(times) >= 3)
    finally:
        await loop.stop()

    work, times = counting([])

    async def far() -> float | None:
        return 3600.0

    loop = WakeLoop("test", work, poll_interval=0.05, next_sleep=far)
    await loop.start()
    try:
        await wait_until(lambda: len(times) >= 3)
    finally:
        await loop.stop()


def test_backoff_doubles_from_twice_the_poll_interval_and_is_capped() -> None:
    assert [backoff_delay(n, 1.0, 30.0) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert backoff_delay(10_000, 1.0, 30.0) == 30.0
    # A slow poll is never made faster by failing.
    assert backoff_delay(1, 60.0, 30.0) == 60.0


async def test_a_failing_pass_backs_off_logs_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "resident 13800000000 at Room 301"
    work, times = counting([RuntimeError(secret)] * 3)
    loop = WakeLoop("test-backoff", work, poll_interval=0.02, max_backoff=0.5)
    with caplog.at_level(logging.WARNING, logger="linli.servicekit.wake"):
        await loop.start()
        try:
            await wait_until(lambda: len(times) >= 2)
            # A wake-up does not cut the pause short.
            loop.wake()
            await wait_until(lambda: len(times) >= 5)
        finally:
            await loop.stop()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for failures, gap in enumerate(gaps[:3], start=1):
        assert gap >= backoff_delay(failures, 0.02, 0.5) * 0.9, gaps
    # After a success it polls again at the poll interval.
    assert loop.failures == 0
    failed = [r for r in caplog.records if r.getMessage() == "loop pass failed"]
    assert len(failed) == 3
    for record in failed:
        assert record.levelno == logging.WARNING
        assert record.__dict__["loop"] == "test-backoff"
        assert record.__dict__["error"] == "RuntimeError"
        assert secret not in str(record.__dict__)
        assert record.exc_info is None


async def test_stop_cancels_a_running_pass() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> bool:
        started.set()
        try:
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return False

    loop = WakeLoop("test", work, poll_interval=LONG)
    await loop.start()
    await asyncio.wait_for(started.wait(), 2)
    await asyncio.wait_for(loop.stop(), 2)
    assert cancelled.is_set()
    assert not loop.running


def test_listen_needs_a_channel_and_a_dsn() -> None:
    async def work() -> bool:
        return False

    with pytest.raises(ValueError, match="channel and a dsn"):
        WakeLoop("test", work, poll_interval=1.0, channel="x")
    with pytest.raises(ValueError, match="positive"):
        WakeLoop("test", work, poll_interval=0)
