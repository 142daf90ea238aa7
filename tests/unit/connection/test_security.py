"""Security helpers without a server: Host parsing, the invalid-message window, the refusal log,
and the Origin/Host guard on hand-made ASGI scopes."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from wirthforge_ws.connection.security import InvalidMessageWindow, OriginHostGuard, RefusalLog, host_name


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8145", "localhost"),
        ("LocalHost:8145", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8145", "[::1]"),
        ("[::1]", "[::1]"),
        ("::1", None),  # bare IPv6: not a valid Host (RFC 3986 needs brackets)
        (" evil.example:8145 ", "evil.example"),
        ("127.0.0.1.evil.example:8145", "127.0.0.1.evil.example"),
        ("[::1", None),  # malformed
        ("[::1].evil.example:8145", None),  # nothing may follow the closing bracket but a port
        ("[::1]evil", None),
        ("127.0.0.1:8145.evil.example", None),  # nor follow the port
        ("", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_invalid_message_window() -> None:
    window = InvalidMessageWindow(limit=3, seconds=10.0)
    now = time.monotonic()
    assert [window.record(now + i) for i in range(4)] == [False, False, False, True]
    # Spread out beyond the window, they never add up.
    window = InvalidMessageWindow(limit=3, seconds=10.0)
    assert not any(window.record(now + 11.0 * i) for i in range(20))
    # Old ones leave the window.
    window = InvalidMessageWindow(limit=2, seconds=10.0)
    window.record(now)
    window.record(now + 1)
    assert window.record(now + 10.5) is False  # the first has left
    assert window.record(now + 10.6) is True


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "app.called"})


def guard(**kwargs: Any) -> OriginHostGuard:
    options: dict[str, Any] = {
        "allowed_origins": ["http://127.0.0.1:8145", "http://localhost:8145/"],
        "allowed_hosts": ["wf.lan"],
    }
    options.update(kwargs)
    return OriginHostGuard(_app, **options)


def scope(
    kind: str = "websocket",
    host: str | None = "127.0.0.1:8145",
    origin: str | None = None,
    method: str = "GET",
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    headers = []
    if host is not None:
        headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    result: dict[str, Any] = {
        "type": kind,
        "path": "/ws" if kind == "websocket" else "/publish",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
    }
    if kind == "http":
        result["method"] = method
    if extensions is not None:
        result["extensions"] = extensions
    return result


HOST_REFUSED = "host not allowed (only loopback names are served)"


@pytest.mark.parametrize(
    ("request_scope", "expected"),
    [
        (scope(), None),  # no Origin: a non-browser client
        (scope(origin="http://127.0.0.1:8145"), None),
        (scope(origin="HTTP://LOCALHOST:8145"), None),  # case-insensitive
        (scope(origin="http://localhost:8145/"), None),  # trailing slash on either side
        (scope(origin="http://evil.example"), "origin not allowed"),
        (scope(origin="http://127.0.0.1:8145.evil.example"), "origin not allowed"),
        (scope(origin="https://127.0.0.1:8145"), "origin not allowed"),
        (scope(origin="null"), "origin 'null' not allowed"),
        (scope(host="evil.example:8145"), HOST_REFUSED),
        (scope(host="127.0.0.1.evil.example"), HOST_REFUSED),
        (scope(host=None), HOST_REFUSED),
        (scope(host="[::1]:8145"), None),
        (scope(host="localhost"), None),
        (scope(host="wf.lan:8145"), None),  # an extra allowed host
        (scope(host="evil.example", origin="http://127.0.0.1:8145"), HOST_REFUSED),  # Host first
        (scope("http", origin="http://evil.example"), None),  # GET: a foreign page may read /health
        (scope("http", origin="http://evil.example", method="HEAD"), None),
        (scope("http", origin="http://evil.example", method="POST"), "origin not allowed"),
        (scope("http", origin="null", method="POST"), "origin 'null' not allowed"),
        (scope("http", method="POST"), None),  # a local tool without Origin may publish
        (scope("http", host="evil.example"), HOST_REFUSED),  # DNS rebinding: even a GET
    ],
)
def test_guard_refusal(request_scope: dict[str, Any], expected: str | None) -> None:
    refusal = guard().refusal(request_scope)
    assert (refusal[1] if refusal else None) == expected
    if refusal:
        assert refusal[0] == 403


def test_guard_null_origin_opt_in() -> None:
    assert guard(allow_null_origin=True).refusal(scope(origin="null")) is None
    assert guard(allow_null_origin=True).refusal(scope(origin="http://evil.example")) == (403, "origin not allowed")


def call_guard(request_scope: dict[str, Any]) -> tuple[list[dict[str, Any]], OriginHostGuard]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the guard must not read the request")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    the_guard = guard()
    asyncio.run(the_guard(request_scope, receive, send))
    return sent, the_guard


def test_guard_denies_websocket_with_http_403_before_upgrade() -> None:
    sent, the_guard = call_guard(scope(origin="http://evil.example", extensions={"websocket.http.response": {}}))
    assert [message["type"] for message in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 403
    assert sent[1]["body"] == b"origin not allowed\n"
    assert the_guard.refused == 1


def test_guard_denies_websocket_without_the_extension_by_closing() -> None:
    sent, _ = call_guard(scope(origin="http://evil.example"))
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "origin not allowed"}]


def test_guard_denies_http_with_403() -> None:
    sent, the_guard = call_guard(scope("http", host="evil.example"))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 403
    assert sent[1]["body"].decode().strip() == HOST_REFUSED
    assert the_guard.refused == 1


def test_guard_passes_allowed_requests_through() -> None:
    sent, the_guard = call_guard(scope(origin="http://127.0.0.1:8145"))
    assert sent == [{"type": "app.called"}]
    assert the_guard.refused == 0


def test_one_line_per_kind_per_interval_with_the_suppressed_count(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(10.0, logging.getLogger("test.refusals"))
    with caplog.at_level(logging.WARNING, "test.refusals"):
        written = [refusals.refused("origin", "origin not allowed", now=100.0 + i * 0.001) for i in range(1000)]
        assert refusals.refused("host", "host not allowed", now=100.5)  # another kind has its own interval
        assert refusals.refused("origin", "origin not allowed", now=110.1)
    assert written.count(True) == 1 and written[0]
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "refused origin not allowed",
        "refused host not allowed",
        "refused origin not allowed (999 more since the last line)",
    ]
