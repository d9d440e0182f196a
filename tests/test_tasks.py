"""Background tasks stop, even one whose cancellation something swallowed."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mudgate.tasks import BackgroundTask, cancel_and_wait


async def swallows_one_cancellation(started: asyncio.Event) -> None:
    """A loop whose first cancellation is lost, as ``asyncio.wait_for`` loses one on Python
    3.11 when it comes just as what it waits for completes (CPython gh-86296)."""
    started.set()
    with contextlib.suppress(asyncio.CancelledError):  # lost, as in wait_for
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)  # the loop runs on


async def test_a_task_that_lost_its_cancellation_is_cancelled_again() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(swallows_one_cancellation(started))
    await started.wait()
    async with asyncio.timeout(2):
        await cancel_and_wait([task], "stop")
    assert task.cancelled()


async def test_a_background_task_stops_even_if_it_lost_its_cancellation() -> None:
    started = asyncio.Event()
    background = BackgroundTask("swallower")
    background.start(swallows_one_cancellation(started))
    await started.wait()
    async with asyncio.timeout(2):
        await background.stop()
    assert not background.running


async def test_cancelling_the_caller_still_waits_for_every_task_then_raises() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(swallows_one_cancellation(started))
    await started.wait()
    stopping = asyncio.create_task(cancel_and_wait([task], "stop"))
    await asyncio.sleep(0)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(2):
            await stopping
    assert task.cancelled()
