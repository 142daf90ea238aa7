"""The council's events, the one rule every source uses."""

from __future__ import annotations

import pytest

from wirthforge_ws.energy import ModelMeter
from wirthforge_ws.energy.profiles import PROFILES
from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.sources.council_events import CouncilEvents, Voice, phase_degrees
from wirthforge_ws.sources.simulated import SimulatedModel

SCHEMAS = SchemaSet()


def voice(model_id: str, times: list[float], top_k: list[float] | None = None) -> Voice:
    meter = ModelMeter(model_id, PROFILES["Dual"])
    meter.start(0.0)
    readings = [meter.on_token(t, top_k) for t in times]
    return Voice(readings, meter.snapshot(times[-1]))


def test_without_top_k_the_disagreement_is_the_timing_index() -> None:
    steady = voice("a", [0.2 + 0.1 * i for i in range(10)])
    jumpy = voice("b", [0.2 + 0.1 * i + (0.06 if i % 2 else 0.0) for i in range(10)])
    council = CouncilEvents()
    events = council.events(7, 1.2, [steady, jumpy])
    assert [e.type for e in events] == ["interference_event"]
    payload = events[0].payload
    assert payload["evidence"]["method"] == "timing" and payload["evidence"]["window"] == 8
    assert payload["coherenceScore"] == pytest.approx(1 - payload["evidence"]["disagreement"], abs=1e-6)
    assert payload["intensity"] == payload["evidence"]["disagreement"] > 0
    assert not council.due(1.5) and council.due(1.7), "twice a second"
    for event in events:
        for version in ("1.0", "1.1"):
            SCHEMAS.validate_outbound(version, messages.envelope(version, event, 1e12, 1))


def test_agreement_at_one_rhythm_resonates_with_phase_from_token_timing() -> None:
    a = voice("a", [0.2 + 0.1 * i for i in range(10)], [0.7, 0.2, 0.1])
    b = voice("b", [0.225 + 0.1 * i for i in range(10)], [0.7, 0.2, 0.1])  # a quarter period later
    events = CouncilEvents().events(9, 1.2, [a, b])
    assert [e.type for e in events] == ["interference_event", "resonance_event"]
    resonance = events[1].payload
    assert resonance["evidence"] == {"disagreement": 0.0, "tpsRatio": 1.0}
    assert resonance["phase"] == pytest.approx(90.0, abs=0.5)
    assert phase_degrees([a, b], 10.0) == pytest.approx(90.0, abs=0.5)


def test_too_little_evidence_gives_no_event() -> None:
    assert CouncilEvents().events(1, 0.5, [voice("a", [0.2]), voice("b", [0.3])]) == []


def test_the_simulator_uses_the_same_rules_and_gives_each_member_its_energy() -> None:
    source = SimulatedModel(seed=3)
    seen: dict[str, int] = {}
    for frame in range(1, 60 * 15):
        activity = source.step(frame, frame / 60)
        if activity.council:
            assert [m.model_id for m in activity.council][0] == "wirthforge-sim"
        for event in activity.events:
            seen[event.type] = seen.get(event.type, 0) + 1
            if event.type == "interference_event":
                assert event.payload["evidence"]["method"] == "jsd"
    assert seen.get("interference_event", 0) > 5
