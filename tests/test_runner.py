"""What the process runner sets up before a service serves."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
from collections.abc import Iterator

import pytest
from aiohttp import web

from resilience.observability.logs import configure_logging
from resilience.runtime.runner import (
    YOUNG_COLLECTION_THRESHOLD,
    stop_stray_tasks,
    tune_garbage_collection,
)


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_start_up_objects_are_frozen_and_young_collections_rare(restore_gc: None) -> None:
    """At start-up what exists is frozen out of later collections, and a young collection waits
    for 20,000 net new objects; the older generations keep their thresholds."""
    _, middle, old = gc.get_threshold()
    await tune_garbage_collection(web.Application())
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, middle, old) == (20_000, middle, old)


def test_tasks_left_at_shutdown_are_cancelled_until_they_end() -> None:
    """A task that swallows its cancellation once (as nats-py's can while its servers stop) and
    waits again ends at the next one: aiohttp's single cancel would wait on it for ever."""

    async def swallows_once() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await asyncio.Event().wait()

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(swallows_once())
        await asyncio.sleep(0)  # it starts waiting
        await stop_stray_tasks(grace=5.0)
        return task

    assert asyncio.run(scenario()).cancelled()


def test_a_task_that_will_not_end_is_named_and_left(restore_logging: None) -> None:
    """Past the grace, what is still running is named in a warning, and the stop goes on."""
    out = io.StringIO()
    configure_logging("facade", "json", stream=out)

    async def never_ends(released: asyncio.Event) -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await released.wait()

    async def scenario() -> None:
        released = asyncio.Event()
        task = asyncio.create_task(never_ends(released))
        await asyncio.sleep(0)
        await stop_stray_tasks(grace=0.0)
        released.set()  # so that the test's own loop can end
        await task

    asyncio.run(scenario())
    (line,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (line["event"], line["tasks"]) == ("tasks still running at shutdown",
                                              ["test_a_task_that_will_not_end_is_named_and_left.<locals>.never_ends"])
