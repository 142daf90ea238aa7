"""Who may connect, and how much they may send.

- :class:`OriginHostGuard` is ASGI middleware that refuses a request before
  the WebSocket upgrade (and before any HTTP route) when its ``Host`` is not
  a loopback name (DNS rebinding) or its ``Origin`` is not on the allowlist.
- :class:`TokenBucket` limits the inbound message rate of one connection.
- :class:`InvalidMessageWindow` counts bad inbound messages over time.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("wirthforge.security")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

# Methods that cannot change anything; a foreign page may GET the health page.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(host_header: str) -> str:
    """The name part of a Host header: 'localhost:8145' -> 'localhost', '[::1]:80' -> '[::1]'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class OriginHostGuard:
    """ASGI middleware: exact-match Origin allowlist and loopback-only Host.

    Origin rules (WebSocket upgrades and state-changing HTTP requests):
    no Origin header (a non-browser client) is allowed; ``null`` (file://
    pages, sandboxed iframes: any page can forge it) only if the operator
    opts in; anything else must match the allowlist exactly.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_origins: Iterable[str],
        allowed_hosts: Iterable[str] = (),
        allow_null_origin: bool = False,
    ) -> None:
        self.app = app
        self.allowed_origins = frozenset(origin.rstrip("/").lower() for origin in allowed_origins)
        self.allowed_hosts = LOOPBACK_HOSTS | {host_name(h) for h in allowed_hosts}
        self.allow_null_origin = allow_null_origin
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            reason = self.refusal(scope)
            if reason is not None:
                self.refused += 1
                client = scope.get("client")
                log.warning("refused %s %s from %s: %s", scope["type"], scope.get("path"),
                            client[0] if client else "?", reason)
                await _deny(scope, send, 403, reason)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str | None:
        """Why this request must be refused, or None if it may proceed."""
        headers = _headers(scope)
        host = headers.get("host")
        if host is None or host_name(host) not in self.allowed_hosts:
            return "host not allowed (only loopback names are served)"
        if scope["type"] == "http" and scope.get("method", "GET") in _SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is None:
            return None
        origin = origin.strip().lower()
        if origin == "null":
            return None if self.allow_null_origin else "origin 'null' not allowed"
        if origin.rstrip("/") not in self.allowed_origins:
            return "origin not allowed"
        return None


def _headers(scope: Scope) -> dict[str, str]:
    # Last one wins; a request with two Host headers gets no benefit from it.
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


async def _deny(scope: Scope, send: Send, status: int, reason: str) -> None:
    """An HTTP error response, also before a WebSocket upgrade (ASGI denial-response extension)."""
    body = f"{reason}\n".encode()
    prefix = "websocket." if scope["type"] == "websocket" else ""
    if prefix and "websocket.http.response" not in scope.get("extensions", {}):
        # Servers without the extension turn a close before accept into a 403.
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
        return
    await send(
        {
            "type": prefix + "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": prefix + "http.response.body", "body": body})


class TokenBucket:
    """Allows *rate* events per second on average, with bursts up to *burst*."""

    __slots__ = ("rate", "burst", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class InvalidMessageWindow:
    """Counts invalid messages within a sliding window of *seconds*."""

    __slots__ = ("limit", "seconds", "_times")

    def __init__(self, limit: int, seconds: float = 10.0) -> None:
        self.limit = limit
        self.seconds = seconds
        self._times: deque[float] = deque()

    def record(self, now: float | None = None) -> bool:
        """Record one invalid message; True when the limit is now exceeded."""
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and self._times[0] < now - self.seconds:
            self._times.popleft()
        return len(self._times) > self.limit
