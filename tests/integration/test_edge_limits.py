"""Refusals and odd parameters at the edge: bounded refusal logging, resume parameters validated.

Real server (subprocess), raw HTTP and real WebSocket clients on 127.0.0.1.

- A flood of refused requests (foreign Origin, rebinding Host, unknown
  subprotocol) writes a bounded number of log lines, each kind at most once
  per interval with the count folded in (security.py ``RefusalLog``).
- ``ws://…/ws?lastSeq=²`` (a digit ``int()`` refuses), huge and negative
  values open a fresh session with ``INVALID_RESUME``, never an HTTP 500.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.server_process import ServerProcess
from tests.timing import scaled
from tests.wsutil import next_of_type, open_client

FLOOD = 3000


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as process:
        yield process


def _flood(server: ServerProcess, requests: list[bytes], count: int) -> int:
    """Send *count* requests over keep-alive connections as fast as the server answers; returns 403/400 answers."""
    answered = 0
    deadline = time.monotonic() + scaled(30)
    sock = socket.create_connection((server.host, server.port), timeout=scaled(5))
    pending = b""
    try:
        for index in range(count):
            assert time.monotonic() < deadline, f"only {answered} of {count} answered in time"
            sock.sendall(requests[index % len(requests)])
            while b"\r\n\r\n" not in pending:
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                pending += chunk
            head, _, pending = pending.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(pending) < length:
                pending += sock.recv(65536)
            pending = pending[length:]
            status = int(head.split(b" ")[1])
            assert status in (400, 403), head[:200]
            answered += 1
    finally:
        sock.close()
    return answered


def test_a_refusal_flood_writes_a_bounded_log(server: ServerProcess) -> None:
    netloc = server.netloc.encode()
    requests = [
        b"POST /api/prompt HTTP/1.1\r\nHost: " + netloc + b"\r\nOrigin: http://evil.example\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /health HTTP/1.1\r\nHost: rebind.evil.example\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: " + netloc + b"\r\nHost: " + netloc + b"\r\n\r\n",
    ]
    before = server.log_text().count("refused ")
    assert _flood(server, requests, FLOOD) == FLOOD
    time.sleep(0.2)
    lines = [line for line in server.log_text().splitlines() if "refused " in line][before:]
    # Three kinds of refusal: one line each within the interval (a few more if the run spans one).
    assert 3 <= len(lines) <= 9, f"{len(lines)} refusal lines for {FLOOD} refusals: {lines[:5]}"
    assert server.health()["refusedRequests"] >= FLOOD // 3 * 2  # the counter still counts every one


@pytest.mark.parametrize(
    "last_seq",
    ["²", "١٢", "-1", "1e3", "9" * 19, "9" * 5000, "18446744073709551616", " 7", ""],
    ids=["superscript", "arabic-indic", "negative", "exponent", "19-digits", "5000-digits", "2^64", "space", "empty"],
)
async def test_odd_last_seq_is_invalid_resume_not_500(server: ServerProcess, last_seq: str) -> None:
    url = f"{server.ws_url}?epoch=some-epoch&lastSeq={quote(last_seq)}"
    ws = await open_client(url, "wirthforge.1.1")
    try:
        error = await next_of_type(ws, "error_event", timeout=3.0)
        assert error["payload"]["code"] == "INVALID_RESUME"
    finally:
        await ws.close()


async def test_odd_last_seq_startup_says_invalid_request(server: ServerProcess) -> None:
    from websockets.asyncio.client import connect

    async with connect(
        f"{server.ws_url}?epoch=e&lastSeq=%C2%B2", subprotocols=["wirthforge.1.1"], proxy=None, open_timeout=scaled(5)
    ) as ws:  # type: ignore[list-item]
        first = json.loads(await asyncio.wait_for(ws.recv(), scaled(2)))
        assert first["type"] == "startup_complete"
        assert first["payload"]["resume"]["status"] == "incomplete"
        assert first["payload"]["resume"]["reason"] == "invalid_request"
