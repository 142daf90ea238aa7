"""The prompt flow over HTTP: start a generation, cancel it, list the models.

- ``GET  /api/models``: the source, its modelIds, the running sessionId.
- ``POST /api/prompt``: ``{"prompt": str, "council"?: bool, "model"?: modelId}``
  starts a generation and answers at once ``202 {"sessionId", "models"}``;
  its tokens reach WebSocket clients as ``token_stream`` with that sessionId.
  One generation at a time: while one runs, another prompt gets ``409``
  with the running sessionId (a queue would hide from the user that the
  model is busy; the page disables Send instead).
  A prompt accepted while a replay plays stops the replay (its replayed
  answer gets its ``isComplete`` in the next frame).
- ``POST /api/prompt/{sessionId}/cancel``: stops it (``200``); ``404`` when
  no generation with that id is running.

The Origin/Host guard (security.py) refuses these POSTs from foreign pages
before they get here. The prompt goes to the model only: it is never logged,
never echoed in an answer and never sent over the WebSocket.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..sources.live import Busy, LiveSource

MAX_PROMPT_BYTES = 8 * 1024
MAX_BODY_BYTES = 16 * 1024  # the prompt JSON-escaped, plus the other fields
FIELDS = frozenset({"prompt", "council", "model"})

router = APIRouter(prefix="/api")


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


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
        return _error(415, "send the prompt as application/json")
    body = await _read_body(request)
    if body is None:
        return _error(413, f"the request is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "the body is not JSON")
    if not isinstance(data, dict):
        return _error(422, 'send a JSON object: {"prompt": "..."}')
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        return _error(422, "unknown fields", fields=unknown, accepted=sorted(FIELDS))
    prompt, council, model = data.get("prompt"), data.get("council", False), data.get("model")
    if not isinstance(prompt, str):
        return _error(422, "prompt must be a string")
    if not prompt.strip():
        return _error(422, "prompt is empty")
    if len(prompt.encode("utf-8", "surrogatepass")) > MAX_PROMPT_BYTES:
        return _error(413, f"prompt is longer than {MAX_PROMPT_BYTES} bytes")
    if not isinstance(council, bool):
        return _error(422, "council must be true or false")
    if model is not None and not isinstance(model, str):
        return _error(422, "model must be a modelId string")
    try:
        session_id, model_ids = live.start(prompt, council=council, model=model)
    except Busy as busy:
        return _error(409, "a generation is running; cancel it or wait for its isComplete", sessionId=busy.session_id)
    except KeyError:
        return _error(422, "unknown model", accepted=live.model_ids)
    request.app.state.server.replayer.stop()  # a prompt ends a replay: the answer is what the user now watches
    return JSONResponse({"sessionId": session_id, "models": model_ids}, status_code=202)


@router.post("/prompt/{session_id}/cancel")
async def cancel_prompt(request: Request, session_id: str) -> JSONResponse:
    live = _live(request)
    if live is None or not live.cancel(session_id):
        return _error(404, "no running generation with this sessionId")
    return JSONResponse({"sessionId": session_id, "cancelled": True})
