"""The wake loop's rules that need no server: flag before the pass, full batches, backoff."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from harness.common import wait_for
from harness.wake import LONG, ScriptedPass

from linli.servicekit.wake import Every, WakeLoop, backoff_delay

pytestmark = pytest.mark.unit


async def test_a_wake_during_a_pass_is_not_lost() -> None:
    work = ScriptedPass()
    loop: WakeLoop

    async def pass_woken_midway() -> bool:
        if work.count == 0:
            # A NOTIFY arriving while the pass runs (its rows committed after the read).
            loop.wake()
            await asyncio.sleep(0.01)
        return await work()

    loop = WakeLoop("test", pass_woken_midway, poll_interval=LONG)
    await loop.start()
    try:
        await wait_for(lambda: work.count >= 2, timeout=2, what="the second pass")
        await asyncio.sleep(0.1)
        assert work.count == 2  # then it waits: the flag was cleared before the second pass
    finally:
        await loop.stop()


async def test_wake_runs_a_pass_and_the_poll_interval_runs_one_anyway() -> None:
    work = ScriptedPass()
    loop = WakeLoop("test", work, poll_interval=LONG)
    await loop.start()
    try:
        await wait_for(lambda: work.count == 1, timeout=2, what="the first pass")
        loop.wake()
        await wait_for(lambda: work.count == 2, timeout=2, what="the woken pass")
    finally:
        await loop.stop()

    work = ScriptedPass()
    loop = WakeLoop("test", work, poll_interval=0.05)
    await loop.start()
    try:
        await wait_for(lambda: work.count >= 3, timeout=2, what="polled passes")
    finally:
        await loop.stop()


async def test_a_full_batch_runs_again_at_once() -> None:
    work = ScriptedPass([True, True, True, False])
    loop = WakeLoop("test", work, poll_interval=LONG)
    await loop.start()
    try:
        await wait_for(lambda: work.count == 4, timeout=2, what="four passes")
        await asyncio.sleep(0.1)
        assert work.count == 4
        assert loop.passes == 4
    finally:
        await loop.stop()


@pytest.mark.parametrize(("wanted", "poll"), [(0.02, LONG), (3600.0, 0.05)])
async def test_next_sleep_shortens_the_wait_and_the_poll_interval_caps_it(
    wanted: float, poll: float
) -> None:
    work = ScriptedPass()

    async def next_sleep() -> float | None:
        return wanted

    loop = WakeLoop("test", work, poll_interval=poll, next_sleep=next_sleep)
    await loop.start()
    try:
        await wait_for(lambda: work.count >= 3, timeout=2, what="three passes")
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
    work = ScriptedPass([RuntimeError(secret)] * 3)
    loop = WakeLoop("test-backoff", work, poll_interval=0.02, max_backoff=0.5)
    with caplog.at_level(logging.WARNING, logger="linli.servicekit.wake"):
        await loop.start()
        try:
            await wait_for(lambda: work.count >= 2, timeout=2, what="a retried pass")
            # A wake-up does not cut the pause short.
            loop.wake()
            await wait_for(lambda: work.count >= 5, timeout=2, what="recovery")
        finally:
            await loop.stop()
    gaps = [b - a for a, b in itertools.pairwise(work.times)]
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
    work = ScriptedPass()
    with pytest.raises(ValueError, match="channel and a dsn"):
        WakeLoop("test", work, poll_interval=1.0, channel="x")
    with pytest.raises(ValueError, match="positive"):
        WakeLoop("test", work, poll_interval=0)


async def test_every_runs_at_once_then_at_most_once_per_period_and_retries_a_failure() -> None:
    runs: list[str] = []

    async def job() -> None:
        runs.append("ran")
        if len(runs) == 2:
            raise RuntimeError("purge failed")

    every = Every(0.2)
    await every.run(job)
    await every.run(job)
    assert runs == ["ran"]
    await asyncio.sleep(0.25)
    with pytest.raises(RuntimeError):
        await every.run(job)
    await every.run(job)  # a failed run is not counted as done
    assert len(runs) == 3
