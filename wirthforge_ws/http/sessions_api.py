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
- ``DELETE /api/sessions/{id}``: deletes one recording (its rows, the
  energy, council and reward rows meanwhile, and its replays' recordings);
  ``DELETE /api/sessions`` deletes every recording
  (``?resetProgress=true`` also resets the user's progress). The space is
  handed back on the log's writer thread; the frame loop never waits.
- ``GET /api/sessions/{id}/trace``: the recording as a WVMP v0.1 trace, E
  per token rebuilt from its token_streams' evidence (traces.py); 409 for
  a recording without per-token evidence, 503 when the log cannot be read.

Every database read runs in a worker thread. The Origin/Host guard in front
of the app covers these routes like the others (POSTs and DELETEs need an
allowed Origin or none). A storage failure is answered 503 with a JSON
reason (the app's StorageError handler).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..protocol import messages
from ..sources.live import LiveSource
from ..sources.replay import MAX_SPEED, PAGE_ROWS, ReplayBusy, Replayer, ReplayRateLimited, ReplaySource
from ..storage.event_log import EventLog, Recording, StorageError, StoredMessage
from . import traces
from .params import EPOCH_RULE, ID_RULE, epoch_ms, recording_id

router = APIRouter(prefix="/api")
logger = logging.getLogger("wirthforge.sessions")


def _log(request: Request) -> EventLog | None:
    log: EventLog | None = request.app.state.server.event_log
    return log if log is not None and log.available else None


def _unavailable() -> JSONResponse:
    return JSONResponse({"error": "event persistence is off or unavailable; see /health"}, status_code=503)


@router.get("/sessions")
async def list_sessions(
    request: Request, limit: int = 100, before: float | None = Query(None, allow_inf_nan=False)
) -> Response:
    log = _log(request)
    if log is None:  # not an error for a page that lists what there is: there is nothing
        return JSONResponse({"sessions": [], "recording": False})
    recordings = await asyncio.to_thread(log.recordings, max(1, min(limit, 1000)), before)
    return JSONResponse(
        {"sessions": [r.as_json() for r in recordings], "recording": True, "recordText": log.record_text}
    )


@router.delete("/sessions/{key}")
async def delete_session(request: Request, key: str) -> Response:
    """Delete one recording; 404 if there is none with that id."""
    log = _log(request)
    if log is None:
        return _unavailable()
    number = recording_id(key)
    recording = await asyncio.to_thread(log.recording, number) if number is not None else None
    if recording is None or not await asyncio.to_thread(log.delete_recording, recording.id):
        return JSONResponse({"error": "no such session", "rule": ID_RULE}, status_code=404)
    server = request.app.state.server
    if server.replayer.recording_id == str(recording.id):
        server.replayer.stop()
    gone = {recording.session_id, f"replay-{recording.session_id}"}
    server.hub.forget(lambda event: event.type == "token_stream" and event.payload.get("sessionId") in gone)
    return JSONResponse({"deleted": key})


@router.delete("/sessions")
async def purge_sessions(request: Request, resetProgress: bool = False) -> Response:  # noqa: N803 - the query name
    """Delete every recording and row (and, when asked, the user's progress)."""
    log = _log(request)
    if log is None:
        return _unavailable()
    server = request.app.state.server
    server.replayer.stop()
    rows = await asyncio.to_thread(log.purge)
    server.hub.forget(lambda event: event.type == "token_stream")
    if resetProgress:
        server.progress.reset()
    return JSONResponse({"purged": True, "rows": rows, "progressReset": resetProgress})


async def _selection(
    log: EventLog, key: Any, start: Any, end: Any
) -> tuple[Recording | None, tuple[float, float] | None] | JSONResponse:
    """A recording by id (*key*), or a time range (*key* ``"range"``); else the 404/422 answer.

    Ids and bounds are parsed by params.py, so that no path, query or body
    value can reach the database as something it cannot bind.
    """
    if key == "range":
        low, high = epoch_ms(start), epoch_ms(end)
        if low is None or high is None or not _valid_range(start, end):
            return JSONResponse({"error": f"bad range: {EPOCH_RULE}"}, status_code=422)
        return None, (low, high)
    number = recording_id(key)
    recording = None if number is None else await asyncio.to_thread(log.recording, number)
    if recording is None:
        return JSONResponse({"error": "no such session", "rule": ID_RULE}, status_code=404)
    return recording, None


def _valid_range(start: Any, end: Any) -> bool:
    """Whether *start* and *end* are epoch-ms bounds with start <= end."""
    low, high = epoch_ms(start), epoch_ms(end)
    return low is not None and high is not None and low <= high


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
    selected = await _selection(log, key, query.get("from"), query.get("to"))
    if isinstance(selected, JSONResponse):
        return selected
    fetch = _reader(log, *selected)
    first = await asyncio.to_thread(fetch, 0)  # a failing file is answered 503 before the stream starts

    async def lines() -> AsyncIterator[bytes]:
        page = first
        while page:
            yield b"".join(orjson.dumps(messages.envelope("1.1", m.event, m.timestamp_ms, m.seq)) + b"\n" for m in page)
            try:
                page = await asyncio.to_thread(fetch, page[-1].seq)
            except StorageError as error:  # the status went out with the first page: end with the reason
                yield orjson.dumps({"error": str(error)}) + b"\n"
                return

    return StreamingResponse(lines(), media_type="application/x-ndjson")


# -- trace: a recording as a WVMP v0.1 trace (traces.py) ------------------


@router.get("/sessions/{key}/trace")
async def session_trace(request: Request, key: str) -> Response:
    """The recording's E per token per model, rebuilt from its token_streams' evidence (WVMP v0.1)."""
    log = _log(request)
    if log is None:
        return _unavailable()
    server = request.app.state.server
    source = server.source
    kinds = {b.model_id: b.kind for b in source.backends} if isinstance(source, LiveSource) else {}
    try:
        number = recording_id(key)
        recording = await asyncio.to_thread(log.recording, number) if number is not None else None
        if recording is None:
            return JSONResponse({"error": "no such session"}, status_code=404)
        trace = await asyncio.to_thread(
            traces.recording_trace, log, recording, server.profile, traces.backend_names(kinds, server.settings.source)
        )
    except traces.NoEvidence as missing:
        return JSONResponse({"error": str(missing), "session": key}, status_code=409)
    except (StorageError, sqlite3.Error, OSError, orjson.JSONDecodeError) as error:
        logger.warning("trace of recording %s: the event log could not be read: %s", key, type(error).__name__)
        return JSONResponse(
            {"error": f"the event log could not be read ({type(error).__name__}); see /health"}, status_code=503
        )
    return JSONResponse(trace)


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
    key = "range" if "from" in body else body.get("session")
    # A malformed body is answered before admission: it never uses up a start.
    if key != "range" and recording_id(key) is None:
        return JSONResponse({"error": f"session: {ID_RULE}"}, status_code=422)
    if key == "range" and not _valid_range(body.get("from"), body.get("to")):
        return JSONResponse({"error": f"bad range: {EPOCH_RULE}"}, status_code=422)
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
        return await _start(request, log, replayer, body, key, float(speed))
    finally:
        replayer.release()


async def _start(
    request: Request, log: EventLog, replayer: Replayer, body: dict[str, Any], key: Any, speed: float
) -> Response:
    """Read the selection's first page and its size (in worker threads), then hand the replay to the frame loop."""
    selected = await _selection(log, key, body.get("from"), body.get("to"))
    if isinstance(selected, JSONResponse):
        return selected
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
    key = str(recording.id) if recording is not None else "range"
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
