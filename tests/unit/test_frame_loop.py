"""FrameLoop with a controllable clock: a stall is reported to clients (FRAME_OVERRUN) and to the log, rate-limited."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tests.unit.test_clock import FakeTime
from wirthforge_ws.clock import FrameClock
from wirthforge_ws.frame_loop import FrameLoop
from wirthforge_ws.hub import Hub, Outbound
from wirthforge_ws.schemas import SchemaSet
from wirthforge_ws.settings import Settings
from wirthforge_ws.sources import SimulatedModel


class Recorder:
    version = "1.1"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.messages: list[dict[str, Any]] = []

    def deliver(self, outbound: Outbound) -> None:
        text = self.hub.render(outbound, self.version)
        if text is not None:
            self.messages.append(json.loads(text))


async def run_frames(stalls: dict[int, float], frames: int) -> tuple[FrameLoop, Recorder]:
    """Run the frame loop for *frames* ticks; at tick k (a key of *stalls*) the work takes stalls[k] seconds."""
    settings = Settings(seed=1)
    hub = Hub(SchemaSet(), history_messages=100, history_seconds=60)
    recorder = Recorder(hub)
    hub.attach(recorder)
    fake = FakeTime()
    source = SimulatedModel(settings.model_id, council=False, seed=1, frame_rate=60.0)
    loop = FrameLoop(settings, hub, source, FrameClock(60.0, time_function=fake, sleep_until=fake.sleep_until))
    step = source.step
    ticks = 0

    def stepping(frame_number: int, now: float) -> Any:
        nonlocal ticks
        ticks += 1
        fake.now += stalls.get(ticks, 0.0)
        if ticks >= frames:
            raise asyncio.CancelledError
        return step(frame_number, now)

    source.step = stepping  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await loop.run()
    return loop, recorder


def overruns(recorder: Recorder) -> list[dict[str, Any]]:
    return [m["payload"] for m in recorder.messages
            if m["type"] == "error_event" and m["payload"]["code"] == "FRAME_OVERRUN"]


async def test_skipped_frames_reach_the_clients_as_a_frame_overrun(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wirthforge.frame_loop")
    loop, recorder = await run_frames({10: 0.5, 20: 0.5, 30: 0.01}, 40)
    assert loop.clock.frames_skipped >= 50
    notices = overruns(recorder)
    # Two stalls within 10 s: one notice (rate-limited), for the first one.
    assert len(notices) == 1, notices
    assert notices[0]["details"]["framesSkipped"] >= 25
    assert notices[0]["severity"] == "warning"
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1, warnings


async def test_a_short_hiccup_is_only_counted() -> None:
    loop, recorder = await run_frames({10: 0.04}, 20)
    assert loop.clock.frames_skipped >= 1
    assert overruns(recorder) == []
