"""One client connection, from the accepted handshake to the close.

Each connection owns two activities:

- the *reader* (the ASGI handler task itself) enforces the inbound limits
  and hands each request to :class:`~.requests.Requests`, which answers it;
- the *writer* task drains the connection's :class:`~.outbox.Outbox` into
  the socket at whatever pace the client reads.

The hub calls :meth:`Connection.deliver` synchronously for every published
message (:meth:`Connection.deliver_frame` once per frame, with all of the
frame's messages); these only filter and then write or enqueue, they never
await, so one slow client cannot slow down the frame loop or any other
client. While a client keeps up, its queue is empty and the message's
pre-built frame goes straight to its socket (the *direct path*, one
``transport.write`` per frame); once the socket pushes back, messages queue
behind what is in flight and the writer task drains them (the *queued
path*, where latest-wins applies). Either way the bytes on the wire are
the same.

A connection moves through an explicit :class:`State`, like the
websockets library's: CONNECTING (accepted, greeting and replay being
queued) -> OPEN (attached to the hub, heartbeats and live traffic) ->
CLOSING (we or the peer started closing; nothing more is queued) ->
CLOSED. Each transition is checked, so that racing orderings are
impossible by construction: a connection that fails while it is
being set up is never attached; no heartbeat can be queued before
``startup_complete``; a writer that dies closes the connection (1011)
instead of leaving it open with nobody sending.

Energy frames are paced per connection from the client's heartbeat
answers (:mod:`.pacing`, heartbeats scheduled by :mod:`.heartbeat`), so a
client that reads slower than the frame rate gets fewer, fresh frames
instead of every frame, ever later. The connect URL's options are parsed
by :mod:`.options`; what ``/health`` shows of a connection is built in
http/health.py.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..protocol import messages
from ..protocol.codes import CloseCode
from ..protocol.messages import Event
from ..settings import Settings
from ..stream.hub import FrameBundle, Hub, Outbound, Recall, ResumeResult
from ..stream.rolling import RollingSamples
from ..stream.throttle import Throttle
from . import direct as transport
from .heartbeat import HeartbeatSchedule
from .limits import TokenBucket
from .options import ConnectOptions
from .outbox import Outbox
from .pacing import EnergyPacer
from .requests import Requests

log = logging.getLogger("wirthforge.connection")

_CLOSE_TIMEOUT = 1.0  # seconds to deliver a close frame before aborting the TCP connection
_SLOW_SEND_WARNING = 0.5  # seconds one send may block before it is worth a (rate-limited) warning
_slow_send_warnings = Throttle(10.0)  # shared by all connections: one line per 10 s at most


class State(enum.Enum):
    """Where a connection is in its life. Transitions only go forward (see _NEXT)."""

    CONNECTING = "connecting"  # accepted; startup_complete and the replay are being queued
    OPEN = "open"  # attached to the hub: live traffic and heartbeats
    CLOSING = "closing"  # a close was started; nothing more is queued
    CLOSED = "closed"  # the handler has returned


_NEXT: Mapping[State, frozenset[State]] = {
    State.CONNECTING: frozenset({State.OPEN, State.CLOSING, State.CLOSED}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A connection was asked to move to a state it cannot reach from where it is."""


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
        options: ConnectOptions,
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
        self.state = State.CONNECTING
        self.pacer = EnergyPacer(
            options.energy_rate, now=self.connected_at, nominal_rates=tuple(nominal_rates.values())
        )
        self._options = options
        self._nominal_rates = nominal_rates
        # At or above this energy rate every energy type goes out at its own rate (see _energy_due).
        self._full_energy_rate = max(nominal_rates.values(), default=settings.frame_rate)
        self._energy_credit: dict[str, float] = {}
        self._heartbeats = HeartbeatSchedule(self.connected_at, settings.heartbeat_interval)
        self._send_started: float | None = None  # time.monotonic() while the writer is inside a send
        self._inbound_bucket = TokenBucket(settings.inbound_rate, settings.inbound_burst)
        self._requests: Requests | None = Requests(
            self, hub.schemas, frame_rate=settings.frame_rate, max_invalid=settings.max_invalid_messages
        )
        self._writer: asyncio.Task[None] | None = None
        self._direct: transport.DirectWriter | None = None
        self.direct_writes = 0
        self._closer: asyncio.Task[None] | None = None
        self.close_code: int | None = None

    # -- lifetime -----------------------------------------------------------

    def is_open(self) -> bool:
        """Whether the connection is OPEN now: a call, so a check after a call or an await reads the state anew."""
        return self.state is State.OPEN

    def _transition(self, new: State) -> None:
        if new not in _NEXT[self.state]:
            raise InvalidTransition(f"connection {self.id}: {self.state.name} -> {new.name}")
        self.state = new

    async def serve(self) -> None:
        """Run the connection until either side closes it."""
        await self.websocket.accept(subprotocol=self.subprotocol)
        transport.tighten(transport.transport_of(self.websocket.scope))
        if self.settings.direct_writes:
            self._direct = transport.direct_writer(self.websocket.scope, self.hub.write_batch)
        try:
            # What the durable log holds for a resume is read before _start, which must not await.
            self._start(await self.hub.recall(self.subscriptions, self._options.resume))
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
            self._transition(State.CLOSED)
            # Break the cycles through this object (its tasks' tracebacks, Requests' back
            # reference), so that reference counting frees a closed connection now instead
            # of leaving it to a full garbage collection, which a burst of closes makes long.
            self._writer = self._closer = None
            self._requests = None

    def _start(self, recalled: Recall | None = None) -> None:
        """Greet, queue the replay and attach, with no await in between (see Hub.plan_resume).

        startup_complete is stamped now, so the replay that follows it has
        lower seqs; from the first message after it, seq strictly increases.
        The replay is queued as a lazy feed: it is rendered and sent as fast
        as the client reads, whatever its length, and live messages queue
        behind it. If anything fails meanwhile (state CLOSING), the
        connection is never attached and no writer starts.
        """
        plan = self.hub.plan_resume(self.subscriptions, self._options.resume, recalled)
        result = ResumeResult("incomplete", 0, "invalid_request") if self._options.resume_invalid else plan.result
        session = self._session_fields(result.as_payload()) if self.version == "1.1" else None
        self.send_own(
            messages.startup_complete(
                model_id=self.settings.model_id,
                tier=self.settings.tier,
                frame_rate=self.settings.frame_rate,
                capabilities=("council", "visualization") if self.settings.council else ("visualization",),
                session=session,
            )
        )
        replay = plan.in_seq_order()
        if replay:
            self.outbox.put_feed(self._replay_feed(replay))
            self.pacer.counted(len(replay))
        if self.state is not State.CONNECTING:
            return  # failed while being set up: the closer owns it now
        self._transition(State.OPEN)
        self.hub.attach(self)
        # After the replay, so that seq keeps increasing after startup_complete.
        for error in self._options.errors:
            self.send_own(error)
        if not self.is_open():  # sending an error may have failed the connection
            return
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.id}")
        self._writer.add_done_callback(self._writer_done)
        log.info(
            "connection %s open (protocol %s, resume %s, %d replayed)",
            self.id,
            self.version,
            result.status,
            result.replayed,
        )

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

    def _replay_feed(self, replay: Sequence[Outbound]) -> Iterator[str]:
        """Render the replay one message at a time, as the writer pulls it."""
        for outbound in replay:
            if outbound.channel not in self.subscriptions:
                continue  # unsubscribed meanwhile
            text = self.hub.render(outbound, self.version)
            if text is not None:
                yield text

    def fail(self, code: int, reason: str) -> None:
        """Close the connection from our side (idempotent, never blocks the caller)."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self._transition(State.CLOSING)
        self.hub.detach(self)  # no more deliveries
        self.outbox.close()
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
        """Called by the hub for every published message: filter, then write or enqueue."""
        if self.state is not State.OPEN:
            return
        channel = outbound.channel
        if channel not in self.subscriptions:
            return
        if outbound.reliable:
            self._send_reliable(outbound)
            return
        pacer = self.pacer
        if (
            self.energy_paused
            or (pacer.answering and pacer.holding_at(time.monotonic()))
            or not self._energy_due(outbound.event.type)
        ):
            return
        if self._write_now(outbound, energy=True):
            return
        text = self.hub.render(outbound, self.version)
        if text is None:
            return
        if self.outbox.put_latest(outbound.event.type, text):
            self.hub.stats.coalesced["latest_wins"] += 1  # replaced an unsent frame: nothing more to send
        else:
            pacer.counted(1, energy=1)

    def deliver_frame(self, bundle: FrameBundle) -> None:
        """Called by the hub once per frame with everything the frame published.

        The common case (see :meth:`_takes_whole`) costs one write of bytes
        joined once for all clients; anything else goes message by message
        through :meth:`deliver`, whose writes the open write batch still
        gathers into one.
        """
        if self.state is not State.OPEN:
            return
        if not self._takes_whole(bundle):
            for outbound in bundle.outbounds:
                self.deliver(outbound)
            return
        wire, sent, energy = bundle.wire(self.version)
        if sent:
            self._direct.write_last(wire)  # type: ignore[union-attr]  # _takes_whole checked it
            self.direct_writes += sent
            self.pacer.counted(sent, energy=energy)

    def _takes_whole(self, bundle: FrameBundle) -> bool:
        """Whether :meth:`deliver` would write every message of *bundle* directly, in order.

        That is: the direct path is open (see :meth:`_write_now`), the
        client is subscribed to every channel in the bundle, and if the
        bundle holds energy, energy is neither paused, held by the pacer
        nor decimated below any type's own rate.
        """
        direct = self._direct
        if direct is None or self.outbox or self._send_started is not None or not direct.ready():
            return False
        if not bundle.channels <= self.subscriptions:
            return False
        if not bundle.has_energy:
            return True
        if self.energy_paused or self.energy_rate < self._full_energy_rate:
            return False
        pacer = self.pacer  # its rate counts only while the client answers heartbeats (see effective_rate)
        return not pacer.answering or (pacer.rate >= self._full_energy_rate and not pacer.holding_at(bundle.now))

    def _send_reliable(self, outbound: Outbound) -> None:
        if self._write_now(outbound):
            return
        text = self.hub.render(outbound, self.version)
        if text is None:
            return
        if self.outbox.put_reliable(text):
            self.pacer.counted(1)
        else:
            self.fail(CloseCode.TRY_AGAIN_LATER, "slow consumer: send queue full")

    def _write_now(self, outbound: Outbound, *, energy: bool = False) -> bool:
        """The direct path: write the message's frame now if nothing can be ahead of it.

        Nothing is ahead when the queue is empty (a pending replay counts as
        an entry) and the writer is not inside a send (it may hold a message
        it took from the queue). True when the message is dealt with
        (written, or invalid and dropped by the hub).
        """
        direct = self._direct
        if direct is None or self.outbox or self._send_started is not None or not direct.ready():
            return False
        frame = self.hub.frame(outbound, self.version)
        if frame is not None:
            direct.write(frame)
            self.direct_writes += 1
            self.pacer.counted(1, energy=int(energy))
        return True

    def _energy_due(self, message_type: str) -> bool:
        """Decimate an energy type to this connection's rate, always keeping the newest frame."""
        nominal = self._nominal_rates.get(message_type, self.settings.frame_rate)
        rate = min(self.energy_rate, self.pacer.effective_rate)
        if rate >= nominal:
            return True
        credit = self._energy_credit.get(message_type, 1.0) + rate / nominal
        due = credit >= 1.0
        self._energy_credit[message_type] = credit - 1.0 if due else credit
        return due

    def send_own(self, event: Event) -> None:
        """Send a message of this connection's own (startup, heartbeat, replies), not from the fan-out."""
        self._send_reliable(self.hub.stamp(event))

    async def _write_loop(self) -> None:
        send = self.websocket.send
        outbox = self.outbox
        try:
            while self.state is State.OPEN:
                text = await outbox.get()
                if not self.is_open():
                    return  # closing: the close frame goes next, nothing else
                # No per-send timer: the heartbeat tick checks _send_started
                # (see heartbeat), which costs nothing per message. Both use
                # time.monotonic(), never the loop's clock.
                started = self._send_started = time.monotonic()
                await send({"type": "websocket.send", "text": text})
                self._send_started = None
                blocked = time.monotonic() - started
                if blocked > _SLOW_SEND_WARNING:
                    self._warn_slow_send(blocked)
        except (OSError, RuntimeError, WebSocketDisconnect):
            pass  # the reader sees the disconnect and ends the connection

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        """A writer that died of anything unexpected closes the connection (1011)."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("connection %s: writer failed", self.id, exc_info=task.exception())
        self.fail(CloseCode.INTERNAL_ERROR, "internal server error")

    def _warn_slow_send(self, blocked: float) -> None:
        _slow_send_warnings.warning(
            log, "connection %s: one send blocked %.0f ms (the client reads slowly)", self.id, blocked * 1000
        )

    # -- heartbeat ----------------------------------------------------------

    def heartbeat(self, achieved_rate: float, now: float) -> None:
        """Called by the server's heartbeat task every tick (*now* is time.monotonic()).

        Checks for a stalled send, then sends this connection's heartbeat if
        it is due: the first ones EARLY_HEARTBEATS after open (so that
        pacing has measures early), then one per heartbeat interval, and
        more often while the pacer asks for probes (EnergyPacer.probe_due).
        """
        if self.state is not State.OPEN:
            return  # not before startup_complete, not while closing
        if self._send_started is not None and now - self._send_started > self.settings.send_timeout:
            self.fail(CloseCode.TRY_AGAIN_LATER, "slow consumer: send stalled")
            return
        schedule = self._heartbeats
        if not schedule.due(now, self.pacer.probe_due(schedule.last_at)):
            return
        sequence = schedule.take(now)
        self.send_own(messages.heartbeat(sequence=sequence, frame_rate=achieved_rate, connection_id=self.id))
        self.pacer.probe_sent(sequence, now)  # after queuing: the mark counts the heartbeat itself

    # -- inbound ------------------------------------------------------------

    async def _read_loop(self) -> None:
        receive = self.websocket.receive
        requests = self._requests
        assert requests is not None  # None only once CLOSED
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.close_code = message.get("code")
                if self._closer is None:  # not our close: the client's, or the wire layer's (uvicorn_protocols.py)
                    log.info("connection %s closed: code %s", self.id, self.close_code)
                return
            if self.state is State.CLOSING:
                continue  # closing: drain until the disconnect arrives
            text = message.get("text")
            if text is None:
                self.fail(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported; send JSON text")
                continue
            if not self._inbound_bucket.take():
                self.fail(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                continue
            kind = requests.handle_text(text)
            if kind is not None:
                log.debug("connection %s: %s", self.id, kind)  # the type only: payloads may hold private text

    def heartbeat_answered(self, sequence: int) -> None:
        """The client answered heartbeat *sequence*: a round-trip time and a pacing measure."""
        round_trip = self.pacer.probe_answered(sequence, time.monotonic())
        if round_trip is not None:
            self.rtt.add(round_trip)

    def set_energy_rate(self, rate: float) -> None:
        """The client's energy rate (a number from 1 to the frame rate, checked by the caller)."""
        self.energy_rate = rate
        self.pacer.set_ceiling(rate)
        self._energy_credit.clear()

    def pause_energy(self, paused: bool) -> None:
        """Stop or restart energy frames; after a resume the next frame goes out at once."""
        self.energy_paused = paused
        if not paused:
            self._energy_credit.clear()
