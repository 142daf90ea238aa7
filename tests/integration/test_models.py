"""Real models drive the stream, end to end: server subprocess, WebSocket clients, ``POST /api/prompt``.

- the embedded SmolLM2 (llama.cpp worker process), the default source;
- llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``)
  serving the same GGUF, through the OpenAI adapter;
- the fake Ollama server (``tests/fake_ollama.py``), including its errors.

Each test checks what a client sees: every token in order, exactly one
``isComplete: true``, ``energy_update`` frames whose ``tokensGenerated`` add
up to the tokens, certainty that follows the real probabilities, one
``error_event`` per failure while frames go on at 60 Hz, cancel, and the
prompt API's answers. Timing bounds are scaled (tests/timing.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.fake_ollama import TOKENS, FakeOllama
from tests.server_process import LOOPBACK, ServerProcess, free_port
from tests.timing import scaled
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.sources.backends.adapters import embedded_model_path

PROMPT = "Tell me a short story about a lighthouse keeper."
FRAME = 1 / 60
SCHEMAS = SchemaSet()


class Recorder:
    """A protocol 1.1 client that keeps every message it receives, with its arrival time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.raw: list[str] = []
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.frames_coalesced = False

    async def __aenter__(self) -> Recorder:
        self._ws = await connect(self.url, subprotocols=["wirthforge.1.1"], proxy=None, open_timeout=scaled(5))
        self._task = asyncio.create_task(self._read())
        await self.wait(lambda: any(m["type"] == "energy_update" for _, m in self.messages), 5.0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None and self._ws is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._ws.close()

    async def _read(self) -> None:
        assert self._ws is not None
        async for text in self._ws:
            self.raw.append(str(text))
            message = json.loads(text)
            SCHEMAS.validate_outbound("1.1", message)
            self.messages.append((time.monotonic(), message))

    async def wait(self, condition: Any, seconds: float) -> None:
        deadline = time.monotonic() + scaled(seconds)
        while not condition():
            assert time.monotonic() < deadline, f"timed out after {scaled(seconds):g} s"
            await asyncio.sleep(0.02)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m["type"] == kind]

    def streams(self, session_id: str) -> list[dict[str, Any]]:
        return [m for m in self.of("token_stream") if m["payload"]["sessionId"] == session_id]

    def complete(self, session_id: str) -> bool:
        return any(m["payload"]["isComplete"] for m in self.streams(session_id))


def assert_frames_go_on(watcher: Any, start: float, end: float) -> None:
    """~60 Hz between *start* and *end*, and no pause: the frame loop never waited on the model.

    Unlike ``FrameWatcher.assert_steady`` a single skipped frame is allowed:
    on this shared 2-core machine the server process itself sometimes waits
    for a CPU (the diagnosis says how long), which no model source causes.
    """
    frames = watcher.window(start, end)
    arrivals = [arrival for arrival, _, _ in frames]
    rate = len(frames) / (end - start)
    longest = max(b - a for a, b in zip(arrivals, arrivals[1:]))
    assert rate >= 0.9 * 60, f"{rate:.1f} Hz" + watcher.diagnosis(start)
    assert longest < scaled(0.1), f"frames paused for {longest * 1000:.0f} ms" + watcher.diagnosis(start)


def post(server: ServerProcess, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(server.http_url + path, json=body, timeout=scaled(10), trust_env=False, **kwargs)


def coalesced(server: ServerProcess) -> int:
    """Energy frames the server replaced with newer ones in a slow client's queue (latest-wins), so far."""
    return int(server.health()["messages"]["coalesced"].get("latest_wins", 0))


async def answer(
    server: ServerProcess, prompt: str = PROMPT, seconds: float = 60.0, **fields: Any
) -> tuple[Recorder, Recorder, str]:
    """Two clients watch one prompt until every model's isComplete; returns them and the sessionId.

    ``first.frames_coalesced`` says whether the server coalesced energy
    frames meanwhile (a busy machine): then frames may have dropped tokens
    from their count, by the protocol's latest-wins rule.
    """
    before = coalesced(server)
    async with Recorder(server.ws_url) as first, Recorder(server.ws_url) as second:
        response = post(server, "/api/prompt", {"prompt": prompt, **fields})
        assert response.status_code == 202, response.text
        session_id, models = response.json()["sessionId"], response.json()["models"]

        def done(client: Recorder) -> bool:
            ended = {m["payload"]["modelId"] for m in client.streams(session_id) if m["payload"]["isComplete"]}
            return ended == set(models)

        await first.wait(lambda: done(first) and done(second), seconds)
        await asyncio.sleep(0.1)  # the frames after the last token
    first.frames_coalesced = coalesced(server) > before
    return first, second, session_id


def check_answer(client: Recorder, other: Recorder, session_id: str, model_id: str) -> list[str]:
    """Every token in order (both clients alike), one isComplete, frames that count the same tokens."""
    streams = client.streams(session_id)
    tokens = [token for m in streams for token in m["payload"]["tokens"]]
    assert tokens, "the model answered"
    assert tokens == [token for m in other.streams(session_id) for token in m["payload"]["tokens"]]
    seqs = [m["seq"] for m in streams]
    assert seqs == sorted(seqs)
    assert [m["payload"]["isComplete"] for m in streams].count(True) == 1 and streams[-1]["payload"]["isComplete"]
    assert {m["payload"]["modelId"] for m in streams} == {model_id}
    counted = sum(
        m["payload"]["tokensGenerated"] for m in client.of("energy_update") if m["payload"]["modelId"] == model_id
    )
    # A frame the clock skipped (CPU starvation) counts its tokens in the next
    # one; only frames coalesced in the client's queue can drop them.
    if client.frames_coalesced:
        assert 0 < counted <= len(tokens)
    else:
        assert counted == len(tokens)
    assert PROMPT not in "".join(client.raw), "the prompt never goes over the WebSocket"
    return tokens


def certainties(client: Recorder) -> set[float]:
    """Certainty of each frame with tokens, read back from energyDistribution.

    On such a frame a token just arrived, so the flow term f is 1, and
    attention / reasoning = 0.3 c / 0.2 f (WF-FND-002): c = 2/3 * a / r.
    """
    values = set()
    for m in client.of("energy_update"):
        payload = m["payload"]
        split = payload.get("energyDistribution") or {}
        if payload["tokensGenerated"] and split.get("reasoning"):
            values.add(round(2 / 3 * split["attention"] / split["reasoning"], 3))
    return values


# ---------------------------------------------------------------------------
# The embedded model


@pytest.fixture(scope="module")
def embedded() -> Iterator[ServerProcess]:
    with ServerProcess(env={"WF_SOURCE": "embedded", "WF_MAX_TOKENS": "48"}) as server:
        yield server


async def test_embedded_model_answers_a_prompt(embedded: ServerProcess) -> None:
    first, second, session_id = await answer(embedded)
    model_id = "SmolLM2-135M-Instruct"
    check_answer(first, second, session_id, model_id)
    assert first.of("startup_complete")[0]["payload"]["model"] == model_id
    values = certainties(first)
    assert len(values) >= 3 and all(0 <= c <= 1.0005 for c in values), f"certainty from the real top-K: {values}"
    assert max(m["payload"]["totalEnergy"] for m in first.of("energy_update")) > 0.1
    assert PROMPT not in embedded.log_text(), "the prompt is never logged"


async def test_embedded_council_runs_two_models_concurrently(embedded: ServerProcess) -> None:
    first, second, session_id = await answer(embedded, council=True)
    critic = "SmolLM2-135M-Instruct-critic"
    by_model = {m["payload"]["modelId"] for m in first.streams(session_id)}
    assert by_model == {"SmolLM2-135M-Instruct", critic}
    interference = first.of("interference_event")
    assert interference, "two real models answering give interference events"
    assert {tuple(m["payload"]["models"]) for m in interference} <= {("SmolLM2-135M-Instruct", critic)}
    assert len({m["payload"]["coherenceScore"] for m in interference}) > 1 or len(interference) == 1


@pytest.fixture
def embedded_long() -> Iterator[ServerProcess]:
    """The embedded model with room for a long answer: a cancel must find it still running on a busy machine."""
    with ServerProcess(env={"WF_SOURCE": "embedded", "WF_MAX_TOKENS": "256"}) as server:
        yield server


async def test_cancel_stops_tokens_within_a_frame(embedded_long: ServerProcess) -> None:
    embedded = embedded_long
    async with Recorder(embedded.ws_url) as client:
        prompt = "Write a long story about a lighthouse keeper, in at least five paragraphs."
        response = post(embedded, "/api/prompt", {"prompt": prompt})
        session_id = response.json()["sessionId"]
        # Cancel at the first token: the model writes about 80 tokens/s, a short answer could end first.
        await client.wait(lambda: any(m["payload"]["tokens"] for m in client.streams(session_id)), 30)
        cancelled = post(embedded, f"/api/prompt/{session_id}/cancel")
        answered_ms = time.time() * 1000  # same machine, same wall clock as the messages' timestamps
        assert cancelled.status_code == 200 and cancelled.json() == {"sessionId": session_id, "cancelled": True}
        await client.wait(lambda: client.complete(session_id), 5)
        await asyncio.sleep(0.5)
        # When the server published them (their timestamp), not when this
        # client read them: the sync POST above held this loop meanwhile.
        late = [
            m["timestamp"] - answered_ms
            for m in client.streams(session_id)
            if m["payload"]["tokens"] and m["timestamp"] > answered_ms
        ]
        assert all(ms <= scaled(FRAME) * 1000 for ms in late), f"tokens published {late} ms after the cancel answer"
        assert [m["payload"]["isComplete"] for m in client.streams(session_id)].count(True) == 1
    assert post(embedded, f"/api/prompt/{session_id}/cancel").status_code == 404


def _worker_pids(server: ServerProcess) -> list[int]:
    assert server.process is not None
    pid = server.process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(p) for p in children.read().split()]


async def test_a_worker_dying_mid_stream_gives_one_error_and_frames_go_on(
    embedded: ServerProcess, frame_watcher: Any
) -> None:
    async with Recorder(embedded.ws_url) as client, frame_watcher(embedded.ws_url, server=embedded) as watcher:
        session_id = post(embedded, "/api/prompt", {"prompt": "Describe the ocean at length."}).json()["sessionId"]
        await client.wait(lambda: any(m["payload"]["tokens"] for m in client.streams(session_id)), 30)
        for pid in _worker_pids(embedded):
            os.kill(pid, signal.SIGKILL)
        killed = watcher.mark()
        await client.wait(lambda: client.complete(session_id), 10)
        await asyncio.sleep(scaled(1.5))
        assert_frames_go_on(watcher, killed, time.monotonic())
        errors = client.of("error_event")
        assert len(errors) == 1, errors
        payload = errors[0]["payload"]
        assert payload["component"] == "model" and payload["code"] == "MODEL_STREAM_CUT"
        assert payload["details"]["source"] == "embedded" and payload["details"]["sessionId"] == session_id
    # The next prompt starts a new worker.
    first, second, again = await answer(embedded, "Say hello.")
    check_answer(first, second, again, "SmolLM2-135M-Instruct")


# ---------------------------------------------------------------------------
# The OpenAI-compatible adapter against llama-cpp-python's real server


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """``python -m llama_cpp.server`` serving the embedded GGUF on a free loopback port; yields its /v1 URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(embedded_model_path()),
        "--model_alias",
        "smollm2",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--n_threads",
        "1",
        "--logits_all",
        "true",
        "--verbose",
        "false",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{LOOPBACK}:{port}/v1"
    try:
        deadline = time.monotonic() + scaled(60)
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=1):
                    break
            except OSError:
                assert process.poll() is None, "llama_cpp.server exited"
                assert time.monotonic() < deadline, "llama_cpp.server did not start"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


async def test_openai_adapter_with_llama_cpp_server(llama_server: str) -> None:
    env = {"WF_SOURCE": "openai", "WF_OPENAI_URL": llama_server, "WF_OPENAI_MODEL": "smollm2", "WF_MAX_TOKENS": "40"}
    with ServerProcess(env=env) as server:
        first, second, session_id = await answer(server)
        check_answer(first, second, session_id, "smollm2")
        assert len(certainties(first)) >= 3


# ---------------------------------------------------------------------------
# The Ollama adapter against the fake server, and the prompt API


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="module")
def ollama(fake_ollama: FakeOllama) -> Iterator[ServerProcess]:
    env = {
        "WF_SOURCE": "ollama",
        "WF_OLLAMA_URL": fake_ollama.url,
        "WF_OLLAMA_MODEL": "tiny",
        "WF_COUNCIL_WITH": "ollama/critic",
    }
    with ServerProcess(env=env) as server:
        yield server


async def test_ollama_answers_a_prompt(ollama: ServerProcess) -> None:
    first, second, session_id = await answer(ollama)
    assert check_answer(first, second, session_id, "tiny") == TOKENS
    assert len(certainties(first)) >= 3


@pytest.mark.parametrize(
    ("model", "url", "code"),
    [
        ("missing", None, "MODEL_NOT_FOUND"),
        ("cut", None, "MODEL_STREAM_CUT"),
        ("fails", None, "MODEL_FAILED"),
        ("empty", None, "MODEL_FAILED"),
        ("tiny", "not-running", "MODEL_UNAVAILABLE"),
    ],
)
async def test_ollama_failures_give_one_error_event_and_frames_go_on(
    fake_ollama: FakeOllama, frame_watcher: Any, model: str, url: str | None, code: str
) -> None:
    base = f"http://{LOOPBACK}:{free_port()}" if url else fake_ollama.url
    env = {"WF_SOURCE": "ollama", "WF_OLLAMA_URL": base, "WF_OLLAMA_MODEL": model}
    with ServerProcess(env=env) as server:
        async with Recorder(server.ws_url) as client, frame_watcher(server.ws_url, server=server) as watcher:
            await asyncio.sleep(0.5)  # past the server's start-up
            start = watcher.mark()
            session_id = post(server, "/api/prompt", {"prompt": PROMPT}).json()["sessionId"]
            await client.wait(lambda: client.complete(session_id), 10)
            await asyncio.sleep(scaled(1.0))
            assert_frames_go_on(watcher, start, time.monotonic())
            errors = client.of("error_event")
            assert len(errors) == 1, errors
            payload = errors[0]["payload"]
            assert (payload["component"], payload["code"], payload["details"]["source"]) == ("model", code, "ollama")
            assert PROMPT not in json.dumps(payload)
            assert [m["payload"]["isComplete"] for m in client.streams(session_id)].count(True) == 1
            tokens = [t for m in client.streams(session_id) for t in m["payload"]["tokens"]]
            assert tokens == TOKENS[: len(tokens)] and len(tokens) == (3 if model in ("cut", "fails") else 0)
            # energy decays as for silence after the failure
            levels = [m["payload"]["totalEnergy"] for m in client.of("energy_update")][-30:]
            assert levels == sorted(levels, reverse=True)
        assert PROMPT not in server.log_text()


async def test_a_second_prompt_gets_409_and_cancel_answers(ollama: ServerProcess) -> None:
    first = post(ollama, "/api/prompt", {"prompt": PROMPT})
    assert first.status_code == 202
    session_id = first.json()["sessionId"]
    second = post(ollama, "/api/prompt", {"prompt": PROMPT})
    assert second.status_code == 409 and second.json()["sessionId"] == session_id
    assert post(ollama, "/api/prompt/unknown/cancel").status_code == 404
    assert post(ollama, f"/api/prompt/{session_id}/cancel").status_code == 200
    third = post(ollama, "/api/prompt", {"prompt": PROMPT})
    assert third.status_code == 202, "cancel frees the model at once"
    models = httpx.get(ollama.http_url + "/api/models", trust_env=False).json()
    assert models == {
        "source": "ollama",
        "models": ["tiny", "tiny-critic"],
        "running": third.json()["sessionId"],
        "prompts": True,
    }
    assert post(ollama, f"/api/prompt/{third.json()['sessionId']}/cancel").status_code == 200


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        ({"prompt": ""}, {}, 422, "empty"),
        ({"prompt": "   \n"}, {}, 422, "empty"),
        ({"prompt": "x" * (8 * 1024 + 1)}, {}, 413, "longer than"),
        ({"prompt": "é" * 4097}, {}, 413, "longer than"),
        ({"prompt": 42}, {}, 422, "string"),
        ({"text": "hi"}, {}, 422, "unknown fields"),
        ({"prompt": "hi", "council": "yes"}, {}, 422, "council"),
        ({"prompt": "hi", "model": "nope"}, {}, 422, "unknown model"),
        (["hi"], {}, 422, "JSON object"),
        (b"{not json", {"Content-Type": "application/json"}, 400, "not JSON"),
        (b'{"prompt": "hi"}', {"Content-Type": "text/plain"}, 415, "application/json"),
        (b"x" * 60_000, {"Content-Type": "application/json"}, 413, "larger than"),
    ],
)
def test_bad_prompts_get_a_clear_4xx(
    ollama: ServerProcess, body: Any, headers: dict[str, str], status: int, says: str
) -> None:
    if isinstance(body, bytes):
        response = httpx.post(ollama.http_url + "/api/prompt", content=body, headers=headers, trust_env=False)
    else:
        response = post(ollama, "/api/prompt", body, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


def test_a_foreign_page_cannot_send_prompts(ollama: ServerProcess) -> None:
    response = post(ollama, "/api/prompt", {"prompt": "hi"}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    assert post(ollama, "/api/prompt", {"prompt": "hi"}, headers={"Host": "evil.example"}).status_code == 403


def test_the_simulator_takes_no_prompts() -> None:
    with ServerProcess(env={"WF_SOURCE": "sim"}) as server:
        response = post(server, "/api/prompt", {"prompt": "hi"})
        assert response.status_code == 503 and "simulator" in response.json()["error"]
        assert httpx.get(server.http_url + "/api/models", trust_env=False).json()["prompts"] is False
