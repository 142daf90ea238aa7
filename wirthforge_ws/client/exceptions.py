"""Errors raised by :class:`~wirthforge_ws.client.WirthforgeClient`.

Every error derives from :class:`WirthforgeClientError`, so a caller can
catch them all at once. Timeouts are plain :class:`TimeoutError`.
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "PolicyCloseError",
    "UnsupportedByProtocolError",
    "WirthforgeClientError",
]


class WirthforgeClientError(Exception):
    """Base class of the errors this package raises."""


class ClientClosedError(WirthforgeClientError):
    """The client was closed while someone was waiting on it."""


class PolicyCloseError(WirthforgeClientError):
    """The server refused this client (policy close or 4xx handshake); it will not reconnect."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"refused by the server: {code} {reason}".strip())
        self.code = code
        self.reason = reason


class UnsupportedByProtocolError(WirthforgeClientError):
    """A 1.1 request (subscribe, set_energy_rate, ...) on a 1.0 client."""
