"""ModelMeter: E per token with its own Δt, the frame view, rounding, flags and the session states;
then the Jensen-Shannon divergence."""

from __future__ import annotations

import math

import pytest

from wirthforge_ws.energy import (
    PROFILES,
    AnswerClosedError,
    ModelMeter,
    SessionState,
    certainty,
    entropy,
    round_dt_ms,
    round_top_k,
)
from wirthforge_ws.energy.meter import jensen_shannon

DUAL = PROFILES["Dual"]
STUDIO = PROFILES["Studio"]
SURE = [1.0, 0.0, 0.0, 0.0]
UNIFORM = [0.25, 0.25, 0.25, 0.25]


def meter_after(dts_ms: list[float], profile=DUAL, top_k=SURE, start: float = 100.0) -> ModelMeter:
    meter = ModelMeter("m", profile)
    meter.start(start)
    for dt in dts_ms:
        meter.add_token(dt, top_k)
    return meter


def test_certainty_and_entropy() -> None:
    assert certainty(UNIFORM) == pytest.approx(0.0, abs=1e-12)
    assert entropy(UNIFORM) == pytest.approx(math.log(4))
    assert certainty(SURE) == 1.0 and entropy(SURE) == 0.0
    assert certainty([2.0, 2.0]) == pytest.approx(0.0, abs=1e-12), "a top-K is normalised before its entropy"
    assert 0.0 < certainty([0.4, 0.2, 0.1]) < certainty([0.8, 0.1, 0.05]) < 1.0
    assert certainty([1.0]) is None and entropy([]) is None and certainty([0.0, 0.0]) is None


def test_inputs_are_rounded_before_computing() -> None:
    assert round_dt_ms(118.34) == 118.3 and round_dt_ms(-3.0) == 0.0
    assert round_top_k([0.1, 0.123456, float("nan"), -1.0, *([0.01] * 10)]) == (0.1235, 0.1, *([0.01] * 6))
    assert round_top_k([]) is None and round_top_k(None) is None
    meter = ModelMeter("m", DUAL)
    meter.start(10.0)
    reading = meter.on_token(10.0 + 0.11834, [0.70004, 0.29996])
    assert reading.dt_ms == 118.3 and reading.t_ms == 118.3 and reading.top_k == (0.7, 0.3)


def test_a_token_that_ends_a_long_stall_lowers_energy() -> None:
    steady = meter_after([100.0] * 20)
    before = steady.readings[-1].energy
    after = steady.add_token(1200.0, SURE)
    assert after.energy < before - 0.1
    assert after.stall and after.dt_ms == 1200.0
    on_time = meter_after([100.0] * 20).add_token(100.0, SURE)
    assert on_time.energy >= before


def test_tps_counts_the_window_ending_at_the_token_inclusive() -> None:
    meter = meter_after([100.0] * 11)  # tokens at 100 .. 1100 ms
    readings = meter.readings
    assert [r.tps for r in readings[:3]] == [1.0, 2.0, 3.0]
    assert readings[9].tps == 10.0  # 100 .. 1000
    assert readings[10].tps == 10.0, "the token exactly one window earlier (100 ms) has left it"
    assert meter.snapshot(100.0 + 1.15).tps == 10.0
    assert meter.snapshot(100.0 + 2.1).tps == 0.0


def test_the_frame_shows_the_last_tokens_energy_decayed_with_the_half_life() -> None:
    meter = meter_after([100.0] * 10)
    last = meter.readings[-1]
    at = 100.0 + last.t_ms / 1000
    assert meter.snapshot(at).energy == last.energy
    assert meter.snapshot(at + 0.7).energy == pytest.approx(last.energy / 2, rel=1e-12)
    meter.end(at + 0.1)
    assert meter.snapshot(at + 1.4).energy == pytest.approx(last.energy / 4, rel=1e-12), "after the end it decays alike"
    assert meter.snapshot(at - 5.0).energy == last.energy, "a time before the last token counts as that token's"


def test_snapshot_before_the_first_token_and_energy_units() -> None:
    meter = ModelMeter("m", DUAL)
    fresh = meter.snapshot(1.0)
    assert fresh.energy == 0.0 and fresh.state is SessionState.IDLE and fresh.since_token_ms is None
    meter.start(1.0)
    waiting = meter.snapshot(1.0 + 0.2)
    assert waiting.energy == 0.0 and waiting.state is SessionState.CHARGING and not waiting.stall
    assert meter.snapshot(1.0 + 0.5).stall, "no first token after stall_ms: the frame shows a stall"
    a = meter.on_token(1.6, SURE)
    b = meter.on_token(1.7, SURE)
    snap = meter.snapshot(1.75)
    assert snap.ttft_ms == 600.0 and snap.dt_ms == 100.0 and snap.tokens == 2
    assert snap.since_token_ms == 50.0 and not snap.stall and snap.certainty == 1.0
    assert snap.energy_units == pytest.approx(0.01 * (a.energy + b.energy))
    assert not a.stall, "the time to first token is never a stalled token"


def test_frame_flags_stall_and_burst() -> None:
    meter = meter_after([50.0] * 20, STUDIO, start=0.0)
    t = meter.readings[-1].t_ms / 1000
    snap = meter.snapshot(t)
    assert snap.burst and snap.tps == 20.0 and not snap.stall
    assert meter.snapshot(t + 0.36).stall, "more than stall_ms since the last token"
    meter.add_token(400.0, SURE)
    assert meter.snapshot(t + 0.4).stall, "the last token's Δt was a stall"
    meter.end(t + 0.5)
    assert not meter.snapshot(t + 0.6).stall, "a finished answer does not stall"


def test_tokens_outside_an_open_answer_are_refused() -> None:
    meter = ModelMeter("m", DUAL)
    with pytest.raises(AnswerClosedError):
        meter.on_token(1.0)
    meter.start(1.0)
    meter.on_token(1.1)
    meter.end(1.2)
    assert not meter.is_open
    with pytest.raises(AnswerClosedError):
        meter.add_token(10.0)
    meter.start(2.0)
    assert meter.readings == [] and meter.energy_units == 0.0 and meter.state is SessionState.CHARGING


def states_of(profile, script: list[tuple[str, float, list[float] | None]]) -> list[SessionState]:
    """Run (event, dt_ms, top_k) steps; the distinct states in order."""
    meter = ModelMeter("m", profile)
    seen: list[SessionState] = []
    for event, dt, top_k in script:
        if event == "start":
            meter.start(0.0)
        elif event == "token":
            meter.add_token(dt, top_k)
        else:
            meter.end(0.0)
        if not seen or seen[-1] is not meter.state:
            seen.append(meter.state)
    return seen


def test_states_through_a_whole_answer() -> None:
    script: list[tuple[str, float, list[float] | None]] = [("start", 0, None)]
    script += [("token", 50.0, SURE)] * 5  # FLOWING
    script += [("token", 600.0, SURE)] * 2  # two stalled tokens: STALLING
    script += [("token", 50.0, SURE)]  # FLOWING again
    script += [("token", 50.0, SURE)] * 60  # fast and sure: E >= 0.85 for 800 ms: SATURATED
    script += [("token", 1500.0, UNIFORM)]  # slow and unsure: E < 0.7: FLOWING
    script += [("end", 0, None)]
    assert states_of(STUDIO, script) == [
        SessionState.CHARGING,
        SessionState.FLOWING,
        SessionState.STALLING,
        SessionState.FLOWING,
        SessionState.SATURATED,
        SessionState.FLOWING,
        SessionState.DRAINED,
    ]


def test_one_stalled_token_does_not_make_a_stall() -> None:
    script = [("start", 0, None)] + [("token", 50.0, SURE)] * 3 + [("token", 600.0, SURE), ("token", 50.0, SURE)]
    assert SessionState.STALLING not in states_of(STUDIO, script)


def test_a_slow_first_token_is_not_a_stall() -> None:
    script = [("start", 0, None), ("token", 2000.0, SURE), ("token", 600.0, SURE), ("token", 50.0, SURE)]
    assert SessionState.STALLING not in states_of(STUDIO, script)


def test_saturation_needs_the_whole_hold_time() -> None:
    meter = meter_after([50.0] * 60, STUDIO)
    high = [r for r in meter.readings if r.energy >= STUDIO.saturation_level]
    assert high, "the script reaches the saturation level"
    short = meter_after([50.0] * (meter.readings.index(high[0]) + 16), STUDIO)  # 750 ms of high E
    assert short.state is SessionState.FLOWING
    short.add_token(50.0, SURE)  # 800 ms
    assert short.state is SessionState.SATURATED


def test_charging_to_idle_when_the_answer_ends_without_tokens() -> None:
    assert states_of(DUAL, [("start", 0, None), ("end", 0, None)]) == [SessionState.CHARGING, SessionState.IDLE]


# ---------------------------------------------------------------------------
# The divergence of top-K distributions


def test_jensen_shannon_bounds() -> None:
    same = [0.5, 0.3, 0.2]
    assert jensen_shannon([same, same]) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon([same, same, same]) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(1.0)
    assert jensen_shannon([[1, 0, 0], [0, 1, 0], [0, 0, 1]]) == pytest.approx(1.0)
    partial = jensen_shannon([[0.7, 0.3], [0.3, 0.7]])
    assert 0.0 < partial < 1.0
    assert jensen_shannon([[0.7, 0.3], [0.3, 0.7]]) == pytest.approx(jensen_shannon([[0.3, 0.7], [0.7, 0.3]]))
    assert jensen_shannon([same]) == 0.0
