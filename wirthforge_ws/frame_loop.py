"""The 60 Hz frame loop: source -> energy_update (+ events) -> hub.

Each tick asks the source what happened during the frame, builds the
frame's messages and publishes them; the hub validates, serialises and fans
out. With no client connected the source still advances (so the model's
state and the frame numbers stay continuous) but no frame is built or
serialised, and the clock wakes only ten times a second (see clock.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import messages
from .clock import FrameClock
from .hub import Hub
from .metrics import RollingSamples
from .settings import Settings
from .sources import EnergySource


class FrameLoop:
    """Owns the frame clock and the per-frame work; measures both."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        source: EnergySource,
        *,
        on_frame: Callable[[float, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.source = source
        self.clock = FrameClock(settings.frame_rate)
        self.processing = RollingSamples(int(settings.frame_rate * 10))
        self.budget_overruns = 0
        self.frames_built = 0
        self.frame_number = 0
        self._on_frame = on_frame  # (tick lateness, processing time) in seconds, e.g. metrics

    async def run(self) -> None:
        budget = self.settings.frame_budget_ms / 1000.0
        hub = self.hub
        async for tick in self.clock.run(idle=lambda: not len(hub)):
            started = time.perf_counter()
            self.frame_number = tick.frame_number
            self._frame(tick.frame_number, tick.deadline, started)
            elapsed = time.perf_counter() - started
            self.processing.add(elapsed)
            if elapsed > budget:
                self.budget_overruns += 1
            if self._on_frame is not None and len(hub):  # idle ticks are not frames
                self._on_frame(tick.lateness, elapsed)

    def _frame(self, frame_number: int, now: float, started: float) -> None:
        activity = self.source.step(frame_number, now)
        hub = self.hub
        if len(hub):
            reading = activity.energy
            hub.publish(
                messages.energy_update(
                    frame_number=frame_number,
                    total_energy=reading.level,
                    delta_energy=reading.delta,
                    tokens_generated=len(activity.tokens),
                    processing_time_ms=(time.perf_counter() - started) * 1000.0,
                    model_id=self.source.model_id,
                    distribution=reading.distribution(),
                )
            )
            self.frames_built += 1
        if activity.tokens or activity.response_complete:
            hub.publish(
                messages.token_stream(
                    tokens=activity.tokens,
                    is_complete=activity.response_complete,
                    session_id=activity.session_id,
                    model_id=self.source.model_id,
                    energy_cost=0.01 * len(activity.tokens),
                )
            )
        for event in activity.events:
            hub.publish(event)  # energy_field is dropped by the hub when nobody listens

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
