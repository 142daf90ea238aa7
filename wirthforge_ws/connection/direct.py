"""The TCP transport under a WebSocket: the three things ASGI cannot do.

ASGI gives an application ``send`` and ``receive`` and nothing else, but a
push server needs three things from the socket itself:

1. **Small buffers below the outbox.** Latest-wins coalescing happens in the
   connection's :class:`~.outbox.Outbox`, and only while the socket refuses
   more data. With default buffers the kernel accepts megabytes first (send
   buffer autotuning), so a slow reader would get an ever older backlog of
   frames instead of the newest one. :func:`tighten` caps the unsent bytes
   in the kernel (``TCP_NOTSENT_LOWAT``) and the transport's own buffer, so
   backpressure reaches the outbox after a few kilobytes.
2. **Abort.** A client that stopped reading cannot receive a close frame
   (its socket buffer is full), and uvicorn waits for that forever.
   :func:`abort` drops the TCP connection so its memory is freed at once.
3. **Direct writes.** A message's WebSocket frame is the same bytes for every
   client of a protocol version (server frames are unmasked), so the hub
   builds it once and :class:`DirectWriter` writes it straight to the
   transport when nothing else is in flight, skipping the per-client ASGI
   ``send`` chain (Starlette, middleware, uvicorn's framing). A
   :class:`WriteBatch` gathers what one frame sends to a connection (its
   heartbeat, an energy_update, an energy_field, a token_stream...) into
   one ``transport.write``: the per-client cost of a frame is one system
   call (see :meth:`~.hub.Hub.frame_scope`).

:class:`ExposeTransport` is the outermost ASGI middleware: it finds the
protocol object of the server that called it (uvicorn passes a bound method
of its protocol object as ``send``) and puts it and its transport in the
scope. This is the only module that knows uvicorn's internals; the
attributes it relies on are listed in :data:`UVICORN_PROTOCOL_ATTRIBUTES`
and checked by a test, so an upgrade that renames them fails loudly there.
With a server that exposes nothing, these functions do nothing and the
server still works, with looser flow control and the queued path only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any, cast

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("wirthforge.transport")

SCOPE_KEY = "wirthforge.transport"
PROTOCOL_SCOPE_KEY = "wirthforge.protocol"

# What DirectWriter reads on uvicorn's WebSocketsSansIOProtocol (uvicorn 0.54);
# wire.check_uvicorn() refuses to start the server if one is missing.
UVICORN_PROTOCOL_ATTRIBUTES = ("transport", "writable", "close_sent", "handshake_complete", "conn")

# Unsent bytes the kernel may hold for one connection (~10 energy frames),
# and the transport's buffer above it. Loopback moves data in microseconds;
# these only fill when the reader stalls, which is when they should be small.
KERNEL_UNSENT_BYTES = 4096
TRANSPORT_HIGH_WATER = 4096

# Linux's TCP_NOTSENT_LOWAT (socket module constant only on some Pythons).
_TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


class ExposeTransport:
    """ASGI middleware that records the WebSocket's transport in ``scope[SCOPE_KEY]``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            protocol = getattr(send, "__self__", None)
            transport = getattr(protocol, "transport", None)
            # Duck-typed: uvloop's transports are not asyncio.Transport subclasses.
            if callable(getattr(transport, "abort", None)):
                scope[SCOPE_KEY] = transport
                if all(hasattr(protocol, name) for name in UVICORN_PROTOCOL_ATTRIBUTES):
                    scope[PROTOCOL_SCOPE_KEY] = protocol
        await self.app(scope, receive, send)


def transport_of(scope: Scope) -> asyncio.Transport | None:
    return cast("asyncio.Transport | None", scope.get(SCOPE_KEY))


def tighten(transport: asyncio.Transport | None) -> None:
    """Shrink the buffers below the outbox so backpressure reaches it quickly."""
    if transport is None:
        return
    transport.set_write_buffer_limits(high=TRANSPORT_HIGH_WATER)
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, KERNEL_UNSENT_BYTES)
        except OSError as error:  # not Linux, or an old kernel: transport limits still apply
            log.debug("TCP_NOTSENT_LOWAT unavailable: %s", error)


def abort(transport: asyncio.Transport | None) -> None:
    """Drop the TCP connection without a close handshake."""
    if transport is not None:
        transport.abort()


class WriteBatch:
    """Gathers the direct writes made while it is open, and flushes one write per connection.

    Opened by the frame loop around the synchronous work of one frame
    (:meth:`collect`); nothing awaits inside, so no other write can slip
    between a connection's gathered frames and their flush, and order on
    the wire is the order of the writes.
    """

    __slots__ = ("open", "_pending")

    def __init__(self) -> None:
        self.open = False
        self._pending: list[DirectWriter] = []

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        self.open = True
        try:
            yield
        finally:
            self.open = False
            pending, self._pending = self._pending, []
            for writer in pending:
                writer.flush()


class DirectWriter:
    """Writes pre-built frames to one connection's transport, when that is safe.

    Safe means the bytes land exactly where the ASGI ``send`` would have put
    them: the handshake is done, no close has been sent, the transport is not
    closing and not paused (a paused transport is what makes the caller's
    queue coalesce), and no extension (permessage-deflate) rewrites frames.
    The caller adds the rest: its own queue is empty and its writer task is
    not inside a ``send``, so no earlier message can still be on its way.
    """

    __slots__ = ("_protocol", "_transport", "_writable", "_batch", "_parts")

    def __init__(self, protocol: Any, batch: WriteBatch | None = None) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._writable: asyncio.Event = protocol.writable
        self._batch = batch
        self._parts: list[bytes] = []  # gathered while the batch is open

    def ready(self) -> bool:
        protocol = self._protocol
        return self._writable.is_set() and not protocol.close_sent and not self._transport.is_closing()

    def write(self, frame: bytes) -> None:
        batch = self._batch
        if batch is None or not batch.open:
            self._transport.write(frame)
            return
        if not self._parts:
            batch._pending.append(self)
        self._parts.append(frame)

    def write_last(self, frame: bytes) -> None:
        """Write *frame* as this connection's last bytes in the open batch: at once if nothing is gathered.

        For the caller that knows nothing more will be written to this
        connection before the batch closes (a frame's delivery).
        """
        if self._parts:
            self._parts.append(frame)  # behind what is gathered, flushed with it
        else:
            self._transport.write(frame)

    def flush(self) -> None:
        parts, self._parts = self._parts, []
        if parts and not self._transport.is_closing():
            self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))


def direct_writer(scope: Scope, batch: WriteBatch | None = None) -> DirectWriter | None:
    """A :class:`DirectWriter` for an accepted WebSocket, or None where direct writes cannot apply."""
    protocol: Any = scope.get(PROTOCOL_SCOPE_KEY)
    if protocol is None or not protocol.handshake_complete or protocol.conn.extensions:
        return None
    return DirectWriter(protocol, batch)
