"""The message builders and the envelope of each version: 1.1 carries the energy evidence, 1.0 never does."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.schemas import SchemaSet

UPSTREAM_SCHEMA = Path(__file__).resolve().parents[3].parent / "shared/reference/WF-TECH-003-event-schemas.json"
SCHEMAS = SchemaSet()
TS = 1764101234567.891


def worst_case_frame(count: int = 12) -> messages.Event:
    """A one-model frame with everything at its widest: *count* tokens, every number with all its digits."""
    tokens = [
        messages.evidence_token(index=100_000 + i, dt_ms=12345.678, certainty=0.123456, energy=0.987654)
        for i in range(count)
    ]
    evidence = messages.energy_evidence(
        profile="Studio",
        session_id="prompt-0001-8f2c61d0",
        state="SATURATED",
        tokens=tokens,
        tps=19.123456,
        certainty=0.123456,
        entropy=1.234567,
        since_token_ms=123456.789,
        stall=True,
        burst=True,
        ttft_ms=1234.567,
        energy_units=123.456789,
    )
    return messages.energy_update(
        frame_number=123_456_789,
        total_energy=0.123456789,
        delta_energy=-0.0123456789,
        tokens_generated=count,
        processing_time_ms=0.123456,
        model_id="SmolLM2-135M-Instruct",
        distribution={"generation": 0.123456789, "attention": 0.123456789, "reasoning": 0.123456789},
        evidence=evidence,
    )


def test_a_one_model_1_1_frame_is_under_1_kib() -> None:
    """Up to 4 tokens in one frame (240 tokens/s at 60 Hz) the widest frame stays under 1 KiB; 8 under 1.2 KiB."""
    for count in range(5):
        message = messages.envelope("1.1", worst_case_frame(count), TS, 2**40)
        SCHEMAS.validate_outbound("1.1", message)
        assert len(orjson.dumps(message)) < 1024, count
    message = messages.envelope("1.1", worst_case_frame(), TS, 2**40)
    SCHEMAS.validate_outbound("1.1", message)
    assert len(orjson.dumps(message)) < 1200
    evidence = message["payload"]["evidence"]
    assert [t["index"] for t in evidence["tokens"]] == list(range(100_004, 100_012)), "the latest 8"
    assert evidence["tokensOmitted"] == 4


def test_the_1_0_envelope_strips_every_1_1_field() -> None:
    council = messages.energy_evidence(
        profile="Dual",
        models=[
            messages.council_member(
                model_id=m, energy=0.5, state="FLOWING", tps=3, certainty=None, dt_ms=None, tokens=2
            )
            for m in ("a", "b")
        ],
        ensemble_energy=0.5,
    )
    events = [
        worst_case_frame(),
        messages.energy_update(
            frame_number=1,
            total_energy=0.5,
            delta_energy=0.0,
            tokens_generated=0,
            processing_time_ms=0.1,
            model_id="m",
            evidence=council,
        ),
        messages.token_stream(
            tokens=["", ""],
            is_complete=True,
            session_id="s",
            model_id="m",
            energy_cost=0.02,
            first_index=4,
            token_evidence=[
                messages.token_evidence(dt_ms=80.04, top_k=[0.1, 0.7, 0.2]),
                messages.token_evidence(dt_ms=0, top_k=None),
            ],
            text_omitted=True,
        ),
        messages.interference_event(
            frame_number=2,
            pattern_type="neutral",
            models=["a", "b"],
            intensity=0.3,
            coherence=0.7,
            method="timing",
            disagreement=0.3,
            window=8,
        ),
        messages.resonance_event(
            frame_number=3,
            resonance_type="harmonic",
            frequency=10,
            amplitude=0.5,
            participants=["a", "b"],
            phase=370,
            disagreement=0.05,
            tps_ratio=0.9,
        ),
    ]
    upstream = None
    if UPSTREAM_SCHEMA.is_file():
        upstream = jsonschema.Draft7Validator(json.loads(UPSTREAM_SCHEMA.read_text(encoding="utf-8")))
    for event in events:
        before = copy.deepcopy(event.payload)
        only_1_1 = messages.ONLY_1_1[event.type]
        assert only_1_1 & set(event.payload), event.type
        full = messages.envelope("1.1", event, TS, 7)
        SCHEMAS.validate_outbound("1.1", full)
        legacy = messages.envelope("1.0", event, TS, 7)
        SCHEMAS.validate_outbound("1.0", legacy)
        assert not only_1_1 & set(legacy["payload"]), event.type
        assert legacy["payload"] == {k: v for k, v in event.payload.items() if k not in only_1_1}
        assert set(legacy) == set(full) - {"seq"} and legacy["timestamp"] == int(TS)
        assert event.payload == before, "the event itself is not changed"
        if upstream is not None:
            assert upstream.is_valid(legacy), event.type


def test_token_evidence_is_ranked_rounded_and_one_per_token() -> None:
    assert messages.token_evidence(dt_ms=80.04, top_k=[0.1, 0.70004, 0.2]) == {
        "dtMs": 80.0,
        "topK": [0.7, 0.2, 0.1],
    }
    assert messages.token_evidence(dt_ms=5, top_k=[0.1] * 12)["topK"] == [0.1] * 8
    assert messages.token_evidence(dt_ms=5, top_k=[])["topK"] is None
    with pytest.raises(ValueError):
        messages.token_stream(
            tokens=["a", "b"], is_complete=False, session_id="s", model_id="m", first_index=0, token_evidence=[]
        )


def test_idle_evidence_is_valid() -> None:
    event = messages.energy_update(
        frame_number=0,
        total_energy=0.0,
        delta_energy=0.0,
        tokens_generated=0,
        processing_time_ms=0.01,
        model_id="m",
        evidence=messages.energy_evidence(profile="Lite"),
    )
    SCHEMAS.validate_outbound("1.1", messages.envelope("1.1", event, TS, 1))
    assert event.payload["evidence"]["state"] == "IDLE" and event.payload["evidence"]["sessionId"] == ""
