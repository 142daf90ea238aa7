"""Rate limiting for warnings and notices that could otherwise flood.

A frame loop that overruns its budget does so 60 times a second; a slow
client blocks many sends in a row. One log line (or one error_event) per
interval, saying how many were folded into it, tells the operator the same
and keeps the log readable.
"""

from __future__ import annotations


class Throttle:
    """Lets one event through per *interval* seconds and counts the rest."""

    __slots__ = ("interval", "_next", "_suppressed")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = float("-inf")
        self._suppressed = 0

    def ready(self, now: float) -> int | None:
        """None if this event is suppressed; otherwise how many were suppressed since the last one."""
        if now < self._next:
            self._suppressed += 1
            return None
        self._next = now + self.interval
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
