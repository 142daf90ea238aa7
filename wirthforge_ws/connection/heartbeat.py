"""When one connection's next heartbeat is due.

The first heartbeats go out EARLY_HEARTBEATS after the connection opens
(so that pacing has measures before a backlog builds), then one per
heartbeat interval; while the pacer probes, more often (the caller passes
the pacer's probe time to :meth:`HeartbeatSchedule.due`).
"""

from __future__ import annotations

from .pacing import EARLY_HEARTBEATS


class HeartbeatSchedule:
    """The sequence number and due time of one connection's heartbeats."""

    __slots__ = ("_opened_at", "_interval", "sequence", "last_at", "_next")

    def __init__(self, opened_at: float, interval: float) -> None:
        self._opened_at = opened_at
        self._interval = interval
        self.sequence = 0  # of the next heartbeat
        self.last_at = opened_at  # time.monotonic() of the last heartbeat (the open, before the first)
        self._next = opened_at + EARLY_HEARTBEATS[0]

    def due(self, now: float, probe_at: float) -> bool:
        """Whether a heartbeat is due at *now*, by the schedule or because the pacer wants a probe at *probe_at*."""
        return now >= self._next or now >= probe_at

    def take(self, now: float) -> int:
        """Record a heartbeat sent at *now*; its sequence number."""
        sequence = self.sequence
        if sequence + 1 < len(EARLY_HEARTBEATS):
            self._next = self._opened_at + EARLY_HEARTBEATS[sequence + 1]
        elif now >= self._next:
            self._next = max(self._next + self._interval, now)
        self.last_at = now
        self.sequence += 1
        return sequence
