"""Who may connect, and how much they may send.

- :class:`OriginHostGuard` is ASGI middleware that refuses a request before
  the WebSocket upgrade (and before any HTTP route) when its ``Host`` is not
  a loopback name (DNS rebinding) or its ``Origin`` is not on the allowlist,
  and with 400 when either header is repeated (RFC 9112 §3.2).
- the inbound message rate of one connection is limited by :class:`~.limits.TokenBucket`.
- :class:`InvalidMessageWindow` counts bad inbound messages over time.
- :class:`RefusalLog` writes refusals to the log at most once per
  :data:`REFUSAL_LOG_EVERY` seconds per kind, with the count of those folded
  in: a hostile page can send hundreds of refused requests a second, and an
  unthrottled line each would fill the disk and cost a core.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from ..stream.throttle import Throttle

log = logging.getLogger("wirthforge.security")

REFUSAL_LOG_EVERY = 10.0  # seconds between two log lines of one kind of refusal

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

# Methods that cannot change anything; a foreign page may GET the health page.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# RFC 3986 authority without userinfo: a bracketed IP literal or a name
# without colons, then an optional port. Nothing may follow the port or the
# closing bracket: '[::1].evil.example' and '[::1]evil' do not match.
_HOST_RE = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[^\[\]:]+)(?::[0-9]*)?")


def host_name(host_header: str) -> str | None:
    """The name part of a Host header ('localhost:8145' -> 'localhost', '[::1]:80' -> '[::1]'), None if malformed."""
    match = _HOST_RE.fullmatch(host_header.strip().lower())
    return match["name"] if match else None


class RefusalLog:
    """Rate-limited warnings for refused requests: one line per kind per interval, with a suppressed count.

    *kind* is a short fixed label ("origin", "host", "prompt", ...), never
    anything the client sent; *detail* is our own reason text.
    """

    def __init__(self, interval: float = REFUSAL_LOG_EVERY, logger: logging.Logger = log) -> None:
        self.interval = interval
        self.logger = logger
        self._throttles: dict[str, Throttle] = {}

    def refused(self, kind: str, detail: str, now: float | None = None) -> bool:
        """Log one refusal of *kind* unless one was logged within the interval; True if a line was written."""
        throttle = self._throttles.get(kind)
        if throttle is None:
            throttle = self._throttles[kind] = Throttle(self.interval)
        return throttle.warning(self.logger, "refused %s", detail, now=now)


# Shared by every refusal path of the process (guard, prompt API, WebSocket endpoint).
refusals = RefusalLog()


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
        self.allowed_hosts = LOOPBACK_HOSTS | {name for name in map(host_name, allowed_hosts) if name}
        self.allow_null_origin = allow_null_origin
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = self.refusal(scope)
            if refusal is not None:
                status, reason = refusal
                self.refused += 1
                client = scope.get("client")
                # One kind per (type, reason): the path is the client's text, so it is cut and made printable.
                path = "".join(c if c.isprintable() else "?" for c in str(scope.get("path"))[:80])
                refusals.refused(
                    f"{scope['type']}:{reason}",
                    f"{scope['type']} {path} from {client[0] if client else '?'}: {reason}",
                )
                await _deny(scope, send, status, reason)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(HTTP status, reason) if this request must be refused, None if it may proceed."""
        headers = _headers(scope, ("host", "origin"))
        hosts, origins = headers["host"], headers["origin"]
        # Two Host (or Origin) headers: which one a proxy, the browser and we
        # would each believe differs, so neither is trusted (RFC 9112 §3.2: 400).
        if len(hosts) > 1:
            return 400, "more than one Host header"
        if len(origins) > 1:
            return 400, "more than one Origin header"
        if not hosts or host_name(hosts[0]) not in self.allowed_hosts:
            return 403, "host not allowed (only loopback names are served)"
        if scope["type"] == "http" and scope.get("method", "GET") in _SAFE_METHODS:
            return None
        if not origins:
            return None
        origin = origins[0].strip().lower()
        if origin == "null":
            return None if self.allow_null_origin else (403, "origin 'null' not allowed")
        if origin.rstrip("/") not in self.allowed_origins:
            return 403, "origin not allowed"
        return None


def _headers(scope: Scope, names: tuple[str, ...]) -> dict[str, list[str]]:
    """Every value of each header in *names* (lower-case), in order."""
    found: dict[str, list[str]] = {name: [] for name in names}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        if name in found:
            found[name].append(raw_value.decode("latin-1"))
    return found


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
