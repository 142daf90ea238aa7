"""Small measurement helpers: rolling percentiles and a rate meter."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile, *fraction* in [0, 1]; None when there are no values.

    The smallest sample with at least ``fraction`` of all samples at or below
    it (the ``max(1, ceil(fraction * n))``-th smallest): always an observed
    value, no interpolation. This is the project's one definition
    (PROTOCOL.md §10.6): the server's ``/health``, the Python client,
    ``test_latency.py`` and the benchmark use this function, and the browser
    client's ``percentile`` in ``static/wirthforge/stats.js`` is the same rule;
    ``tests/vectors/percentiles.json`` holds both to it. With fewer than 100
    samples P99 is the maximum.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be within [0, 1]")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class RollingSamples:
    """The last *size* samples, with percentiles computed on demand.

    Appending is O(1) on the hot path; sorting happens only when someone asks
    (``/health``, a heartbeat), never per frame.
    """

    __slots__ = ("_samples",)

    def __init__(self, size: int) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._samples.append(value)

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, fraction: float) -> float | None:
        """Nearest-rank percentile (fraction in [0, 1]); None when empty."""
        return percentile(self._samples, fraction)

    def last(self) -> float | None:
        return self._samples[-1] if self._samples else None

    def maximum(self) -> float | None:
        return max(self._samples) if self._samples else None

    def summary(self, scale: float = 1.0, digits: int = 3) -> dict[str, float | None]:
        """p50 / p99 / max, multiplied by *scale* (1000 turns seconds into ms)."""

        def fmt(value: float | None) -> float | None:
            return None if value is None else round(value * scale, digits)

        return {"p50": fmt(self.percentile(0.5)), "p99": fmt(self.percentile(0.99)), "max": fmt(self.maximum())}


class RateMeter:
    """Events per second over the last *window* events (e.g. two seconds of ticks)."""

    __slots__ = ("_times",)

    def __init__(self, window: int) -> None:
        self._times: deque[float] = deque(maxlen=max(window, 2))

    def mark(self, when: float) -> None:
        self._times.append(when)

    def clear(self) -> None:
        self._times.clear()

    def rate(self, now: float | None = None, window: float | None = None) -> float:
        """Events per second between the first remembered event and the last one.

        With *now* and *window*: events within the last *window* seconds
        before *now*, over the time from the first of them to *now*. Events
        that stopped then show as a falling rate (0 once none is in the
        window) rather than as the last rate seen forever.
        """
        times = self._times
        if now is not None and window is not None:
            recent = [t for t in times if t > now - window]
            if len(recent) < 2:
                return 0.0
            span = max(now, recent[-1]) - recent[0]
            # Up to one period of quiet after the last event is normal, not a slowdown.
            gap = max(now - recent[-1], 0.0)
            period = (recent[-1] - recent[0]) / (len(recent) - 1)
            if gap <= period:
                span = recent[-1] - recent[0]
            return (len(recent) - 1) / span if span > 0 else 0.0
        if len(times) < 2:
            return 0.0
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0
