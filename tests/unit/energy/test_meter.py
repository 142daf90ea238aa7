"""The energy maths (WF-FND-002): certainty, Jensen-Shannon divergence, the meter's rise and decay."""

from __future__ import annotations

import math

import pytest

from wirthforge_ws.energy.meter import DECAY_HALF_LIFE_S, EnergyMeter, certainty, jensen_shannon


def test_certainty_uniform_vs_peaked() -> None:
    assert certainty([0.2] * 5) == pytest.approx(0.0, abs=1e-12)
    assert certainty([1.0, 0.0, 0.0, 0.0, 0.0]) == pytest.approx(1.0)
    peaked = certainty([0.9, 0.04, 0.03, 0.02, 0.01])
    flatter = certainty([0.4, 0.2, 0.2, 0.1, 0.1])
    assert 0.0 < flatter < peaked < 1.0
    assert peaked > 0.5
    assert certainty([2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)  # unnormalised input is normalised
    assert certainty([1.0]) == 1.0


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


def charged_meter(start: float) -> tuple[EnergyMeter, float, float]:
    """A meter after a second of steady tokens: (meter, time of the last update, level)."""
    meter = EnergyMeter()
    now = start
    level = 0.0
    for frame in range(60):
        now = start + frame / 60
        tokens = 1 if frame % 4 == 0 else 0
        if tokens:
            meter.on_token(now, [0.8, 0.1, 0.05, 0.03, 0.02])
        level = meter.update(now, tokens).level
    return meter, now, level


def test_energy_decays_with_a_700_ms_half_life() -> None:
    meter, now, level = charged_meter(100.0)
    assert level > 0.1
    # Frame by frame, no tokens, for exactly one half-life (42 frames at 60 Hz) ...
    for frame in range(1, 43):
        reading = meter.update(now + frame / 60, 0)
    assert reading.level == pytest.approx(level / 2, rel=1e-6)
    assert reading.delta < 0
    # ... and for another one, in a single step.
    assert meter.update(now + 42 / 60 + DECAY_HALF_LIFE_S, 0).level == pytest.approx(level / 4, rel=1e-6)
    assert DECAY_HALF_LIFE_S == pytest.approx(0.7)


def test_energy_rises_with_tokens_and_stays_in_range() -> None:
    meter = EnergyMeter()
    levels = []
    for frame in range(120):
        now = frame / 60
        meter.on_token(now, [1.0, 0, 0, 0, 0])  # a token every frame: 60 tokens/s, full speed
        levels.append(meter.update(now, 1).level)
    assert levels[-1] > levels[5] > 0
    assert all(0.0 <= level <= 1.0 for level in levels)
    assert levels[-1] > 0.9
    assert math.isclose(sum(meter.update(2.0, 1).distribution().values()), meter.update(2.0, 1).level, rel_tol=1e-9)
