"""A small fake Ollama server: ``POST /api/chat`` streaming as Ollama's API documentation describes it.

Ollama cannot be installed here, so the Ollama adapter is tested against
this. It answers like Ollama does:

- a stream of JSON objects, one per line (``application/x-ndjson``), each
  ``{"model", "created_at", "message": {"role": "assistant", "content"},
  "done": false}``, with ``"logprobs": [{"token", "logprob", "top_logprobs":
  [{"token", "logprob"}, ...]}]`` when the request asked ``"logprobs": true``;
  the last one ``"done": true`` with ``done_reason`` and the counters;
- ``404 {"error": "model \\"NAME\\" not found, try pulling it first"}`` for a
  model it does not have;
- ``{"error": "..."}`` as a line of the stream when it fails mid-way.

The model name picks the behaviour: ``tiny`` answers normally (``TOKENS``),
``cut`` closes the connection after three tokens, ``fails`` sends an error
line after three tokens, ``slow`` goes silent after two tokens, ``plain``
answers like ``tiny`` but never sends logprobs (an Ollama without them). Every
request body is recorded in ``requests`` (to check what the adapter sent).

Runs under uvicorn in a thread: ``with FakeOllama() as fake: fake.url``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.server_process import LOOPBACK, free_port

TOKENS = ["The", " sea", " is", " wide", ",", " deep", " and", " blue", ".", " Waves", " rise", " and", " fall", "."]
MODELS = ("tiny", "cut", "fails", "slow", "plain")
TOKEN_INTERVAL_S = 0.03


class StreamCut(Exception):
    """Raised inside the response body: uvicorn drops the connection mid-stream."""


def _chunk(model: str, content: str, index: int, logprobs: bool, top_k: int) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "model": model,
        "created_at": datetime.now(UTC).isoformat(),
        "message": {"role": "assistant", "content": content},
        "done": False,
    }
    if logprobs:
        # A distribution that changes from token to token: certainty is not constant.
        sharpness = 0.4 + (index % 5) * 0.6
        weights = [math.exp(-sharpness * rank) for rank in range(top_k)]
        total = sum(weights)
        top = [
            {"token": content if rank == 0 else f"alt{rank}", "logprob": math.log(w / total)}
            for rank, w in enumerate(weights)
        ]
        chunk["logprobs"] = [{"token": content, "logprob": top[0]["logprob"], "top_logprobs": top}]
    return chunk


async def chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    request.app.state.requests.append(body)
    model = body.get("model", "")
    if model not in MODELS:
        return JSONResponse({"error": f'model "{model}" not found, try pulling it first'}, status_code=404)
    logprobs = bool(body.get("logprobs")) and model != "plain"
    top_k = int(body.get("top_logprobs") or 5)

    async def lines() -> AsyncIterator[bytes]:
        for index, token in enumerate(TOKENS):
            if model == "cut" and index == 3:
                raise StreamCut("the fake server drops the connection")
            if model == "fails" and index == 3:
                yield orjson.dumps({"error": "an unexpected error occurred"}) + b"\n"
                return
            if model == "slow" and index == 2:
                await asyncio.sleep(30)
            yield orjson.dumps(_chunk(model, token, index, logprobs, top_k)) + b"\n"
            await asyncio.sleep(TOKEN_INTERVAL_S)
        yield (
            orjson.dumps(
                {
                    "model": model,
                    "created_at": datetime.now(UTC).isoformat(),
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "stop",
                    "total_duration": 1,
                    "load_duration": 1,
                    "prompt_eval_count": 1,
                    "prompt_eval_duration": 1,
                    "eval_count": len(TOKENS),
                    "eval_duration": 1,
                }
            )
            + b"\n"
        )

    return StreamingResponse(lines(), media_type="application/x-ndjson")


class FakeOllama:
    """The fake server on a free loopback port, in a thread of this process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])
        self.app.state.requests = []
        config = uvicorn.Config(self.app, host=LOOPBACK, port=self.port, log_level="critical", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fake-ollama", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.app.state.requests

    def __enter__(self) -> FakeOllama:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "the fake Ollama server did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)
