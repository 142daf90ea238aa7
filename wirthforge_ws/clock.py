"""The frame clock: ticks on absolute deadlines so the rate never drifts.

A loop that sleeps ``period`` after each frame runs slow by the time each
frame takes (the upstream reference reached 56-57 Hz that way). Here tick k
is due at ``start + k * period`` whatever happened before, so lateness never
accumulates. When the loop falls more than a period behind (a GC pause, a
suspended laptop) it skips the missed ticks and counts them instead of
firing a burst of catch-up frames that nobody wants to see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .metrics import RateMeter, RollingSamples


@dataclass(frozen=True, slots=True)
class Tick:
    """One frame: its number, when it was due and how late it fired (seconds)."""

    frame_number: int
    deadline: float
    lateness: float


class FrameClock:
    """Yields :class:`Tick` at *rate* Hz on the running loop's monotonic clock."""

    def __init__(self, rate: float, *, window_seconds: float = 10.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.period = 1.0 / rate
        self.frames_skipped = 0
        self.ticks = 0
        self.lateness = RollingSamples(int(rate * window_seconds))
        self._rate_meter = RateMeter(int(rate * 2) + 1)

    @property
    def achieved_rate(self) -> float:
        """Ticks per second over the last two seconds."""
        return self._rate_meter.rate()

    async def run(self) -> AsyncIterator[Tick]:
        # time.monotonic, not loop.time(): uvloop's loop clock only has
        # millisecond resolution, too coarse to measure lateness.
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        index = 0  # invariant: tick `index` is due at start + index * period
        frame_number = 0
        while True:
            index += 1
            deadline = start + index * self.period
            if deadline > time.monotonic():
                await _sleep_until(loop, deadline)
            now = time.monotonic()
            lateness = now - deadline
            if lateness >= self.period:
                # Too far behind: skip the ticks we missed rather than burst.
                missed = int(lateness // self.period)
                index += missed
                frame_number += missed
                self.frames_skipped += missed
                deadline = start + index * self.period
                lateness = now - deadline
            self.ticks += 1
            self.lateness.add(lateness)
            self._rate_meter.mark(now)
            yield Tick(frame_number, deadline, lateness)
            frame_number += 1


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Sleep until monotonic time *deadline*."""
    future = loop.create_future()
    handle = loop.call_later(deadline - time.monotonic(), _resolve, future)
    try:
        await future
    finally:
        handle.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
