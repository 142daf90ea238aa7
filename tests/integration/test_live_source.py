"""The live source and the energy engine, in process: scripted models, the fake Ollama server, properties.

Scripted backends stand in for models with a known timeline (no model to
load, deterministic), so these tests check how real tokens become frames:
order, exactly one ``isComplete``, one ``error_event`` per failure, cancel,
council events from the real disagreement of top-K distributions. The
energy engine runs on scripted token timelines, and hypothesis checks that
energy stays in [0, 1] and that every message a timeline produces is valid.
The Ollama adapter is checked against ``tests/fake_ollama.py``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.fake_ollama import TOKENS, FakeOllama
from tests.server_process import free_port
from tests.timing import scaled
from wirthforge_ws.energy import MeterSnapshot, ModelMeter, SessionState
from wirthforge_ws.energy.meter import jensen_shannon
from wirthforge_ws.energy.profiles import PROFILES
from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.codes import ErrorCode
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.sources.backends.adapters import OllamaBackend, OpenAIBackend, Piece, SourceError, model_id_for
from wirthforge_ws.sources.base import FrameActivity
from wirthforge_ws.sources.live import Busy, LiveSource
from wirthforge_ws.stream import energy_frames

FRAME = 1 / 60
PROMPT = "a private prompt that must never leave the server"
SCHEMAS = SchemaSet()


class ScriptedBackend:
    """A model whose answer and timing are given: *pieces* one every *interval* seconds, then *fail*."""

    kind = "scripted"

    def __init__(
        self, model_id: str, pieces: Sequence[Piece], interval: float = 0.02, fail: SourceError | None = None
    ) -> None:
        self.model_id = model_id
        self.pieces = list(pieces)
        self.interval = interval
        self.fail = fail
        self.cancelled = False
        self.prompts: list[str] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def generate(self, prompt: str, *, max_tokens: int, top_k: int) -> AsyncIterator[Piece]:
        self.prompts.append(prompt)
        try:
            for piece in self.pieces[:max_tokens]:
                await asyncio.sleep(self.interval)
                yield piece
            if self.fail is not None:
                raise self.fail
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled = True
            raise


def pieces(count: int, distributions: Sequence[dict[str, float]] | None = None) -> list[Piece]:
    distributions = distributions or [{"a": 0.9, "b": 0.05, "c": 0.05}, {"a": 0.4, "b": 0.35, "c": 0.25}]
    return [Piece(f" w{i}", distributions[i % len(distributions)]) for i in range(count)]


def validate(event: messages.Event) -> None:
    """Valid on the wire in both protocol versions."""
    for version in ("1.0", "1.1"):
        SCHEMAS.validate_outbound(version, messages.envelope(version, event, messages.now_ms(), 1))


async def run_frames(source: LiveSource, seconds: float, *, until: Any = None) -> list[tuple[float, Any]]:
    """A small frame loop: step() every frame period for *seconds* (or until *until(activity)*)."""
    frames = []
    number = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(FRAME)
        number += 1
        now = time.monotonic()
        activity = source.step(number, now)
        frames.append((now, activity))
        if until is not None and until(activity):
            break
    return frames


def frame_messages(activity: FrameActivity) -> list[messages.Event]:
    """What the frame loop publishes for *activity* (the field aside)."""
    return [energy_frames.token_stream(batch) for batch in activity.streams] + activity.events


def events_of(frames: list[tuple[float, Any]], kind: str) -> list[messages.Event]:
    return [event for _, activity in frames for event in frame_messages(activity) if event.type == kind]


# ---------------------------------------------------------------------------
# The live source


async def test_tokens_in_order_with_one_completion_and_real_certainty() -> None:
    model = ScriptedBackend("scripted-a", pieces(20))
    source = LiveSource(model)
    session_id, models = source.start(PROMPT)
    assert models == ["scripted-a"] and source.running == session_id
    frames = await run_frames(source, scaled(5.0), until=lambda a: a.response_complete)
    tokens = [token for _, activity in frames for token in activity.tokens]
    assert tokens == [piece.text for piece in model.pieces]
    assert [a.response_complete for _, a in frames].count(True) == 1
    assert {a.session_id for _, a in frames} == {session_id}
    certainties = {round(r.certainty, 6) for _, a in frames for r in a.readings if r.certainty is not None}
    assert len(certainties) == 2, "certainty follows each token's top-K distribution"
    assert max(a.total_energy for _, a in frames) > 0.2
    indices = [r.index for _, a in frames for r in a.readings]
    assert indices == list(range(20)), "one reading per token, in order"
    assert frames[-1][1].primary.state == SessionState.DRAINED
    assert source.running is None, "the generation is over after its isComplete"
    assert model.prompts == [PROMPT]


async def test_a_second_prompt_is_refused_while_one_runs() -> None:
    source = LiveSource(ScriptedBackend("scripted-a", pieces(5)))
    session_id, _ = source.start(PROMPT)
    with pytest.raises(Busy) as refused:
        source.start(PROMPT)
    assert refused.value.session_id == session_id
    await run_frames(source, scaled(5.0), until=lambda a: a.response_complete)
    assert source.start(PROMPT)[0] != session_id


async def test_a_failing_source_gives_one_error_event_and_energy_decays() -> None:
    failure = SourceError(ErrorCode.MODEL_STREAM_CUT, "ollama server cut the stream")
    model = ScriptedBackend("scripted-a", pieces(6), fail=failure)
    source = LiveSource(model)
    source.start(PROMPT)
    frames = await run_frames(source, scaled(5.0), until=lambda a: a.response_complete)
    frames += await run_frames(source, 0.5)
    errors = events_of(frames, "error_event")
    assert len(errors) == 1
    payload = errors[0].payload
    assert payload["component"] == "model" and payload["code"] == "MODEL_STREAM_CUT"
    assert payload["details"]["source"] == "scripted" and payload["details"]["modelId"] == "scripted-a"
    assert PROMPT not in str(payload) and " w1" not in str(payload)
    validate(errors[0])
    assert [a.response_complete for _, a in frames].count(True) == 1
    assert sum(len(a.tokens) for _, a in frames) == 6
    levels = [a.total_energy for _, a in frames[-20:]]
    assert all(later < earlier for earlier, later in zip(levels, levels[1:])), "energy decays as for silence"


async def test_cancel_stops_tokens_at_once() -> None:
    model = ScriptedBackend("scripted-a", pieces(500), interval=0.005)
    source = LiveSource(model)
    session_id, _ = source.start(PROMPT)
    before = await run_frames(source, 0.3)
    assert sum(len(a.tokens) for _, a in before) > 0
    assert source.cancel(session_id)
    assert not source.cancel(session_id), "cancelling twice finds nothing running"
    assert source.running is None, "a new prompt may start at once"
    after = await run_frames(source, 0.3)
    assert all(not a.tokens for _, a in after), "no token after cancel() returned"
    closing = events_of(after, "token_stream")
    assert [(e.payload["tokens"], e.payload["isComplete"], e.payload["sessionId"]) for e in closing] == [
        ([], True, session_id)
    ], "the next frame closes the answer, once"
    assert closing[0].payload == frame_messages(after[0][1])[0].payload
    assert model.cancelled, "the model's stream was closed"


async def test_council_interference_comes_from_real_disagreement() -> None:
    agree = [{"x": 0.7, "y": 0.2, "z": 0.1}]
    disagree = [{"p": 0.3, "q": 0.6, "x": 0.1}]
    first = ScriptedBackend("model-a", pieces(40, agree))
    second = ScriptedBackend("model-b", pieces(40, disagree))
    source = LiveSource(first, [second])
    session_id, models = source.start(PROMPT, council=True)
    assert models == ["model-a", "model-b"]
    frames = await run_frames(source, scaled(6.0), until=lambda a: source.running is None)
    interference = events_of(frames, "interference_event")
    assert interference, "two models answering give interference events"
    expected = 1.0 - jensen_shannon([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])  # ranked top-K of each model
    assert interference[0].payload["models"] == ["model-a", "model-b"]
    assert interference[0].payload["coherenceScore"] == pytest.approx(expected, abs=1e-6)
    assert interference[0].payload["evidence"]["method"] == "jsd"
    council = [a.council for _, a in frames if a.council]
    assert council and all([m.model_id for m in c] == ["model-a", "model-b"] for c in council)
    streams = [e for e in events_of(frames, "token_stream") if e.payload["modelId"] == "model-b"]
    assert [t for e in streams for t in e.payload["tokens"]] == [p.text for p in second.pieces]
    assert [e.payload["isComplete"] for e in streams].count(True) == 1
    assert {e.payload["sessionId"] for e in streams} == {session_id}
    for event in interference + streams:
        validate(event)


async def test_council_in_agreement_and_rhythm_resonates() -> None:
    same = [{"x": 0.7, "y": 0.2, "z": 0.1}]
    source = LiveSource(ScriptedBackend("model-a", pieces(60, same)), [ScriptedBackend("model-b", pieces(60, same))])
    source.start(PROMPT, council=True)
    frames = await run_frames(source, scaled(6.0), until=lambda a: source.running is None)
    resonance = events_of(frames, "resonance_event")
    assert resonance and resonance[0].payload["participants"] == ["model-a", "model-b"]
    assert all(e.payload["coherenceScore"] == 1.0 for e in events_of(frames, "interference_event"))
    validate(resonance[0])


def test_model_ids_are_wire_safe() -> None:
    assert model_id_for("llama3.2:1b") == "llama3_2-1b"
    assert model_id_for("SmolLM2-135M-Instruct", "critic") == "SmolLM2-135M-Instruct-critic"
    assert model_id_for("..") == "model"


# ---------------------------------------------------------------------------
# The energy engine on scripted token timelines, as the frame loop sees it

PROFILE = PROFILES["Dual"]


def play(
    meter: ModelMeter,
    token_times: Sequence[float],
    end: float,
    top_k: Sequence[float] | None = None,
    start: float = 0.0,
) -> list[tuple[float, MeterSnapshot]]:
    """Feed *token_times* to *meter* frame by frame from *start* to *end*; returns (time, snapshot) per frame."""
    snapshots = []
    pending = sorted(token_times)
    frame = start
    while frame <= end:
        while pending and pending[0] <= frame:
            meter.on_token(pending.pop(0), top_k)
        snapshots.append((frame, meter.snapshot(frame)))
        frame += FRAME
    return snapshots


def test_steady_flow_raises_energy() -> None:
    meter = ModelMeter("m", PROFILE)
    meter.start(0.0)
    snapshots = play(meter, [i / 15 for i in range(1, 46)], 3.0, top_k=[0.8, 0.1, 0.1])
    early = snapshots[10][1].energy
    late = snapshots[-1][1].energy
    assert late > early and late > 0.5
    assert not snapshots[-1][1].stall  # tokens keep coming: no stall


def test_a_stall_lowers_energy() -> None:
    meter = ModelMeter("m", PROFILE)
    meter.start(0.0)
    flowing = play(meter, [i / 15 for i in range(1, 31)], 2.0, top_k=[0.8, 0.1, 0.1])[-1][1]
    stalled = play(meter, [], 3.6, start=2.0 + FRAME)[-1][1]  # then 1.6 s without a token
    assert not flowing.stall and stalled.stall
    assert stalled.energy < flowing.energy / 2


def test_silence_decays_with_the_stated_half_life() -> None:
    meter = ModelMeter("m", PROFILE)
    meter.start(0.0)
    play(meter, [i / 20 for i in range(1, 41)], 2.0)
    meter.end(2.0)
    level = meter.snapshot(2.0).energy
    assert meter.snapshot(2.0 + PROFILE.half_life_ms / 1000).energy == pytest.approx(level / 2, rel=1e-3)
    assert meter.snapshot(2.0 + 2 * PROFILE.half_life_ms / 1000).energy == pytest.approx(level / 4, rel=1e-3)


token_timelines = st.lists(st.floats(min_value=0.0, max_value=4.0, allow_nan=False), max_size=120)
distributions = st.one_of(st.none(), st.lists(st.floats(min_value=1e-6, max_value=1.0), min_size=1, max_size=8))


@hypothesis_settings(max_examples=60, deadline=None)
@given(times=token_timelines, top_k=distributions)
def test_energy_stays_in_range_and_every_frame_is_valid(times: list[float], top_k: list[float] | None) -> None:
    meter = ModelMeter("m", PROFILE)
    meter.start(0.0)
    pending = sorted(times)
    for number in range(int(4.5 / FRAME)):
        now = number * FRAME
        readings = []
        while pending and pending[0] <= now:
            readings.append(meter.on_token(pending.pop(0), top_k))
        snapshot = meter.snapshot(now)
        assert 0.0 <= snapshot.energy <= 1.0
        assert snapshot.certainty is None or 0.0 <= snapshot.certainty <= 1.0
        if number % 15 == 0 or len(readings) > 1:  # every frame would make the test slow, not stronger
            activity = FrameActivity(
                session_id="s", primary=snapshot, profile=PROFILE, readings=readings, history=meter.readings
            )
            validate(
                messages.energy_update(
                    frame_number=number,
                    total_energy=activity.total_energy,
                    delta_energy=0.0,
                    tokens_generated=len(readings),
                    processing_time_ms=0.1,
                    model_id="m",
                    distribution=energy_frames.frame_distribution(activity, activity.total_energy),
                    evidence=energy_frames.frame_evidence(activity),
                )
            )
            field = energy_frames.FieldBuilder(1).build(number, now, activity)
            assert field is not None
            validate(field)


@hypothesis_settings(max_examples=40, deadline=None)
@given(
    a=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=6),
    b=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=6),
)
def test_council_coherence_is_valid_for_any_distributions(a: list[float], b: list[float]) -> None:
    if sum(a) == 0 or sum(b) == 0:
        return
    divergence = jensen_shannon([a, b])
    assert 0.0 <= divergence <= 1.0
    validate(
        messages.interference_event(
            frame_number=1,
            pattern_type="neutral",
            models=["m-a", "m-b"],
            intensity=divergence,
            coherence=1.0 - divergence,
            method="jsd",
            disagreement=divergence,
            window=8,
        )
    )


# ---------------------------------------------------------------------------
# The Ollama adapter against the fake server (as Ollama's API documentation describes it)


@pytest.fixture(scope="module")
def fake_ollama() -> Any:
    with FakeOllama() as fake:
        yield fake


async def collect(backend: Any) -> list[Piece]:
    await backend.start()
    try:
        return [piece async for piece in backend.generate(PROMPT, max_tokens=64, top_k=4)]
    finally:
        await backend.stop()


async def test_ollama_streams_tokens_with_their_probabilities(fake_ollama: FakeOllama) -> None:
    got = await collect(OllamaBackend(fake_ollama.url, "tiny", timeout=scaled(5.0)))
    assert [piece.text for piece in got] == TOKENS
    assert all(len(piece.top_k) == 4 and math.isclose(sum(piece.top_k.values()), 1.0) for piece in got)
    sent = fake_ollama.requests[-1]
    assert sent["stream"] is True and sent["logprobs"] is True and sent["top_logprobs"] == 4
    assert sent["model"] == "tiny" and sent["messages"][-1] == {"role": "user", "content": PROMPT}
    assert sent["options"]["num_predict"] == 64


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("missing", ErrorCode.MODEL_NOT_FOUND),
        ("cut", ErrorCode.MODEL_STREAM_CUT),
        ("fails", ErrorCode.MODEL_FAILED),
    ],
)
async def test_ollama_errors_become_source_errors(fake_ollama: FakeOllama, model: str, code: ErrorCode) -> None:
    with pytest.raises(SourceError) as failed:
        await collect(OllamaBackend(fake_ollama.url, model, timeout=scaled(5.0)))
    assert failed.value.code == code
    assert PROMPT not in failed.value.message


async def test_ollama_silence_is_a_timeout(fake_ollama: FakeOllama) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError) as failed:
        await collect(OllamaBackend(fake_ollama.url, "slow", timeout=0.5))
    assert failed.value.code == ErrorCode.MODEL_TIMEOUT
    assert time.monotonic() - started < scaled(5.0)


@pytest.mark.parametrize("backend_class", [OllamaBackend, OpenAIBackend])
async def test_a_server_that_is_not_running_is_unavailable(backend_class: type) -> None:
    with pytest.raises(SourceError) as failed:
        await collect(backend_class(f"http://127.0.0.1:{free_port()}", "tiny", timeout=scaled(5.0)))
    assert failed.value.code == ErrorCode.MODEL_UNAVAILABLE


@pytest.mark.parametrize(
    "changes",
    [
        {"source": "gpt"},
        {"council_with": ("sim",)},
        {"council_with": ("embedded/poet",)},
        {"model_threads": 0},
        {"model_nice": 20},
        {"model_sched": "fifo"},
        {"model_cpus": "one"},
        {"top_logprobs": 0},
        {"max_tokens": 0},
    ],
)
def test_model_settings_are_checked(changes: dict[str, Any]) -> None:
    from wirthforge_ws.settings import Settings

    with pytest.raises(ValueError):
        Settings(**changes)
    assert Settings(source="ollama", council_with=("embedded", "ollama/critic"), model_cpus="0,1").source == "ollama"
