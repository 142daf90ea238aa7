"""Who may connect: Origin and Host checks, /publish protection, subprotocol negotiation, no token text in logs.

Everything runs against the real server (subprocess) with real WebSocket and
HTTP clients on 127.0.0.1 (PROTOCOL.md §1 and §7: refusals are HTTP responses
before the upgrade).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.server_process import ServerProcess
from tests.timing import scaled

EXTRA_ORIGIN = "https://ui.wirthforge.example"


async def handshake(url: str, **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect (no compression, no proxy) and read startup_complete."""
    ws = await connect(url, compression=None, proxy=None, open_timeout=scaled(5), **kwargs)
    first = json.loads(await asyncio.wait_for(ws.recv(), scaled(2)))
    assert first["type"] == "startup_complete"
    return ws, first


async def accepted(url: str, **kwargs: Any) -> tuple[str | None, dict[str, Any]]:
    """Connect and return (the subprotocol the server answered, startup_complete)."""
    ws, first = await handshake(url, **kwargs)
    try:
        return ws.subprotocol, first
    finally:
        await ws.close()


async def refused(url: str, **kwargs: Any) -> tuple[int, str]:
    """Connect expecting an HTTP refusal before the upgrade: (status, body)."""
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, compression=None, proxy=None, open_timeout=scaled(5), **kwargs):
            pass
    response = caught.value.response
    return response.status_code, bytes(response.body or b"").decode()


def http(method: str, url: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=scaled(5.0)) as client:
        return client.request(method, url, **kwargs)


@pytest.fixture(scope="module")
def permissive() -> Iterator[ServerProcess]:
    """A server that opts in to 'Origin: null' and one extra origin."""
    env = {"WF_ALLOW_NULL_ORIGIN": "1", "WF_ALLOWED_ORIGINS": f"{EXTRA_ORIGIN}, http://127.0.0.1:5173"}
    with ServerProcess(env=env) as process:
        yield process


# ---------------------------------------------------------------------------
# Origin


async def test_foreign_origin_is_refused_before_upgrade(server: ServerProcess) -> None:
    refused_before = server.health()["refusedRequests"]
    status, body = await refused(server.ws_url, origin="http://evil.example")
    assert status == 403
    assert "origin not allowed" in body
    assert server.health()["refusedRequests"] == refused_before + 1


@pytest.mark.parametrize(
    "origin",
    [
        "https://{host}:{port}",  # other scheme
        "http://{host}:1",  # other port
        "http://{host}",  # no port
        "http://{host}:{port}.evil.example",  # a look-alike host
        "http://evil.example:{port}",
    ],
)
async def test_near_miss_origins_are_refused(server: ServerProcess, origin: str) -> None:
    status, body = await refused(server.ws_url, origin=origin.format(host="127.0.0.1", port=server.port))
    assert (status, body.strip()) == (403, "origin not allowed")


async def test_null_origin_is_refused_by_default(server: ServerProcess) -> None:
    status, body = await refused(server.ws_url, origin="null")
    assert status == 403
    assert "null" in body


async def test_null_origin_allowed_when_opted_in(permissive: ServerProcess) -> None:
    _, first = await accepted(permissive.ws_url, origin="null")
    assert first["payload"]["frameRate"] == 60


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "[::1]"])
async def test_own_origins_are_allowed(server: ServerProcess, name: str) -> None:
    _, first = await accepted(server.ws_url, origin=f"http://{name}:{server.port}")
    assert first["type"] == "startup_complete"


async def test_no_origin_is_allowed(server: ServerProcess) -> None:
    """Non-browser clients send no Origin header."""
    subprotocol, first = await accepted(server.ws_url)
    assert subprotocol is None
    assert first["payload"]["model"]


async def test_extra_origin_from_settings_is_allowed(permissive: ServerProcess) -> None:
    await accepted(permissive.ws_url, origin=EXTRA_ORIGIN)
    await accepted(permissive.ws_url, origin="http://127.0.0.1:5173")
    # The list is an allowlist, not a pattern: anything else is still refused.
    status, _ = await refused(permissive.ws_url, origin="https://evil.wirthforge.example")
    assert status == 403


async def test_extra_origin_is_not_allowed_without_the_setting(server: ServerProcess) -> None:
    status, _ = await refused(server.ws_url, origin=EXTRA_ORIGIN)
    assert status == 403


# ---------------------------------------------------------------------------
# Host (DNS rebinding)


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example"])
async def test_foreign_host_is_refused_for_websocket(server: ServerProcess, host: str) -> None:
    # The URL names the foreign host (so that is the Host header); the TCP
    # connection still goes to the loopback server, as after DNS rebinding.
    status, body = await refused(f"ws://{host}:{server.port}/ws", host="127.0.0.1", port=server.port)
    assert status == 403
    assert "host not allowed" in body


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example"])
def test_foreign_host_is_refused_for_health(server: ServerProcess, host: str) -> None:
    response = http("GET", server.http_url + "/health", headers={"Host": f"{host}:{server.port}"})
    assert response.status_code == 403
    assert "host not allowed" in response.text
    assert "epoch" not in response.text  # nothing of the health report leaks


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_loopback_hosts_are_served(server: ServerProcess, host: str) -> None:
    response = http("GET", server.http_url + "/health", headers={"Host": f"{host}:{server.port}"})
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_refusals_are_logged_with_their_reason() -> None:
    """A fresh server: each kind of refusal is logged at most once per interval (test_refusal_flood)."""
    with ServerProcess() as server:
        await _refusals_are_logged(server)


async def _refusals_are_logged(server: ServerProcess) -> None:
    def count(text: str) -> int:
        return server.log_text().count(text)

    origin_line = "refused websocket /ws from 127.0.0.1: origin not allowed"
    host_line = "refused websocket /ws from 127.0.0.1: host not allowed"
    http_line = "refused http /health from 127.0.0.1: host not allowed"
    before = (count(origin_line), count(host_line), count(http_line))
    await refused(server.ws_url, origin="http://evil.example")
    await refused(f"ws://evil.example:{server.port}/ws", host="127.0.0.1", port=server.port)
    http("GET", server.http_url + "/health", headers={"Host": "evil.example"})
    after = (count(origin_line), count(host_line), count(http_line))
    assert after == tuple(n + 1 for n in before), server.log_text()[-2000:]


# ---------------------------------------------------------------------------
# POST /publish


REWARD = {"type": "reward_event", "payload": {"rewardType": "feedback", "title": "security check", "points": 1}}


def test_publish_with_foreign_origin_is_refused(server: ServerProcess) -> None:
    def published() -> int:
        return int(server.health()["messages"]["published"].get("reward_event", 0))

    before = published()
    response = http("POST", server.http_url + "/publish", json=[REWARD], headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    assert "origin not allowed" in response.text
    response = http("POST", server.http_url + "/publish", json=[REWARD], headers={"Origin": "null"})
    assert response.status_code == 403
    assert published() == before  # nothing of the refused requests went out
    # The same request from the server's own page, or from a local tool, is accepted.
    response = http("POST", server.http_url + "/publish", json=[REWARD], headers={"Origin": server.origin})
    assert response.status_code == 202
    response = http("POST", server.http_url + "/publish", json=[REWARD])
    assert response.status_code == 202
    assert published() == before + 2


def test_publish_is_404_when_not_enabled() -> None:
    with ServerProcess() as plain:
        response = http("POST", plain.http_url + "/publish", json=[REWARD])
        assert response.status_code == 404
        assert plain.health()["messages"]["published"].get("reward_event", 0) == 0


# ---------------------------------------------------------------------------
# Subprotocols (PROTOCOL.md §1)


async def test_unknown_only_subprotocol_is_400(server: ServerProcess) -> None:
    status, body = await refused(server.ws_url, subprotocols=["graphql-ws", "wirthforge.2.0"])
    assert status == 400
    assert "wirthforge.1.1" in body and "wirthforge.1.0" in body


@pytest.mark.parametrize(
    ("offered", "answered", "protocol"),
    [
        (None, None, "1.0"),
        (["wirthforge.1.0"], "wirthforge.1.0", "1.0"),
        (["chat", "wirthforge.1.0"], "wirthforge.1.0", "1.0"),
        (["wirthforge.1.1"], "wirthforge.1.1", "1.1"),
        (["wirthforge.1.0", "wirthforge.1.1"], "wirthforge.1.1", "1.1"),
        (["wirthforge.1.1", "wirthforge.1.0"], "wirthforge.1.1", "1.1"),
    ],
    ids=["nothing", "1.0", "unknown+1.0", "1.1", "both", "both-reversed"],
)
async def test_subprotocol_negotiation(
    server: ServerProcess, offered: list[str] | None, answered: str | None, protocol: str
) -> None:
    subprotocol, first = await accepted(server.ws_url, subprotocols=offered)
    assert subprotocol == answered
    if protocol == "1.1":
        assert first["payload"]["protocol"] == "1.1"
        assert isinstance(first["seq"], int)
    else:
        assert "protocol" not in first["payload"]
        assert "seq" not in first and isinstance(first["timestamp"], int)


async def test_no_subprotocol_header_when_nothing_offered(server: ServerProcess) -> None:
    ws, _ = await handshake(server.ws_url)
    try:
        assert ws.response is not None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
    finally:
        await ws.close()


# ---------------------------------------------------------------------------
# Token text never reaches the log


SECRET = "zq-7f3a9c"  # short: a truncated frame dump still shows it whole


async def test_token_text_never_appears_in_the_log() -> None:
    env = {"WF_ENABLE_PUBLISH": "1", "WF_LOG_LEVEL": "debug"}
    with ServerProcess(env=env) as debug_server:
        ws, _ = await handshake(debug_server.ws_url)
        try:
            # Key order puts the token at the end, where a truncated frame dump would still show it.
            token_stream = {
                "type": "token_stream",
                "payload": {"isComplete": False, "sessionId": "s-log", "modelId": "m", "tokens": [" hello", SECRET]},
            }
            result = await asyncio.to_thread(debug_server.publish, [token_stream])
            assert result["published"] == 1
            # A refused publish (invalid payload) carrying the secret.
            bad = {"type": "token_stream", "payload": {"tokens": [SECRET], "isComplete": "no"}}
            response = await asyncio.to_thread(http, "POST", debug_server.http_url + "/publish", json=[bad])
            assert response.status_code == 422
            # Malformed inbound messages carrying the secret.
            await ws.send(json.dumps({"type": "heartbeat_response", "payload": {"sequence": SECRET}}))
            await ws.send(json.dumps({"type": SECRET, "payload": {}}))
            await ws.send(SECRET + " {not json")
            seen_token, errors = False, 0
            async with asyncio.timeout(scaled(3)):
                while not (seen_token and errors == 3):
                    message = json.loads(await ws.recv())
                    seen_token |= message["type"] == "token_stream" and SECRET in message["payload"]["tokens"]
                    errors += message["type"] == "error_event"
        finally:
            await ws.close()
        log = debug_server.log_text()
    assert "DEBUG" in log  # the server really ran at debug level
    leaks = [line for line in log.splitlines() if SECRET in line]
    assert not leaks, f"token text in the server log: {leaks[:3]}"


# ---------------------------------------------------------------------------
# Malformed and repeated Host / Origin headers, over raw sockets (no client
# library would send them), for plain HTTP and for the WebSocket upgrade.


def raw_status(server: ServerProcess, target: str, headers: list[tuple[str, str]]) -> tuple[int, str]:
    """Send one request with exactly *headers* and return (status, body)."""
    import base64
    import os
    import socket

    lines = [f"GET {target} HTTP/1.1"]
    if target == "/ws":
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        ]
    else:
        lines += ["Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    with socket.create_connection((server.host, server.port), timeout=scaled(5)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                break
            response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            sock.settimeout(scaled(1))
            try:
                while chunk := sock.recv(4096):
                    body += chunk
            except TimeoutError:
                pass
        return status, body.decode(errors="replace")


HEADER_MATRIX = [
    # (name, headers, status for GET /health, status for the /ws upgrade)
    ("own host", lambda s: [("Host", s.netloc)], 200, 101),
    ("own host and origin", lambda s: [("Host", s.netloc), ("Origin", s.origin)], 200, 101),
    ("bracket then suffix", lambda s: [("Host", f"[::1].evil.example:{s.port}")], 403, 403),
    ("bracket then name", lambda s: [("Host", "[::1]evil")], 403, 403),
    ("junk after port", lambda s: [("Host", f"127.0.0.1:{s.port}.evil.example")], 403, 403),
    ("empty host", lambda s: [("Host", "")], 403, 403),
    ("two hosts, evil last", lambda s: [("Host", s.netloc), ("Host", "evil.example")], 400, 400),
    ("two hosts, evil first", lambda s: [("Host", "evil.example"), ("Host", s.netloc)], 400, 400),
    ("two equal hosts", lambda s: [("Host", s.netloc), ("Host", s.netloc)], 400, 400),
    (
        "two origins, evil last",
        lambda s: [("Host", s.netloc), ("Origin", s.origin), ("Origin", "https://evil.example")],
        400,
        400,
    ),
    ("two equal origins", lambda s: [("Host", s.netloc), ("Origin", s.origin), ("Origin", s.origin)], 400, 400),
]


@pytest.mark.parametrize("target", ["/health", "/ws"])
@pytest.mark.parametrize(
    ("name", "headers", "http_status", "ws_status"), HEADER_MATRIX, ids=[row[0] for row in HEADER_MATRIX]
)
def test_host_and_origin_header_matrix(
    server: ServerProcess, target: str, name: str, headers: Any, http_status: int, ws_status: int
) -> None:
    status, body = raw_status(server, target, headers(server))
    assert status == (http_status if target == "/health" else ws_status), (name, body)
    if status == 400:  # ours, or the websockets library's own check of the upgrade request
        assert "more than one" in body or "multiple values" in body, body
