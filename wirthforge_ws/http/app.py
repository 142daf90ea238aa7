"""Application wiring: routes, background tasks, and running under uvicorn.

Routes: ``GET /`` (the example page), ``/static/*``, ``GET /health``,
``GET /metrics`` (Prometheus text format), ``POST /publish`` (only with ``--enable-publish``),
the WebSocket ``/ws``, the prompt API (``/api/prompt``, prompt_api.py) and the recorded
sessions (``/api/sessions``, ``/api/replay``, sessions_api.py).
Background tasks (the frame loop and the heartbeat) are created in the
lifespan and cancelled when it ends, so nothing outlives the server. A
:class:`~.supervisor.Supervisor` owns them: one that dies is reported by
``/health`` (``failed``, then ``degraded``) and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
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
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from .. import __version__
from .. import settings as settings_module
from ..connection.connection import Connection, ConnectOptions, State
from ..connection.direct import ExposeTransport
from ..connection.security import OriginHostGuard, refusals
from ..connection.uvicorn_protocols import WireStats, ensure_fd_limit, protocol_classes
from ..protocol import messages
from ..protocol.codes import CHANNEL_OF, FRAME_BOUND_TYPES, SUBPROTOCOLS, ErrorCode, negotiate
from ..protocol.messages import Event
from ..protocol.schemas import MessageValidationError, SchemaSet
from ..settings import Settings
from ..sources.backends.adapters import build_backend
from ..sources.live import LiveSource
from ..sources.replay import Replayer
from ..sources.simulated import EnergySource, SimulatedModel
from ..storage.event_log import EventLog, PersistenceLocked, default_path
from ..stream.frame_loop import FrameLoop
from ..stream.hub import Hub
from . import sessions_api
from .prometheus import MetricCounters, ServerMetrics
from .prompt_api import router as prompt_router
from .supervisor import Supervisor

log = logging.getLogger("wirthforge.app")

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "client-example.html"
STATIC_DIR = ROOT / "static"

# Messages an orchestrator may inject through POST /publish. startup_complete
# and heartbeat belong to one connection each and are the server's own.
PUBLISHABLE_TYPES = frozenset(CHANNEL_OF) - {"startup_complete", "heartbeat"}
MAX_PUBLISH_BATCH = 5000
PERSISTENCE_REPORT_INTERVAL = 30.0  # seconds between error_events while persistence stays degraded
HEARTBEAT_TICK = 0.05  # seconds: how often each connection's heartbeat and send stall are checked
HEARTBEAT_WATCHDOG = 0.25  # seconds: how often the heartbeat task makes sure frames still do that check


class Server:
    """Everything one running server owns."""

    def __init__(self, settings: Settings, wire_stats: WireStats | None = None) -> None:
        self.settings = settings
        self.wire_stats = wire_stats or WireStats()  # filled by the wire layer (wire.py) under uvicorn
        self.schemas = SchemaSet()
        self.event_log = _open_event_log(settings)
        self.hub = Hub(
            self.schemas,
            history_messages=settings.history_messages,
            history_seconds=settings.history_seconds,
            durable=self.event_log,
        )
        self.source: EnergySource = build_source(settings)
        if isinstance(self.source, LiveSource) and settings.model_id == Settings.model_id:
            # startup_complete announces the real model, not the simulator's name
            self.settings = settings = dataclasses.replace(settings, model_id=self.source.model_id)
        self.metrics = ServerMetrics(self.metric_counters)
        self.frame_loop = FrameLoop(
            settings, self.hub, self.source, on_frame=self.metrics.observe_frame, before_frame=self._heartbeats_in_frame
        )
        self.hub.on_attach = self.frame_loop.clock.wake
        self.replayer = Replayer(self.frame_loop)
        self._faults_reported = 0
        self._fault_reported_at = -PERSISTENCE_REPORT_INTERVAL
        self.connections: set[Connection] = set()
        self.nominal_rates = {
            "energy_update": settings.frame_rate,
            "energy_field": settings.frame_rate / settings.field_every_frames,
        }
        self.started = time.monotonic()
        self.guard: OriginHostGuard | None = None
        self.supervisor = Supervisor()
        self._publishing = asyncio.Lock()  # one POST /publish batch at a time, in order
        self._someone_connected = asyncio.Event()  # wakes the heartbeat task from its idle wait
        self._heartbeats_checked_at = -math.inf  # time.monotonic() of the last heartbeat check

    async def start(self) -> None:
        if isinstance(self.source, LiveSource):
            await self.source.start_backends()
        self.supervisor.start("frame-loop", self.frame_loop.run)
        self.supervisor.start("heartbeat", self._heartbeats)

    async def stop(self) -> None:
        await self.replayer.stop()
        await self.supervisor.stop()
        if isinstance(self.source, LiveSource):
            await self.source.stop()
        if self.event_log is not None:
            await asyncio.to_thread(self.event_log.close)  # flush: nothing published before the stop is lost

    async def _heartbeats(self) -> None:
        """The heartbeat watchdog: checks heartbeats itself when frames stop doing it.

        Every HEARTBEAT_TICK each connection checks its send stall and sends
        its heartbeat if due (:meth:`_check_heartbeats`). Each keeps its own
        schedule (the first ones right after it opens, see
        pacing.py), so the heartbeats of many clients are spread out rather
        than sent in one burst. Frames do the check
        (:meth:`_heartbeats_in_frame`), so that heartbeats share the frame's
        socket write and never run into a tick. If the frame loop stalls or
        dies, this task does it, every HEARTBEAT_WATCHDOG: clients keep
        getting heartbeats, whose falling frameRate tells them why energy
        stopped. With no client it sleeps until one connects: an idle server
        does not wake for it at all (see docs/PERFORMANCE.md, idle CPU).
        """
        while True:
            if not self.connections:
                self._someone_connected.clear()
                await self._someone_connected.wait()
            await asyncio.sleep(HEARTBEAT_WATCHDOG)
            now = time.monotonic()
            if now - self._heartbeats_checked_at >= HEARTBEAT_WATCHDOG:  # no frame did it meanwhile
                self._check_heartbeats(now)

    def _heartbeats_in_frame(self, now: float) -> None:
        """FrameLoop's before_frame hook: the heartbeat check, every HEARTBEAT_TICK."""
        if now - self._heartbeats_checked_at >= HEARTBEAT_TICK:
            self._check_heartbeats(now)

    def _check_heartbeats(self, now: float) -> None:
        self._heartbeats_checked_at = now
        rate = self.frame_loop.clock.achieved_rate
        for connection in tuple(self.connections):
            connection.heartbeat(rate, now)
        self._report_persistence_fault(now)

    def _report_persistence_fault(self, now: float) -> None:
        """Tell clients (rate-limited) when the event log dropped or failed to write something."""
        log_ = self.event_log
        if log_ is None:
            return
        dropped = log_.stats.dropped
        if (
            log_.available and dropped == self._faults_reported
        ) or now - self._fault_reported_at < PERSISTENCE_REPORT_INTERVAL:
            return  # healthy, or reported recently; an unavailable log is reported every interval
        self._faults_reported, self._fault_reported_at = dropped, now
        self.hub.publish(
            messages.error_event(
                ErrorCode.PERSISTENCE_DEGRADED,
                "Event persistence is degraded: messages are streamed live but may not be recorded "
                "for resume after a restart or for replay.",
                details={"reason": (log_.stats.error or "")[:300], "dropped": log_.stats.dropped},
            )
        )

    def add_connection(self, connection: Connection) -> None:
        self.connections.add(connection)
        self._someone_connected.set()

    def health(self) -> dict[str, Any]:
        stats = self.hub.stats
        by_protocol = Counter(c.version for c in self.connections)
        status, problems, tasks = self.supervisor.health()
        return {
            "status": status,
            "problems": problems,
            "tasks": tasks,
            "version": __version__,
            "epoch": self.hub.epoch,
            "uptimeSeconds": round(time.monotonic() - self.started, 3),
            "connections": {
                "count": len(self.connections),
                "byProtocol": dict(by_protocol),
                "clients": [c.info() for c in self.connections],
                "handshakeTimeouts": self.wire_stats.handshake_timeouts,
                "refusedOverCapacity": self.wire_stats.refused_over_capacity,
                "inboundThrottled": self.wire_stats.throttled,
            },
            "frameLoop": self.frame_loop.health(),
            "messages": {
                "published": dict(stats.published),
                "validationFailures": stats.validation_failures,
                "coalesced": dict(stats.coalesced),
                "dropped": dict(stats.dropped),
                "connectionsClosed": dict(stats.closed),
                "connectionsClosedByCode": self.wire_stats.closes(),
            },
            "refusedRequests": self.guard.refused if self.guard else 0,
            "persistence": self.event_log.status() if self.event_log is not None else {"status": "disabled"},
            "replay": self.replayer.status(),
        }

    def metric_counters(self) -> MetricCounters:
        """The counters behind ``GET /metrics``, read when Prometheus scrapes."""
        loop = self.frame_loop
        return MetricCounters(
            stats=self.hub.stats,
            connections_by_protocol=Counter(c.version for c in self.connections),
            queued_messages=[len(c.outbox) for c in self.connections],
            refused_requests=self.guard.refused if self.guard else 0,
            frames_built=loop.frames_built,
            frames_skipped=loop.clock.frames_skipped,
            budget_overruns=loop.budget_overruns,
        )

    # -- POST /publish --------------------------------------------------------

    async def publish_from_request(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Validate every message of a publish request first, then publish them all in order."""
        items = body if isinstance(body, list) else [body]
        if not items or len(items) > MAX_PUBLISH_BATCH:
            return 422, {"error": f"send 1 to {MAX_PUBLISH_BATCH} messages"}
        events: list[Event] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or item.get("type") not in PUBLISHABLE_TYPES:
                return 422, {"error": "unknown or missing type", "index": index, "accepted": sorted(PUBLISHABLE_TYPES)}
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
        seqs = await self.publish_paced(events)
        return 202, {"published": len(events), "seqs": seqs}

    async def publish_paced(self, events: Sequence[Event]) -> list[int | None]:
        """Publish *events* in order, in chunks the clients' send queues can take.

        A batch may be larger than a send queue (MAX_PUBLISH_BATCH against
        send_queue_limit). Published in one go, it would overflow every
        subscriber's queue, and close even a fast reader with 1013, before
        any writer ran. So the batch goes out a quarter of a queue at a time;
        between chunks we wait until every open connection has room for the
        next chunk, at most send_timeout per chunk. A client that does not
        drain within that bound gets the next chunk anyway, overflows and is
        closed as a slow consumer, exactly as without batching. Each chunk
        rides with the next frame (FrameLoop.publish_in_next_frame): it
        shares the frame's one socket write to each client.
        """
        chunk = max(self.settings.send_queue_limit // 4, 1)
        seqs: list[int | None] = []
        async with self._publishing:
            for start in range(0, len(events), chunk):
                if start:
                    await self._wait_for_room(chunk)
                published = await self.frame_loop.publish_in_next_frame(events[start : start + chunk])
                seqs.extend(outbound.seq if outbound else None for outbound in published)
        return seqs

    async def _wait_for_room(self, free: int) -> None:
        waits = [c.outbox.wait_for_room(free) for c in self.connections if c.state is State.OPEN]
        if not waits:
            await asyncio.sleep(0)  # still let the writers and the frame loop run between chunks
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.send_timeout):
                await asyncio.gather(*waits)


class _DenialLogFilter(logging.Filter):
    """Drop uvicorn's false alarm after a refused WebSocket upgrade.

    uvicorn 0.54's sansio WebSocket protocol sends our HTTP denial response
    (403/400) correctly but then logs "ASGI callable returned without
    completing handshake". Our handler always accepts or denies, and
    refusals are logged with their reason by us, so the line is noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing handshake" not in record.getMessage()


def _open_event_log(settings: Settings) -> EventLog | None:
    """The durable event log, or None with --no-persist. Raises PersistenceLocked."""
    if not settings.persist:
        return None
    event_log = EventLog(
        Path(settings.persist_path).expanduser() if settings.persist_path else default_path(),
        max_bytes=settings.persist_max_bytes,
        max_age_seconds=settings.persist_max_age_hours * 3600.0,
        energy_rate=settings.persist_energy_rate,
    )
    event_log.open()
    return event_log


def build_source(settings: Settings) -> EnergySource:
    """The energy source that settings.source names: a real model (with its council) or the simulator."""
    if settings.source == "sim":
        return SimulatedModel(
            settings.model_id,
            council=settings.council,
            seed=settings.seed,
            frame_rate=settings.frame_rate,
            field_every_frames=settings.field_every_frames,
        )
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
    return LiveSource(
        primary,
        council,
        max_tokens=settings.max_tokens,
        top_k=settings.top_logprobs,
        frame_rate=settings.frame_rate,
        field_every_frames=settings.field_every_frames,
    )


def create_app(settings: Settings | None = None, wire_stats: WireStats | None = None) -> ASGIApp:
    """The ASGI application: FastAPI routes behind the Origin/Host guard.

    *wire_stats* is the counter object the wire layer's protocol classes
    fill (see :func:`serve`), shown in ``/health``.
    """
    server = Server(settings or Settings(), wire_stats)
    settings = server.settings  # with the real model's id when a model drives the energy

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(
        title="WIRTHFORGE real-time transport",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.server = server
    app.include_router(prompt_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    app.include_router(sessions_api.router)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(server.health())

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = server.metrics.exposition()
        return Response(body, media_type=content_type)

    if settings.enable_publish:

        @app.post("/publish")
        async def publish(request: Request) -> JSONResponse:
            try:
                # orjson, not json: it refuses NaN and Infinity, which no schema bound catches.
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return JSONResponse({"error": "body is not JSON"}, status_code=400)
            status, result = await server.publish_from_request(body)
            return JSONResponse(result, status_code=status)

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        chosen = negotiate(websocket.scope.get("subprotocols") or [])
        if chosen is None:
            refusals.refused("subprotocol", "websocket: only unknown subprotocols offered")
            await websocket.send_denial_response(
                PlainTextResponse(
                    f"unsupported subprotocol; offer one of {', '.join(SUBPROTOCOLS)} or none\n", status_code=400
                )
            )
            return
        version, subprotocol = chosen
        connection = Connection(
            websocket,
            hub=server.hub,
            settings=settings,
            version=version,
            subprotocol=subprotocol,
            options=ConnectOptions.parse(websocket.query_params, settings, version),
            nominal_rates=server.nominal_rates,
        )
        server.add_connection(connection)
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
        log.warning(
            "frame rate %g: protocol 1.0 requires 60, so 1.0 clients will not get a valid "
            "startup_complete (it fails validation and is not sent); use protocol 1.1",
            settings.frame_rate,
        )
    ensure_fd_limit(settings.max_connections)
    wire_stats = WireStats()
    # Our subclasses of uvicorn's httptools and websockets-sansio protocols:
    # handshake timeout, connection cap and inbound flow control (wire.py).
    http_protocol, ws_protocol = protocol_classes(settings, wire_stats)
    config = uvicorn.Config(
        create_app(settings, wire_stats),
        host=settings.host,
        port=settings.port,
        http=http_protocol,
        ws=ws_protocol,
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
    try:
        serve(settings)
    except PersistenceLocked as error:
        log.critical("refusing to start: %s", error)
        raise SystemExit(3) from None
