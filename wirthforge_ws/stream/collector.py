"""Full garbage collections at moments the frame loop chooses, not whenever a burst makes the heap grow.

A full (generation 2) collection walks every object the collector tracks;
with 1,000 connections open it holds the one event loop for 100 ms or
more, six frames and over. CPython runs one automatically each time the
objects that survived into generation 2 grew by a quarter since the last,
so while a burst of connections opens it runs again and again, on an ever
larger heap, just when the loop has the most other work. The young
generations are cheap (a few ms each) and stay automatic.

:class:`FullCollections` turns off only the automatic full collection (its
threshold set out of reach) and runs it itself, from the frame loop right
after a frame was published (:meth:`FullCollections.after_frame`), when one
of these holds, with the heap measured as ``sys.getallocatedblocks()``
(small objects, which every reference cycle is made of) against what it was
just after the last full collection:

- **idle**: no client is connected and the heap grew by :data:`IDLE_GROWTH`
  (at most one per :data:`IDLE_GAP` s): nobody sees that pause;
- **growth**: the heap grew by :data:`GROWTH` (CPython's own ratio) and
  ``--gc-interval`` seconds passed since the last one: at most one pause per
  interval however the heap grows;
- **churn**: :data:`CHURN` WebSocket connections closed since the last
  one, and at least twice as many as are open now, whatever the interval:
  a closed connection leaves cycles (uvicorn's and the websockets
  library's objects, about 60) that only a full collection frees, so
  memory stays bounded however fast connections come and go;
- **bound**: the heap grew fivefold (:data:`BOUND_GROWTH`), whatever the
  interval: the last resort for garbage of any other origin. Not lower:
  the heap grows without any garbage too (the resume history filling up,
  connections opening: the server filled to its connection cap needs
  about three times its start-up heap), and a bound it reaches that way
  would run a full collection in the middle of a large burst.

Cyclic garbage is still collected, only later: once it is a quarter of
the heap, at most one interval after that (or after :data:`CHURN` closed
connections). Each pause is as long as the automatic one would have been
on the same heap. :meth:`FullCollections.stop`
restores the automatic thresholds; ``--gc-interval 0`` keeps them.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable

GROWTH = 0.25  # heap growth that makes a full collection due once the interval has passed
BOUND_GROWTH = 4.0  # heap growth that makes one due at once: the heap grew fivefold
CHURN = 2_000  # WebSocket connections closed since the last full collection that make one due at once
IDLE_GROWTH = 0.02  # heap growth worth a collection while nobody watches
IDLE_GAP = 1.0  # seconds at least between two idle collections
OUT_OF_REACH = 1_000_000_000  # generation 2 threshold (young collections since the last full one)


class FullCollections:
    """Runs generation 2 collections itself, at frame boundaries; young generations stay automatic."""

    def __init__(
        self,
        interval: float,
        *,
        idle: Callable[[], bool] = lambda: False,
        open_connections: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
        heap: Callable[[], int] = sys.getallocatedblocks,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0 (0 means: keep Python's automatic full collections)")
        self.interval = interval
        self._idle = idle  # no client connected: a pause delays nobody's frames
        self._open = open_connections
        self.closed_since_last = 0  # WebSocket connections closed since the last full collection
        self._clock = clock
        self._heap = heap
        self._saved: tuple[int, int, int] | None = None  # the thresholds before start()
        self._ours: tuple[int, int, int] | None = None
        self._last = clock()
        self._base = heap()  # heap blocks just after the last full collection
        self.collections: dict[str, int] = {"idle": 0, "growth": 0, "churn": 0, "bound": 0}
        self.collected = 0  # unreachable objects found, in all
        self.last_pause = 0.0  # seconds, wall clock
        self.longest_pause = 0.0
        self.tracked_after_last: int | None = None  # objects the collector tracks, after the last one

    @property
    def running(self) -> bool:
        return self._ours is not None

    def start(self) -> None:
        """Take over the full collection: the automatic one never comes due."""
        young0, young1, _ = self._saved = gc.get_threshold()
        self._ours = (young0, young1, OUT_OF_REACH)
        gc.set_threshold(*self._ours)
        self._last, self._base = self._clock(), self._heap()

    def stop(self) -> None:
        """Give the full collection back to Python, unless someone changed the thresholds since."""
        if self._ours is not None and self._saved is not None and gc.get_threshold() == self._ours:
            gc.set_threshold(*self._saved)
        self._ours = None

    def connection_closed(self) -> None:
        """A WebSocket connection ended: count it towards the churn rule."""
        self.closed_since_last += 1

    def due(self) -> str | None:
        """Why a full collection should run now ("idle", "growth", "churn", "bound"), or None."""
        if self._ours is None:
            return None
        if self.closed_since_last >= CHURN and self.closed_since_last >= 2 * self._open():
            return "churn"
        grown = self._heap() - self._base
        if grown >= BOUND_GROWTH * self._base:
            return "bound"
        since = self._clock() - self._last
        if since >= IDLE_GAP and grown >= IDLE_GROWTH * self._base and self._idle():
            return "idle"
        if since >= self.interval and grown >= GROWTH * self._base:
            return "growth"
        return None

    def after_frame(self) -> None:
        """Called by the frame loop after each tick's work (a frame published, or an idle tick)."""
        reason = self.due()
        if reason is not None:
            self.collect(reason)

    def collect(self, reason: str) -> int:
        """One full collection now, counted under *reason*; the number of unreachable objects found."""
        started = time.perf_counter()
        found = gc.collect(2)
        pause = time.perf_counter() - started
        self.collections[reason] = self.collections.get(reason, 0) + 1
        self.collected += found
        self.last_pause = pause
        self.longest_pause = max(self.longest_pause, pause)
        self._last, self._base = self._clock(), self._heap()
        self.closed_since_last = 0
        self.tracked_after_last = len(gc.get_objects())
        return found

    def health(self) -> dict[str, object]:
        """The ``/health`` numbers (docs/HEALTH.md, "Garbage collection")."""
        return {
            "fullCollections": "scheduled" if self.running else "automatic",
            "intervalSeconds": self.interval,
            "collections": dict(self.collections),
            "collected": self.collected,
            "lastPauseMs": round(self.last_pause * 1000, 1),
            "longestPauseMs": round(self.longest_pause * 1000, 1),
            "secondsSinceLast": round(self._clock() - self._last, 1),
            "closedSinceLast": self.closed_since_last,
            "heapBlocks": self._heap(),
            "heapBlocksAfterLast": self._base,
            "trackedAfterLast": self.tracked_after_last,
        }
