"""Hostile WebSocket clients, run as their own process: ``python -m tests.hostile KIND HOST PORT SECONDS``.

Each one attacks the server at the protocol level with raw sockets (every
frame masked, as a client's must be) for at most SECONDS, reconnecting when
the server cuts it, then prints one JSON line of counters. A separate
process, so that the attacker never competes with the test's own healthy
client for the GIL.

Kinds:

- ``empty-continuations``: a text frame without FIN, then empty continuation
  frames as fast as the socket takes them (a message that never completes);
- ``ping-flood``: pings with 125-byte payloads, never reading the pongs;
- ``read-ping-flood``: the same, reading (and discarding) everything, so
  that only the inbound frame budget can stop it;
- ``slow-handshake``: SLOW_HANDSHAKES connections that each send their
  upgrade request one byte per second.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
import threading
import time

SLOW_HANDSHAKES = 200
PING_PAYLOAD = b"p" * 125
BATCH_BYTES = 64 * 1024


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One client frame: masked, as RFC 6455 §5.3 requires of clients."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def upgrade_request(host: str, port: int, *, subprotocol: str | None = None, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    protocol = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{protocol}{extra}\r\n"
    ).encode()


def open_websocket(host: str, port: int, *, rcvbuf: int | None = None) -> socket.socket:
    """A connected, upgraded socket (protocol 1.0) whose response head has been read byte by byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect((host, port))
    sock.sendall(upgrade_request(host, port))
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 4096:
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("closed during the handshake")
        head += byte
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head[:100].decode(errors="replace"))
    sock.settimeout(None)
    return sock


def read_close(sock: socket.socket) -> tuple[int, str]:
    """Read server frames until the close frame; return its (code, reason)."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed without a close frame")
            data += chunk
        return data

    while True:
        first, second = exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", exactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", exactly(8))[0]
        payload = exactly(length)
        if first & 0x0F == 0x8:
            return (struct.unpack("!H", payload[:2])[0], payload[2:].decode()) if payload else (1005, "")


def empty_continuations(host: str, port: int, seconds: float) -> dict[str, int]:
    counts = {"connections": 0, "bytes": 0, "refused": 0}
    # One 6-byte frame repeated: each copy masked with the same key, which is allowed.
    batch = frame(0x0, b"", fin=False) * (BATCH_BYTES // 6)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock = open_websocket(host, port)
        except OSError:
            counts["refused"] += 1
            time.sleep(0.05)
            continue
        counts["connections"] += 1
        try:
            sock.sendall(frame(0x1, b"", fin=False))
            while time.monotonic() < deadline:
                sock.sendall(batch)
                counts["bytes"] += len(batch)
        except OSError:
            pass
        finally:
            sock.close()
    return counts


def ping_flood(host: str, port: int, seconds: float, *, read: bool = False) -> dict[str, int]:
    counts = {"connections": 0, "bytes": 0, "refused": 0}
    batch = frame(0x9, PING_PAYLOAD) * (BATCH_BYTES // (len(PING_PAYLOAD) + 6))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock = open_websocket(host, port, rcvbuf=None if read else 4096)
        except OSError:
            counts["refused"] += 1
            time.sleep(0.05)
            continue
        counts["connections"] += 1
        if read:
            threading.Thread(target=discard_input, args=(sock,), daemon=True).start()
        try:
            while time.monotonic() < deadline:
                sock.sendall(batch)
                counts["bytes"] += len(batch)
        except OSError:
            pass
        finally:
            sock.close()
    return counts


def discard_input(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def slow_handshake(host: str, port: int, seconds: float) -> dict[str, int]:
    """SLOW_HANDSHAKES sockets, one byte per second each; counts how many the server closed."""
    request = upgrade_request(host, port)
    socks: list[socket.socket] = []
    for _ in range(SLOW_HANDSHAKES):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect((host, port))
        sock.setblocking(False)
        socks.append(sock)
    closed: set[int] = set()
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and sent < len(request):
        for index, sock in enumerate(socks):
            if index in closed:
                continue
            try:
                if sock.recv(4096) == b"":
                    closed.add(index)
                    continue
            except BlockingIOError:
                pass
            except OSError:
                closed.add(index)
                continue
            try:
                sock.send(request[sent : sent + 1])
            except OSError:
                closed.add(index)
        sent += 1
        time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
    for sock in socks:
        sock.close()
    return {"connections": len(socks), "closedByServer": len(closed), "bytesEach": sent}


KINDS = {
    "empty-continuations": empty_continuations,
    "ping-flood": ping_flood,
    "read-ping-flood": lambda host, port, seconds: ping_flood(host, port, seconds, read=True),
    "slow-handshake": slow_handshake,
}


def main(argv: list[str]) -> None:
    kind, host, port, seconds = argv
    counts = KINDS[kind](host, int(port), float(seconds))
    print(json.dumps({**counts, "cpuSeconds": round(time.process_time(), 2)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
