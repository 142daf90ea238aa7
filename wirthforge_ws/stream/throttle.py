"""Rate limiting for warnings and notices that could otherwise flood.

A frame loop that overruns its budget does so 60 times a second; a slow
client blocks many sends in a row; a hostile page sends hundreds of refused
requests a second. One log line (or one error_event) per interval, saying how
many were folded into it, tells the operator the same and keeps the log
readable. :class:`Throttle` is the one place that decides and words this.
"""

from __future__ import annotations

import logging
import time

FOLDED = " (%d more since the last line)"  # appended to a warning that stands for suppressed ones


class Throttle:
    """Lets one event through per *interval* seconds and counts the rest."""

    __slots__ = ("interval", "_next", "_suppressed")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = float("-inf")
        self._suppressed = 0

    def ready(self, now: float | None = None) -> int | None:
        """None if this event is suppressed; otherwise how many were suppressed since the last one.

        *now* is ``time.monotonic()`` seconds (read here when not given).
        """
        if now is None:
            now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return None
        self._next = now + self.interval
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed

    def warning(self, logger: logging.Logger, message: str, *args: object, now: float | None = None) -> bool:
        """Log *message* % *args* as a warning unless one went out within the interval; True if it did.

        The line ends with how many warnings it stands for that were suppressed
        since the last one, when there were any.
        """
        suppressed = self.ready(now)
        if suppressed is None:
            return False
        if suppressed:
            logger.warning(message + FOLDED, *args, suppressed)
        else:
            logger.warning(message, *args)
        return True
