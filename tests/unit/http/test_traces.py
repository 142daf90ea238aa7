"""Recorded messages to a WVMP trace (http/traces.py), without a database."""

from __future__ import annotations

from typing import Any

import pytest

from wirthforge_ws.energy import PROFILES, build_trace, recompute
from wirthforge_ws.http.traces import NoEvidence, TraceCollector, backend_names
from wirthforge_ws.protocol.messages import Event
from wirthforge_ws.storage.event_log import StoredMessage


def stored(seq: int, kind: str, payload: dict[str, Any]) -> StoredMessage:
    return StoredMessage(seq, Event(kind, payload), 1000.0 + seq)


def tokens(model: str, texts: list[str], first: int | None, evidence: list[Any] | None, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"tokens": texts, "isComplete": False, "sessionId": "s", "modelId": model, **extra}
    if evidence is not None:
        payload.update(firstIndex=first, tokenEvidence=evidence)
    return payload


def collect(*payloads: tuple[str, dict[str, Any]]) -> TraceCollector:
    collector = TraceCollector()
    for seq, (kind, payload) in enumerate(payloads, start=1):
        collector.add(stored(seq, kind, payload))
    return collector


def test_tokens_per_model_in_order_with_the_recorded_profile_and_no_omitted_text() -> None:
    evidence = [{"dtMs": 120.0, "topK": [0.8, 0.2]}, {"dtMs": 40.5, "topK": None}]
    collector = collect(
        ("energy_update", {"totalEnergy": 0.1, "evidence": {"profile": "Studio"}}),
        ("token_stream", tokens("a", ["x", "y"], 0, evidence)),
        ("token_stream", tokens("b", ["", ""], 0, evidence, textOmitted=True)),
        ("energy_update", {"totalEnergy": 0.1, "evidence": {"profile": "Lite"}}),
        ("token_stream", tokens("a", [], 2, [], isComplete=True)),
    )
    assert collector.profile_name == "Studio"  # the first recorded frame's
    a, b = collector.models(backend_names({"a": "embedded", "b": "ollama"}, "embedded"))
    assert (a.name, a.backend, b.name, b.backend) == ("a", "llama.cpp", "b", "ollama")
    assert list(a.tokens) == [(120.0, [0.8, 0.2], "x"), (40.5, None, "y")]
    assert [text for _, _, text in b.tokens] == [None, None]
    trace = build_trace("s", [a, b], PROFILES["Studio"])
    assert recompute(trace) == [[t["E"] for t in m["tokens"]] for m in trace["models"]]


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (tokens("a", ["x"], None, None), "no per-token evidence"),
        (tokens("a", ["x"], 1, [{"dtMs": 1.0, "topK": None}]), "misses tokens"),
        (tokens("a", ["x"], 0, [{"dtMs": 1.0}]), "malformed"),
        (tokens("a", ["x", "y"], 0, [{"dtMs": 1.0, "topK": None}]), "malformed"),
        (tokens("a", ["x"], 0, [{"dtMs": "soon", "topK": None}]), "malformed"),
    ],
)
def test_a_recording_that_cannot_give_e_per_token_says_why(payload: dict[str, Any], says: str) -> None:
    with pytest.raises(NoEvidence, match=says):
        collect(("token_stream", payload))


def test_a_closing_message_without_evidence_is_not_missing_evidence() -> None:
    collector = collect(("token_stream", tokens("a", [], None, None, isComplete=True)))
    assert [m.tokens for m in collector.models(backend_names({}, "sim"))] == [()]
    assert backend_names({}, "sim")("x") == "sim" and backend_names({}, "ollama")("x") == "unknown"
