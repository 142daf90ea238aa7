"""Invariants of E and the session states, over generated timelines (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wirthforge_ws.energy import PROFILES, AnswerClosedError, ModelMeter, SessionMachine, SessionState

profiles = st.sampled_from(list(PROFILES.values()))
probability = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
top_ks = st.one_of(st.none(), st.lists(probability, min_size=0, max_size=12))
dts = st.floats(min_value=0.0, max_value=5000.0, allow_nan=False)
tokens = st.lists(st.tuples(dts, top_ks), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(profile=profiles, timeline=tokens, start=st.floats(min_value=0.0, max_value=1e6), probe_ms=dts)
def test_energy_stays_in_the_unit_interval(profile, timeline, start, probe_ms) -> None:
    meter = ModelMeter("m", profile)
    meter.start(start)
    when = start
    for dt, top_k in timeline:
        when += dt / 1000
        reading = meter.on_token(when, top_k)
        assert 0.0 <= reading.energy <= 1.0
        snapshot = meter.snapshot(when + probe_ms / 1000)
        assert 0.0 <= snapshot.energy <= 1.0
        assert reading.certainty is None or 0.0 <= reading.certainty <= 1.0


@settings(max_examples=100, deadline=None)
@given(profile=profiles, timeline=tokens, after_s=st.floats(min_value=20.0, max_value=1e6), ended=st.booleans())
def test_energy_fades_to_zero_long_after_the_last_token(profile, timeline, after_s, ended) -> None:
    meter = ModelMeter("m", profile)
    meter.start(0.0)
    for dt, top_k in timeline:
        meter.add_token(dt, top_k)
    last = meter.readings[-1].t_ms / 1000
    if ended:
        meter.end(last)
    assert meter.snapshot(last + after_s).energy <= 0.5 ** (after_s * 1000 / profile.half_life_ms)
    assert meter.snapshot(last + after_s).energy < 1e-8


@settings(max_examples=100, deadline=None)
@given(
    profile=st.sampled_from([PROFILES["Studio"], PROFILES["Dual"]]),
    gaps=st.lists(st.floats(min_value=30.0, max_value=50.0), min_size=50, max_size=50),
    start=st.floats(min_value=0.0, max_value=1e5),
)
def test_fast_sure_flow_fills_the_meter(profile, gaps, start) -> None:
    assert profile.tps_max <= 20
    meter = ModelMeter("m", profile)
    meter.start(start)
    when = start
    for gap in gaps:  # at least 20 tokens/s
        when += gap / 1000
        reading = meter.on_token(when, [1.0, 0.0, 0.0])
    assert reading.certainty == 1.0
    assert reading.energy > 0.95
    assert meter.snapshot(when).energy > 0.95


events = st.lists(
    st.one_of(
        st.just(("start",)),
        st.just(("end",)),
        st.tuples(st.just("token"), st.floats(min_value=0.0, max_value=1e4), st.booleans(), probability),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(profile=profiles, script=events)
def test_only_start_leaves_drained(profile, script) -> None:
    machine = SessionMachine(profile)
    meter = ModelMeter("m", profile)
    t_ms = 0.0
    for event in script:
        machine_before, meter_before = machine.state, meter.state
        if event[0] == "start":
            machine.start()
            meter.start(0.0)
            t_ms = 0.0
        elif event[0] == "end":
            machine.end()
            meter.end(0.0)
        else:
            _, dt, stall, energy = event
            t_ms += dt
            machine.token(t_ms, stall, energy)
            try:
                meter.add_token(dt, [energy, 1.0 - energy])
            except AnswerClosedError:
                assert not meter.is_open
        if event[0] != "start":
            for before, after in ((machine_before, machine.state), (meter_before, meter.state)):
                if before is SessionState.DRAINED:
                    assert after is SessionState.DRAINED
                if before is SessionState.IDLE:
                    assert after is SessionState.IDLE
