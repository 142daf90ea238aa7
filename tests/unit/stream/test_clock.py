"""FrameClock with a controllable clock: skip-ahead, lateness and the achieved rate, without waiting."""

from __future__ import annotations

import math

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


async def test_a_tick_less_than_a_period_late_is_sent_late_not_skipped() -> None:
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
