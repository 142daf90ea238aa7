"""The prompt flow over HTTP: start a generation, cancel it, list the models.

- ``GET  /api/models``: the source, its modelIds, the running sessionId.
- ``POST /api/prompt``: ``{"prompt": str, "council"?: bool, "model"?: modelId}``
  starts a generation and answers at once ``202 {"sessionId", "models"}``;
  its tokens reach WebSocket clients as ``token_stream`` with that sessionId.
  One generation at a time: while one runs, another prompt gets ``409``
  with the running sessionId (a queue would hide from the user that the
  model is busy; the page disables Send instead). A council prompt that
  would ask more models than the tier's council limit gets ``422`` naming
  the tier and the limit. A prompt accepted while a replay plays stops the
  replay (each replayed answer still open gets its ``isComplete`` in the
  next frame).
- ``POST /api/prompt/{sessionId}/cancel``: stops it (``200``); ``404`` when
  no generation with that id is running.

Limits, checked before a prompt is accepted (docs/SECURITY.md, "Prompt API
and model worker"):

- the prompt is at most :data:`MAX_PROMPT_BYTES` bytes of UTF-8, counted on
  the decoded string: how the client escaped it in JSON does not matter
  (``\\u4e2d`` is the 3 bytes of one character). The body may be up to
  :data:`MAX_BODY_BYTES`, room for any such prompt fully escaped;
- the prompt fits each answering model: measured with that model's own
  tokenizer and chat template (in the embedded worker, off the event loop),
  it must leave room for a full answer (``max_tokens``). Otherwise ``422``
  ``"prompt is N tokens, the model takes M"``, so a long prompt is never
  accepted only to fail later. HTTP sources cannot tell, and refuse an
  over-long prompt themselves (an ``error_event``).

Each refusal is logged (rate-limited, our reason only, never the prompt).

The Origin/Host guard (security.py) refuses these POSTs from foreign pages
before they get here. The prompt goes to the model only: it is never logged,
never echoed in an answer and never sent over the WebSocket.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..connection.security import refusals
from ..sources.backends.adapters import ModelBackend, SourceError
from ..sources.live import Busy, LiveSource

MAX_PROMPT_BYTES = 8 * 1024
# JSON escaping grows a prompt at most sixfold (a control character, one byte of
# UTF-8, becomes the 6 bytes of \u0001; a CJK character's 3 bytes become 6),
# plus room for the other fields and whitespace.
MAX_BODY_BYTES = 6 * MAX_PROMPT_BYTES + 1024
FIELDS = frozenset({"prompt", "council", "model"})

router = APIRouter(prefix="/api")


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _refuse(status: int, message: str, **extra: Any) -> JSONResponse:
    """A refused prompt: the answer, and a rate-limited log line with our reason (never the prompt)."""
    refusals.refused("prompt", f"prompt ({status}): {message}")
    return _error(status, message, **extra)


def _answering(live: LiveSource, council: bool, model: str | None) -> list[ModelBackend]:
    """The backends that would answer, as LiveSource.start picks them; KeyError for an unknown model."""
    if model is not None:
        chosen = [backend for backend in live.backends if backend.model_id == model]
        if not chosen:
            raise KeyError(model)
        return chosen + ([b for b in live.backends if b is not chosen[0]] if council else [])
    return live.backends if council else live.backends[:1]


async def _too_long(live: LiveSource, prompt: str, backends: list[ModelBackend]) -> JSONResponse | None:
    """A 422 if *prompt* does not fit one of *backends*, a 503 if one cannot measure it; None if it fits."""
    for backend in backends:
        try:
            size = await backend.measure(prompt, live.max_tokens)
        except SourceError as error:
            return _refuse(503, f"model {backend.model_id} could not measure the prompt: {error.message}")
        if size is not None and not size.fits:
            return _refuse(
                422,
                f"prompt is {size.tokens} tokens, the model takes {size.limit}",
                tokens=size.tokens,
                limit=size.limit,
                context=size.context,
                maxTokens=live.max_tokens,
                modelId=backend.model_id,
            )
    return None


def _live(request: Request) -> LiveSource | None:
    source = request.app.state.server.source
    return source if isinstance(source, LiveSource) else None


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it grows past MAX_BODY_BYTES (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


@router.get("/models")
async def models(request: Request) -> JSONResponse:
    live = _live(request)
    settings = request.app.state.server.settings
    if live is None:
        return JSONResponse({"source": settings.source, "models": [], "running": None, "prompts": False})
    return JSONResponse({"source": settings.source, "models": live.model_ids, "running": live.running, "prompts": True})


@router.post("/prompt")
async def start_prompt(request: Request) -> JSONResponse:
    live = _live(request)
    if live is None:
        return _error(503, "this server runs the simulator (source sim), which takes no prompts")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return _refuse(415, "send the prompt as application/json")
    body = await _read_body(request)
    if body is None:
        return _refuse(
            413,
            f"the request is larger than {MAX_BODY_BYTES} bytes (a prompt of at most {MAX_PROMPT_BYTES} bytes "
            "of UTF-8 fits however it is escaped)",
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _refuse(400, "the body is not JSON")
    if not isinstance(data, dict):
        return _refuse(422, 'send a JSON object: {"prompt": "..."}')
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        return _refuse(422, "unknown fields", fields=unknown, accepted=sorted(FIELDS))
    prompt, council, model = data.get("prompt"), data.get("council", False), data.get("model")
    if not isinstance(prompt, str):
        return _refuse(422, "prompt must be a string")
    if not prompt.strip():
        return _refuse(422, "prompt is empty")
    size = len(prompt.encode("utf-8", "surrogatepass"))
    if size > MAX_PROMPT_BYTES:
        return _refuse(413, f"prompt is {size} bytes of UTF-8, longer than {MAX_PROMPT_BYTES} bytes")
    if not isinstance(council, bool):
        return _refuse(422, "council must be true or false")
    if model is not None and not isinstance(model, str):
        return _refuse(422, "model must be a modelId string")
    if council and (refused := _over_council_limit(request, live)) is not None:
        return refused
    if live.running is not None:  # before measuring: a measure would queue behind the running answer
        return _error(409, "a generation is running; cancel it or wait for its isComplete", sessionId=live.running)
    try:
        backends = _answering(live, council, model)
    except KeyError:
        return _refuse(422, "unknown model", accepted=live.model_ids)
    refused = await _too_long(live, prompt, backends)
    if refused is not None:
        return refused
    try:
        session_id, model_ids = live.start(prompt, council=council, model=model)
    except Busy as busy:
        return _error(409, "a generation is running; cancel it or wait for its isComplete", sessionId=busy.session_id)
    except KeyError:
        return _error(422, "unknown model", accepted=live.model_ids)
    request.app.state.server.replayer.stop()  # a prompt ends a replay: the answer is what the user now watches
    return JSONResponse({"sessionId": session_id, "models": model_ids}, status_code=202)


def _over_council_limit(request: Request, live: LiveSource) -> JSONResponse | None:
    """422 naming the tier and its limit when a council would ask more models than the tier allows."""
    tier = request.app.state.server.tier
    asked = len(live.model_ids)
    if asked <= tier.council_limit:
        return None
    return _error(
        422,
        f"a council of {asked} models is beyond the council limit of {tier.tier} ({tier.council_limit}); "
        "send the prompt without council, or start the server with a higher --tier",
        tier=tier.tier,
        councilLimit=tier.council_limit,
        models=asked,
    )


@router.post("/prompt/{session_id}/cancel")
async def cancel_prompt(request: Request, session_id: str) -> JSONResponse:
    live = _live(request)
    if live is None or not live.cancel(session_id):
        return _error(404, "no running generation with this sessionId")
    return JSONResponse({"sessionId": session_id, "cancelled": True})
