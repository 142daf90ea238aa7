"""What a client may ask over its socket: parsing, checking and answering inbound requests.

Each text frame is parsed (orjson), refused if it is a 1.1 request on a
1.0 connection, validated against the inbound schemas and dispatched to
``_on_<type>``. Every refusal is an error_event with the most specific
code the client can act on; too many invalid messages within the window
close the connection (1008). A handler changes the connection only
through its :class:`Requester` methods.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from ..protocol.codes import ALWAYS_ON_CHANNEL, CHANNELS, REQUESTS_1_1, CloseCode, ErrorCode
from ..protocol.messages import Event
from ..protocol.schemas import MessageValidationError, SchemaSet
from .options import error, parse_rate
from .security import InvalidMessageWindow


class Requester(Protocol):
    """What answering requests needs of a connection."""

    version: str
    subscriptions: set[str]

    def send_own(self, event: Event) -> None: ...
    def fail(self, code: int, reason: str) -> None: ...
    def heartbeat_answered(self, sequence: int) -> None: ...
    def set_energy_rate(self, rate: float) -> None: ...
    def pause_energy(self, paused: bool) -> None: ...


class Requests:
    """Answers one connection's inbound requests."""

    def __init__(self, connection: Requester, schemas: SchemaSet, *, frame_rate: float, max_invalid: int) -> None:
        self._connection = connection
        self._schemas = schemas
        self._frame_rate = frame_rate
        self._invalid = InvalidMessageWindow(max_invalid)

    def handle_text(self, text: str) -> str | None:
        """Answer one text frame; the request's type when it was valid and handled, else None."""
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._reject(ErrorCode.INVALID_JSON, "The message is not valid JSON.")
            return None
        kind = request.get("type") if isinstance(request, dict) else None
        if not isinstance(kind, str):
            kind = None  # a list or object is unhashable; validation below reports it as INVALID_MESSAGE
        if self._connection.version != "1.1" and kind in REQUESTS_1_1:
            self._reject(
                ErrorCode.UNSUPPORTED_BY_PROTOCOL,
                f"'{kind}' needs protocol 1.1; connect with subprotocol wirthforge.1.1.",
            )
            return None
        try:
            self._schemas.validate_inbound(request)
        except MessageValidationError as invalid:
            self._reject_invalid(invalid)
            return None
        payload = request.get("payload") or {}
        handler = getattr(self, f"_on_{kind}")  # the schemas accept only the types handled here
        handler(payload)
        return kind

    def _reject_invalid(self, invalid: MessageValidationError) -> None:
        """Answer a schema failure with the most specific code the client can act on."""
        if invalid.unknown_type:
            self._reject(
                ErrorCode.UNKNOWN_MESSAGE_TYPE,
                "Unknown message type.",
                {"accepted": sorted(self._schemas.inbound_types())},
            )
        elif invalid.path.startswith("/payload/channels/") and invalid.keyword == "enum":
            self._reject(ErrorCode.UNKNOWN_CHANNEL, "Unknown channel.", {"channels": list(CHANNELS)})
        elif invalid.path == "/payload/rateHz":
            self._reject_rate()
        else:
            self._reject(
                ErrorCode.INVALID_MESSAGE,
                "The message does not match its schema.",
                {"reason": invalid.reason, "path": invalid.path},
            )

    def _reject_rate(self) -> None:
        self._reject(ErrorCode.INVALID_ENERGY_RATE, f"rateHz must be a number from 1 to {self._frame_rate:g}.")

    def _reject(self, code: ErrorCode, text: str, details: dict[str, Any] | None = None) -> None:
        self._connection.send_own(error(code, text, details))
        if self._invalid.record():
            self._connection.fail(CloseCode.POLICY_VIOLATION, "too many invalid messages")

    def _on_heartbeat_response(self, payload: dict[str, Any]) -> None:
        self._connection.heartbeat_answered(payload["sequence"])

    def _on_subscribe(self, payload: dict[str, Any]) -> None:
        names = self._known_channels(payload["channels"])
        if names is not None:
            self._connection.subscriptions |= names

    def _on_unsubscribe(self, payload: dict[str, Any]) -> None:
        names = self._known_channels(payload["channels"])
        if names is None:
            return
        if ALWAYS_ON_CHANNEL in names:
            self._reject(ErrorCode.INVALID_SUBSCRIPTION, "The system channel cannot be unsubscribed.")
            return
        self._connection.subscriptions -= names

    def _known_channels(self, names: list[str]) -> set[str] | None:
        unknown = sorted(set(names) - set(CHANNELS))
        if unknown:
            self._reject(ErrorCode.UNKNOWN_CHANNEL, "Unknown channel.", {"channels": list(CHANNELS)})
            return None
        return set(names)

    def _on_set_energy_rate(self, payload: dict[str, Any]) -> None:
        rate = parse_rate(payload["rateHz"], self._frame_rate)
        if rate is None:
            self._reject_rate()
            return
        self._connection.set_energy_rate(rate)

    def _on_pause_energy(self, payload: dict[str, Any]) -> None:
        self._connection.pause_energy(True)

    def _on_resume_energy(self, payload: dict[str, Any]) -> None:
        self._connection.pause_energy(False)
