"""The 60 Hz frame loop: source -> energy_update (+ events) -> hub.

Each tick asks the source what happened during the frame, builds the
frame's messages (``energy_update`` with its evidence, each model's
``token_stream``, ``energy_field`` when it changed; see energy_frames.py)
and publishes them; the hub validates, serialises and fans out. With no
client connected the source still advances (so the model's state and the
frame numbers stay continuous) but no frame is built or
serialised, and the clock wakes only ten times a second (see clock.py).

Falling behind is reported, never hidden: frames over the budget and
skipped frames are counted in ``/health`` and logged as warnings (at most
one line per :data:`WARN_EVERY` seconds), and clients get a
``FRAME_OVERRUN`` error_event (at most one per :data:`NOTICE_EVERY`
seconds, once at least :data:`NOTICE_MIN_SKIPPED` frames were skipped) so
that a UI can tell a stutter of the server from one of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from ..protocol import messages
from ..protocol.codes import ErrorCode
from ..protocol.messages import Event
from ..settings import Settings
from ..sources.base import EnergySource
from . import energy_frames
from .clock import FrameClock, Tick
from .hub import Hub, Outbound
from .rolling import RollingSamples
from .throttle import Throttle

log = logging.getLogger("wirthforge.frame_loop")

WARN_EVERY = 10.0  # seconds between warning lines of one kind
NOTICE_EVERY = 10.0  # seconds between FRAME_OVERRUN error_events
NOTICE_MIN_SKIPPED = 6  # frames (100 ms at 60 Hz): shorter hiccups are only counted
JOIN_TIMEOUT = 0.25  # seconds publish_in_next_frame waits for a frame (the idle clock ticks every 0.1 s)


class _Joining:
    """Events waiting to be published inside the next frame (compared by identity)."""

    __slots__ = ("events", "published")

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.published: asyncio.Future[list[Outbound | None]] = asyncio.get_running_loop().create_future()


class FrameLoop:
    """Owns the frame clock and the per-frame work; measures both."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        source: EnergySource,
        clock: FrameClock | None = None,
        *,
        on_frame: Callable[[float, float], None] | None = None,
        before_frame: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.source = source
        self.clock = clock or FrameClock(settings.frame_rate)
        self.processing = RollingSamples(int(settings.frame_rate * 10))
        self.budget_overruns = 0
        self.frames_built = 0
        self.frame_number = 0
        self._on_frame = on_frame  # (tick lateness, processing time) in seconds, e.g. metrics
        # Called first inside each frame's scope with time.monotonic(): connections' own messages sent
        # there (heartbeats) share the frame's socket write, ahead of the frame's higher seqs.
        self._before_frame = before_frame
        self._overrun_warnings = Throttle(WARN_EVERY)
        self._skip_warnings = Throttle(WARN_EVERY)
        self._skip_notices = Throttle(NOTICE_EVERY)
        self._skipped_unreported = 0
        self._joining: list[_Joining] = []
        self._field = energy_frames.FieldBuilder(settings.field_every_frames)
        self._last_energy = 0.0  # totalEnergy of the previous frame, for deltaEnergy

    async def run(self) -> None:
        budget = self.settings.frame_budget_ms / 1000.0
        hub = self.hub
        async for tick in self.clock.run(idle=lambda: not len(hub)):
            started = time.perf_counter()
            self.frame_number = tick.frame_number
            if tick.skipped:
                self._skipped(tick)
            self._frame(tick.frame_number, tick.deadline, started)
            elapsed = time.perf_counter() - started
            self.processing.add(elapsed)
            if elapsed > budget:
                self.budget_overruns += 1
                self._overrun_warnings.warning(
                    log, "frame %d took %.1f ms (budget %.2f ms)", tick.frame_number, elapsed * 1000, budget * 1000
                )
            if self._on_frame is not None and len(hub):  # idle ticks are not frames
                self._on_frame(tick.lateness, elapsed)

    def _skipped(self, tick: Tick) -> None:
        """The clock skipped frames: warn the log and, rate-limited, the clients."""
        now = time.monotonic()
        late_ms = (tick.skipped * self.clock.period + tick.lateness) * 1000
        self._skip_warnings.warning(
            log, "frame loop fell %.0f ms behind and skipped %d frames", late_ms, tick.skipped, now=now
        )
        self._skipped_unreported += tick.skipped
        if self._skipped_unreported < NOTICE_MIN_SKIPPED or self._skip_notices.ready(now) is None:
            return
        skipped, self._skipped_unreported = self._skipped_unreported, 0
        self.hub.publish(
            messages.error_event(
                ErrorCode.FRAME_OVERRUN,
                f"The server fell behind and skipped {skipped} energy frames.",
                details={
                    "framesSkipped": skipped,
                    "lastDelayMs": round(late_ms, 1),
                    "frameRate": self.settings.frame_rate,
                },
            )
        )

    async def publish_in_next_frame(self, events: Sequence[Event]) -> list[Outbound | None]:
        """Publish *events* inside the next frame, so that they share its socket write to each client.

        For messages from outside the frame loop (POST /publish). Delivered
        on their own, they would cost every client a write of its own at a
        random point of the frame period, and at 1,000 clients that fan-out
        delays the next tick; riding with the frame costs nothing more than
        the bytes, and at most one frame period of latency. If no frame
        comes within :data:`JOIN_TIMEOUT` (the loop is stalled or being
        restarted), they are published at once instead; so they are with
        nobody subscribed, when there is no fan-out to share and the idle
        clock would make them wait for its slow tick.
        """
        if not len(self.hub):
            return self._publish_now(events)
        entry = _Joining(events)
        self._joining.append(entry)
        try:
            async with asyncio.timeout(JOIN_TIMEOUT):
                return await asyncio.shield(entry.published)
        except TimeoutError:
            if entry in self._joining:  # no frame took them
                self._joining.remove(entry)
                return self._publish_now(events)
            if entry.published.done():
                return entry.published.result()
            raise RuntimeError("the frame loop failed while publishing") from None
        finally:
            if entry in self._joining:  # cancelled while waiting: not published
                self._joining.remove(entry)

    def _publish_now(self, events: Sequence[Event]) -> list[Outbound | None]:
        """Publish *events* as one frame of their own, outside the frame loop."""
        with self.hub.frame_scope():
            return [self.hub.publish(event) for event in events]

    def _frame(self, frame_number: int, now: float, started: float) -> None:
        with self.hub.frame_scope():  # one delivery and one socket write per client for the whole frame
            if self._before_frame is not None:
                self._before_frame(time.monotonic())
            if self._joining:
                joining, self._joining = self._joining, []
                for entry in joining:
                    outbounds = [self.hub.publish(event) for event in entry.events]
                    if not entry.published.done():
                        entry.published.set_result(outbounds)
            self._publish_frame(frame_number, now, started)

    def _publish_frame(self, frame_number: int, now: float, started: float) -> None:
        activity = self.source.step(frame_number, now)
        hub = self.hub
        level = activity.total_energy
        delta, self._last_energy = level - self._last_energy, level
        if len(hub):
            hub.publish(
                messages.energy_update(
                    frame_number=frame_number,
                    total_energy=level,
                    delta_energy=delta,
                    tokens_generated=len(activity.tokens),
                    processing_time_ms=(time.perf_counter() - started) * 1000.0,
                    model_id=activity.primary.model_id,
                    distribution=energy_frames.frame_distribution(activity, level),
                    evidence=energy_frames.frame_evidence(activity),
                )
            )
            self.frames_built += 1
        for batch in activity.streams:
            hub.publish(energy_frames.token_stream(batch))
        field = self._field.build(frame_number, now, activity) if len(hub) else None
        if field is not None:
            hub.publish(field)
        for event in activity.events:
            hub.publish(event)

    def health(self) -> dict[str, object]:
        clock = self.clock
        return {
            "targetHz": self.settings.frame_rate,
            # null while idle: no frames are built, so there is no rate to report
            "achievedHz": None if clock.idle else round(clock.achieved_rate, 3),
            "idle": clock.idle,
            "frameNumber": clock.frame_number,
            "ticks": clock.ticks,
            "idleTicks": clock.idle_ticks,
            "framesBuilt": self.frames_built,
            "framesSkipped": clock.frames_skipped,
            "tickLatenessMs": clock.lateness.summary(scale=1000.0),
            "processingMs": self.processing.summary(scale=1000.0, digits=4),
            "budgetMs": self.settings.frame_budget_ms,
            "budgetOverruns": self.budget_overruns,
        }
