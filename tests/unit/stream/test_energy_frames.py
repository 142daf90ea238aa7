"""A frame's energy messages from a source's activity: evidence, field, token_stream."""

from __future__ import annotations

from wirthforge_ws.energy import ModelMeter
from wirthforge_ws.energy.profiles import PROFILES
from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.sources.base import FrameActivity, TokenBatch
from wirthforge_ws.stream import energy_frames

PROFILE = PROFILES["Dual"]
SCHEMAS = SchemaSet()


def answer(times: list[float], top_k: list[float] | None) -> tuple[ModelMeter, list]:
    meter = ModelMeter("m", PROFILE)
    meter.start(0.0)
    return meter, [meter.on_token(t, top_k) for t in times]


def activity(meter: ModelMeter, now: float, readings: list) -> FrameActivity:
    return FrameActivity(
        session_id="s", primary=meter.snapshot(now), profile=PROFILE, readings=readings, history=meter.readings
    )


def valid(event: messages.Event) -> None:
    for version in ("1.0", "1.1"):
        SCHEMAS.validate_outbound(version, messages.envelope(version, event, 1e12, 1))


def test_the_field_is_the_last_32_tokens_and_follows_their_evidence() -> None:
    times = [0.3 + 0.1 * i for i in range(40)] + [5.2]  # a 1 s pause before the last token
    meter, readings = answer(times, None)
    field = energy_frames.FieldBuilder(1).build(0, 5.2, activity(meter, 5.2, readings[-1:]))
    assert field is not None
    valid(field)
    points = field.payload["coordinates"]
    assert len(points) == 32
    assert points[0]["x"] == 0.0 and points[-1]["x"] == 1.0
    assert [p["energy"] for p in points] == [round(r.energy, 4) for r in readings[-32:]]
    assert points[-2]["y"] == 1.0, "without top-K, y is the friction: a 100 ms token has none"
    assert 0.0 < points[-1]["y"] < 0.7, "the token that ended a stall carries its friction"
    assert field.payload["intensity"] == round(meter.snapshot(5.2).energy, 4)


def test_a_still_model_gives_the_same_field_once_a_second_or_none() -> None:
    meter, _ = answer([0.2, 0.3], [0.9, 0.1])
    meter.end(0.3)
    builder = energy_frames.FieldBuilder(6)
    sent = []
    for frame in range(60 * 120, 60 * 123):  # two minutes later E has decayed to 0: nothing moves
        event = builder.build(frame, frame / 60, activity(meter, frame / 60, []))
        if event is not None:
            sent.append(event.payload)
    assert 2 <= len(sent) <= 4, "a refresh once a second, nothing in between"
    assert all(payload == sent[0] for payload in sent)


def test_evidence_and_token_stream_describe_the_same_tokens() -> None:
    meter, readings = answer([0.25, 0.31, 0.4], [0.5, 0.3, 0.2])
    frame = activity(meter, 0.41, readings[1:])
    evidence = energy_frames.frame_evidence(frame)
    stream = energy_frames.token_stream(TokenBatch("m", "s", ["b", "c"], readings[1:], first_index=1))
    valid(stream)
    assert [t["index"] for t in evidence["tokens"]] == [1, 2]
    assert stream.payload["firstIndex"] == 1
    assert (
        [t["dtMs"] for t in evidence["tokens"]]
        == [e["dtMs"] for e in stream.payload["tokenEvidence"]]
        == [
            60.0,
            90.0,
        ]
    )
    assert evidence["ttftMs"] == 250.0 and evidence["state"] == "FLOWING"
    shares = energy_frames.frame_distribution(frame, frame.total_energy)
    assert sum(shares.values()) == __import__("pytest").approx(frame.total_energy)


def test_a_recording_without_evidence_for_every_token_sends_none() -> None:
    batch = TokenBatch("m", "replay-s", ["a", "b"], [], 0, recorded_evidence=[{"dtMs": 1.0, "topK": None}])
    stream = energy_frames.token_stream(batch)
    assert "tokenEvidence" not in stream.payload
    valid(stream)
