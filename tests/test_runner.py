"""What the process runner sets up before a service serves."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from aiohttp import web

from resilience.runtime.runner import YOUNG_COLLECTION_THRESHOLD, tune_garbage_collection


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
