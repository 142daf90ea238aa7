"""Throttle: one event per interval, the suppressed ones counted into the next warning."""

from __future__ import annotations

import logging

import pytest

from wirthforge_ws.stream.throttle import Throttle


def test_one_event_per_interval_and_the_count_of_the_rest() -> None:
    throttle = Throttle(10.0)
    assert throttle.ready(100.0) == 0  # the first always passes
    assert [throttle.ready(100.0 + i) for i in range(1, 10)] == [None] * 9
    assert throttle.ready(110.0) == 9  # the interval is over: it reports the nine it held back
    assert throttle.ready(110.5) is None
    assert throttle.ready(125.0) == 1


def test_a_warning_line_says_how_many_it_stands_for(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.throttle")
    throttle = Throttle(5.0)
    with caplog.at_level(logging.WARNING, "test.throttle"):
        written = [throttle.warning(logger, "frame %d took %.1f ms", i, 20.0, now=float(i) / 10) for i in range(60)]
        assert throttle.warning(logger, "frame %d took %.1f ms", 99, 30.0, now=10.0)
    assert written.count(True) == 2 and written[0] and written[50]  # at 0 s and at 5 s
    assert [record.getMessage() for record in caplog.records] == [
        "frame 0 took 20.0 ms",
        "frame 50 took 20.0 ms (49 more since the last line)",
        "frame 99 took 30.0 ms (9 more since the last line)",
    ]
    assert all(record.levelno == logging.WARNING for record in caplog.records)


def test_without_now_it_reads_the_monotonic_clock() -> None:
    throttle = Throttle(3600.0)
    assert throttle.ready() == 0
    assert throttle.ready() is None
