"""A connection burst, run as its own process: ``python -m tests.burst HOST PORT COUNT SECONDS [CHANNELS]``.

Opens COUNT protocol 1.1 WebSocket connections at once (raw non-blocking
sockets: every TCP connection first, then every upgrade request back to
back, within a few milliseconds), reads and discards what the server
sends for SECONDS, closes them all, and prints one JSON line: the answers by
status (``101``, ``503``, ``failed`` when the server closed first, ``no
answer`` when none came in time), when each connection opened (seconds
after the first connect) and the most that opened within one frame period
(1/60 s). CHANNELS (default: all) goes into the connect URL, e.g.
``system``. A separate process, so that the burst never competes with a
test's own healthy client for the GIL; a hard alarm ends it whatever
happens. Used by tests/integration/test_connection_burst.py and
benchmarks/burst_bench.py.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

FRAME_RATE = 60


def burst(host: str, port: int, count: int, hold: float, channels: str) -> dict[str, Any]:
    """Open *count* WebSocket connections at once, read for *hold* seconds, close; return counters.

    First every TCP connection is made (the server only accepts them), then
    every upgrade request is sent back to back, so that they reach the
    server together: the burst is the server's work, not the kernel's.
    """
    signal.alarm(int(hold + 60))  # whatever happens, this process ends
    selector = selectors.DefaultSelector()
    query = f"?channels={channels}" if channels else ""
    state: dict[socket.socket, dict[str, Any]] = {}
    failed_connect = 0
    connecting = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex((host, port)) not in (0, 115, 11):  # 115 EINPROGRESS, 11 EAGAIN
            failed_connect += 1
            sock.close()
            continue
        connecting.append(sock)
        selector.register(sock, selectors.EVENT_WRITE)
    deadline = time.monotonic() + 10.0
    pending = set(connecting)
    while pending and time.monotonic() < deadline:  # wait until every connection is up
        for key_, _ in selector.select(timeout=0.05):
            pending.discard(key_.fileobj)  # type: ignore[arg-type]
    started = time.monotonic()
    for sock in connecting:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws{query} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wirthforge.1.1\r\n\r\n"
        ).encode()
        try:
            sock.send(request)
        except OSError:
            failed_connect += 1
            selector.unregister(sock)
            sock.close()
            continue
        state[sock] = {"head": b"", "status": None}
        selector.modify(sock, selectors.EVENT_READ)
    sent_all = time.monotonic() - started
    statuses: dict[str, int] = {}
    open_times: list[float] = []
    deadline = started + hold
    bytes_read = 0
    while time.monotonic() < deadline and state:
        for key_, _ in selector.select(timeout=0.05):
            sock = key_.fileobj  # type: ignore[assignment]
            entry = state.get(sock)  # type: ignore[arg-type]
            if entry is None:
                continue
            try:
                data = sock.recv(65536)  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                if entry["status"] is None:
                    statuses["failed"] = statuses.get("failed", 0) + 1
                selector.unregister(sock)
                sock.close()  # type: ignore[attr-defined]
                del state[sock]  # type: ignore[arg-type]
                continue
            bytes_read += len(data)
            if entry["status"] is None:
                entry["head"] += data
                if b"\r\n" in entry["head"]:
                    status = entry["head"].split(b" ", 2)[1].decode(errors="replace")
                    entry["status"] = status
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "101":
                        open_times.append(time.monotonic() - started)
                    entry["head"] = b""
    for sock in list(state):
        if state[sock]["status"] is None:
            statuses["no answer"] = statuses.get("no answer", 0) + 1
        sock.close()
    open_times.sort()
    period, densest, first = 1.0 / FRAME_RATE, 0, 0
    for last, opened in enumerate(open_times):  # the most 101 answers within one frame period
        while opened - open_times[first] > period:
            first += 1
        densest = max(densest, last - first + 1)
    return {
        "clients": count,
        "connectFailed": failed_connect,
        "requestsSentWithinMs": round(sent_all * 1000, 1),
        "statuses": statuses,
        "openedP50Ms": round(open_times[len(open_times) // 2] * 1000) if open_times else None,
        "openedMaxMs": round(open_times[-1] * 1000) if open_times else None,
        "mostOpenedInOneFrame": densest,
        "openedAt": [round(t, 4) for t in open_times],  # seconds after the first connect, sorted
        "bytesRead": bytes_read,
    }


if __name__ == "__main__":
    _, host, port, count, seconds, *rest = sys.argv
    print(json.dumps(burst(host, int(port), min(int(count), 5000), float(seconds), rest[0] if rest else "")))
