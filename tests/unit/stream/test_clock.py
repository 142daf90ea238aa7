"""FrameClock: skip-ahead, lateness and the achieved rate on a controllable clock, without waiting;
then the rate and the skip after a stall on the real monotonic clock."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from wirthforge_ws.stream.clock import FrameClock, Tick

PERIOD = 1 / 60


class FakeTime:
    """A monotonic clock that only moves when told to (or when the clock sleeps until a deadline)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep_until(self, deadline: float) -> None:
        self.now = max(self.now, deadline)


def clock_with(fake: FakeTime) -> FrameClock:
    return FrameClock(60.0, time_function=fake, sleep_until=fake.sleep_until)


async def run_ticks(
    clock: FrameClock, fake: FakeTime, count: int, *, freeze_after: int | None = None, freeze: float = 0.0
) -> list[Tick]:
    ticks: list[Tick] = []
    async for tick in clock.run():
        ticks.append(tick)
        if len(ticks) == freeze_after:
            fake.now += freeze  # the loop is blocked for `freeze` seconds inside this frame
        if len(ticks) == count:
            break
    return ticks


async def test_a_freeze_is_skipped_and_its_whole_length_is_recorded_as_lateness() -> None:
    fake = FakeTime()
    clock = clock_with(fake)
    ticks = await run_ticks(clock, fake, 20, freeze_after=10, freeze=2.7)
    skipped = int(2.7 / PERIOD)
    assert clock.frames_skipped in (skipped - 1, skipped)
    assert ticks[10].skipped == clock.frames_skipped
    assert ticks[10].frame_number == ticks[9].frame_number + 1 + clock.frames_skipped
    # What /health shows: the freeze, not the remainder after skipping.
    worst = clock.lateness.maximum()
    assert worst is not None and worst >= 2.7 - PERIOD, f"max lateness {worst * 1000:.1f} ms after a 2.7 s freeze"
    # The tick itself is on the grid again, and the following ones are on time.
    assert all(0 <= tick.lateness < PERIOD for tick in ticks[10:])
    assert all(tick.skipped == 0 for tick in ticks[11:])


async def test_a_tick_between_one_and_two_periods_late_is_sent_late_not_skipped() -> None:
    """A 42 ms stall in a frame makes the next tick 25 ms (1.5 periods) late: sent late, nothing lost."""
    fake = FakeTime()
    clock = clock_with(fake)
    ticks = await run_ticks(clock, fake, 20, freeze_after=10, freeze=2.5 * PERIOD)
    assert clock.frames_skipped == 0
    assert [tick.frame_number for tick in ticks] == list(range(20))
    assert ticks[10].lateness > PERIOD  # the late tick, sent late
    assert math.isclose(ticks[11].deadline, ticks[10].deadline + PERIOD) and ticks[11].lateness < PERIOD
    assert all(tick.lateness == 0 for tick in ticks[12:])


async def test_no_skip_and_no_lateness_when_on_time() -> None:
    fake = FakeTime()
    clock = clock_with(fake)
    ticks = await run_ticks(clock, fake, 120)
    assert clock.frames_skipped == 0
    assert [tick.frame_number for tick in ticks] == list(range(120))
    assert clock.lateness.maximum() == 0.0
    assert 59.0 <= clock.achieved_rate <= 61.0


async def test_the_achieved_rate_falls_to_zero_when_ticks_stop() -> None:
    fake = FakeTime()
    clock = clock_with(fake)
    await run_ticks(clock, fake, 150)
    assert 59.0 <= clock.achieved_rate <= 61.0
    fake.now += 1.0  # the loop died: no more ticks
    assert clock.achieved_rate < 35.0, "a dead clock still reports its old rate"
    fake.now += 1.5
    assert clock.achieved_rate == 0.0


def test_frame_clock_rate() -> None:
    async def scenario() -> tuple[list[float], list[Tick], float]:
        clock = FrameClock(60.0)
        times: list[float] = []
        ticks: list[Tick] = []
        async for tick in clock.run():
            times.append(time.monotonic())
            ticks.append(tick)
            if len(ticks) == 61:
                break
        return times, ticks, clock.achieved_rate

    times, ticks, achieved = asyncio.run(asyncio.wait_for(scenario(), 5))
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 57.0 <= rate <= 63.0, f"{rate:.2f} Hz"
    assert 57.0 <= achieved <= 63.0, f"achieved_rate {achieved:.2f} Hz"
    assert [tick.frame_number for tick in ticks] == list(range(61))
    # Deadlines are on the absolute grid: no drift from per-frame work.
    period = 1 / 60
    assert all(abs((b.deadline - a.deadline) - period) < 1e-9 for a, b in zip(ticks, ticks[1:]))


def test_frame_clock_skips_after_a_stall_instead_of_bursting() -> None:
    async def scenario() -> tuple[FrameClock, list[Tick], list[float], float, int]:
        clock = FrameClock(60.0)
        ticks: list[Tick] = []
        times: list[float] = []
        stall_end = 0.0
        skipped_before = 0
        async for tick in clock.run():
            ticks.append(tick)
            times.append(time.monotonic())
            if len(ticks) == 10:
                skipped_before = clock.frames_skipped
                time.sleep(0.1)  # a blocking 100 ms stall inside the loop (6 periods)
                stall_end = time.monotonic()
            if len(ticks) == 20:
                break
        return clock, ticks, times, stall_end, skipped_before

    clock, ticks, times, stall_end, skipped_before = asyncio.run(asyncio.wait_for(scenario(), 5))
    skipped = clock.frames_skipped - skipped_before
    assert 4 <= skipped <= 7, f"{skipped} frames skipped after a 100 ms stall"
    # The frame number jumps over the skipped frames.
    assert ticks[10].frame_number - ticks[9].frame_number == skipped + 1
    # No burst: at most the one overdue tick fires at once; the rest keep the period.
    after = times[10:]
    assert sum(1 for t in after if t - stall_end < 0.010) <= 1, [round((t - stall_end) * 1000, 1) for t in after]
    intervals = [b - a for a, b in zip(after[1:], after[2:])]
    assert min(intervals) > 0.010, [round(i * 1000, 1) for i in intervals]
    assert all(abs(tick.lateness) < 1 / 60 for tick in ticks[10:])


def test_frame_clock_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        FrameClock(0)
