"""Golden traces: E per token and per frame, and the council's DI, from two implementations.

Each ``tests/golden/*.json`` holds a token timeline (Δt, top-K, profile) and
the values written there by :mod:`tests.unit.energy.reference`. The test
recomputes them with that independent implementation, then drives the real
:class:`ModelMeter` through the same timeline, frames interleaved in time,
and checks all three agree within 1e-9.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.unit.energy import reference
from wirthforge_ws.energy import PROFILES, ModelMeter, disagreement, disagreement_by_token, ensemble_energy

TOLERANCE = 1e-9
ACCEPTED_AT = 5000.0  # monotonic seconds; far from 0 so float noise in the caller's clock is real
GOLDEN_FILES = sorted(reference.GOLDEN_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= TOLERANCE


def assert_close_tree(actual: Any, expected: Any, where: str = "") -> None:
    """Numbers within TOLERANCE, everything else equal, recursively."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for key in expected:
            assert_close_tree(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close_tree(a, e, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert isinstance(actual, int | float) and abs(actual - expected) <= TOLERANCE, (
            f"{where}: {actual} != {expected}"
        )
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_there_are_golden_traces_of_every_kind() -> None:
    names = {path.stem for path in GOLDEN_FILES}
    assert {"steady_flow", "stall_ends", "burst", "no_top_k", "council_top_k", "council_timing"} <= names
    for path in GOLDEN_FILES:
        trace = load(path)
        assert trace["profile"] in PROFILES
        assert trace["frames_ms"] and all(model["tokens"] for model in trace["models"])


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_file_matches_the_independent_implementation(path: Path) -> None:
    trace = load(path)
    assert_close_tree(reference.expected_values(trace), trace["expected"], path.stem)


def run_meters(trace: dict[str, Any]) -> tuple[list[ModelMeter], list[dict[str, Any]]]:
    """Drive one ModelMeter per model through the timeline; snapshot at each frame time."""
    profile = PROFILES[trace["profile"]]
    meters = [ModelMeter(model["name"], profile) for model in trace["models"]]
    events: list[tuple[Decimal, int, int, Any]] = []  # (time, order, model, payload): tokens before frames
    for m, model in enumerate(trace["models"]):
        clock = Decimal(0)
        for token in model["tokens"]:
            clock += Decimal(repr(token["dt_ms"]))
            events.append((clock, 0, m, token["top_k"]))
        events.append((clock + Decimal("0.1"), 1, m, "end"))
    for frame_ms in trace["frames_ms"]:
        events.append((Decimal(repr(frame_ms)), 2, -1, frame_ms))
    events.sort(key=lambda event: (event[0], event[1], event[2]))

    for meter in meters:
        meter.start(ACCEPTED_AT)
    frames: list[dict[str, Any]] = []
    for when_ms, kind, m, payload in events:
        when = ACCEPTED_AT + float(when_ms) / 1000.0
        if kind == 0:
            meters[m].on_token(when, payload)
        elif kind == 1:
            meters[m].end(when)
        else:
            snapshots = [meter.snapshot(when) for meter in meters]
            row: dict[str, Any] = {
                "t_ms": payload,
                "E": [s.energy for s in snapshots],
                "tps": [s.tps for s in snapshots],
            }
            if len(meters) > 1:
                row["ensemble"] = ensemble_energy(snapshots)
                di = disagreement([meter.readings for meter in meters])
                row["DI"] = None if di is None else {"value": di.value, "method": di.method, "window": di.window}
            frames.append(row)
    return meters, frames


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_model_meter_matches_the_golden_values(path: Path) -> None:
    trace = load(path)
    expected = trace["expected"]
    meters, frames = run_meters(trace)
    for meter, tokens in zip(meters, expected["tokens"]):
        actual = [{"t_ms": r.t_ms, "tps": r.tps, "certainty": r.certainty, "E": r.energy} for r in meter.readings]
        assert_close_tree(actual, tokens, f"{path.stem}.{meter.model_id}")
    assert_close_tree(frames, expected["frames"], f"{path.stem}.frames")
    if len(meters) > 1:
        assert_close_tree(disagreement_by_token([m.readings for m in meters]), expected["DI_by_token"], path.stem)


def test_the_council_traces_use_both_methods() -> None:
    methods = {
        path.stem: {frame["DI"]["method"] for frame in load(path)["expected"]["frames"] if frame["DI"]}
        for path in GOLDEN_FILES
        if len(load(path)["models"]) > 1
    }
    assert methods["council_top_k"] == {"jsd"}
    assert methods["council_timing"] == {"timing"}


def test_the_stall_trace_dips_at_the_stall() -> None:
    tokens = load(reference.GOLDEN_DIR / "stall_ends.json")["expected"]["tokens"][0]
    dips = [i for i in range(1, len(tokens)) if tokens[i]["E"] < tokens[i - 1]["E"] - 0.1]
    assert dips == [16], "only the token that ends the 1.2 s stall pulls E down sharply"
