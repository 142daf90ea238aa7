"""Live statistics of a client: latency, energy rate, frame gaps and counters.

:class:`ClientStats` gathers one :class:`LatencyWindow`, one
:class:`ArrivalRate` and one :class:`FrameGapCounter` with the counters the
connection keeps; :meth:`ClientStats.snapshot` turns them into plain values
for logs, JSON and the command line.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, Literal

from ..stream.rolling import percentile
from .rules import frames_missed, is_frame_gap
from .utils import is_int, is_number

__all__ = [
    "ArrivalRate",
    "ClientState",
    "ClientStats",
    "FrameGapCounter",
    "LatencyWindow",
    "percentile",
]

ClientState = Literal["idle", "connecting", "open", "reconnecting", "refused", "failed", "closed"]


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class LatencyWindow:
    """Latency samples of the last *window_s* seconds (at most *max_samples*).

    A time window rather than a fixed count keeps the percentiles about "now"
    whatever the energy rate is; the count bound caps memory at high rates.
    """

    def __init__(self, window_s: float = 10.0, max_samples: int = 4096) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, at: float, latency_ms: float) -> None:
        """Record *latency_ms* observed at monotonic time *at* (seconds)."""
        self._samples.append((at, latency_ms))

    def values(self, now: float) -> list[float]:
        """The samples still inside the window at monotonic time *now*."""
        horizon = now - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        return [latency for _, latency in self._samples]

    def summary(self, now: float) -> dict[str, float | int | None]:
        """Median, P99 and maximum (ms, 3 decimals) and the sample count at time *now*."""
        values = self.values(now)
        return {
            "median": _rounded(percentile(values, 0.5), 3),
            "p99": _rounded(percentile(values, 0.99), 3),
            "max": _rounded(max(values) if values else None, 3),
            "samples": len(values),
        }


class ArrivalRate:
    """Events per second: how many arrived in the last *window_s* seconds, divided by it."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def mark(self, at: float) -> None:
        """Record one event at monotonic time *at* (seconds)."""
        self._times.append(at)
        self._prune(at)

    def rate(self, now: float) -> float:
        """Events per second in the window ending at monotonic time *now*."""
        self._prune(now)
        return len(self._times) / self.window_s

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._times and self._times[0] <= horizon:
            self._times.popleft()


class FrameGapCounter:
    """Counts gaps in the ``frameNumber`` of consecutive energy_update frames.

    The rule is PROTOCOL.md §10 ("Frame gaps"), implemented by
    :func:`~.rules.is_frame_gap` and :func:`~.rules.frames_missed`: with
    ``e = frame rate / energy rate`` (1 at full rate), a step ``d`` is a gap
    when ``d > ceil(e)``, the largest step decimation produces; a gap lost
    ``max(1, floor(d / e + 0.5) - 1)`` frames (samples, when decimating).
    A gap may come from latest-wins coalescing (the connection fell behind)
    or from the server's frame clock skipping ticks; both are frames the
    viewer did not get. Steps <= 0 are not gaps but regressions (a new frame
    counter, e.g. after a restart) and restart the count. Call :meth:`reset`
    wherever a jump is expected: a new session, a rate change, pause/resume.
    """

    def __init__(self) -> None:
        self.expected_step = 1.0
        self.gaps = 0
        self.frames_missed = 0
        self.max_step = 0
        self.regressions = 0
        self._last: int | None = None

    def configure(self, frame_rate: float | None, energy_rate: float | None) -> None:
        """Set the expected step from F and R (None: unknown, taken as full rate) and reset."""
        if frame_rate and energy_rate and 0 < energy_rate < frame_rate:
            self.expected_step = frame_rate / energy_rate
        else:
            self.expected_step = 1.0
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame: the next one starts a new run."""
        self._last = None

    def is_gap(self, step: int) -> bool:
        """The rule above, for one step ``d`` > 0."""
        return is_frame_gap(step, self.expected_step)

    def observe(self, frame_number: int) -> bool:
        """Record one received frame; True when it ends a gap."""
        last, self._last = self._last, frame_number
        if last is None:
            return False
        step = frame_number - last
        if step <= 0:
            self.regressions += 1
            return False
        self.max_step = max(self.max_step, step)
        if not self.is_gap(step):
            return False
        self.gaps += 1
        self.frames_missed += frames_missed(step, self.expected_step)
        return True


class ClientStats:
    """Live statistics of one client across all its sessions; :meth:`snapshot` for a dict.

    Latency is ``time.time() * 1000 - timestamp`` of energy_update frames,
    taken when the frame is read from the socket. Client and server share a
    clock on loopback; with 1.0's integer timestamps it is ~0.5 ms high.

    The first energy_update of each session counts for the rate but neither
    for latency nor as the start of the gap count (PROTOCOL.md §10): it may
    be the newest frame the server held (§6), up to half a second old, so
    its age is not transport latency and the step from it to the first live
    frame is not a delivery gap. After resume_energy the server sends no
    such frame, so only the gap count restarts there.
    """

    def __init__(self, latency_window_s: float = 10.0, max_latency_samples: int = 4096) -> None:
        self.state: ClientState = "idle"
        self.latency = LatencyWindow(latency_window_s, max_latency_samples)
        self.energy_rate = ArrivalRate(1.0)
        self.gaps = FrameGapCounter()
        self.sessions = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.recovered = 0
        self.incomplete_resumes = 0
        self.duplicates = 0  # messages dropped by the ResumeCursor (seq at or below lastSeq)
        self.invalid_frames = 0
        self.heartbeats_answered = 0
        self.messages: Counter[str] = Counter()
        self.last_error: Mapping[str, Any] | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.last_reconnect_ms: float | None = None
        self.max_reconnect_ms: float | None = None
        self._first_frame_pending = False

    def start_session(self, frame_rate: float | None, energy_rate: float | None) -> None:
        """A startup_complete arrived: count the session, reset the gap rule for its rates."""
        self.sessions += 1
        self.gaps.configure(frame_rate, energy_rate)
        self._first_frame_pending = True

    def record_energy_update(self, message: Mapping[str, Any], now_ms: float, at: float) -> None:
        """Latency, rate and gap accounting for one energy_update."""
        self.energy_rate.mark(at)
        if self._first_frame_pending:
            self._first_frame_pending = False  # possibly the §6 hand-over frame: see the class doc
            return
        timestamp = message.get("timestamp")
        if is_number(timestamp):
            self.latency.add(at, now_ms - timestamp)
        frame_number = message.get("frameNumber")
        if is_int(frame_number):
            self.gaps.observe(frame_number)

    def record_reconnect(self, took_s: float) -> None:
        """Count a reconnect that took *took_s* seconds from the loss to the new session."""
        took_ms = took_s * 1000.0
        self.reconnects += 1
        self.last_reconnect_ms = took_ms
        self.max_reconnect_ms = took_ms if self.max_reconnect_ms is None else max(self.max_reconnect_ms, took_ms)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Everything above as plain JSON-ready values; *now* is monotonic seconds."""
        now = time.monotonic() if now is None else now
        return {
            "state": self.state,
            "energy_hz": round(self.energy_rate.rate(now), 1),
            "latency_ms": self.latency.summary(now),
            "frame_gaps": self.gaps.gaps,
            "frames_missed": self.gaps.frames_missed,
            "max_frame_step": self.gaps.max_step,
            "expected_frame_step": round(self.gaps.expected_step, 3),
            "frame_regressions": self.gaps.regressions,
            "sessions": self.sessions,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "reconnect_ms": {"last": _rounded(self.last_reconnect_ms, 1), "max": _rounded(self.max_reconnect_ms, 1)},
            "recovered": self.recovered,
            "incomplete_resumes": self.incomplete_resumes,
            "duplicates": self.duplicates,
            "invalid_frames": self.invalid_frames,
            "heartbeats_answered": self.heartbeats_answered,
            "messages": sum(self.messages.values()),
            "messages_by_type": dict(sorted(self.messages.items())),
            "last_error": dict(self.last_error) if self.last_error is not None else None,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
        }
