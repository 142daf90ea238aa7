"""The council: DI by Jensen-Shannon divergence or by timing, and the ensemble energy."""

from __future__ import annotations

import pytest

from wirthforge_ws.energy import PROFILES, ModelMeter, disagreement, disagreement_by_token, ensemble_energy

DUAL = PROFILES["Dual"]


def readings(dts: list[float], top_k: list[float] | None):
    meter = ModelMeter("m", DUAL)
    meter.start(0.0)
    for dt in dts:
        meter.add_token(dt, top_k)
    return meter.readings


def test_identical_members_agree_and_opposite_ones_disagree() -> None:
    same = readings([100.0] * 5, [0.6, 0.3, 0.1])
    di = disagreement([same, same])
    assert di is not None and di.method == "jsd" and di.window == 5
    assert di.value == pytest.approx(0.0, abs=1e-12)
    sure, unsure = readings([100.0] * 4, [1.0, 0.0]), readings([100.0] * 4, [0.5, 0.5])
    spread = disagreement([sure, unsure])
    assert spread is not None and 0.2 < spread.value < 1.0


def test_rank_aligned_so_the_order_given_does_not_matter() -> None:
    a, b = readings([100.0] * 3, [0.7, 0.2, 0.1]), readings([100.0] * 3, [0.1, 0.7, 0.2])
    assert disagreement([a, b]).value == pytest.approx(0.0, abs=1e-12)


def test_the_frame_value_is_the_mean_of_the_last_eight_shared_indices() -> None:
    a = readings([100.0] * 12, [0.9, 0.1])
    b = readings([100.0] * 4, [0.5, 0.5]) + readings([100.0] * 8, [0.9, 0.1])
    di = disagreement([a, b])
    assert di.window == 8 and di.value == pytest.approx(0.0, abs=1e-12), "the early disagreement is out of the window"
    by_token = disagreement_by_token([a, b])
    assert len(by_token) == 12 and by_token[0] > 0.1 and by_token[-1] == pytest.approx(0.0, abs=1e-12)


def test_timing_method_without_top_k() -> None:
    steady = readings([300.0] + [100.0] * 8, None)
    assert disagreement([steady, steady]).value == pytest.approx(0.0, abs=1e-12)
    slow = readings([300.0] + [200.0] * 8, None)
    di = disagreement([steady, slow])
    assert di.method == "timing" and di.window == 8
    assert di.value == pytest.approx(0.25), "half the speed, equally regular: 0.5 * (1 - 1/2)"
    jumpy = readings([300.0] + [50.0, 150.0] * 4, None)
    assert disagreement([steady, jumpy]).value == pytest.approx(0.25), "same mean, cv 0.5 against 0"
    assert disagreement([steady, readings([300.0, 100.0], None)]) is None, "one Δt after the TTFT is too little"
    assert disagreement([steady]) is None
    series = disagreement_by_token([steady, slow])
    assert series[:2] == [None, None] and series[-1] == pytest.approx(0.25)


def test_ensemble_energy_is_the_members_mean() -> None:
    meters = []
    for dt in (50.0, 400.0):
        meter = ModelMeter(f"m{dt}", DUAL)
        meter.start(0.0)
        for _ in range(10):
            meter.add_token(dt, [0.8, 0.2])
        meters.append(meter)
    snapshots = [meter.snapshot(5.0) for meter in meters]
    assert ensemble_energy(snapshots) == pytest.approx(sum(s.energy for s in snapshots) / 2)
    assert ensemble_energy([]) == 0.0
