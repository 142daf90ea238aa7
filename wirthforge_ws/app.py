"""Application wiring: routes, background tasks, and running under uvicorn.

Routes: ``GET /`` (the example page), ``/static/*``, ``GET /health``,
``POST /publish`` (only with ``--enable-publish``), the prompt API
(``/api/*``, prompt_api.py) and the WebSocket ``/ws``.
Background tasks (the frame loop and the heartbeat) are created in the
lifespan and cancelled when it ends, so nothing outlives the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from . import __version__, messages, settings as settings_module
from .backends import build_backend
from .connection import Connection, SessionOptions
from .frame_loop import FrameLoop
from .hub import Hub
from .messages import Event
from .protocol import CHANNEL_OF, FRAME_BOUND_TYPES, SUBPROTOCOLS, negotiate
from .schemas import MessageValidationError, SchemaSet
from .security import OriginHostGuard
from .settings import Settings
from .live import LiveSource
from .prompt_api import router as prompt_router
from .sources import EnergySource, SimulatedModel
from .transport import ExposeTransport

log = logging.getLogger("wirthforge.app")

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "client-example.html"
STATIC_DIR = ROOT / "static"

# Messages an orchestrator may inject through POST /publish. startup_complete
# and heartbeat belong to one connection each and are the server's own.
PUBLISHABLE_TYPES = frozenset(CHANNEL_OF) - {"startup_complete", "heartbeat"}
MAX_PUBLISH_BATCH = 5000


class Server:
    """Everything one running server owns."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schemas = SchemaSet()
        self.hub = Hub(self.schemas, history_messages=settings.history_messages,
                       history_seconds=settings.history_seconds)
        self.source: EnergySource = build_source(settings)
        if isinstance(self.source, LiveSource) and settings.model_id == Settings.model_id:
            # startup_complete announces the real model, not the simulator's name
            self.settings = settings = dataclasses.replace(settings, model_id=self.source.model_id)
        self.frame_loop = FrameLoop(settings, self.hub, self.source)
        self.hub.on_attach = self.frame_loop.clock.wake
        self.connections: set[Connection] = set()
        self.nominal_rates = {
            "energy_update": settings.frame_rate,
            "energy_field": settings.frame_rate / settings.field_every_frames,
        }
        self.started = time.monotonic()
        self.guard: OriginHostGuard | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if isinstance(self.source, LiveSource):
            await self.source.start_backends()
        self._tasks = [
            asyncio.create_task(self.frame_loop.run(), name="frame-loop"),
            asyncio.create_task(self._heartbeats(), name="heartbeat"),
        ]
        for task in self._tasks:
            task.add_done_callback(_crash_if_failed)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if isinstance(self.source, LiveSource):
            await self.source.stop()

    async def _heartbeats(self) -> None:
        """One heartbeat per connection per interval, on absolute deadlines like the frame clock."""
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat_interval
        next_beat = loop.time() + interval
        while True:
            await asyncio.sleep(max(next_beat - loop.time(), 0.0))
            next_beat += interval
            now = loop.time()
            if now - next_beat > interval:  # fell behind: do not burst
                next_beat = now + interval
            rate = self.frame_loop.clock.achieved_rate
            for connection in tuple(self.connections):
                connection.heartbeat(rate, time.monotonic())

    def health(self) -> dict[str, Any]:
        stats = self.hub.stats
        by_protocol = Counter(c.version for c in self.connections)
        return {
            "status": "ok",
            "version": __version__,
            "epoch": self.hub.epoch,
            "uptimeSeconds": round(time.monotonic() - self.started, 3),
            "connections": {
                "count": len(self.connections),
                "byProtocol": dict(by_protocol),
                "clients": [c.info() for c in self.connections],
            },
            "frameLoop": self.frame_loop.health(),
            "messages": {
                "published": dict(stats.published),
                "validationFailures": stats.validation_failures,
                "coalesced": dict(stats.coalesced),
                "dropped": dict(stats.dropped),
                "connectionsClosed": dict(stats.closed),
            },
            "refusedRequests": self.guard.refused if self.guard else 0,
        }

    # -- POST /publish --------------------------------------------------------

    def publish_from_request(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Validate every message of a publish request first, then publish them all in order."""
        items = body if isinstance(body, list) else [body]
        if not items or len(items) > MAX_PUBLISH_BATCH:
            return 422, {"error": f"send 1 to {MAX_PUBLISH_BATCH} messages"}
        events: list[Event] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or item.get("type") not in PUBLISHABLE_TYPES:
                return 422, {"error": "unknown or missing type", "index": index,
                             "accepted": sorted(PUBLISHABLE_TYPES)}
            frame_number = item.get("frameNumber")
            if item["type"] in FRAME_BOUND_TYPES and frame_number is None:
                frame_number = self.frame_loop.frame_number
            event = Event(item["type"], item.get("payload"), frame_number)  # type: ignore[arg-type]
            # Checked at the door so that a bad request gets a 422 and
            # nothing of it is published.
            try:
                self.schemas.validate_outbound("1.1", messages.envelope("1.1", event, messages.now_ms(), 1))
            except MessageValidationError as error:
                return 422, {"error": "invalid message", "index": index, "reason": error.reason, "path": error.path}
            events.append(event)
        seqs = []
        for event in events:
            outbound = self.hub.publish(event)
            seqs.append(outbound.seq if outbound else None)
        return 202, {"published": len(events), "seqs": seqs}


class _DenialLogFilter(logging.Filter):
    """Drop uvicorn's false alarm after a refused WebSocket upgrade.

    uvicorn 0.54's sansio WebSocket protocol sends our HTTP denial response
    (403/400) correctly but then logs "ASGI callable returned without
    completing handshake". Our handler always accepts or denies, and
    refusals are logged with their reason by us, so the line is noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing handshake" not in record.getMessage()


def build_source(settings: Settings) -> EnergySource:
    """The energy source that settings.source names: a real model (with its council) or the simulator."""
    if settings.source == "sim":
        return SimulatedModel(settings.model_id, council=settings.council, seed=settings.seed,
                              frame_rate=settings.frame_rate, field_every_frames=settings.field_every_frames)
    primary = build_backend(settings.source, settings)
    council = []
    for member in settings.council_with:
        kind, _, persona = member.partition("/")
        council.append(build_backend(kind, settings, persona or "assistant"))
    # A member with the primary's modelId would be indistinguishable on the wire: rename it.
    seen = {primary.model_id}
    for index, backend in enumerate(council, start=2):
        if backend.model_id in seen:
            backend.model_id = f"{backend.model_id}-{index}"
        seen.add(backend.model_id)
    return LiveSource(primary, council, max_tokens=settings.max_tokens, top_k=settings.top_logprobs,
                      frame_rate=settings.frame_rate, field_every_frames=settings.field_every_frames)


def _crash_if_failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("background task %s died", task.get_name(), exc_info=task.exception())


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ASGI application: FastAPI routes behind the Origin/Host guard."""
    server = Server(settings or Settings())
    settings = server.settings  # with the real model's id when a model drives the energy

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title="WIRTHFORGE real-time transport", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.include_router(prompt_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(server.health())

    if settings.enable_publish:

        @app.post("/publish")
        async def publish(request: Request) -> JSONResponse:
            try:
                # orjson, not json: it refuses NaN and Infinity, which no schema bound catches.
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return JSONResponse({"error": "body is not JSON"}, status_code=400)
            status, result = server.publish_from_request(body)
            return JSONResponse(result, status_code=status)

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        chosen = negotiate(websocket.scope.get("subprotocols") or [])
        if chosen is None:
            log.warning("refused websocket: only unknown subprotocols offered")
            await websocket.send_denial_response(
                PlainTextResponse(f"unsupported subprotocol; offer one of {', '.join(SUBPROTOCOLS)} or none\n",
                                  status_code=400)
            )
            return
        version, subprotocol = chosen
        connection = Connection(
            websocket,
            hub=server.hub,
            settings=settings,
            version=version,
            subprotocol=subprotocol,
            options=SessionOptions.parse(websocket.query_params, settings, version),
            nominal_rates=server.nominal_rates,
        )
        server.connections.add(connection)
        try:
            await connection.serve()
        finally:
            server.connections.discard(connection)

    guard = OriginHostGuard(
        app,
        allowed_origins=(*settings.own_origins, *settings.allowed_origins),
        allowed_hosts=settings.allowed_hosts,
        allow_null_origin=settings.allow_null_origin,
    )
    server.guard = guard
    return ExposeTransport(guard)


def serve(settings: Settings) -> None:
    """Run the server until SIGINT or SIGTERM."""
    if settings.frame_rate != 60:
        log.warning("frame rate %g: protocol 1.0 requires 60, so 1.0 clients will not get a valid "
                    "startup_complete (it fails validation and is not sent); use protocol 1.1", settings.frame_rate)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        loop=settings.loop,
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=settings.permessage_deflate,
        lifespan="on",
        # At debug level uvicorn's WebSocket protocol logs frame contents,
        # which would put token text in the log: uvicorn stays at info.
        log_level="info" if settings.log_level == "debug" else settings.log_level,
        proxy_headers=False,  # a loopback server has no proxy in front of it
        access_log=False,
        # Shutdown: uvicorn closes every WebSocket with 1012 (service restart),
        # then gives handlers this long before the lifespan cancels our tasks.
        timeout_graceful_shutdown=1,
    )
    logging.getLogger("uvicorn.error").addFilter(_DenialLogFilter())
    # uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown, so that the
    # previous handlers run; these make a clean shutdown a normal exit (0).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    uvicorn.Server(config).run()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    settings = settings_module.load(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"WIRTHFORGE real-time server {__version__}", file=sys.stderr)
    print(f"  page:   http://{host}:{settings.port}/", file=sys.stderr)
    print(f"  stream: ws://{host}:{settings.port}/ws", file=sys.stderr)
    print(f"  health: http://{host}:{settings.port}/health", file=sys.stderr, flush=True)
    serve(settings)
