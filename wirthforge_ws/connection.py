"""One client connection, from the accepted handshake to the close.

Each connection owns two activities:

- the *reader* (the ASGI handler task itself) parses and answers what the
  client sends, enforcing the inbound limits;
- the *writer* task drains the connection's :class:`~.outbox.Outbox` into
  the socket at whatever pace the client reads.

The hub calls :meth:`Connection.deliver` synchronously for every published
message; that method only filters and enqueues, it never awaits, so one
slow client cannot slow down the frame loop or any other client.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import messages, transport
from .hub import Hub, Outbound, ResumeRequest, ResumeResult
from .messages import Event
from .metrics import RollingSamples
from .outbox import Outbox
from .protocol import ALWAYS_ON_CHANNEL, CHANNELS, REQUESTS_1_1, CloseCode, ErrorCode
from .schemas import MessageValidationError
from .security import InvalidMessageWindow, TokenBucket
from .settings import Settings

log = logging.getLogger("wirthforge.connection")

_HEARTBEATS_REMEMBERED = 16
_CLOSE_TIMEOUT = 1.0  # seconds to deliver a close frame before aborting the TCP connection


@dataclass
class SessionOptions:
    """What a 1.1 client asked for in its connect URL (PROTOCOL.md §6)."""

    channels: set[str]
    energy_rate: float
    resume: ResumeRequest | None = None
    errors: list[Event] = field(default_factory=list)
    resume_invalid: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str], settings: Settings, version: str) -> SessionOptions:
        options = cls(set(CHANNELS), settings.frame_rate)
        if version != "1.1":
            return options  # 1.0 knows no options; the query is ignored
        if "channels" in query:
            names = {name.strip() for name in query["channels"].split(",") if name.strip()}
            unknown = sorted(names - set(CHANNELS))
            if unknown:
                options.errors.append(_error(ErrorCode.UNKNOWN_CHANNEL, "Unknown channel in the connect URL.",
                                             {"unknown": unknown[:10], "channels": list(CHANNELS)}))
            options.channels = (names & set(CHANNELS)) | {ALWAYS_ON_CHANNEL}
        if "energyRate" in query:
            rate = _parse_rate(query["energyRate"], settings.frame_rate)
            if rate is None:
                options.errors.append(_error(ErrorCode.INVALID_ENERGY_RATE,
                                             f"energyRate must be a number from 1 to {settings.frame_rate:g}."))
            else:
                options.energy_rate = rate
        if "epoch" in query or "lastSeq" in query:
            epoch, last_seq = query.get("epoch", ""), query.get("lastSeq", "")
            if epoch and len(epoch) <= 64 and last_seq.isdigit() and len(last_seq) <= 18:
                options.resume = ResumeRequest(epoch, int(last_seq))
            else:
                options.resume_invalid = True
                options.errors.append(_error(ErrorCode.INVALID_RESUME,
                                             "Resume needs both epoch and lastSeq (a non-negative integer); "
                                             "starting a fresh session."))
        return options


class Connection:
    """A client: the hub's subscriber, its reader and its writer."""

    def __init__(
        self,
        websocket: WebSocket,
        *,
        hub: Hub,
        settings: Settings,
        version: str,
        subprotocol: str | None,
        options: SessionOptions,
        nominal_rates: Mapping[str, float],
    ) -> None:
        self.websocket = websocket
        self.hub = hub
        self.settings = settings
        self.version = version
        self.subprotocol = subprotocol
        self.id = "conn-" + secrets.token_hex(6)
        self.subscriptions = options.channels
        self.energy_rate = options.energy_rate
        self.energy_paused = False
        self.outbox = Outbox(settings.send_queue_limit)
        self.rtt = RollingSamples(32)
        self.connected_at = time.monotonic()
        self._options = options
        self._nominal_rates = nominal_rates
        self._energy_credit: dict[str, float] = {}
        self._heartbeat_sequence = 0
        self._heartbeats_sent: dict[int, float] = {}
        self._send_started: float | None = None  # set while the writer is inside a send
        self._inbound_bucket = TokenBucket(settings.inbound_rate, settings.inbound_burst)
        self._invalid = InvalidMessageWindow(settings.max_invalid_messages)
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.close_code: int | None = None

    # -- lifetime -----------------------------------------------------------

    async def serve(self) -> None:
        """Run the connection until either side closes it."""
        await self.websocket.accept(subprotocol=self.subprotocol)
        transport.tighten(transport.transport_of(self.websocket.scope))
        try:
            self._start()
            await self._read_loop()
        except Exception:
            log.exception("connection %s failed", self.id)
            self.fail(CloseCode.INTERNAL_ERROR, "internal server error")
        finally:
            self.hub.detach(self)
            if self._writer is not None:
                self._writer.cancel()
            if self._closer is not None:
                await asyncio.gather(self._closer, return_exceptions=True)

    def _start(self) -> None:
        """Greet, replay and attach, with no await in between (see Hub.plan_resume).

        startup_complete is stamped now, so the replay that follows it has
        lower seqs; from the first message after it, seq strictly increases.
        """
        plan = self.hub.plan_resume(self.subscriptions, self._options.resume)
        result = ResumeResult("incomplete", 0, "invalid_request") if self._options.resume_invalid else plan.result
        session = self._session_fields(result.as_payload()) if self.version == "1.1" else None
        self._send_direct(
            messages.startup_complete(
                model_id=self.settings.model_id,
                tier=self.settings.tier,
                frame_rate=self.settings.frame_rate,
                capabilities=("council", "visualization") if self.settings.council else ("visualization",),
                session=session,
            )
        )
        self.hub.attach(self, plan)
        # After the replay, so that seq keeps increasing after startup_complete.
        for error in self._options.errors:
            self._send_direct(error)
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.id}")
        log.info("connection %s open (protocol %s, resume %s, %d replayed)",
                 self.id, self.version, result.status, result.replayed)

    def _session_fields(self, resume: dict[str, object]) -> dict[str, Any]:
        s = self.settings
        return {
            "protocol": "1.1",
            "connectionId": self.id,
            "epoch": self.hub.epoch,
            "heartbeatIntervalMs": round(s.heartbeat_interval * 1000),
            "channels": {
                "energy": {"rateHz": s.frame_rate, "delivery": "latest"},
                "experience": {"rateHz": None, "delivery": "reliable"},
                "council": {"rateHz": None, "delivery": "reliable"},
                "reward": {"rateHz": None, "delivery": "reliable"},
                "system": {"rateHz": 1.0 / s.heartbeat_interval, "delivery": "reliable"},
            },
            "subscriptions": sorted(self.subscriptions),
            "energyRateHz": self.energy_rate,
            "limits": {
                "maxMessageBytes": s.max_message_bytes,
                "messagesPerSecond": s.inbound_rate,
                "messageBurst": s.inbound_burst,
                "sendQueueMessages": s.send_queue_limit,
                "sendTimeoutMs": round(s.send_timeout * 1000),
                "historyMessages": s.history_messages,
                "historySeconds": s.history_seconds,
            },
            "resume": resume,
        }

    def fail(self, code: int, reason: str) -> None:
        """Close the connection from our side (idempotent, never blocks the caller)."""
        if self._closer is not None:
            return
        self.hub.detach(self)  # no more deliveries
        self.hub.stats.closed[reason] += 1
        log.info("closing connection %s: %d %s", self.id, code, reason)
        self._closer = asyncio.create_task(self._close(code, reason), name=f"close-{self.id}")

    async def _close(self, code: int, reason: str) -> None:
        if self._writer is not None:
            self._writer.cancel()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self.websocket.close(code, reason)
            return
        except (TimeoutError, OSError, RuntimeError, WebSocketDisconnect):
            pass
        # A client that stopped reading cannot receive a close frame either:
        # its socket buffer is full. Drop the TCP connection so its memory is
        # freed now rather than when keepalive gives up.
        transport.abort(transport.transport_of(self.websocket.scope))

    # -- outbound -----------------------------------------------------------

    def deliver(self, outbound: Outbound) -> None:
        """Called by the hub for every published message: filter, then enqueue."""
        channel = outbound.channel
        if channel not in self.subscriptions:
            return
        if outbound.reliable:
            text = self.hub.render(outbound, self.version)
            if text is not None and not self.outbox.put_reliable(text):
                self.fail(CloseCode.TRY_AGAIN_LATER, "slow consumer: send queue full")
            return
        if self.energy_paused or not self._energy_due(outbound.event.type):
            return
        text = self.hub.render(outbound, self.version)
        if text is not None and self.outbox.put_latest(outbound.event.type, text):
            self.hub.stats.coalesced["latest_wins"] += 1

    def _energy_due(self, message_type: str) -> bool:
        """Decimate an energy type to this connection's rate, always keeping the newest frame."""
        nominal = self._nominal_rates.get(message_type, self.settings.frame_rate)
        if self.energy_rate >= nominal:
            return True
        credit = self._energy_credit.get(message_type, 1.0) + self.energy_rate / nominal
        due = credit >= 1.0
        self._energy_credit[message_type] = credit - 1.0 if due else credit
        return due

    def _send_direct(self, event: Event) -> None:
        """Send a message meant for this connection only (not via fan-out)."""
        text = self.hub.render_direct(event, self.version)
        if text is not None and not self.outbox.put_reliable(text):
            self.fail(CloseCode.TRY_AGAIN_LATER, "slow consumer: send queue full")

    async def _write_loop(self) -> None:
        send = self.websocket.send
        outbox = self.outbox
        loop = asyncio.get_running_loop()
        try:
            while True:
                text = await outbox.get()
                # No per-send timer: the heartbeat tick checks _send_started
                # (see check_stalled), which costs nothing per message.
                self._send_started = loop.time()
                await send({"type": "websocket.send", "text": text})
                self._send_started = None
        except (OSError, RuntimeError, WebSocketDisconnect):
            pass  # the reader sees the disconnect and ends the connection

    # -- heartbeat ----------------------------------------------------------

    def heartbeat(self, achieved_rate: float, now: float) -> None:
        """Called once per heartbeat interval by the server's heartbeat task."""
        if self._closer is not None:
            return
        if self._send_started is not None and now - self._send_started > self.settings.send_timeout:
            self.fail(CloseCode.TRY_AGAIN_LATER, "slow consumer: send stalled")
            return
        sequence = self._heartbeat_sequence
        self._heartbeat_sequence += 1
        self._heartbeats_sent[sequence] = now
        if len(self._heartbeats_sent) > _HEARTBEATS_REMEMBERED:
            del self._heartbeats_sent[min(self._heartbeats_sent)]
        self._send_direct(messages.heartbeat(sequence=sequence, frame_rate=achieved_rate, connection_id=self.id))

    # -- inbound ------------------------------------------------------------

    async def _read_loop(self) -> None:
        receive = self.websocket.receive
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.close_code = message.get("code")
                if self._closer is None:  # not our close: the client's, or the wire layer's (wire.py)
                    log.info("connection %s closed: code %s", self.id, self.close_code)
                return
            if self._closer is not None:
                continue  # closing: drain until the disconnect arrives
            text = message.get("text")
            if text is None:
                self.fail(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported; send JSON text")
                continue
            if not self._inbound_bucket.take():
                self.fail(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                continue
            self._handle_text(text)

    def _handle_text(self, text: str) -> None:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._reject(ErrorCode.INVALID_JSON, "The message is not valid JSON.")
            return
        kind = request.get("type") if isinstance(request, dict) else None
        if not isinstance(kind, str):
            kind = None  # a list or object is unhashable; validation below reports it as INVALID_MESSAGE
        if self.version != "1.1" and kind in REQUESTS_1_1:
            self._reject(ErrorCode.UNSUPPORTED_BY_PROTOCOL,
                         f"'{kind}' needs protocol 1.1; connect with subprotocol wirthforge.1.1.")
            return
        try:
            self.hub.schemas.validate_inbound(request)
        except MessageValidationError as error:
            self._reject_invalid(error)
            return
        log.debug("connection %s: %s", self.id, kind)  # the type only: payloads may hold private text
        payload = request.get("payload") or {}
        handler = getattr(self, "_on_" + kind)
        handler(payload)

    def _reject_invalid(self, error: MessageValidationError) -> None:
        """Answer a schema failure with the most specific code the client can act on."""
        if error.unknown_type:
            self._reject(ErrorCode.UNKNOWN_MESSAGE_TYPE, "Unknown message type.",
                         {"accepted": sorted(self.hub.schemas.inbound_types())})
        elif error.path.startswith("/payload/channels/") and error.keyword == "enum":
            self._reject(ErrorCode.UNKNOWN_CHANNEL, "Unknown channel.", {"channels": list(CHANNELS)})
        elif error.path == "/payload/rateHz":
            self._reject(ErrorCode.INVALID_ENERGY_RATE,
                         f"rateHz must be a number from 1 to {self.settings.frame_rate:g}.")
        else:
            self._reject(ErrorCode.INVALID_MESSAGE, "The message does not match its schema.",
                         {"reason": error.reason, "path": error.path})

    def _reject(self, code: ErrorCode, text: str, details: dict[str, Any] | None = None) -> None:
        self._send_direct(_error(code, text, details))
        if self._invalid.record():
            self.fail(CloseCode.POLICY_VIOLATION, "too many invalid messages")

    def _on_heartbeat_response(self, payload: dict[str, Any]) -> None:
        sent = self._heartbeats_sent.pop(payload["sequence"], None)
        if sent is not None:
            self.rtt.add(time.monotonic() - sent)

    def _on_subscribe(self, payload: dict[str, Any]) -> None:
        names = self._known_channels(payload["channels"])
        if names is not None:
            self.subscriptions |= names

    def _on_unsubscribe(self, payload: dict[str, Any]) -> None:
        names = self._known_channels(payload["channels"])
        if names is None:
            return
        if ALWAYS_ON_CHANNEL in names:
            self._reject(ErrorCode.INVALID_SUBSCRIPTION, "The system channel cannot be unsubscribed.")
            return
        self.subscriptions -= names

    def _known_channels(self, names: list[str]) -> set[str] | None:
        unknown = sorted(set(names) - set(CHANNELS))
        if unknown:
            self._reject(ErrorCode.UNKNOWN_CHANNEL, "Unknown channel.", {"channels": list(CHANNELS)})
            return None
        return set(names)

    def _on_set_energy_rate(self, payload: dict[str, Any]) -> None:
        rate = _parse_rate(payload["rateHz"], self.settings.frame_rate)
        if rate is None:
            self._reject(ErrorCode.INVALID_ENERGY_RATE,
                         f"rateHz must be a number from 1 to {self.settings.frame_rate:g}.")
            return
        self.energy_rate = rate
        self._energy_credit.clear()

    def _on_pause_energy(self, payload: dict[str, Any]) -> None:
        self.energy_paused = True

    def _on_resume_energy(self, payload: dict[str, Any]) -> None:
        self.energy_paused = False
        self._energy_credit.clear()  # the next frame goes out at once

    # -- reporting ----------------------------------------------------------

    def info(self) -> dict[str, Any]:
        rtt = self.rtt.summary(scale=1000.0)
        last_rtt = self.rtt.last()
        return {
            "id": self.id,
            "protocol": self.version,
            "connectedSeconds": round(time.monotonic() - self.connected_at, 1),
            "rttMs": {"last": None if last_rtt is None else round(last_rtt * 1000, 3), "p50": rtt["p50"]},
            "queued": len(self.outbox),
            "subscriptions": sorted(self.subscriptions),
            "energyRateHz": self.energy_rate,
            "energyPaused": self.energy_paused,
        }


def _error(code: ErrorCode, text: str, details: dict[str, Any] | None = None) -> Event:
    return messages.error_event(code, text, details=details)


def _parse_rate(raw: object, maximum: float) -> float | None:
    try:
        rate = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not (1.0 <= rate <= maximum):
        return None
    return rate
