"""The 1.1 energy evidence end to end: a real server, real WebSocket clients, real (and fake Ollama) models.

- a real prompt to the embedded SmolLM2: every 1.1 energy frame validates,
  its evidence names the same tokens as the token_stream messages (same
  indices, same dt, and the dt agrees with when the messages were sent to
  within a frame), and the state goes CHARGING -> FLOWING -> DRAINED;
- a council on the fake Ollama server, which gives no logprobs:
  interference events measure the disagreement by timing, every member has
  its own energy in ``evidence.models``, and a 1.0 client meanwhile gets
  every message exactly as the upstream contract says, without evidence;
- a server without a prompt: its energy_field frames do not change.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fake_ollama import TOKENS, FakeOllama
from tests.server_process import ServerProcess
from tests.timing import scaled
from wirthforge_ws.protocol.messages import ONLY_1_1
from wirthforge_ws.protocol.schemas import SchemaSet

PROMPT = "Name three colours of the sea."
FRAME_MS = 1000 / 60
SCHEMAS = SchemaSet()
UPSTREAM_SCHEMA = Path(__file__).resolve().parents[2].parent / "shared/reference/WF-TECH-003-event-schemas.json"


class Client:
    """A WebSocket client of one protocol version that validates and keeps every message it receives."""

    def __init__(self, url: str, version: str = "1.1") -> None:
        self.url = url
        self.version = version
        self.messages: list[dict[str, Any]] = []
        self.sizes: dict[str, int] = {}  # type -> largest message of that type, bytes
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        self._ws = await connect(
            self.url, subprotocols=[f"wirthforge.{self.version}"], proxy=None, open_timeout=scaled(5)
        )
        self._task = asyncio.create_task(self._read())
        await self.wait(lambda: bool(self.of("energy_update")), 5.0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._ws.close()

    async def _read(self) -> None:
        async for text in self._ws:
            message = json.loads(text)
            SCHEMAS.validate_outbound(self.version, message)
            self.messages.append(message)
            size = len(text.encode() if isinstance(text, str) else text)
            self.sizes[message["type"]] = max(size, self.sizes.get(message["type"], 0))

    async def wait(self, condition: Any, seconds: float) -> None:
        deadline = time.monotonic() + scaled(seconds)
        while not condition():
            assert time.monotonic() < deadline, f"timed out after {scaled(seconds):g} s"
            await asyncio.sleep(0.02)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def streams(self, session_id: str, model_id: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.of("token_stream")
            if m["payload"]["sessionId"] == session_id and model_id in (None, m["payload"]["modelId"])
        ]

    def ended(self, session_id: str) -> set[str]:
        return {m["payload"]["modelId"] for m in self.streams(session_id) if m["payload"]["isComplete"]}


def prompt(server: ServerProcess, **fields: Any) -> tuple[str, list[str]]:
    response = httpx.post(
        server.http_url + "/api/prompt", json={"prompt": PROMPT, **fields}, timeout=scaled(10), trust_env=False
    )
    assert response.status_code == 202, response.text
    return response.json()["sessionId"], response.json()["models"]


def collapsed(states: list[str]) -> list[str]:
    """The states in order, each run of one state counted once."""
    return [state for i, state in enumerate(states) if i == 0 or states[i - 1] != state]


# ---------------------------------------------------------------------------
# The embedded model


@pytest.fixture(scope="module")
def embedded() -> Iterator[ServerProcess]:
    with ServerProcess(env={"WF_SOURCE": "embedded", "WF_MAX_TOKENS": "32"}) as server:
        yield server


async def test_a_real_answer_carries_evidence_that_matches_its_tokens(embedded: ServerProcess) -> None:
    async with Client(embedded.ws_url) as client:
        session_id, (model_id,) = prompt(embedded)
        await client.wait(lambda: model_id in client.ended(session_id), 60.0)
        await asyncio.sleep(0.2)  # frames after the last token

    frames = [m for m in client.of("energy_update") if m["payload"]["evidence"]["sessionId"] == session_id]
    assert frames, "energy frames name the answer they belong to"
    assert client.sizes["energy_update"] < 1024, "a one-model frame with its evidence stays under 1 KiB"
    states = collapsed([m["payload"]["evidence"]["state"] for m in frames])
    assert states[0] == "CHARGING" and states[-1] == "DRAINED", states
    assert "FLOWING" in states and set(states) <= {"CHARGING", "FLOWING", "STALLING", "SATURATED", "DRAINED"}
    assert states.index("CHARGING") < states.index("FLOWING") < states.index("DRAINED")

    # token_stream: each token's index, dt and top-K
    streamed: dict[int, tuple[float, float, list[float] | None]] = {}  # index -> (dtMs, sent at, topK)
    for message in client.streams(session_id):
        payload = message["payload"]
        assert len(payload["tokenEvidence"]) == len(payload["tokens"])
        for offset, evidence in enumerate(payload["tokenEvidence"]):
            streamed[payload["firstIndex"] + offset] = (evidence["dtMs"], message["timestamp"], evidence["topK"])
    count = sum(len(m["payload"]["tokens"]) for m in client.streams(session_id))
    assert sorted(streamed) == list(range(count)), "firstIndex numbers every token once, in order"
    assert all(top_k for _, _, top_k in streamed.values()), "the embedded model gives top-K for every token"

    # energy_update evidence: the same tokens, the same dt
    in_frames = {t["index"]: t for m in frames for t in m["payload"]["evidence"]["tokens"]}
    omitted = sum(m["payload"]["evidence"]["tokensOmitted"] for m in frames)
    assert in_frames and len(in_frames) + omitted <= count
    for index, token in in_frames.items():
        assert token["dtMs"] == streamed[index][0], index
    assert frames[-1]["payload"]["evidence"]["ttftMs"] == streamed[0][0]

    # Each dt agrees with when its token_stream was sent: a token goes out in the first frame after it
    # arrived, so the gap between two messages is its dt to within one frame period. A loaded machine
    # delays some frames: most gaps must match within a frame, every one within a generous bound.
    gaps = []
    for index in range(1, count):
        dt_ms, sent, _ = streamed[index]
        _, sent_before, _ = streamed[index - 1]
        if sent != sent_before:  # tokens of one message arrived within one frame
            gaps.append(abs((sent - sent_before) - dt_ms))
    assert gaps, "the answer took more than one frame"
    within = sum(gap <= FRAME_MS + 1.0 for gap in gaps) / len(gaps)
    assert within >= 0.7, sorted(gaps)
    assert max(gaps) <= scaled(250.0), sorted(gaps)


# ---------------------------------------------------------------------------
# A council without logprobs (the fake Ollama server)


@pytest.fixture(scope="module")
def plain_council() -> Iterator[ServerProcess]:
    with FakeOllama() as fake:
        env = {
            "WF_SOURCE": "ollama",
            "WF_OLLAMA_URL": fake.url,
            "WF_OLLAMA_MODEL": "plain",
            "WF_COUNCIL_WITH": "ollama/critic",
        }
        with ServerProcess(env=env) as server:
            yield server


async def test_a_still_server_sends_a_field_that_does_not_change() -> None:
    with FakeOllama() as fake:
        env = {"WF_SOURCE": "ollama", "WF_OLLAMA_URL": fake.url, "WF_OLLAMA_MODEL": "plain"}
        with ServerProcess(env=env) as server:
            async with Client(server.ws_url) as client:
                await asyncio.sleep(2.0)
    fields = [m["payload"] for m in client.of("energy_field")]
    assert all(field == fields[0] for field in fields), "nothing moves without a signal"
    assert len(fields) <= 4, "an unchanged field is only repeated once a second"
    assert {m["payload"]["evidence"]["state"] for m in client.of("energy_update")} == {"IDLE"}


async def test_a_council_without_top_k_measures_disagreement_by_timing(plain_council: ServerProcess) -> None:
    async with Client(plain_council.ws_url) as client, Client(plain_council.ws_url, "1.0") as legacy:
        session_id, models = prompt(plain_council, council=True)
        assert models == ["plain", "plain-critic"]
        await client.wait(lambda: client.ended(session_id) == set(models), 20.0)
        await legacy.wait(lambda: legacy.ended(session_id) == set(models), 5.0)
        await asyncio.sleep(0.2)

    for model_id in models:
        tokens = [t for m in client.streams(session_id, model_id) for t in m["payload"]["tokens"]]
        assert tokens == TOKENS
        evidence = [e for m in client.streams(session_id, model_id) for e in m["payload"]["tokenEvidence"]]
        assert len(evidence) == len(TOKENS) and all(e["topK"] is None for e in evidence), "no logprobs: no top-K"

    interference = client.of("interference_event")
    assert interference, "two answering models give interference events"
    for event in interference:
        payload = event["payload"]
        assert payload["models"] == models
        assert payload["evidence"]["method"] == "timing"
        assert payload["coherenceScore"] == pytest.approx(1 - payload["evidence"]["disagreement"], abs=1e-5)

    council = [m["payload"] for m in client.of("energy_update") if "models" in m["payload"]["evidence"]]
    assert council, "frames of the council carry every member"
    for payload in council:
        members = payload["evidence"]["models"]
        assert [member["modelId"] for member in members] == models
        mean = sum(member["energy"] for member in members) / len(members)
        assert payload["evidence"]["ensembleEnergy"] == pytest.approx(mean, abs=1e-4)
        assert payload["totalEnergy"] == pytest.approx(payload["evidence"]["ensembleEnergy"], abs=1e-4)
        assert payload["evidence"]["certainty"] is None
    assert any(all(member["energy"] > 0 for member in p["evidence"]["models"]) for p in council)
    assert max(max(member["tokens"] for member in p["evidence"]["models"]) for p in council) == len(TOKENS)

    # the 1.0 client: the same answer, the upstream contract, no 1.1 field
    assert [t for m in legacy.streams(session_id, "plain") for t in m["payload"]["tokens"]] == TOKENS
    assert legacy.of("interference_event"), "1.0 clients get the council's events too"
    for message in legacy.messages:
        assert "seq" not in message
        assert not ONLY_1_1.get(message["type"], frozenset()) & set(message["payload"]), message["type"]
    if UPSTREAM_SCHEMA.is_file():
        import jsonschema

        upstream = jsonschema.Draft7Validator(json.loads(UPSTREAM_SCHEMA.read_text(encoding="utf-8")))
        failures = [m["type"] for m in legacy.messages if not upstream.is_valid(m)]
        assert not failures, failures[:5]
