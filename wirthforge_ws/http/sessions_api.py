"""HTTP routes for recorded sessions: list, export as NDJSON, replay.

- ``GET /api/sessions``: the recorded generations, newest first (an empty
  list with ``"recording": false`` when persistence is off or unavailable).
- ``GET /api/sessions/{id}/events``: one recording as NDJSON (one protocol
  1.1 message per line), streamed page by page from the database. Instead
  of an id, ``range`` with ``?from=&to=`` (epoch ms) exports a time range.
- ``POST /api/replay`` ``{"session": id, "speed": 2}`` (or ``{"from": ms,
  "to": ms}``): plays it back through the live pipeline (``202``); one
  replay at a time (``409`` while one plays or starts), starts
  rate-limited (``429`` with ``Retry-After``; see sources/replay.py);
  ``POST /api/replay/stop`` ends it early (``{"stopped": true, "wasPlaying":
  bool}``; never limited: it only frees); ``GET /api/replay`` tells what plays.

Every database read runs in a worker thread. The Origin/Host guard in front
of the app covers these routes like the others (POSTs need an allowed
Origin or none).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..protocol import messages
from ..sources.replay import MAX_SPEED, PAGE_ROWS, ReplayBusy, Replayer, ReplayRateLimited, ReplaySource
from ..storage.event_log import EventLog, Recording, StoredMessage

router = APIRouter(prefix="/api")


def _log(request: Request) -> EventLog | None:
    log: EventLog | None = request.app.state.server.event_log
    return log if log is not None and log.available else None


def _unavailable() -> JSONResponse:
    return JSONResponse({"error": "event persistence is off or unavailable; see /health"}, status_code=503)


@router.get("/sessions")
async def list_sessions(request: Request, limit: int = 100, before: float | None = None) -> Response:
    log = _log(request)
    if log is None:  # not an error for a page that lists what there is: there is nothing
        return JSONResponse({"sessions": [], "recording": False})
    recordings = await asyncio.to_thread(log.recordings, max(1, min(limit, 1000)), before)
    return JSONResponse({"sessions": [r.as_json() for r in recordings], "recording": True})


async def _selection(
    log: EventLog, key: str, start: float | None, end: float | None
) -> tuple[Recording | None, tuple[float, float] | None] | None:
    """A recording by id, or a time range; None when neither exists."""
    if key == "range":
        if start is None or end is None or end < start:
            return None
        return None, (start, end)
    if not key.isdigit():
        return None
    recording = await asyncio.to_thread(log.recording, int(key))
    return None if recording is None else (recording, None)


def _reader(
    log: EventLog, recording: Recording | None, span: tuple[float, float] | None
) -> Callable[[int], list[StoredMessage]]:
    """A pager over the selection: fetch(after_seq) gives the next rows, [] at the end (call in a thread)."""

    def fetch(after: int) -> list[StoredMessage]:
        if recording is not None:
            return log.session_events(recording, after_seq=after, limit=PAGE_ROWS)
        assert span is not None
        return log.events_between(span[0], span[1], after_seq=after, limit=PAGE_ROWS)

    return fetch


@router.get("/sessions/{key}/events")
async def export_session(request: Request, key: str) -> Response:
    log = _log(request)
    if log is None:
        return _unavailable()
    query = request.query_params
    selected = await _selection(log, key, _float(query.get("from")), _float(query.get("to")))
    if selected is None:
        return JSONResponse({"error": "no such session (or a bad range)"}, status_code=404)
    fetch = _reader(log, *selected)

    async def lines() -> AsyncIterator[bytes]:
        after = 0
        while True:
            page = await asyncio.to_thread(fetch, after)
            if not page:
                return
            yield b"".join(orjson.dumps(messages.envelope("1.1", m.event, m.timestamp_ms, m.seq)) + b"\n" for m in page)
            after = page[-1].seq

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/replay")
async def start_replay(request: Request) -> Response:
    log = _log(request)
    if log is None:
        return _unavailable()
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return JSONResponse({"error": "body is not JSON"}, status_code=400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "send an object"}, status_code=422)
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0 < speed <= MAX_SPEED:
        return JSONResponse({"error": f"speed must be a number > 0 and <= {MAX_SPEED:g}"}, status_code=422)
    server = request.app.state.server
    replayer: Replayer = server.replayer
    try:
        replayer.admit()  # before any read: a refused start costs nothing
    except ReplayBusy as busy:
        return JSONResponse(
            {"error": "a replay is playing; stop it first (POST /api/replay/stop)", "replay": busy.status},
            status_code=409,
        )
    except ReplayRateLimited as limited:
        retry_after = max(math.ceil(limited.retry_after), 1)
        return JSONResponse(
            {"error": "too many replay starts; try again later", "retryAfterSeconds": retry_after},
            status_code=429,
            headers={"Retry-After": str(retry_after)},
        )
    try:
        return await _start(request, log, replayer, body, float(speed))
    finally:
        replayer.release()


async def _start(request: Request, log: EventLog, replayer: Replayer, body: dict[str, Any], speed: float) -> Response:
    """Read the selection's first page and its size (in worker threads), then hand the replay to the frame loop."""
    key = "range" if "from" in body else str(body.get("session", ""))
    selected = await _selection(log, key, _float(body.get("from")), _float(body.get("to")))
    if selected is None:
        return JSONResponse({"error": "no such session (or a bad range)"}, status_code=404)
    recording, span = selected
    fetch = _reader(log, recording, span)
    first = await asyncio.to_thread(fetch, 0)
    if not first:
        return JSONResponse({"error": "the session has no recorded messages left"}, status_code=404)
    total, _, last_ms = await asyncio.to_thread(log.span, recording, *(span or (0.0, 0.0)))
    server = request.app.state.server
    original = recording.session_id if recording is not None else "range"
    model_id = recording.model_id if recording is not None and recording.model_id else server.settings.model_id
    source = ReplaySource(
        first,
        speed=speed,
        model_id=model_id,
        label=f"replay-{original}"[:200],
        fetch=fetch,
        pace=replayer.pace,
        end_ms=last_ms,
        total=max(total, len(first)),
    )
    if not replayer.start(source, key if recording is not None else f"range:{span}"):
        return JSONResponse({"error": "the replay was stopped while it was starting"}, status_code=409)
    return JSONResponse(
        {"replaying": key, "messages": source.total, "speed": speed, "durationSeconds": round(source.duration, 3)},
        status_code=202,
    )


@router.post("/replay/stop")
async def stop_replay(request: Request) -> Response:
    playing = request.app.state.server.replayer.stop()
    return JSONResponse({"stopped": True, "wasPlaying": playing})


@router.get("/replay")
async def replay_status(request: Request) -> Response:
    return JSONResponse(request.app.state.server.replayer.status())


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
