"""Background tasks that cannot die unnoticed.

A fire-and-forget background task (the frame loop, the heartbeat) that
raised would leave a log line behind and ``/health`` answering ``ok`` with
the last frame rate it had seen. The :class:`Supervisor` owns them instead:

- when a task ends for any reason other than :meth:`Supervisor.stop`
  (an exception, or a cancellation nobody asked for), the death is recorded
  and logged, and the task is started again after a backoff (0.1 s, doubling
  up to 5 s) so that a transient fault heals and a persistent one does not
  spin;
- :meth:`Supervisor.health` reports ``failed`` while any task is dead (between
  its death and its restart), ``degraded`` for :data:`DEGRADED_FOR` seconds
  after a restart, and ``ok`` otherwise, with the reasons.

Reasons name the exception type only: an exception's text could carry a
payload (token text is private), the log has the full traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("wirthforge.supervisor")

FIRST_RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 5.0
DEGRADED_FOR = 60.0  # seconds a restarted task keeps the status at "degraded"

TaskFactory = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class _Supervised:
    name: str
    factory: TaskFactory
    task: asyncio.Task[None] | None = None
    deaths: int = 0
    died_at: float | None = None  # monotonic time of the last death
    dead: bool = False
    reason: str = ""
    restart: asyncio.TimerHandle | None = field(default=None, repr=False)


class Supervisor:
    """Starts, watches and restarts named background tasks."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tasks: dict[str, _Supervised] = {}
        self._stopping = False

    def start(self, name: str, factory: TaskFactory) -> None:
        """Run ``factory()`` as task *name*, and again whenever it dies."""
        supervised = _Supervised(name, factory)
        self._tasks[name] = supervised
        self._spawn(supervised)

    def _spawn(self, supervised: _Supervised) -> None:
        supervised.restart = None
        if self._stopping:
            return
        supervised.dead = False
        supervised.task = asyncio.create_task(supervised.factory(), name=supervised.name)
        supervised.task.add_done_callback(lambda task: self._ended(supervised, task))

    def _ended(self, supervised: _Supervised, task: asyncio.Task[None]) -> None:
        if self._stopping or task is not supervised.task:
            return
        if task.cancelled():
            reason = "cancelled"
            log.critical("background task %s was cancelled; restarting it", supervised.name)
        elif (error := task.exception()) is not None:
            reason = f"raised {type(error).__name__}"
            log.critical("background task %s died; restarting it", supervised.name, exc_info=error)
        else:
            reason = "returned"
            log.critical("background task %s returned; restarting it", supervised.name)
        supervised.deaths += 1
        supervised.died_at = self._clock()
        supervised.dead = True
        supervised.reason = reason
        delay = min(FIRST_RESTART_DELAY * 2 ** (supervised.deaths - 1), MAX_RESTART_DELAY)
        supervised.restart = asyncio.get_running_loop().call_later(delay, self._spawn, supervised)

    async def stop(self) -> None:
        """Cancel every task and wait for them; no restarts from now on."""
        self._stopping = True
        tasks = []
        for supervised in self._tasks.values():
            if supervised.restart is not None:
                supervised.restart.cancel()
            if supervised.task is not None:
                supervised.task.cancel()
                tasks.append(supervised.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    def is_running(self, name: str) -> bool:
        supervised = self._tasks.get(name)
        return supervised is not None and not supervised.dead

    def health(self) -> tuple[str, list[str], dict[str, Any]]:
        """(status, problems, per-task details) for /health."""
        now = self._clock()
        problems: list[str] = []
        status = "ok"
        details: dict[str, Any] = {}
        for supervised in self._tasks.values():
            ago = None if supervised.died_at is None else now - supervised.died_at
            details[supervised.name] = {
                "running": not supervised.dead,
                "deaths": supervised.deaths,
                "lastDeathSecondsAgo": None if ago is None else round(ago, 3),
            }
            if supervised.dead:
                status = "failed"
                problems.append(f"{supervised.name} task died ({supervised.reason}); restarting")
            elif ago is not None and ago < DEGRADED_FOR:
                if status == "ok":
                    status = "degraded"
                problems.append(
                    f"{supervised.name} task died ({supervised.reason}) {ago:.0f} s ago "
                    f"and was restarted ({supervised.deaths} deaths)"
                )
        return status, problems, details
