"""``GET /api/progress``: the user's level, totals and achievements (see storage/progress.py).

``persisted`` says whether the progress survives a restart (it lives in the
event log's file; with ``--no-persist`` it is kept in memory only).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(prefix="/api")


@router.get("/progress")
async def progress(request: Request) -> JSONResponse:
    server = request.app.state.server
    log = server.event_log
    return JSONResponse(
        {
            **server.progress.state.as_json(),
            "persisted": log is not None and log.available,
            "recordText": server.settings.record_text,
        }
    )
