"""Application wiring: routes, background tasks, and running under uvicorn.

Routes: ``GET /`` (the example page), ``/static/*``, ``GET /health``,
``GET /metrics`` (Prometheus text format), ``POST /publish`` (only with ``--enable-publish``),
the WebSocket ``/ws``, the prompt API (``/api/prompt``, prompt_api.py), the recorded
sessions (``/api/sessions``, ``/api/replay``, sessions_api.py) and the user's progress
(``/api/progress``, progress_api.py; fed from a live source's answers by progress_feed.py).
A :class:`~..storage.event_log.StorageError` on any route is answered 503 with a JSON reason.
Background tasks (the frame loop and the heartbeat) are created in the
lifespan and cancelled when it ends, so nothing outlives the server. A
:class:`~.supervisor.Supervisor` owns them: one that dies is reported by
``/health`` (``failed``, then ``degraded``) and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from .. import __version__
from .. import settings as settings_module
from ..connection.connection import Connection, State
from ..connection.direct import ExposeTransport
from ..connection.options import ConnectOptions
from ..connection.security import OriginHostGuard, refusals
from ..connection.uvicorn_protocols import WireStats, ensure_fd_limit, protocol_classes
from ..energy.profiles import PROFILES, EnergyProfile
from ..energy.tiers import TierChoice, choose_tier
from ..protocol.codes import SUBPROTOCOLS, negotiate
from ..protocol.schemas import SchemaSet
from ..settings import Settings
from ..sources.backends.adapters import build_backend
from ..sources.base import EnergySource
from ..sources.live import LiveSource
from ..sources.replay import Replayer, ReplayPace, SourceMix
from ..sources.simulated import SimulatedModel
from ..storage.event_log import EventLog, PersistenceLocked, StorageError, default_path
from ..storage.progress import ProgressState, UserProgress
from ..stream.collector import FullCollections
from ..stream.frame_loop import FrameLoop
from ..stream.heartbeats import Heartbeats
from ..stream.hub import Hub
from . import sessions_api
from .bodies import BadBody, json_body
from .energy_metrics import MeteredSource
from .health import health_report
from .persistence_faults import PersistenceFaults
from .progress_api import router as progress_router
from .progress_feed import ProgressFeed
from .prometheus import MetricCounters, ServerMetrics
from .prompt_api import router as prompt_router
from .publish import Publisher
from .supervisor import Supervisor

log = logging.getLogger("wirthforge.app")

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "client-example.html"
STATIC_DIR = ROOT / "static"


class Server:
    """The composition root: builds the parts one running server owns, starts and stops them.

    The parts do the work: the frame loop and hub (stream/), the energy
    source, the event log, the heartbeat check (:class:`~..stream.heartbeats.Heartbeats`),
    the publish route's :class:`~.publish.Publisher` and the health report
    (:func:`~.health.health_report`).
    """

    def __init__(self, settings: Settings, wire_stats: WireStats | None = None) -> None:
        self.wire_stats = wire_stats or WireStats()  # filled by the wire layer (uvicorn_protocols.py) under uvicorn
        self.schemas = SchemaSet()
        self.event_log = _open_event_log(settings)
        self.hub = Hub(
            self.schemas,
            history_messages=settings.history_messages,
            history_seconds=settings.history_seconds,
            durable=self.event_log,
        )
        # The tier first: its profile drives the sources' meters, its council limit the prompt API.
        self.tier: TierChoice = resolve_tier(settings)
        self.profile: EnergyProfile = self.tier.profile
        settings = dataclasses.replace(settings, tier=self.tier.tier)  # startup_complete sends the resolved name
        self.source: EnergySource = build_source(settings, self.profile)
        if isinstance(self.source, LiveSource) and settings.model_id == Settings.model_id:
            # startup_complete announces the real model, not the simulator's name
            settings = dataclasses.replace(settings, model_id=self.source.model_id)
        self.settings = settings
        self.connections: set[Connection] = set()
        durable = self.event_log if self.event_log is not None and self.event_log.available else None
        # The user's progress, from real answers only. The simulator earns its demo rewards by the
        # same rules (one reward module for every source), in a progress of its own that is never kept.
        real = isinstance(self.source, LiveSource)
        self.progress = UserProgress(
            durable.progress if durable is not None and real else ProgressState(),
            persist=durable.save_progress if durable is not None and real else None,
        )
        stepped: EnergySource = ProgressFeed(self.source, self.progress)
        faults = [PersistenceFaults(self.event_log, self.hub).check] if self.event_log is not None else []
        self.heartbeats = Heartbeats(self.connections, lambda: self.frame_loop.clock.achieved_rate, also=faults)
        configured = self.source.model_ids if isinstance(self.source, LiveSource) else None
        self.metrics = ServerMetrics(self.metric_counters, models=configured)
        # The frame loop steps metrics(mix(progress(live))): the energy metrics see every frame it publishes
        # (energy_metrics.py), the progress counts real answers only, and the mix plays a replay beside the
        # live source in every frame; the simulator, which takes no prompts, pauses instead (sources/replay.py).
        self.mix = SourceMix(stepped, live_during_replay=isinstance(self.source, LiveSource))
        metered = MeteredSource(self.mix, self.metrics.energy)
        # Full garbage collections at frame boundaries (collector.py); None keeps Python's automatic ones.
        self.collector = (
            FullCollections(settings.gc_interval, idle=self._no_clients, open_connections=lambda: len(self.connections))
            if settings.gc_interval > 0
            else None
        )
        self.frame_loop = FrameLoop(
            settings,
            self.hub,
            metered,
            on_frame=self.metrics.observe_frame,
            before_frame=self.heartbeats.in_frame,
            after_frame=self.collector.after_frame if self.collector is not None else None,
        )
        self.hub.on_attach = self.frame_loop.clock.wake
        pace = ReplayPace(
            backlog=self.deepest_send_queue,
            backlog_limit=max(settings.send_queue_limit // 4, 1),
            hold_limit=settings.send_timeout,
            frame_cost=self.frame_loop.processing.last,
            budget=settings.frame_budget_ms / 1000.0,
        )
        self.replayer = Replayer(self.mix, pace=pace)
        self.publisher = Publisher(
            self.schemas,
            self.frame_loop,
            self.connections,
            send_queue_limit=settings.send_queue_limit,
            send_timeout=settings.send_timeout,
        )
        self.nominal_rates = {
            "energy_update": settings.frame_rate,
            "energy_field": settings.frame_rate / settings.field_every_frames,
        }
        self.started = time.monotonic()
        self.guard: OriginHostGuard | None = None
        self.supervisor = Supervisor()

    async def start(self) -> None:
        if isinstance(self.source, LiveSource):
            await self.source.start_backends()
        self.supervisor.start("frame-loop", self.frame_loop.run)
        self.supervisor.start("heartbeat", self.heartbeats.run)
        _freeze_startup_heap()
        if self.collector is not None:
            self.collector.start()

    async def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()  # Python's automatic full collections again
        if self.wire_stats.admission is not None:
            self.wire_stats.admission.close()  # its timer; uvicorn closes the waiting connections
        await self.replayer.close()
        await self.supervisor.stop()
        if isinstance(self.source, LiveSource):
            await self.source.stop()
        if self.event_log is not None:
            await asyncio.to_thread(self.event_log.close)  # flush: nothing published before the stop is lost

    def _no_clients(self) -> bool:
        """No WebSocket connection is open or waiting for admission: a pause now delays nobody's frames."""
        admission = self.wire_stats.admission
        return not self.connections and not (admission is not None and admission.waiting)

    def deepest_send_queue(self) -> int:
        """Reliable messages waiting in the fullest send queue of an open connection (replay pacing)."""
        return max((c.outbox.reliable_count for c in self.connections if c.state is State.OPEN), default=0)

    def add_connection(self, connection: Connection) -> None:
        self.connections.add(connection)
        self.heartbeats.connected()

    def remove_connection(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if self.collector is not None:
            self.collector.connection_closed()

    def health(self) -> dict[str, Any]:
        """The ``/health`` document (see http/health.py)."""
        return health_report(self)

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
            closed_by_code=self.wire_stats.closed_by_code(),
        )


def _freeze_startup_heap() -> None:
    """Move everything alive after start-up (modules, compiled schemas, the app) out of the collector's sight.

    A full (generation 2) collection walks every tracked object, and the
    start-up heap is most of them: without this, each one held the event
    loop for tens of milliseconds, several frames, however little there was
    to collect. Frozen objects are never collected, which costs nothing
    here: what start-up built lives as long as the process.
    """
    gc.collect()
    gc.freeze()


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
        record_text=settings.record_text,
        private_dir=not settings.persist_path,  # the user's data directory; a named path's folder is left alone
    )
    event_log.open()
    return event_log


def resolve_tier(settings: Settings) -> TierChoice:
    """The tier in force (``--tier auto`` detects it; a wire name is the user's choice), logged once."""
    choice = choose_tier(settings.tier)
    log.info(
        "tier %s, %s: profile %s, council limit %d",
        choice.tier,
        f"detected from {choice.reason}" if choice.detected else choice.reason,
        choice.profile.name,
        choice.council_limit,
    )
    return choice


def build_source(settings: Settings, profile: EnergyProfile = PROFILES["Dual"]) -> EnergySource:
    """The energy source that settings.source names: a real model (with its council) or the simulator.

    *profile* is the tier's energy profile, which the source's meters compute with.
    """
    if settings.source == "sim":
        return SimulatedModel(
            settings.model_id,
            council=settings.council,
            seed=settings.seed,
            profile=profile,
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
        profile=profile,
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
    app.include_router(progress_router)

    @app.exception_handler(StorageError)
    async def storage_failed(request: Request, error: StorageError) -> JSONResponse:
        """A storage failure on any route: a clear 503 with the reason, never a traceback."""
        return JSONResponse({"error": str(error), "retry": True}, status_code=503)

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
                body = await json_body(request)
            except BadBody as bad:
                return bad.response()
            status, result = await server.publisher.publish_request(body)
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
            server.remove_connection(connection)

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
    # handshake timeout, connection cap and inbound flow control (uvicorn_protocols.py).
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
