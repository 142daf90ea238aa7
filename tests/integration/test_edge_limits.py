"""Refusals and odd parameters at the edge: bounded refusal logging, resume parameters validated.

Real server (subprocess), raw HTTP and real WebSocket clients on 127.0.0.1.

- A flood of refused requests (foreign Origin, rebinding Host, unknown
  subprotocol) writes a bounded number of log lines, each kind at most once
  per interval with the count folded in (security.py ``RefusalLog``).
- ``ws://…/ws?lastSeq=²`` (a digit ``int()`` refuses), huge and negative
  values open a fresh session with ``INVALID_RESUME``, never an HTTP 500.
- Every numeric path, query and body parameter of the HTTP routes (session
  ids, export and replay ranges, the listing's ``before`` and ``limit``,
  ``frameNumber`` in ``POST /publish``) refuses odd digits, huge values, NaN
  and infinities with 404 or 422 and a JSON reason, never a 500 traceback
  (http/params.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
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


# ---------------------------------------------------------------------------
# Numeric path, query and body parameters of the HTTP routes: 404/422 with a JSON reason, never a 500

ODD_IDS = ["%C2%B2", "%D9%A1%D9%A2", "9" * 5000, str(2**64), str(2**63), "-1", "1.5", "%201"]
ODD_ID_IDS = ["superscript", "arabic-indic", "5000-digits", "2^64", "2^63", "negative", "fraction", "space"]


@pytest.fixture(scope="module")
def recording_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("edge") / "events.sqlite3"
    with ServerProcess(env={"WF_PERSIST": "1", "WF_PERSIST_PATH": str(db), "WF_ENABLE_PUBLISH": "1"}) as process:
        yield process


def _request(server: ServerProcess, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """One request on a raw socket (the path exactly as given: no client re-encodes it); (status, JSON body)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {server.netloc}\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    with socket.create_connection((server.host, server.port), timeout=scaled(5)) as sock:
        sock.sendall(head.encode() + b"\r\n" + (body or b""))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, content = rest.partition(b"\r\n\r\n")
    status = int(status_line.split(b" ")[1])
    assert not content.startswith(b"Internal Server Error"), answer[:300]
    return status, json.loads(content)


@pytest.mark.parametrize("key", ODD_IDS, ids=ODD_ID_IDS)
def test_odd_session_id_in_the_path_is_404_with_the_rule(recording_server: ServerProcess, key: str) -> None:
    status, answer = _request(recording_server, "GET", f"/api/sessions/{key}/events")
    assert status == 404, answer
    assert answer["error"] == "no such session"
    assert "integer" in answer["rule"]


@pytest.mark.parametrize(
    "value",
    ["²", "١٢", "9" * 5000, str(2**63), 2**63, 18446744073709551615, -1, True, None, [1]],
    ids=[
        "superscript",
        "arabic-indic",
        "5000-digits",
        "2^63-text",
        "2^63",
        "2^64-1",
        "negative",
        "true",
        "null",
        "list",
    ],
)
def test_odd_session_in_a_replay_body_is_422(recording_server: ServerProcess, value: Any) -> None:
    status, answer = _request(recording_server, "POST", "/api/replay", json.dumps({"session": value}).encode())
    assert status == 422, answer
    assert answer["error"].startswith("session:")


@pytest.mark.parametrize(
    "query",
    [
        "from=nan&to=1",
        "from=0&to=inf",
        "from=1_000&to=2000",
        "from=%D9%A3&to=9",
        "from=5&to=1",
        "from=1",
        "",
        "to=1e400",
    ],
)
def test_odd_export_range_is_422(recording_server: ServerProcess, query: str) -> None:
    status, answer = _request(recording_server, "GET", f"/api/sessions/range/events?{query}")
    assert status == 422, answer
    assert answer["error"].startswith("bad range")


@pytest.mark.parametrize(
    "bounds", [{"from": 5, "to": 1}, {"from": "nan", "to": 1}, {"from": 0}, {"from": True, "to": 1}]
)
def test_odd_replay_range_is_422(recording_server: ServerProcess, bounds: dict[str, Any]) -> None:
    status, answer = _request(recording_server, "POST", "/api/replay", json.dumps(bounds).encode())
    assert status == 422, answer
    assert answer["error"].startswith("bad range")


@pytest.mark.parametrize("query", ["before=nan", "before=inf", "limit=%C2%B2", "limit=" + "9" * 5000])
def test_odd_listing_parameters_are_422(recording_server: ServerProcess, query: str) -> None:
    status, answer = _request(recording_server, "GET", f"/api/sessions?{query}")
    assert status == 422, answer


def test_a_frame_number_beyond_64_bits_signed_is_refused_by_publish(recording_server: ServerProcess) -> None:
    body = json.dumps([{"type": "energy_update", "frameNumber": 2**63, "payload": {}}]).encode()
    status, answer = _request(recording_server, "POST", "/publish", body)
    assert status == 422, answer
    assert "frameNumber" in answer["error"]


def test_no_odd_parameter_left_a_traceback(recording_server: ServerProcess) -> None:
    _request(recording_server, "GET", "/api/sessions/%C2%B2/events")  # whichever ran before: the log is clean
    assert recording_server.health()["persistence"]["status"] == "ok"
    log = recording_server.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert "OverflowError" not in log
