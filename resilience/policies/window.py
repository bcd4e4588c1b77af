"""Counts over a sliding window of time, for the breaker's rates and the retry budget.

The window is a ring of buckets, each holding the counts of one ``width``-long
slice of time, as resilience4j's ``SlidingTimeWindowMetrics`` keeps them: a
bucket is reset when its slot is reused for a newer slice, so adding is O(1)
and memory is fixed however many calls are counted. A sum over "the last
``span`` seconds" covers the newest ``ceil(span / width)`` slices, the current
(partial) one included: between ``span - width`` and ``span`` seconds of calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable

#: A monotonic clock in seconds (``time.monotonic``; a fake one in tests).
Clock = Callable[[], float]
_NEVER = -(2**62)  # the slice an unused slot holds: older than any window
#: The most slices a window keeps. Its ring (a list of counts per slice) is allocated whole
#: when the window is built, so this bounds a window's memory whatever it is configured with.
MAX_SLICES = 10_000


class SlidingWindow:
    """Several counters (``series``) over the last ``span`` seconds, in slices of ``width``."""

    __slots__ = ("_clock", "_counts", "_series", "_slices", "_slots", "width")

    def __init__(self, span: float, width: float, series: int, clock: Clock) -> None:
        if not (span > 0 and width > 0 and series > 0):
            raise ValueError("span, width and series must be positive")
        if span / width > MAX_SLICES:
            raise ValueError(f"a span of {span:g} s in slices of {width:g} s would keep more than "
                             f"{MAX_SLICES} slices")
        self.width = width
        self._clock = clock
        self._series = series
        self._slots = max(1, math.ceil(span / width))
        self._slices = [_NEVER] * self._slots  # which slice of time each slot holds
        self._counts = [[0] * series for _ in range(self._slots)]

    @property
    def span(self) -> float:
        """The longest span the window can sum, in seconds."""
        return self._slots * self.width

    def add(self, *amounts: int) -> None:
        """Add ``amounts`` (one per series, missing ones count 0) to the current slice."""
        now = int(self._clock() // self.width)
        slot = now % self._slots
        counts = self._counts[slot]
        if self._slices[slot] != now:
            self._slices[slot] = now
            counts[:] = [0] * self._series
        for i, amount in enumerate(amounts):
            counts[i] += amount

    def sums(self, span: float | None = None) -> list[int]:
        """Each series' total over the last ``span`` seconds (default: the whole window)."""
        now = int(self._clock() // self.width)
        newest = self._slots if span is None else min(self._slots, max(1, math.ceil(span / self.width)))
        totals = [0] * self._series
        for held, counts in zip(self._slices, self._counts, strict=True):
            if now - newest < held <= now:
                for i, count in enumerate(counts):
                    totals[i] += count
        return totals

    def clear(self) -> None:
        """Forget every count."""
        self._slices = [_NEVER] * self._slots
