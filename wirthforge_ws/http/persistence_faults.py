"""Telling clients when the event log cannot keep what is streamed (``persistence_degraded`` error events).

Messages still stream live when the durable log drops or fails to write
them, but a client that counts on resume after a restart, or on replay,
should know. :class:`PersistenceFaults` publishes one error_event when the
log's drop count grows, and repeats it every REPORT_INTERVAL while the
log stays unavailable; it runs after each heartbeat check.
"""

from __future__ import annotations

from ..protocol import messages
from ..protocol.codes import ErrorCode
from ..storage.event_log import EventLog
from ..stream.hub import Hub
from ..stream.throttle import Throttle

REPORT_INTERVAL = 30.0  # seconds between error_events while persistence stays degraded


class PersistenceFaults:
    """Publishes a rate-limited ``persistence_degraded`` error_event through *hub* when *event_log* falters."""

    def __init__(self, event_log: EventLog, hub: Hub) -> None:
        self._log = event_log
        self._hub = hub
        self._reported_dropped = 0
        self._reports = Throttle(REPORT_INTERVAL)

    def check(self, now: float) -> None:
        """Report now if the log dropped something new or is unavailable, unless reported recently."""
        if not len(self._hub):
            return  # no subscriber is attached yet (a new connection may still be opening): report when one is
        stats = self._log.stats
        dropped = stats.dropped
        if self._log.available and dropped == self._reported_dropped:
            return  # healthy
        if self._reports.ready(now) is None:
            return  # reported recently; an unavailable log is reported again every interval
        self._reported_dropped = dropped
        self._hub.publish(
            messages.error_event(
                ErrorCode.PERSISTENCE_DEGRADED,
                "Event persistence is degraded: messages are streamed live but may not be recorded "
                "for resume after a restart or for replay.",
                details={"reason": (stats.error or "")[:300], "dropped": stats.dropped},
            )
        )
