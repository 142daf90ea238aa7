"""The embedded model's worker process and the prompt API's limits.

Two layers:

- the backend's process handling against a fake worker
  (``tests/fake_llama_worker.py``, the real protocol without a model): a
  silent worker is killed and replaced, a cancel the worker does not
  confirm replaces it, a worker whose memory grew is recycled between
  prompts, an empty answer says why;
- the real embedded SmolLM2 behind a real server: a stopped (SIGSTOP)
  worker is replaced before the next prompt, prompts at the 8 KiB limit are
  answered or refused with a clear 4xx (never MODEL_FAILED), a prompt
  after a cancelled long one starts at once, and the worker's memory after
  an 8 KiB prompt stays bounded.

Timing bounds are scaled (tests/timing.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_models import Recorder, post
from tests.server_process import ServerProcess
from tests.timing import scaled
from wirthforge_ws.protocol.codes import ErrorCode
from wirthforge_ws.sources.backends.adapters import EmbeddedBackend, Piece, SourceError

SENTENCE = "The keeper climbed the stairs of the lighthouse every evening and lit the lamp for the ships. "
LONG_ENGLISH = (SENTENCE * 100)[: 8 * 1024]  # 8 KiB of UTF-8, about 1,600 tokens
# Another one: the worker keeps the last prompt in its KV cache, so a repeat would need no evaluation.
OTHER_LONG_ENGLISH = ("Ships passed the rocks at night while the keeper wrote his log by the lamp. " * 120)[: 8 * 1024]


class FakeWorkerBackend(EmbeddedBackend):
    """The embedded backend running ``tests/fake_llama_worker.py`` instead of llama.cpp."""

    worker_module = "tests.fake_llama_worker"


def fake(behaviour: str, **options: Any) -> FakeWorkerBackend:
    return FakeWorkerBackend(Path(f"{behaviour}.gguf"), sched="other", nice=0, **options)


async def collect(backend: EmbeddedBackend, prompt: str = "hello there") -> list[Piece]:
    return [piece async for piece in backend.generate(prompt, max_tokens=16, top_k=2)]


# ---------------------------------------------------------------------------
# The backend against a fake worker


async def test_a_silent_worker_is_killed_and_replaced_before_the_next_prompt() -> None:
    backend = fake("answers", timeout=scaled(0.5))
    await backend.start()
    try:
        assert len(await collect(backend)) == 5
        stopped = backend.pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        began = time.monotonic()
        with pytest.raises(SourceError) as failed:
            await collect(backend)
        assert failed.value.code == ErrorCode.MODEL_TIMEOUT and "restarted" in failed.value.message
        assert time.monotonic() - began < scaled(0.5) + scaled(2)
        assert backend.pid not in (None, stopped), "a new worker is loading"
        assert not Path(f"/proc/{stopped}").exists() or "zombie" in Path(f"/proc/{stopped}/status").read_text()
        assert len(await collect(backend)) == 5, "the next prompt goes to the new worker"
    finally:
        await backend.stop()


async def test_a_worker_hung_between_prompts_is_replaced_by_the_next_measure() -> None:
    backend = fake("answers", timeout=scaled(0.5))
    await backend.start()
    try:
        assert (await backend.measure("two words", 16)).tokens == 12
        stopped = backend.pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        with pytest.raises(SourceError) as failed:
            await backend.measure("two words", 16)
        assert failed.value.code == ErrorCode.MODEL_TIMEOUT
        assert backend.pid not in (None, stopped)
        assert (await backend.measure("two words", 16)).tokens == 12
    finally:
        await backend.stop()


async def test_a_cancel_the_worker_does_not_confirm_replaces_it() -> None:
    backend = fake("deaf", timeout=scaled(5))
    await backend.start()
    try:
        first = backend.pid
        task = asyncio.create_task(collect(backend))
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        began = time.monotonic()
        size = await backend.measure("three words here", 16)
        assert time.monotonic() - began < scaled(1.0) + scaled(2), "the grace is short"
        assert size.tokens == 13 and size.fits
        assert backend.pid not in (None, first) and backend.replacements == 1
    finally:
        await backend.stop()


async def test_a_worker_whose_memory_grew_is_recycled_between_prompts() -> None:
    backend = fake("grows", rss_headroom_mb=256)
    await backend.start()
    try:
        first = backend.pid
        assert len(await collect(backend)) == 5, "the answer itself is complete"
        assert backend.pid not in (None, first) and backend.replacements == 1
        assert len(await collect(backend)) == 5
    finally:
        await backend.stop()


async def test_an_empty_answer_ends_with_a_reason() -> None:
    backend = fake("empty")
    await backend.start()
    try:
        with pytest.raises(SourceError) as failed:
            await collect(backend)
        assert failed.value.code == ErrorCode.MODEL_FAILED
        assert "without a token" in failed.value.message and "stop" in failed.value.message
    finally:
        await backend.stop()


async def test_measure_says_what_the_model_takes() -> None:
    backend = fake("answers", context=300)
    await backend.start()
    try:
        size = await backend.measure("word " * 40, max_tokens=256)
        assert (size.tokens, size.limit, size.context, size.fits) == (50, 44, 300, False)
    finally:
        await backend.stop()


# ---------------------------------------------------------------------------
# The real embedded model behind a real server

TIMEOUT = scaled(6)  # the server's --source-timeout: short, so a hung worker shows quickly


@pytest.fixture(scope="module")
def worker_server() -> Iterator[ServerProcess]:
    """The embedded model, scheduled normally (a shared machine must not starve it past the short timeout)."""
    env = {
        "WF_SOURCE": "embedded",
        "WF_MAX_TOKENS": "8",
        "WF_SOURCE_TIMEOUT": str(TIMEOUT),
        "WF_MODEL_SCHED": "other",
        "WF_MODEL_NICE": "0",
    }
    with ServerProcess(env=env) as server:
        yield server


async def idle(server: ServerProcess) -> None:
    """Wait until no answer runs (a test that failed may leave one running for the next)."""
    deadline = time.monotonic() + scaled(60)
    while httpx.get(server.http_url + "/api/models", trust_env=False).json()["running"] is not None:
        assert time.monotonic() < deadline, "an answer is still running"
        await asyncio.sleep(0.2)


def worker_pids(server: ServerProcess) -> list[int]:
    assert server.process is not None
    pid = server.process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(p) for p in children.read().split()]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def model_errors(client: Recorder) -> list[dict[str, Any]]:
    """The error_events of the model (a busy machine may add FRAME_OVERRUN warnings, which are not the model's)."""
    return [m["payload"] for m in client.of("error_event") if m["payload"]["component"] == "model"]


def first_token_after(client: Recorder, session_id: str) -> float | None:
    """Arrival time of the first token of *session_id*, if any yet."""
    for arrived, message in client.messages:
        if message["type"] == "token_stream" and message["payload"]["sessionId"] == session_id:
            if message["payload"]["tokens"]:
                return arrived
    return None


async def prompt_and_first_token(server: ServerProcess, client: Recorder, prompt: str) -> float:
    """Seconds from sending *prompt* to its first token on *client*."""
    began = time.monotonic()
    response = await asyncio.to_thread(post, server, "/api/prompt", {"prompt": prompt})
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    await client.wait(lambda: first_token_after(client, session_id) is not None or client.complete(session_id), 30)
    arrived = first_token_after(client, session_id)
    assert arrived is not None, f"no token: {model_errors(client)}"
    await client.wait(lambda: client.complete(session_id), 30)
    return arrived - began


async def test_a_stopped_worker_is_replaced_before_the_next_prompt(worker_server: ServerProcess) -> None:
    await idle(worker_server)
    async with Recorder(worker_server.ws_url) as client:
        response = post(worker_server, "/api/prompt", {"prompt": "Count from one to twenty in words."})
        session_id = response.json()["sessionId"]
        await client.wait(lambda: first_token_after(client, session_id) is not None, 30)
        (stopped,) = worker_pids(worker_server)
        os.kill(stopped, signal.SIGSTOP)
        try:
            await client.wait(lambda: client.complete(session_id), 6 + 10)
            errors = model_errors(client)
            assert [e["code"] for e in errors] == ["MODEL_TIMEOUT"], errors
            seconds = await prompt_and_first_token(worker_server, client, "Say hello.")
            assert seconds < scaled(6), f"first token {seconds:.1f} s after the prompt"
            assert stopped not in worker_pids(worker_server)
        finally:
            if Path(f"/proc/{stopped}").exists():
                os.kill(stopped, signal.SIGKILL)


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param("0123456789" * 819, id="digits"),
        pytest.param("7 " * 4000, id="sevens"),
        pytest.param("中" * 2730, id="cjk-escaped"),
        pytest.param(LONG_ENGLISH, id="english"),
    ],
)
async def test_an_8_kib_prompt_is_answered_or_refused_with_a_clear_4xx(
    worker_server: ServerProcess, prompt: str
) -> None:
    assert len(prompt.encode()) <= 8 * 1024
    await idle(worker_server)
    async with Recorder(worker_server.ws_url) as client:
        body = json.dumps({"prompt": prompt})  # ASCII-escaped, as json.dumps does by default
        response = httpx.post(
            worker_server.http_url + "/api/prompt",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=scaled(30),
            trust_env=False,
        )
        if response.status_code != 202:
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert re.fullmatch(r"prompt is \d+ tokens, the model takes \d+", error), error
            assert response.json()["tokens"] > response.json()["limit"]
            assert "refused prompt (422)" in worker_server.log_text(), "a refusal is logged, with our reason"
            assert prompt[:40] not in worker_server.log_text(), "the prompt is never logged"
            return
        session_id = response.json()["sessionId"]
        await client.wait(lambda: client.complete(session_id) or bool(model_errors(client)), 120)
        assert model_errors(client) == [], "accepted means answered"
        assert any(m["payload"]["tokens"] for m in client.streams(session_id))
    (pid,) = worker_pids(worker_server)
    assert rss_mb(pid) < 450, f"the worker holds {rss_mb(pid):.0f} MB after an 8 KiB prompt"


async def test_a_prompt_after_a_cancelled_long_one_starts_at_once(worker_server: ServerProcess) -> None:
    await idle(worker_server)
    async with Recorder(worker_server.ws_url) as client:
        long = post(worker_server, "/api/prompt", {"prompt": OTHER_LONG_ENGLISH})
        assert long.status_code == 202, long.text
        await asyncio.sleep(0.5)  # evaluating the prompt: no token yet
        assert post(worker_server, f"/api/prompt/{long.json()['sessionId']}/cancel").status_code == 200
        seconds = await prompt_and_first_token(worker_server, client, "Say hello.")
        assert seconds < scaled(2), f"first token {seconds:.1f} s after the prompt"
        assert model_errors(client) == []
