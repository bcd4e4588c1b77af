"""The sliding window of counts under the breaker and the retry budget, on an injected clock."""

from __future__ import annotations

import pytest

from resilience.policies.window import MAX_SLICES, SlidingWindow
from resilience.testing import FakeClock


def test_sums_every_series_over_the_window() -> None:
    """Adds land in the current slice; sums add up every series."""
    clock = FakeClock(start=0.0)
    window = SlidingWindow(span=10.0, width=1.0, series=3, clock=clock)
    window.add(1, 1, 0)
    window.add(1)
    clock.advance(3.0)
    window.add(1, 0, 1)
    assert window.sums() == [3, 1, 1]


def test_a_span_sums_only_the_newest_slices() -> None:
    """``sums(span)`` covers the newest ceil(span / width) slices, the current one included."""
    clock = FakeClock(start=0.0)
    window = SlidingWindow(span=10.0, width=0.5, series=1, clock=clock)
    for _ in range(8):
        window.add(1)
        clock.advance(0.5)
    assert window.sums(1.0) == [1]  # the current slice is empty, the one before holds 1
    assert window.sums(2.0) == [3]
    assert window.sums() == [8]


def test_slices_older_than_the_window_are_forgotten() -> None:
    """A slot reused for a newer slice starts from zero; nothing older than the span is summed."""
    clock = FakeClock(start=0.0)
    window = SlidingWindow(span=2.0, width=1.0, series=1, clock=clock)
    window.add(5)
    clock.advance(1.0)
    window.add(1)
    assert window.sums() == [6]
    clock.advance(1.0)  # the first slice is now out of the window; its slot is reused
    window.add(2)
    assert window.sums() == [3]
    clock.advance(5.0)
    assert window.sums() == [0]


def test_clear_forgets_everything() -> None:
    """After ``clear()`` the window sums to zero until new counts arrive."""
    clock = FakeClock(start=0.0)
    window = SlidingWindow(span=5.0, width=1.0, series=2, clock=clock)
    window.add(4, 2)
    window.clear()
    assert window.sums() == [0, 0]
    window.add(1, 1)
    assert window.sums() == [1, 1]


@pytest.mark.parametrize(("span", "width", "series"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_refuses_a_window_that_cannot_count(span: float, width: float, series: int) -> None:
    """A zero span, width or number of series is a programming error."""
    with pytest.raises(ValueError, match="positive"):
        SlidingWindow(span, width, series, FakeClock())


def test_refuses_more_slices_than_it_may_keep() -> None:
    """A window of up to MAX_SLICES slices is built; one more, or an overflowing count, is refused
    before its ring is allocated."""
    assert SlidingWindow(MAX_SLICES * 0.5, 0.5, 3, FakeClock()).span == MAX_SLICES * 0.5
    for span, width in ((MAX_SLICES * 0.5 + 0.5, 0.5), (1e300, 1e-300)):
        with pytest.raises(ValueError, match=f"more than {MAX_SLICES} slices"):
            SlidingWindow(span, width, 3, FakeClock())
