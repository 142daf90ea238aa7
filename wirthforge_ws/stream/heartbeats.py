"""When every connection checks its heartbeat: inside frames, or by a watchdog when frames stop.

Every HEARTBEAT_TICK each connection checks its send stall and sends its
heartbeat if due (``Connection.heartbeat``). Each connection keeps its own
schedule (the first ones right after it opens, see connection/pacing.py),
so the heartbeats of many clients are spread out rather than sent in one
burst. Frames do the check (:meth:`Heartbeats.in_frame`, the frame loop's
``before_frame`` hook), so that heartbeats share the frame's socket write
and never need a timer of their own. If the frame loop stalls or dies, the
watchdog (:meth:`Heartbeats.run`) does it every HEARTBEAT_WATCHDOG: clients
keep getting heartbeats, whose falling frameRate tells them why energy
stopped. With no client the watchdog sleeps until one connects, so an idle
server does not wake for it at all.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

HEARTBEAT_TICK = 0.05  # seconds: how often each connection's heartbeat and send stall are checked
HEARTBEAT_WATCHDOG = 0.25  # seconds: how often the watchdog makes sure frames still do that check


class Beating(Protocol):
    """What the heartbeat check needs of a connection."""

    def heartbeat(self, achieved_rate: float, now: float) -> None: ...


class Heartbeats:
    """Runs the heartbeat check over *connections* every tick, from frames or from its watchdog.

    *achieved_rate* reads the frame rate the loop actually reaches (sent in
    each heartbeat); each of *also* runs after every check with the same
    *now* (the server reports persistence faults this way).
    """

    def __init__(
        self,
        connections: Collection[Beating],
        achieved_rate: Callable[[], float],
        also: Sequence[Callable[[float], None]] = (),
    ) -> None:
        self._connections = connections
        self._achieved_rate = achieved_rate
        self._also = tuple(also)
        self._someone_connected = asyncio.Event()  # wakes the watchdog from its idle wait
        self._checked_at = -math.inf  # time.monotonic() of the last check

    def connected(self) -> None:
        """A connection was added: wake the watchdog if it sleeps for want of clients."""
        self._someone_connected.set()

    async def run(self) -> None:
        """The watchdog: checks heartbeats itself whenever no frame did for HEARTBEAT_WATCHDOG."""
        while True:
            if not self._connections:
                self._someone_connected.clear()
                await self._someone_connected.wait()
            await asyncio.sleep(HEARTBEAT_WATCHDOG)
            now = time.monotonic()
            if now - self._checked_at >= HEARTBEAT_WATCHDOG:  # no frame did it meanwhile
                self.check(now)

    def in_frame(self, now: float) -> None:
        """The frame loop's before_frame hook: the check, at most every HEARTBEAT_TICK."""
        if now - self._checked_at >= HEARTBEAT_TICK:
            self.check(now)

    def check(self, now: float) -> None:
        """Let every connection send its heartbeat if due, then run the *also* hooks."""
        self._checked_at = now
        rate = self._achieved_rate()
        for connection in tuple(self._connections):
            connection.heartbeat(rate, now)
        for hook in self._also:
            hook(now)
