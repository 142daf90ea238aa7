"""The bytes on the wire: uvicorn's protocol classes, hardened against hostile clients.

uvicorn parses HTTP and WebSocket frames in its asyncio protocols, below
ASGI, so limits that must hold *before* a message reaches the application
live here. :func:`protocol_classes` builds two subclasses for one server and
passes them to ``uvicorn.Config(http=..., ws=...)``, uvicorn's supported way
of choosing protocol implementations.

:class:`GuardedHttpProtocol` (httptools) adds:

- **admission in order**: the startup work of a new connection (parsing
  its request head, the WebSocket upgrade, then in the application the
  greeting and attach) starts only once :class:`Admission` admits it, at
  most ``admit_per_frame`` connections per frame period; the others wait,
  reading paused, first come first served. A burst of a thousand
  connections then costs each frame a bounded slice of startup work
  instead of one loop iteration that runs all of it and makes the frame
  loop skip frames. Connections refused over the cap are not queued: their
  503 is cheap;
- a **handshake timeout**: a connection whose request head (for ``/ws``, the
  upgrade request) is not complete ``handshake_timeout`` seconds after it
  opened, or after its previous response, is closed. Without it a client
  that sends one byte per second holds a file descriptor forever;
- a **connection cap**: beyond ``max_connections`` open connections (HTTP
  and WebSocket together) a new one gets ``503`` with the reason, once its
  request head has arrived (answering before reading it would make the
  kernel reset the connection and lose the answer).

:class:`FlowControlledWebSocketProtocol` (uvicorn's ``websockets-sansio``)
controls how much of a client's input the server takes on, with three
rules, each of which *stops reading the socket* (backpressure: the client's
own kernel buffers fill and its writes block, at no cost to the server):

1. **Frame budget.** Every frame (text, binary, continuation, ping, pong,
   close) costs one token from a per-connection bucket refilled at
   ``inbound_frame_rate`` per second (burst: one second's worth). Input is
   parsed in small slices (:data:`PARSE_SLICE_BYTES`), so one read of 256 KB
   of 6-byte empty frames cannot keep the event loop busy for a
   quarter of a second; when the bucket is empty the rest waits, unparsed,
   until it refills. A client that keeps the bucket empty for
   :data:`THROTTLE_GRACE_S` is closed with 1008: a well-behaved client never
   comes near the budget. A message may also have at most
   :data:`MAX_FRAGMENTS` frames (1009), so a slow drip of empty
   continuations cannot grow memory either.
2. **Write buffer.** The library answers each ping with a pong, written to
   the transport. While the transport's write buffer is above its
   high-water mark (the client is not reading), no more input is parsed, so
   unread pongs are bounded by the high-water mark plus one slice's worth.
3. **One message at a time.** After a complete message is queued for the
   application, nothing more is parsed until the application has taken it.

It also turns invalid UTF-8 in a text message into a 1007 close with a
reason (uvicorn logs a traceback and sends no reason), aborts the TCP
connection when a close it started cannot be delivered, and counts every
close by code and side in :class:`WireStats` (``/health``).

The subclasses rely on uvicorn 0.54 internals (``conn``, ``frames``,
``queue``, ``read_paused``, ``writable``, the ``handle_*`` methods, the
httptools parser callbacks); :func:`check_uvicorn` fails loudly at start-up
if an upgrade removes one, and tests/integration/test_hostile_clients.py checks the
behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State

from ..protocol.codes import CloseCode
from ..settings import Settings
from .direct import UVICORN_PROTOCOL_ATTRIBUTES
from .limits import TokenBucket
from .security import refusals

log = logging.getLogger("wirthforge.wire")

# Bytes parsed between two budget checks: at most ~170 empty frames (about
# 1 ms of parsing) before the server looks at the budget again.
PARSE_SLICE_BYTES = 1024
# Seconds a client may keep its frame budget exhausted before it is closed.
THROTTLE_GRACE_S = 2.0
# Frames one message may be split into (the browser API never splits one).
MAX_FRAGMENTS = 1024
# Seconds to deliver a close frame the wire layer sent before aborting TCP.
ABORT_AFTER_S = 1.0
# Largest request head kept while waiting to answer 503.
MAX_HEAD_BYTES = 16 * 1024

_OPCODE_HANDLERS = {
    Opcode.CONT: "handle_cont",
    Opcode.TEXT: "handle_text",
    Opcode.BINARY: "handle_bytes",
    Opcode.PONG: "handle_pong",
    Opcode.CLOSE: "handle_close",
}


class Admissible(Protocol):
    """What :class:`Admission` needs of a connection: when it was queued (None: not waiting), and a callback."""

    admission_queued_at: float | None

    def admitted(self) -> None: ...


class Admission:
    """Admits at most *per_slot* new connections per *period* seconds; the rest wait in arrival order.

    One per server, shared by its connections. A connection asks with
    :meth:`request` when its first bytes arrive: True means start now;
    False means it was queued, and its ``admitted()`` is called from a
    timer once a later slot has room. A connection that goes away while
    queued calls :meth:`withdraw` and is skipped. The timer runs only while
    someone waits, so an idle server does not wake for it.
    """

    def __init__(self, per_slot: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_slot < 1 or period <= 0:
            raise ValueError("admission needs per_slot >= 1 and period > 0")
        self.per_slot = per_slot
        self.period = period
        self._clock = clock
        self._slot_start = -math.inf
        self._used = 0  # admissions in the current slot
        self._queue: deque[Admissible] = deque()  # oldest first; withdrawn ones stay until popped
        self._timer: asyncio.TimerHandle | None = None
        self.waiting = 0  # connections queued and still there
        self.admitted_at_once = 0
        self.queued = 0  # connections that waited for a later slot
        self.longest_wait = 0.0  # seconds one connection waited, the longest so far

    def request(self, connection: Admissible) -> bool:
        """True if *connection* may start its work now; else it is queued (see the class docstring)."""
        now = self._clock()
        if now - self._slot_start >= self.period:
            self._slot_start, self._used = now, 0
        if not self.waiting and self._used < self.per_slot:
            self._used += 1
            self.admitted_at_once += 1
            return True
        connection.admission_queued_at = now
        self._queue.append(connection)
        self.waiting += 1
        self.queued += 1
        if self._timer is None:
            delay = max(self._slot_start + self.period - now, 0.0)
            self._timer = asyncio.get_running_loop().call_later(delay, self._next_slot)
        return False

    def withdraw(self, connection: Admissible) -> None:
        """*connection* went away; if it was queued it will be skipped."""
        if connection.admission_queued_at is not None:
            connection.admission_queued_at = None
            self.waiting -= 1

    def close(self) -> None:
        """Stop the timer and forget everyone waiting (the server is shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for connection in self._queue:
            connection.admission_queued_at = None
        self._queue.clear()
        self.waiting = 0

    def _next_slot(self) -> None:
        """A new slot: admit the oldest waiting connections, up to per_slot; come back if more wait."""
        self._timer = None
        now = self._clock()
        self._slot_start, self._used = now, 0
        while self._queue and self._used < self.per_slot:
            connection = self._queue.popleft()
            queued_at = connection.admission_queued_at
            if queued_at is None:
                continue  # withdrawn
            connection.admission_queued_at = None
            self.waiting -= 1
            self._used += 1
            self.longest_wait = max(self.longest_wait, now - queued_at)
            connection.admitted()
        if self.waiting:
            self._timer = asyncio.get_running_loop().call_later(self.period, self._next_slot)
        else:
            self._queue.clear()  # only withdrawn ones can be left


@dataclass
class WireStats:
    """What the wire layer did, shared by every connection of one server (read by ``/health``)."""

    closed_by_server: Counter[int] = field(default_factory=Counter)  # close codes the server sent first
    closed_by_client: Counter[int] = field(default_factory=Counter)  # close codes the client sent first
    closed_without_frame: int = 0  # TCP ended with no close frame either way (code 1006)
    handshake_timeouts: int = 0
    refused_over_capacity: int = 0
    throttled: int = 0  # times a connection's frame budget ran out
    admission: Admission | None = None  # paces new connections (set by protocol_classes)

    def closed_by_code(self) -> Counter[int]:
        """Connections closed, by close code whichever side sent it; 1006 for those that ended without one."""
        codes = self.closed_by_server + self.closed_by_client
        if self.closed_without_frame:
            codes[1006] += self.closed_without_frame
        return codes

    def closes(self) -> dict[str, Any]:
        return {
            "sentByServer": {str(code): n for code, n in sorted(self.closed_by_server.items())},
            "sentByClient": {str(code): n for code, n in sorted(self.closed_by_client.items())},
            "withoutCloseFrame": self.closed_without_frame,
        }


class FlowControlledWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with an inbound budget and bounded buffers (module docstring)."""

    # Set by protocol_classes() on a per-server subclass.
    frame_rate: float = 1000.0
    stats: WireStats = WireStats()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending = bytearray()  # received, not parsed yet
        self._budget = TokenBucket(self.frame_rate, self.frame_rate, time.monotonic())
        self._throttled_since: float | None = None
        self._resume_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None

    # -- input --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._pending += data
        self._drain()

    def _drain(self) -> None:
        """Parse pending input slice by slice while every rule allows it, then set reading on or off."""
        while self._pending and not self.transport.is_closing():
            if self.read_paused or not self.writable.is_set() or self._resume_timer is not None:
                break  # rule 3, rule 2, or still waiting for tokens
            now = time.monotonic()
            tokens = self._budget.refill(now)
            if tokens >= self._budget.burst:
                self._throttled_since = None  # a full bucket: the client kept to the rate for a while
            elif tokens <= 0:
                self._throttle(now)
                break
            chunk = bytes(self._pending[:PARSE_SLICE_BYTES])
            del self._pending[:PARSE_SLICE_BYTES]
            self.conn.receive_data(chunk)
            if self.conn.parser_exc is not None:
                self.handle_parser_exception()
                return
            self.handle_events()
        self._set_reading(not self._pending and not self.read_paused and self.writable.is_set())

    def _throttle(self, now: float) -> None:
        """The frame budget is spent: wait for half of it to refill, or close a client that keeps it spent."""
        if self._throttled_since is None:
            self._throttled_since = now
            self.stats.throttled += 1
        elif now - self._throttled_since > THROTTLE_GRACE_S:
            log.info(
                "websocket %s: inbound frame budget exceeded for %.0f s, closing",
                _peer(self.client),
                now - self._throttled_since,
            )
            self._fail(CloseCode.POLICY_VIOLATION, "inbound frame rate exceeded")
            return
        self._resume_timer = self.loop.call_later(self._budget.seconds_until(self._budget.burst / 2), self._resume)

    def _resume(self) -> None:
        self._resume_timer = None
        self._drain()

    def _set_reading(self, reading: bool) -> None:
        # Both calls are idempotent on asyncio's and uvloop's transports.
        if self.transport.is_closing():
            return
        if reading:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def handle_events(self) -> None:
        frames = 0
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self.handle_connect(event)
            elif isinstance(event, Frame):
                frames += 1
                if self.transport.is_closing():
                    continue  # failed by an earlier frame of this slice: count the rest, act on none
                if event.opcode is Opcode.PING:
                    self.handle_ping()  # the library queued the pong; this writes it
                else:
                    getattr(self, _OPCODE_HANDLERS[event.opcode])(event)
        self._budget.spend(frames)

    def handle_cont(self, event: Frame) -> None:
        if len(self.frames) >= MAX_FRAGMENTS:
            self._fail(CloseCode.MESSAGE_TOO_BIG, f"message split into more than {MAX_FRAGMENTS} frames")
            return
        super().handle_cont(event)

    def send_receive_event_to_app(self) -> None:
        """Hand a complete message to the application; reading stays off until it takes it (rule 3)."""
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past websocket.close: discard, keep reading for the close reply
        if self.curr_msg_data_type == "text":
            try:
                text = bytes(data).decode()
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": bytes(data)})
        self.read_paused = True

    async def receive(self) -> Any:
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self._drain()
        return message

    # -- output -------------------------------------------------------------

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.close":
            # uvicorn turns reading back on to receive the client's close
            # reply; it may already be in _pending, behind the last message.
            self._drain()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._drain()  # rule 2: the client read its pongs, parse what waits

    # -- closing ------------------------------------------------------------

    def _fail(self, code: int, reason: str) -> None:
        """Close from the wire layer: close frame with a reason, then the TCP connection."""
        if self.close_sent or self.transport.is_closing():
            return
        log.debug("websocket %s: closing with %d (%s)", _peer(self.client), code, reason)
        self.conn.fail(code, reason)
        self.handle_parser_exception()

    def handle_parser_exception(self) -> None:
        super().handle_parser_exception()
        self._pending.clear()
        # transport.close() waits for the write buffer to drain, which never
        # happens if the client does not read: abort after a grace period.
        if self._abort_timer is None:
            self._abort_timer = self.loop.call_later(ABORT_AFTER_S, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._resume_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._resume_timer = self._abort_timer = None
        self._pending.clear()
        self._count_close()
        super().connection_lost(exc)

    def _count_close(self) -> None:
        conn = self.conn
        if conn.state is State.CONNECTING:
            return  # never opened: a refused or failed handshake, not a WebSocket close
        if conn.close_sent is not None and not conn.close_rcvd_then_sent:
            self.stats.closed_by_server[conn.close_sent.code] += 1
        elif conn.close_rcvd is not None:
            self.stats.closed_by_client[conn.close_rcvd.code] += 1
        else:
            self.stats.closed_without_frame += 1


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a handshake timeout and a connection cap (module docstring)."""

    # Set by protocol_classes() on a per-server subclass.
    handshake_timeout: float = 10.0
    max_connections: int = 1100
    stats: WireStats = WireStats()
    admission: Admission | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._over_capacity: bytearray | None = None
        self._admitted = self.admission is None
        self._held: bytearray | None = None  # bytes received while waiting for admission
        self.admission_queued_at: float | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._over_capacity = bytearray()  # answer 503 once the request head is in
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._over_capacity is not None:
            self._over_capacity += data
            if b"\r\n\r\n" in self._over_capacity or len(self._over_capacity) > MAX_HEAD_BYTES:
                self._refuse_over_capacity()
            return
        if self._held is not None:  # still waiting; reading is paused, so little can arrive
            self._held += data
            return
        if not self._admitted:
            assert self.admission is not None
            if not self.admission.request(self):
                self._held = bytearray(data)
                self.transport.pause_reading()
                return
            self._admitted = True
        super().data_received(data)

    def admitted(self) -> None:
        """Called by :class:`Admission`: start the work on what arrived while this connection waited."""
        self._admitted = True
        held, self._held = self._held, None
        if self.transport.is_closing():
            return
        self.transport.resume_reading()
        if held:
            super().data_received(bytes(held))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self.admission is not None:
            self.admission.withdraw(self)
        self._held = None
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.handshake_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.stats.handshake_timeouts += 1
            log.debug("%s: no complete request head within %g s, closing", _peer(self.client), self.handshake_timeout)
            self.transport.close()

    def _refuse_over_capacity(self) -> None:
        self._cancel_head_timer()
        self._over_capacity = None
        self.stats.refused_over_capacity += 1
        refusals.refused(
            "capacity", f"a connection: {len(self.connections) - 1} open, max_connections is {self.max_connections}"
        )
        body = (f"server at its connection limit (max_connections={self.max_connections}); retry later\n").encode()
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nretry-after: 5\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()


def protocol_classes(
    settings: Settings, stats: WireStats
) -> tuple[type[GuardedHttpProtocol], type[FlowControlledWebSocketProtocol]]:
    """The (http, ws) protocol classes for ``uvicorn.Config``, configured from *settings*.

    With ``admit_per_frame`` > 0 they share one :class:`Admission`, kept in
    ``stats.admission`` (``/health`` reads it).
    """
    check_uvicorn()
    if settings.admit_per_frame > 0:
        stats.admission = Admission(settings.admit_per_frame, 1.0 / settings.frame_rate)
    http = type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "handshake_timeout": settings.handshake_timeout,
            "max_connections": settings.max_connections,
            "stats": stats,
            "admission": stats.admission,
        },
    )
    ws = type(
        "FlowControlledWebSocketProtocol",
        (FlowControlledWebSocketProtocol,),
        {
            "frame_rate": settings.inbound_frame_rate,
            "stats": stats,
        },
    )
    return http, ws


def ensure_fd_limit(max_connections: int) -> None:
    """Raise the soft open-file limit so that the connection cap, not EMFILE, is what refuses clients.

    Many systems default to 1,024 descriptors per process, fewer than the
    default cap; the hard limit is usually far higher.
    """
    needed = max_connections + 64  # listening sockets, log files, the event loop's own descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as error:
        log.warning("cannot raise the open-file limit to %d: %s", target, error)
        target = soft
    if target < needed:
        log.warning(
            "open-file limit %d is below max_connections %d: beyond ~%d connections accepts fail "
            "(raise it with ulimit -n)",
            target,
            max_connections,
            target - 64,
        )


# What the subclasses use of uvicorn's classes: methods they override or
# call, and attributes set in __init__ (checked on a fresh instance).
_WS_METHODS = (
    "data_received",
    "handle_events",
    "handle_connect",
    "handle_cont",
    "handle_text",
    "handle_bytes",
    "handle_ping",
    "handle_pong",
    "handle_close",
    "handle_parser_exception",
    "send_receive_event_to_app",
    "receive",
    "send",
    "resume_writing",
    "connection_lost",
)
_WS_ATTRIBUTES = (
    "conn",
    "frames",
    "curr_msg_data_type",
    "queue",
    "read_paused",
    "writable",
    "close_sent",
    "transport",
    "client",
    "loop",
)
_HTTP_METHODS = ("connection_made", "data_received", "on_message_begin", "on_headers_complete", "connection_lost")


def check_uvicorn() -> None:
    """Raise if uvicorn lacks what the subclasses build on (a uvicorn version that changed its internals)."""
    missing = [
        f"WebSocketsSansIOProtocol.{name}"
        for name in _WS_METHODS
        if not callable(getattr(WebSocketsSansIOProtocol, name, None))
    ]
    missing += [
        f"HttpToolsProtocol.{name}" for name in _HTTP_METHODS if not callable(getattr(HttpToolsProtocol, name, None))
    ]
    source = WebSocketsSansIOProtocol.__init__.__code__.co_names
    missing += [
        f"WebSocketsSansIOProtocol().{name}"
        for name in (*_WS_ATTRIBUTES, *UVICORN_PROTOCOL_ATTRIBUTES)
        if name not in source
    ]
    if missing:
        raise RuntimeError(
            "this uvicorn version is not the one wirthforge_ws.connection.uvicorn_protocols was written for; missing: "
            + ", ".join(missing)
        )


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"
