"""FrameLoop with a controllable clock: a stall is reported to clients (FRAME_OVERRUN) and to the log, rate-limited."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from tests.timing import scaled
from tests.unit.stream.test_clock import FakeTime
from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.messages import Event
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.settings import Settings
from wirthforge_ws.sources.simulated import SimulatedModel
from wirthforge_ws.stream import frame_loop
from wirthforge_ws.stream.clock import FrameClock
from wirthforge_ws.stream.frame_loop import FrameLoop
from wirthforge_ws.stream.hub import Hub, Outbound


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
    source = SimulatedModel(settings.model_id, council=False, seed=1)
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
    return [
        m["payload"]
        for m in recorder.messages
        if m["type"] == "error_event" and m["payload"]["code"] == "FRAME_OVERRUN"
    ]


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
    loop, recorder = await run_frames({10: 0.06}, 20)  # the next tick is 43 ms late: more than the catch-up
    assert loop.clock.frames_skipped >= 1
    assert overruns(recorder) == []


def _reward(title: str) -> Event:
    return messages.reward_event(reward_type="milestone", title=title, points=1)


def publishing_loop(clock: FrameClock | None = None, *, subscribed: bool = True) -> tuple[FrameLoop, Recorder]:
    """A frame loop (not running) over a fresh hub, and a recorder attached to it unless not *subscribed*."""
    settings = Settings(seed=1)
    hub = Hub(SchemaSet(), history_messages=100, history_seconds=60)
    recorder = Recorder(hub)
    if subscribed:
        hub.attach(recorder)
    return FrameLoop(settings, hub, SimulatedModel(settings.model_id, council=False, seed=1), clock), recorder


async def test_published_events_ride_with_the_next_frame_in_seq_order() -> None:
    """POST /publish's events go out inside a frame: before its energy_update, seq increasing."""
    fake = FakeTime()
    loop, recorder = publishing_loop(FrameClock(60.0, time_function=fake, sleep_until=fake.sleep_until))
    publishing = asyncio.create_task(loop.publish_in_next_frame([_reward("a"), _reward("b")]))
    await asyncio.sleep(0)  # the request is waiting for a frame; nothing is published yet
    assert not recorder.messages
    loop._frame(1, fake.now, time.perf_counter())
    outbounds = await publishing
    types = [m["type"] for m in recorder.messages]
    assert types[:3] == ["reward_event", "reward_event", "energy_update"]
    assert [o.seq for o in outbounds if o] == [m["seq"] for m in recorder.messages[:2]]
    seqs = [m["seq"] for m in recorder.messages]
    assert seqs == sorted(seqs)


async def test_publishing_without_a_running_frame_loop_falls_back_to_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frame_loop, "JOIN_TIMEOUT", 0.01)
    loop, recorder = publishing_loop()
    outbounds = await loop.publish_in_next_frame([_reward("late")])
    assert [m["type"] for m in recorder.messages] == ["reward_event"]
    assert outbounds[0] is not None and outbounds[0].seq == recorder.messages[0]["seq"]
    assert not loop._joining


async def test_a_cancelled_publish_is_not_published_by_a_later_frame() -> None:
    loop, recorder = publishing_loop()
    publishing = asyncio.create_task(loop.publish_in_next_frame([_reward("gone")]))
    await asyncio.sleep(0)
    publishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publishing
    loop._frame(1, time.monotonic(), time.perf_counter())
    assert "reward_event" not in [m["type"] for m in recorder.messages]


async def test_with_nobody_subscribed_a_publish_does_not_wait_for_the_idle_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(frame_loop, "JOIN_TIMEOUT", 60.0)  # waiting for a frame would now time the test out
    loop, _ = publishing_loop(subscribed=False)
    async with asyncio.timeout(scaled(2)):  # no frame loop runs: only publishing at once can finish
        (outbound,) = await loop.publish_in_next_frame([_reward("kept for resume")])
    assert outbound is not None and outbound.seq == 1
