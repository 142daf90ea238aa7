"""A replay meters the primary's recorded tokens again: every token, with the E it had live."""

from __future__ import annotations

import random

from wirthforge_ws.energy import ModelMeter
from wirthforge_ws.energy.profiles import PROFILES
from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.messages import Event
from wirthforge_ws.sources.replay import ReplaySource
from wirthforge_ws.storage.queries import StoredMessage


def _recorded_answer(seed: int) -> tuple[list[StoredMessage], list[tuple[int, float, float | None, float]]]:
    """A live answer of 30 tokens in batches of 1-3 (irregular Δt, top-K or none), as the event log keeps it."""
    rng = random.Random(seed)
    meter = ModelMeter("m", PROFILES["Lite"])
    accepted = 1000.0 + rng.random()
    meter.start(accepted)
    when = accepted
    stored: list[StoredMessage] = []
    live = []
    index = 0
    while index < 30:
        batch = []
        for _ in range(min(rng.randint(1, 3), 30 - index)):
            when += rng.choice((0.0137, 0.0521, 0.31, 0.7493, 1.2))
            top_k = None if rng.random() < 0.3 else [rng.random() for _ in range(rng.randint(2, 10))]
            batch.append(meter.on_token(when, top_k))
        first, index = index, index + len(batch)
        live += [(r.index, r.dt_ms, r.certainty, r.energy) for r in batch]
        event = messages.token_stream(
            tokens=["w"] * len(batch),
            is_complete=index == 30,
            session_id="s1",
            model_id="m",
            first_index=first,
            token_evidence=[messages.token_evidence(dt_ms=r.dt_ms, top_k=r.top_k) for r in batch],
        )
        stored.append(StoredMessage(seq=len(stored) + 1, event=event, timestamp_ms=(when - accepted) * 1000 + 5))
    # energy frames are recorded at a low rate: one at the start, one at the end, listing no tokens (profile Lite)
    for at in (0.0, (when - accepted) * 1000 + 10):
        payload = {
            **{"totalEnergy": 0.2, "deltaEnergy": 0.0, "tokensGenerated": 0, "processingTime": 0.1, "modelId": "m"},
            "evidence": {"sessionId": "s1", "state": "FLOWING", "profile": "Lite", "tokens": [], "tps": 1.0},
        }
        stored.append(StoredMessage(seq=len(stored) + 1, event=Event("energy_update", payload, 1), timestamp_ms=at))
    stored.sort(key=lambda m: m.timestamp_ms)
    return stored, live


def test_replayed_frames_list_every_token_with_its_live_energy() -> None:
    for seed in range(5):
        recorded, live = _recorded_answer(seed)
        source = ReplaySource(recorded, speed=4.0, model_id="m", label="replay-s1")
        replayed = []
        for frame in range(10_000):
            activity = source.step(frame, 50.0 + frame / 60)
            replayed += [(r.index, r.dt_ms, r.certainty, r.energy) for r in activity.readings]
            if source.finished:
                break
        assert replayed == live, seed


def test_a_batch_out_of_step_gives_no_readings() -> None:
    recorded, _ = _recorded_answer(1)
    # drop the first token_stream: the replay has no start of the answer to meter from
    first = next(i for i, m in enumerate(recorded) if m.event.type == "token_stream")
    source = ReplaySource(recorded[:first] + recorded[first + 1 :], speed=10.0, model_id="m", label="replay-s1")
    for frame in range(10_000):
        assert source.step(frame, 50.0 + frame / 60).readings == []
        if source.finished:
            break
