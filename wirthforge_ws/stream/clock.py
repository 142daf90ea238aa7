"""The frame clock: ticks on absolute deadlines so the rate never drifts.

A loop that sleeps ``period`` after each frame runs slow by the time each
frame takes (the upstream reference reached 56-57 Hz that way). Here tick k
is due at ``start + k * period`` whatever happened before, so lateness never
accumulates. A tick less than two periods late (:data:`CATCH_UP_PERIODS`: a
scheduler hiccup, a short GC pause) is still sent, and the next one, already
due, follows at once: clients get every frame, one of them late, instead of
a gap. When the loop falls further behind (a long pause, a suspended laptop)
it skips the missed ticks and counts them instead of firing a burst of
catch-up frames that nobody wants to see. The lateness it records is
measured from the first missed deadline, so a 2.7 s freeze shows as 2.7 s
of lateness, not as the remainder after skipping.

While nobody is watching (the *idle* predicate is true) the clock wakes only
at ``idle_rate`` and jumps to the newest frame that fell due: frame numbers
keep advancing at the full rate, but an idle server does not pay for 60
wake-ups a second. :meth:`FrameClock.wake` ends an idle sleep at once when a
client arrives. Idle ticks are not counted as lateness or skipped frames.

Lateness is measured with ``time.monotonic`` (uvloop's own clock has only
millisecond resolution); with uvloop a timer can also fire up to a
millisecond early, which shows as negative lateness. The time function and
the sleep are injectable, so tests can drive the clock without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from .rolling import RateMeter, RollingSamples

CATCH_UP_PERIODS = 2  # a tick later than this many periods skips to the newest due tick


@dataclass(frozen=True, slots=True)
class Tick:
    """One frame: its number, when it was due and how late it fired (seconds).

    After a stall, *deadline* and *lateness* refer to the tick that fires
    (the skipped ones are gone), and *skipped* says how many were skipped.
    """

    frame_number: int
    deadline: float
    lateness: float
    skipped: int = 0


class FrameClock:
    """Yields :class:`Tick` at *rate* Hz on the monotonic clock."""

    def __init__(
        self,
        rate: float,
        *,
        idle_rate: float = 10.0,
        window_seconds: float = 10.0,
        time_function: Callable[[], float] = time.monotonic,
        sleep_until: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self._time = time_function
        self._sleep_until = sleep_until or self._sleep_on_loop
        self.rate = rate
        self.period = 1.0 / rate
        self.idle_stride = max(int(rate / idle_rate), 1)  # frames per idle wake-up
        self.frames_skipped = 0
        self.ticks = 0
        self.idle_ticks = 0
        self.frame_number = 0
        self.lateness = RollingSamples(int(rate * window_seconds))
        self._rate_meter = RateMeter(int(rate * 2) + 1)
        self._idle_sleep: asyncio.Future[None] | None = None

    @property
    def achieved_rate(self) -> float:
        """Ticks per second over the last two seconds of active (not idle) running.

        Measured up to now, not up to the last tick: a clock that stopped
        ticking reports a falling rate, and 0 after two seconds.
        """
        return self._rate_meter.rate(now=self._time(), window=2.0)

    @property
    def idle(self) -> bool:
        return self._idle_sleep is not None

    def wake(self) -> None:
        """End an idle sleep now: someone is watching again."""
        if self._idle_sleep is not None and not self._idle_sleep.done():
            self._idle_sleep.set_result(None)

    async def run(self, idle: Callable[[], bool] | None = None) -> AsyncIterator[Tick]:
        loop = asyncio.get_running_loop()
        now_of = self._time
        start = now_of()
        index = 0  # invariant: tick `index` is due at start + index * period
        was_idle = False
        while True:
            index += 1
            is_idle = idle is not None and idle()
            if is_idle:
                await self._sleep_idle(loop, start + (index + self.idle_stride - 1) * self.period)
                newest_due = int((now_of() - start) / self.period)
                if newest_due > index:
                    self.frame_number += newest_due - index
                    index = newest_due
            elif was_idle:
                self._rate_meter.clear()  # the idle gap is not a slow rate
            was_idle = is_idle
            deadline = start + index * self.period
            if deadline > now_of():
                await self._sleep_until(deadline)
            now = now_of()
            lateness = now - deadline
            missed = 0
            if is_idle:
                self.idle_ticks += 1
            else:
                # Recorded before skipping: a stall is as late as it was long.
                self.lateness.add(lateness)
                if lateness >= CATCH_UP_PERIODS * self.period:
                    # Too far behind: skip the ticks we missed rather than burst.
                    missed = int(lateness // self.period)
                    index += missed
                    self.frame_number += missed
                    self.frames_skipped += missed
                    deadline = start + index * self.period
                    lateness = now - deadline
                self.ticks += 1
                self._rate_meter.mark(now)
            yield Tick(self.frame_number, deadline, lateness, missed)
            self.frame_number += 1

    async def _sleep_idle(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._idle_sleep = loop.create_future()
        handle = loop.call_later(deadline - self._time(), _resolve, self._idle_sleep)
        try:
            await self._idle_sleep
        finally:
            handle.cancel()
            self._idle_sleep = None

    async def _sleep_on_loop(self, deadline: float) -> None:
        """Sleep until *deadline* on this clock's time function."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        handle = loop.call_later(deadline - self._time(), _resolve, future)
        try:
            await future
        finally:
            handle.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
