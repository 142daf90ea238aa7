"""RefusalLog: one line per kind per interval, the suppressed count folded into the next line."""

from __future__ import annotations

import logging

import pytest

from wirthforge_ws.connection.security import RefusalLog


def test_one_line_per_kind_per_interval_with_the_suppressed_count(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(10.0, logging.getLogger("test.refusals"))
    with caplog.at_level(logging.WARNING, "test.refusals"):
        written = [refusals.refused("origin", "origin not allowed", now=100.0 + i * 0.001) for i in range(1000)]
        assert refusals.refused("host", "host not allowed", now=100.5)  # another kind has its own interval
        assert refusals.refused("origin", "origin not allowed", now=110.1)
    assert written.count(True) == 1 and written[0]
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "refused origin not allowed",
        "refused host not allowed",
        "refused origin not allowed (999 more refused since the last line)",
    ]
