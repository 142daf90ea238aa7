"""``GET /api/sessions/{id}/trace`` on a real server with a real event log.

- a live generation (the fake Ollama server as model and council member):
  its trace reproduces, through ``energy.trace.recompute``, the per-token E
  that the live protocol 1.1 ``energy_update`` frames carried in
  ``evidence.tokens[].energy``, under the tier's profile;
- token_streams published through ``/publish`` with ``tokenEvidence``: E per
  token as a meter computes it from that evidence, text only where the
  recording kept it (``--record-text``; ``textOmitted`` and the default
  numbers-only recording give none);
- a recording without per-token evidence gets 409 saying so, an unknown one
  404, and an event log that cannot be read a 503 with a JSON reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_ollama import TOKENS, FakeOllama
from tests.integration.test_models import Recorder
from tests.server_process import ServerProcess
from tests.timing import scaled
from wirthforge_ws.energy import PROFILES, ModelMeter, recompute

pytestmark = pytest.mark.timeout(scaled(120))


def persistent(db: Path, **extra: str) -> dict[str, str]:
    return {"WF_ENABLE_PUBLISH": "1", "WF_PERSIST": "1", "WF_PERSIST_PATH": str(db), **extra}


def stream(
    session: str, model: str, tokens: list[str], first: int, evidence: list[dict[str, Any]] | None, **extra: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {"tokens": tokens, "isComplete": False, "sessionId": session, "modelId": model}
    if evidence is not None:
        payload.update(firstIndex=first, tokenEvidence=evidence)
    payload.update(extra)
    return {"type": "token_stream", "payload": payload}


def recording_of(http: httpx.Client, session_id: str, seconds: float = 10.0) -> dict[str, Any]:
    """The recording of *session_id* once it is complete in the log (the writer thread commits it)."""
    deadline = time.monotonic() + scaled(seconds)
    while time.monotonic() < deadline:
        for recording in http.get("/api/sessions").json()["sessions"]:
            if recording["sessionId"] == session_id and recording["complete"]:
                return recording
        time.sleep(0.05)
    raise AssertionError(f"no complete recording of {session_id}")


PRIMARY = [  # (text, dtMs, topK): the TTFT, a steady flow, one stall
    ("The", 180.0, [0.62, 0.2, 0.1, 0.05, 0.03]),
    (" sea", 60.5, [0.9, 0.05, 0.03, 0.02]),
    (" is", 71.2, [0.4, 0.3, 0.2, 0.1]),
    (" wide", 650.0, [0.5, 0.25, 0.25]),
    (",", 55.0, None),
    (" deep", 49.9, [0.97, 0.03]),
]
MEMBER = [(" A", 240.0, None), (" wave", 80.0, None), (".", 75.5, None)]


def expected_energy(tokens: list[tuple[str, float, list[float] | None]], profile: str) -> list[float]:
    meter = ModelMeter("expected", PROFILES[profile])
    meter.start(0.0)
    return [meter.add_token(dt, top_k).energy for _, dt, top_k in tokens]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    db = tmp_path_factory.mktemp("trace") / "events.sqlite3"
    with (
        ServerProcess(env=persistent(db, WF_RECORD_TEXT="1")) as server,
        httpx.Client(base_url=server.http_url, timeout=10) as http,
    ):
        yield server, http


def test_published_evidence_gives_each_tokens_energy_and_text_only_where_kept(
    recorded: tuple[ServerProcess, httpx.Client],
) -> None:
    server, http = recorded
    evidence = [{"dtMs": dt, "topK": top_k} for _, dt, top_k in PRIMARY]
    texts = [text for text, _, _ in PRIMARY]
    messages = [
        stream("trace-a", "alpha", texts[:2], 0, evidence[:2]),
        stream("trace-a", "beta", [t for t, _, _ in MEMBER], 0, [{"dtMs": dt, "topK": None} for _, dt, _ in MEMBER]),
        stream("trace-a", "alpha", texts[2:], 2, evidence[2:]),
        stream("trace-a", "beta", [], 3, [], isComplete=True),
        stream("trace-a", "alpha", [], 6, [], isComplete=True),
    ]
    assert http.post("/publish", json=messages).status_code == 202
    recording = recording_of(http, "trace-a")

    response = http.get(f"/api/sessions/{recording['id']}/trace")
    assert response.status_code == 200, response.text
    trace = response.json()
    profile = server.health()["tier"]["profile"]  # no recorded frame names one: the server's own
    assert trace["session_id"] == "trace-a"
    assert trace["meta"]["version"] == "0.1" and trace["meta"]["profile"] == profile
    alpha, beta = trace["models"]
    assert (alpha["name"], beta["name"]) == ("alpha", "beta")
    assert [t["token"] for t in alpha["tokens"]] == texts  # the recording kept the text
    assert [t["delta_ms"] for t in alpha["tokens"]] == [dt for _, dt, _ in PRIMARY]
    assert [[c["p"] for c in t["topk"]] if "topk" in t else None for t in alpha["tokens"]] == [
        top_k for _, _, top_k in PRIMARY
    ]
    assert [t["E"] for t in alpha["tokens"]] == expected_energy(PRIMARY, profile)
    assert [t["E"] for t in beta["tokens"]] == expected_energy(MEMBER, profile)
    assert alpha["tokens"][3]["stall"] is True and alpha["tokens"][2]["stall"] is False
    assert recompute(trace) == [expected_energy(PRIMARY, profile), expected_energy(MEMBER, profile)]
    assert trace["derived"] and trace["derived"][0]["name"] in ("DI_jsd", "DI_timing")

    omitted = [
        stream("trace-b", "alpha", ["", ""], 0, evidence[:2], textOmitted=True),
        stream("trace-b", "alpha", [], 2, [], isComplete=True),
    ]
    assert http.post("/publish", json=omitted).status_code == 202
    bare = http.get(f"/api/sessions/{recording_of(http, 'trace-b')['id']}/trace").json()
    assert all("token" not in t for t in bare["models"][0]["tokens"])
    assert [t["E"] for t in bare["models"][0]["tokens"]] == expected_energy(PRIMARY[:2], profile)


def test_a_recording_without_evidence_unknown_ids_and_gaps_get_clear_answers(
    recorded: tuple[ServerProcess, httpx.Client],
) -> None:
    _, http = recorded
    old = [
        stream("trace-old", "alpha", ["a", "b"], 0, None),
        stream("trace-old", "alpha", [], 2, None, isComplete=True),
    ]
    assert http.post("/publish", json=old).status_code == 202
    refused = http.get(f"/api/sessions/{recording_of(http, 'trace-old')['id']}/trace")
    assert refused.status_code == 409, refused.text
    assert "no per-token evidence" in refused.json()["error"]

    one = [{"dtMs": 50.0, "topK": None}]
    gap = [stream("trace-gap", "alpha", ["a"], 0, one), stream("trace-gap", "alpha", ["c"], 2, one, isComplete=True)]
    assert http.post("/publish", json=gap).status_code == 202
    missing = http.get(f"/api/sessions/{recording_of(http, 'trace-gap')['id']}/trace")
    assert missing.status_code == 409 and "misses tokens" in missing.json()["error"], missing.text

    for key in ("999999999", "nope", "-1", "9" * 40, "²"):
        unknown = http.get(f"/api/sessions/{key}/trace")
        assert unknown.status_code == 404 and unknown.json()["error"] == "no such session", key


def test_an_unreadable_event_log_gives_a_503_with_a_reason(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    with ServerProcess(env=persistent(db)) as server, httpx.Client(base_url=server.http_url, timeout=10) as http:
        one = [{"dtMs": 50.0, "topK": None}]
        assert http.post("/publish", json=[stream("trace-c", "alpha", ["a"], 0, one, isComplete=True)]).is_success
        recording = recording_of(http, "trace-c")
        db.rename(tmp_path / "elsewhere.sqlite3")  # the log's file is gone from under the server
        failed = http.get(f"/api/sessions/{recording['id']}/trace")
        assert failed.status_code == 503, failed.text
        assert "event log could not be read" in failed.json()["error"]
        assert "Traceback" not in server.log_text()


@pytest.fixture(scope="module")
def ollama_recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("live-trace") / "events.sqlite3"
    with FakeOllama() as fake:
        env = persistent(
            db, WF_SOURCE="ollama", WF_OLLAMA_URL=fake.url, WF_OLLAMA_MODEL="tiny", WF_COUNCIL_WITH="ollama/critic"
        )
        # Studio, not this machine's profile: the trace must use the profile the live meters used
        with ServerProcess(env=env, args=["--tier", "High-Tier"]) as server:
            yield server


async def test_the_trace_of_a_live_generation_reproduces_the_live_frames_energy(
    ollama_recorded: ServerProcess,
) -> None:
    server = ollama_recorded
    async with Recorder(server.ws_url) as client, httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        started = await http.post("/api/prompt", json={"prompt": "Tell me about the sea.", "council": True})
        assert started.status_code == 202, started.text
        session_id, models = started.json()["sessionId"], started.json()["models"]

        def done() -> bool:
            ended = {m["payload"]["modelId"] for m in client.streams(session_id) if m["payload"]["isComplete"]}
            return ended == set(models)

        await client.wait(done, 30.0)
        await asyncio.sleep(0.2)  # the frames after the last token
        deadline = time.monotonic() + scaled(10)
        recording = None
        while recording is None and time.monotonic() < deadline:
            sessions = (await http.get("/api/sessions")).json()["sessions"]
            recording = next((s for s in sessions if s["sessionId"] == session_id and s["complete"]), None)
            await asyncio.sleep(0.05)
        assert recording is not None
        response = await http.get(f"/api/sessions/{recording['id']}/trace")

    live_streams = client.streams(session_id)
    if not any("tokenEvidence" in m["payload"] for m in live_streams):
        pytest.skip("waits for the live sources to send tokenEvidence (protocol 1.1 token evidence)")
    assert response.status_code == 200, response.text
    trace = response.json()
    assert trace["meta"]["profile"] == "Studio"
    assert [m["name"] for m in trace["models"]] == models
    primary = trace["models"][0]
    assert len(primary["tokens"]) == len(TOKENS)
    assert all("token" not in t for t in primary["tokens"])  # by default the recording keeps no text

    live: dict[int, float] = {}  # token index -> E the live frames showed for it
    for frame in client.of("energy_update"):
        evidence = frame["payload"]["evidence"]
        if evidence["sessionId"] == session_id:
            live.update({token["index"]: token["energy"] for token in evidence["tokens"]})
    assert len(live) >= len(TOKENS) // 2, f"the frames showed only tokens {sorted(live)}"
    rebuilt = recompute(trace)
    assert [round(e, 4) for e in rebuilt[0]] == [round(t["E"], 4) for t in primary["tokens"]]
    assert {index: round(rebuilt[0][index], 4) for index in live} == live
    assert len(rebuilt[1]) == len(TOKENS)  # the council member's tokens too
