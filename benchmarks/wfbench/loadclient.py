"""The load client: one process, many raw WebSocket connections (``bench.py _client``)."""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import os
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import SO_TIMESTAMPNS

# ===========================================================================
# The load client (runs in its own process: ``bench.py _client``)
#
# One asyncio process holds many WebSocket connections. Each connection is a
# raw non-blocking socket driven by websockets' sans-I/O ClientProtocol, so
# the receive time is taken with time.time_ns() the moment the bytes are read
# from the socket, before any WebSocket or JSON parsing. The kernel's own
# arrival time of the data (SO_TIMESTAMPNS) is recorded too: the difference
# between the two is the time the data waited for the client process.


class _ClientConnection:
    def __init__(self, index: int, url: str, protocol: str, deflate: bool, window: tuple[int, int]) -> None:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
        from websockets.uri import parse_uri

        self.index = index
        self.uri = parse_uri(url)
        subprotocols = {"1.1": ["wirthforge.1.1"], "1.0": ["wirthforge.1.0"], "none": None}[protocol]
        extensions = [ClientPerMessageDeflateFactory()] if deflate else None
        self.ws = ClientProtocol(self.uri, subprotocols=subprotocols, extensions=extensions, max_size=None)
        self.window_start, self.window_end = window
        self.sock: socket.socket | None = None
        self.loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.reading = False
        # measurements (energy_update inside the recording window)
        self.lat_user = array.array("d")
        self.lat_kernel = array.array("d")
        self.count = 0
        self.first_t = 0
        self.last_t = 0
        self.first_fn: int | None = None
        self.last_fn_window: int | None = None
        self.last_fn: int | None = None
        self.gaps = 0  # frames missing between consecutive energy_update (frameNumber)
        self.gap_events = 0
        self.disorder = 0  # frameNumber not increasing
        self.wire_bytes = 0  # bytes read from the socket inside the window
        self.payload_bytes = 0  # JSON text bytes inside the window
        self.types: Counter[str] = Counter()
        self.processing_ms = array.array("d")  # payload.processingTime of each energy_update
        # slow-consumer bookkeeping
        self.total_bytes = 0
        self.bytes_after_resume = 0
        self.resumed_at = 0
        self.paused_at = 0
        self.close_at = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.close_by_server = False
        self.lost_error: str | None = None
        self.lost_at = 0
        self.subprotocol: str | None = None
        self.partial_sends = 0

    async def start(self, timeout: float) -> None:
        host, port = self.uri.host, self.uri.port
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock = sock
        await asyncio.wait_for(self.loop.sock_connect(sock, (host, port)), timeout)
        self.ws.send_request(self.ws.connect())
        self._flush()
        self.resume()
        await asyncio.wait_for(self.opened, timeout)

    def pause(self) -> None:
        if self.reading and self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False
            self.paused_at = self.paused_at or time.time_ns()

    def resume(self) -> None:
        if not self.reading and self.sock is not None and not self.lost.done():
            self.loop.add_reader(self.sock.fileno(), self._on_readable)
            self.reading = True
            if self.paused_at and not self.resumed_at:
                self.resumed_at = time.time_ns()

    def _flush(self) -> None:
        assert self.sock is not None
        for chunk in self.ws.data_to_send():
            if not chunk:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_WR)
                continue
            try:
                sent = self.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return
            if sent < len(chunk):  # only tiny frames (pong, close) are ever sent
                self.partial_sends += 1

    def _on_readable(self) -> None:
        t = time.time_ns()
        sock = self.sock
        assert sock is not None
        try:
            data, ancillary, _, _ = sock.recvmsg(262144, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._connection_lost(type(error).__name__)
            return
        kernel_t = 0
        for level, kind, cdata in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                seconds, nanoseconds = struct.unpack_from("qq", cdata)
                kernel_t = seconds * 1_000_000_000 + nanoseconds
        if not data:
            self.ws.receive_eof()
            self._drain_events(t, kernel_t, False)
            self._connection_lost("eof")
            return
        self.total_bytes += len(data)
        if self.resumed_at:
            self.bytes_after_resume += len(data)
        in_window = self.window_start <= t < self.window_end
        if in_window:
            self.wire_bytes += len(data)
        self.ws.receive_data(data)
        self._drain_events(t, kernel_t, in_window)
        self._flush()

    def _drain_events(self, t: int, kernel_t: int, in_window: bool) -> None:
        import orjson
        from websockets.frames import Opcode
        from websockets.http11 import Response

        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    if not self.opened.done():
                        self.opened.set_exception(self.ws.handshake_exc)
                else:
                    self.subprotocol = event.headers.get("Sec-WebSocket-Protocol")
                    if not self.opened.done():
                        self.opened.set_result(None)
                continue
            if event.opcode is Opcode.CLOSE:
                if self.ws.close_rcvd is not None and self.close_code is None:
                    self.close_at = t
                    self.close_code = self.ws.close_rcvd.code
                    self.close_reason = self.ws.close_rcvd.reason
                    self.close_by_server = bool(getattr(self.ws, "close_rcvd_then_sent", False))
                continue
            if event.opcode is not Opcode.TEXT:
                continue
            message = orjson.loads(event.data)
            kind = message.get("type")
            if kind == "energy_update":
                frame_number = message["frameNumber"]
                if in_window:
                    timestamp = message["timestamp"]
                    self.lat_user.append(t / 1e6 - timestamp)
                    if kernel_t:
                        self.lat_kernel.append(kernel_t / 1e6 - timestamp)
                    self.processing_ms.append(message["payload"]["processingTime"])
                    if self.count == 0:
                        self.first_t = t
                        self.first_fn = frame_number
                    self.count += 1
                    self.last_t = t
                    self.last_fn_window = frame_number
                    if self.last_fn is not None:
                        step = frame_number - self.last_fn
                        if step > 1:
                            self.gaps += step - 1
                            self.gap_events += 1
                        elif step <= 0:
                            self.disorder += 1
                self.last_fn = frame_number
            if in_window:
                self.types[kind] += 1
                self.payload_bytes += len(event.data)

    def _connection_lost(self, why: str) -> None:
        self.pause()
        if not self.lost.done():
            self.lost_error = why
            self.lost_at = time.time_ns()
            self.lost.set_result(None)
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        if self.sock is not None:
            self.sock.close()

    async def close(self) -> None:
        from websockets.protocol import State

        if self.sock is None or self.lost.done():
            return
        if self.ws.state is State.OPEN:
            self.ws.send_close(1000)
            self._flush()
        self.resume()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.lost), 1.0)
        self._connection_lost("closed by client")

    def report(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "subprotocol": self.subprotocol,
            "count": self.count,
            "first_t": self.first_t,
            "last_t": self.last_t,
            "first_fn": self.first_fn,
            "last_fn": self.last_fn_window,
            "gaps": self.gaps,
            "gap_events": self.gap_events,
            "disorder": self.disorder,
            "wire_bytes": self.wire_bytes,
            "payload_bytes": self.payload_bytes,
            "types": dict(self.types),
            "total_bytes": self.total_bytes,
            "bytes_after_resume": self.bytes_after_resume,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "close_by_server": self.close_by_server,
            "close_at": self.close_at,
            "paused_at": self.paused_at,
            "resumed_at": self.resumed_at,
            "lost_error": self.lost_error,
            "lost_at": self.lost_at,
            "partial_sends": self.partial_sends,
        }


async def _client_main(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    window = (args.record_start, args.record_end)
    connections = [_ClientConnection(i, args.url, args.protocol, args.deflate, window) for i in range(args.n)]
    connect_started = time.time_ns()
    outcomes = await asyncio.gather(*(c.start(args.connect_timeout) for c in connections), return_exceptions=True)
    connected_at = time.time_ns()
    failures = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]

    cpu: dict[str, float] = {}

    def snap(key: str) -> None:
        cpu[key] = time.process_time()

    loop.call_later(max((args.record_start - time.time_ns()) / 1e9, 0.0), snap, "start")
    loop.call_later(max((args.record_end - time.time_ns()) / 1e9, 0.0), snap, "end")

    if args.slow_pause_at:
        # One slow consumer: stop reading for slow_seconds, then read again.
        slow = connections[0]
        loop.call_later(max((args.slow_pause_at - time.time_ns()) / 1e9, 0.0), slow.pause)
        loop.call_later(max((args.slow_pause_at - time.time_ns()) / 1e9 + args.slow_seconds, 0.0), slow.resume)

    await asyncio.sleep(max((args.record_end - time.time_ns()) / 1e9, 0.0) + 0.05)
    await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
    snap("end") if "end" not in cpu else None
    snap("start") if "start" not in cpu else None
    lat_user = array.array("d")
    lat_kernel = array.array("d")
    processing = array.array("d")
    for c in connections:
        lat_user.extend(c.lat_user)
        lat_kernel.extend(c.lat_kernel)
        processing.extend(c.processing_ms)
    return {
        "n": args.n,
        "connected": args.n - len(failures),
        "failures": failures[:5],
        "connect_seconds": (connected_at - connect_started) / 1e9,
        "connected_before_window": connected_at <= args.record_start,
        "cpu_seconds_in_window": cpu["end"] - cpu["start"],
        "window_seconds": (args.record_end - args.record_start) / 1e9,
        "lat_user_ms": lat_user.tolist(),
        "lat_kernel_ms": lat_kernel.tolist(),
        "processing_ms": processing.tolist(),
        "connections": [c.report() for c in connections],
    }


def client_entry(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py _client")
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--protocol", choices=("1.1", "1.0", "none"), default="1.1")
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--record-start", type=int, required=True, help="wall clock, ns")
    parser.add_argument("--record-end", type=int, required=True, help="wall clock, ns")
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument(
        "--slow-pause-at", type=int, default=0, help="wall clock ns at which connection 0 stops reading"
    )
    parser.add_argument("--slow-seconds", type=float, default=10.0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    hard_limit = (args.record_end - time.time_ns()) / 1e9 + 15.0
    if hard_limit > 3600 or hard_limit < 0:
        raise SystemExit("recording window must end within the hour")
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))  # bounded whatever happens
    signal.alarm(int(hard_limit) + 1)
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(_client_main(args))
    else:
        result = asyncio.run(_client_main(args))
    import orjson

    Path(args.out).write_bytes(orjson.dumps(result))
