"""The reconnecting, resuming client: :class:`WirthforgeClient`.

One background task per client owns the connection. It connects, reads,
answers heartbeats, and reconnects with :class:`~.backoff.Backoff` when the
connection drops, resuming from the :class:`~.session.ResumeCursor` with the
:class:`~.session.SessionOptions` the caller chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Literal, NoReturn

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus
from websockets.typing import Origin, Subprotocol

from ..protocol.codes import SUBPROTOCOL_1_1, SUBPROTOCOLS
from .backoff import Backoff
from .exceptions import ClientClosedError, PolicyCloseError, UnsupportedByProtocolError, WirthforgeClientError
from .rules import CONNECT_TIMEOUT_S, close_action, dead_after, handshake_action, session_was_stable
from .session import ResumeCursor, SessionOptions, build_url
from .stats import ClientState, ClientStats
from .utils import is_int, is_number, plain_number

__all__ = [
    "ABNORMAL_CLOSURE",
    "DEFAULT_URL",
    "Message",
    "MessageCallback",
    "Predicate",
    "WirthforgeClient",
]

# The package's name, not this module's: the client's records carry the name a
# user configures logging for, whichever module of the client writes them.
logger = logging.getLogger("wirthforge_ws.client")

DEFAULT_URL: Final = "ws://127.0.0.1:8145/ws"
ABNORMAL_CLOSURE: Final = 1006  # no close frame: the TCP connection dropped

Message = dict[str, Any]
MessageCallback = Callable[[Message], "Awaitable[None] | None"]
Predicate = Callable[[Message], bool]

_SUBPROTOCOL_OF: Final = {version: name for name, version in SUBPROTOCOLS.items()}


class WirthforgeClient:
    """A reconnecting, resuming client for one WIRTHFORGE server.

    ``async with WirthforgeClient(url) as client`` (or :meth:`start` /
    :meth:`close`) runs one background task that owns the connection: it
    connects, hands every new message to *on_message* and to
    :meth:`wait_for` waiters, answers heartbeats and, when the connection
    drops, reconnects with :class:`Backoff`. With protocol 1.1 each reconnect
    carries ``epoch``/``lastSeq`` so that the reliable channels resume without
    loss, and the chosen channels, energy rate and pause survive reconnects.
    A message whose ``seq`` repeats or goes backwards is dropped and counted
    (:class:`ResumeCursor`), so consumers see each message at most once.

    Every rule it follows (when to reconnect, backoff, dead link, resume and
    de-duplication, frame gaps) is PROTOCOL.md §10, implemented in
    :mod:`.rules` and checked by the conformance vectors. It stops
    reconnecting only when the server says this client is the problem: a
    policy close (1002, 1003, 1007, 1008, 1009) or a 4xx handshake refusal. State then
    becomes ``"refused"`` with :attr:`close_code` and :attr:`close_reason`.
    Everything else (1000, 1001, 1006, 1011, 1012, 1013, connection
    refused, timeouts) is retried.

    Args:
        url: WebSocket URL (``ws://127.0.0.1:8145/ws``); its own query is kept.
        protocol: ``"1.1"`` offers ``wirthforge.1.1``; ``"1.0"`` offers
            ``wirthforge.1.0``; ``None`` offers nothing (a plain 1.0 client).
        channels: channels to receive (default all; ``system`` is implied).
        energy_rate: energy frames per second (default the frame rate).
        origin: ``Origin`` header, only if given (the server checks it).
        on_message: called with each new message dict, in order; may be a
            coroutine function, which is awaited before the next message is
            read (keep it short: a slow consumer is closed by the server with 1013).
        backoff: reconnect delays (default the protocol's: 0.1 s base, 1 s cap).
        open_timeout: seconds from the start of an attempt to its
            startup_complete before the attempt is abandoned (§10: 5 s).
        stale_after: seconds without any inbound frame before an open
            session is presumed dead and aborted; ``None`` (default) is the
            protocol's rule, three announced heartbeat intervals. Tests
            shorten it; a real client has no reason to.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        protocol: Literal["1.0", "1.1"] | None = "1.1",
        channels: Iterable[str] | None = None,
        energy_rate: float | None = None,
        origin: str | None = None,
        on_message: MessageCallback | None = None,
        backoff: Backoff | None = None,
        open_timeout: float = CONNECT_TIMEOUT_S,
        close_timeout: float = 2.0,
        stale_after: float | None = None,
        max_size: int = 2**22,
        stats: ClientStats | None = None,
    ) -> None:
        if protocol not in ("1.0", "1.1", None):
            raise ValueError(f"protocol must be '1.0', '1.1' or None, not {protocol!r}")
        self.url = url
        self.requested_protocol = protocol
        self.origin = origin
        self.on_message = on_message
        self.options = SessionOptions(channels, energy_rate)
        self.cursor = ResumeCursor()
        self.backoff = backoff or Backoff()
        self.stats = stats or ClientStats()
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.stale_after = stale_after
        self.max_size = max_size
        self.session: dict[str, Any] | None = None  # payload of the current startup_complete
        self.last_resume: dict[str, Any] | None = None
        self.exception: BaseException | None = None  # what stopped the client when state is "failed"

        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._session_ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._waiters: list[tuple[Predicate, asyncio.Future[Message]]] = []
        self._last_receive = 0.0
        self._attempt_started = 0.0
        self._session_started: float | None = None  # monotonic time of the current session's startup_complete
        self._lost_at: float | None = None

    @property
    def state(self) -> ClientState:
        """``idle``, ``connecting``, ``open``, ``reconnecting``, ``refused``, ``failed`` or ``closed``."""
        return self.stats.state

    @property
    def connection(self) -> ClientConnection | None:
        """The live ``websockets`` connection, or None between sessions."""
        return self._ws

    @property
    def protocol(self) -> str | None:
        """The protocol of the current (or last) session: ``"1.1"``, ``"1.0"``, or None before any."""
        if self.session is None:
            return None
        return "1.1" if self.session.get("protocol") == "1.1" else "1.0"

    @property
    def epoch(self) -> str | None:
        """The server's stream epoch, from the last startup_complete."""
        return self.cursor.epoch

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` processed in the current epoch."""
        return self.cursor.last_seq

    @property
    def close_code(self) -> int | None:
        """The close code of the last connection (None for a refused handshake)."""
        return self.stats.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason of the last connection, or why the handshake was refused."""
        return self.stats.close_reason

    @property
    def frame_rate(self) -> float | None:
        """The server's frame rate announced in the current session, if any."""
        value = (self.session or {}).get("frameRate")
        return float(value) if is_number(value) else None

    async def __aenter__(self) -> WirthforgeClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the connection task (idempotent while it runs)."""
        if self._task is not None and not self._task.done():
            return
        self._closing = False
        self._stopped.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"wirthforge-client {self.url}")

    async def close(self) -> None:
        """Close the connection (code 1000) and stop the task; pending waiters get :class:`ClientClosedError`."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self.close_timeout)
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.state not in ("refused", "failed"):
            self.stats.state = "closed"
        self._fail_waiters(ClientClosedError("client closed"))

    async def wait_stopped(self) -> None:
        """Wait until the connection task ends on its own (refused or failed) or is closed."""
        await self._stopped.wait()

    async def wait_connected(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """Wait for a live session; returns its startup_complete payload.

        Raises :class:`PolicyCloseError` if the server refuses this client,
        :class:`ClientClosedError` if the client stops first, TimeoutError.
        """
        ready = asyncio.ensure_future(self._session_ready.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait({ready, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (ready, stopped):
                waiter.cancel()
        if ready in done and self.session is not None:
            return self.session
        if stopped in done:
            raise self._stop_error()
        raise TimeoutError(f"no session within {timeout} s (state {self.state})")

    def wait_for(self, predicate: Predicate, timeout: float | None = 10.0) -> Awaitable[Message]:
        """An awaitable for the next new message that satisfies *predicate*.

        The waiter is registered when this is called, not when it is awaited,
        so this works without a race::

            got = client.wait_for(lambda m: m["type"] == "reward_event")
            await publish(...)
            message = await got

        Raises TimeoutError, or :class:`ClientClosedError`/:class:`PolicyCloseError`
        when the client stops first. Only messages read after the call count.
        """
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        if self._stopped.is_set() and self._task is not None:
            future.set_exception(self._stop_error())
        else:
            self._waiters.append(entry)
        return self._await_waiter(entry, timeout)

    async def _await_waiter(self, entry: tuple[Predicate, asyncio.Future[Message]], timeout: float | None) -> Message:
        try:
            return await asyncio.wait_for(entry[1], timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def send(self, message: Mapping[str, Any]) -> bool:
        """Send one JSON message as a text frame; False when there is no open connection.

        Also the way to send anything raw (tests send malformed requests with it).
        """
        ws = self._ws
        if ws is None:
            return False
        try:
            await _send_json(ws, message)
        except ConnectionClosed:
            return False
        return True

    async def subscribe(self, channels: Iterable[str]) -> bool:
        """Add channels (1.1). Returns whether the request went out now (else it applies on reconnect)."""
        self._require_1_1("subscribe")
        names = self.options.subscribe(channels)
        return await self.send({"type": "subscribe", "payload": {"channels": names}})

    async def unsubscribe(self, channels: Iterable[str]) -> bool:
        """Remove channels (1.1); ``system`` cannot be removed (ValueError)."""
        self._require_1_1("unsubscribe")
        names = self.options.unsubscribe(channels)
        return await self.send({"type": "unsubscribe", "payload": {"channels": names}})

    async def set_energy_rate(self, rate_hz: float) -> bool:
        """Receive energy frames at *rate_hz* (1..frame rate), always the newest frame (1.1)."""
        self._require_1_1("set_energy_rate")
        self.options.set_energy_rate(rate_hz, self.frame_rate)
        self.stats.gaps.configure(self.frame_rate, self.options.energy_rate)
        return await self.send({"type": "set_energy_rate", "payload": {"rateHz": plain_number(rate_hz)}})

    async def pause_energy(self) -> bool:
        """Stop energy frames until :meth:`resume_energy` (e.g. a hidden view) (1.1)."""
        return await self._set_paused(True)

    async def resume_energy(self) -> bool:
        """Energy frames again, starting with the newest (1.1)."""
        return await self._set_paused(False)

    async def _set_paused(self, paused: bool) -> bool:
        request = "pause_energy" if paused else "resume_energy"
        self._require_1_1(request)
        self.options.paused = paused
        self.stats.gaps.reset()
        return await self.send({"type": request, "payload": {}})

    def _require_1_1(self, request: str) -> None:
        if self.requested_protocol != "1.1" or self.protocol == "1.0":
            raise UnsupportedByProtocolError(f"{request} needs protocol 1.1")

    def build_url(self) -> str:
        """The URL of the next connection attempt: resume position and options (1.1 only)."""
        if self.requested_protocol != "1.1":
            return self.url
        params = {**self.cursor.resume_query(), **self.options.query()}
        return build_url(self.url, params) if params else self.url

    def snapshot(self) -> dict[str, Any]:
        """:meth:`ClientStats.snapshot` plus the session's identity and resume status."""
        return {
            **self.stats.snapshot(),
            "protocol": self.protocol,
            "epoch": self.epoch,
            "last_seq": self.last_seq,
            "last_resume": self.last_resume,
        }

    async def _run(self) -> None:
        """Connect, read until the connection ends, decide whether and when to retry."""
        try:
            while not self._closing:
                retry = await self._connect_once()
                if self._closing or not retry:
                    return
                delay = self.backoff.next_delay()
                self.stats.state = "reconnecting"
                logger.info("reconnecting in %.3f s (attempt %d)", delay, self.backoff.attempt)
                await asyncio.sleep(delay)
        except Exception as exc:  # a bug here must stop the client visibly, not loop
            logger.exception("client task failed")
            self.exception = exc
            self.stats.state = "failed"
        finally:
            self._stopped.set()
            if self.state in ("refused", "failed"):
                self._fail_waiters(self._stop_error())

    async def _connect_once(self) -> bool:
        """One connection attempt and session. Returns whether to reconnect."""
        self.stats.state = "connecting"
        self._attempt_started = time.monotonic()
        url = self.build_url()
        version = self.requested_protocol
        subprotocols = None if version is None else [Subprotocol(_SUBPROTOCOL_OF[version])]
        try:
            async with connect(
                url,
                subprotocols=subprotocols,
                compression=None,
                origin=Origin(self.origin) if self.origin is not None else None,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                max_size=self.max_size,
                # A loopback server must not be reached through a system proxy.
                proxy=None,
            ) as ws:
                self._ws = ws
                self.stats.state = "open"
                await self._read(ws)
        except ConnectionClosed as exc:
            code, reason = _close_info(exc)
            return self._after_close(code, reason)
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode("utf-8", "replace")[:200] if exc.response.body else ""
            self.stats.connect_failures += 1
            if handshake_action(status) == "stop":
                return self._refuse(None, f"HTTP {status} {body}".strip())
            logger.info("handshake refused with HTTP %d; retrying", status)
            return True
        except InvalidMessage as exc:
            # The connection ended mid-handshake (a restarting server): transient.
            self.stats.connect_failures += 1
            logger.info("handshake interrupted: %s", exc)
            return True
        except InvalidHandshake as exc:
            # The server answered, but not with a handshake we can accept
            # (e.g. a subprotocol we did not offer): retrying will not help.
            self.stats.connect_failures += 1
            return self._refuse(None, f"handshake failed: {exc}")
        except (OSError, TimeoutError) as exc:
            self.stats.connect_failures += 1
            logger.info("connection attempt failed: %s", exc)
            return True
        finally:
            if self._ws is not None:
                self._ws = None
                if self._lost_at is None:  # measure from the first loss, not from failed retries
                    self._lost_at = time.monotonic()
            if self._session_started is not None:
                if session_was_stable(time.monotonic() - self._session_started):
                    self.backoff.reset()
                self._session_started = None
            self._session_ready.clear()

    def _after_close(self, code: int, reason: str) -> bool:
        self.stats.close_code = code
        self.stats.close_reason = reason
        if self._closing:
            return False
        if close_action(code) == "stop":
            return self._refuse(code, reason)
        logger.info("connection closed (%d %s); reconnecting", code, reason)
        return True

    def _refuse(self, code: int | None, reason: str) -> bool:
        self.stats.close_code = code
        self.stats.close_reason = reason
        self.stats.state = "refused"
        logger.warning("refused by the server (%s %s); not reconnecting", code, reason)
        return False

    def _stop_error(self) -> WirthforgeClientError:
        if self.state == "refused":
            return PolicyCloseError(self.close_code, self.close_reason or "")
        if self.state == "failed":
            return ClientClosedError(f"client task failed: {self.exception!r}")
        return ClientClosedError("client closed")

    def _fail_waiters(self, error: Exception) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(error)

    async def _read(self, ws: ClientConnection) -> NoReturn:
        """Read messages until the connection closes, which raises ConnectionClosed."""
        loop = asyncio.get_running_loop()
        self._last_receive = loop.time()
        watchdog = loop.create_task(self._watchdog(ws), name="wirthforge-client watchdog")
        try:
            while True:
                raw = await ws.recv(decode=False)
                self._last_receive = loop.time()
                await self.handle_raw(raw, ws)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _watchdog(self, ws: ClientConnection) -> None:
        """Abort an attempt that produced no session, or a session that went silent (§10)."""
        loop = asyncio.get_running_loop()
        opened = loop.time() - (time.monotonic() - self._attempt_started)  # the attempt's start on the loop clock
        while True:
            now = loop.time()
            if self.session is None or not self._session_ready.is_set():
                deadline, why = opened + self.open_timeout, "no startup_complete"
            elif self.stale_after is not None:
                deadline, why = self._last_receive + self.stale_after, "no frame"
            else:
                interval_ms = self.session.get("heartbeatIntervalMs")
                interval = interval_ms / 1000.0 if is_number(interval_ms) else None
                deadline, why = self._last_receive + dead_after(interval), "no frame"
            if now >= deadline:
                logger.warning("%s for %.1f s; dropping the connection", why, now - self._last_receive)
                ws.transport.abort()  # seen as 1006, then reconnect and resume
                return
            await asyncio.sleep(min(deadline - now, 1.0) + 0.01)

    async def handle_raw(self, raw: bytes | str, ws: ClientConnection | None = None) -> None:
        """Process one inbound frame: parse, answer heartbeats, dedupe, account, deliver.

        Public so that it can be driven without a socket (tests, replays).
        """
        now_ms = time.time() * 1000.0
        at = time.monotonic()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats.invalid_frames += 1
            logger.warning("ignoring a frame that is not JSON")
            return
        if not isinstance(message, dict):
            self.stats.invalid_frames += 1
            return
        kind = message.get("type")
        if kind == "heartbeat" and ws is not None:
            await self._answer_heartbeat(ws, message)
        if kind == "startup_complete":
            self._start_session(message, ws, at)
        else:
            seq = message.get("seq")
            if is_int(seq) and self.cursor.accept(seq) == "duplicate":
                self.stats.duplicates += 1
                logger.warning("dropping %s message seq %d (duplicate)", kind, seq)
                return
        self.stats.messages[str(kind)] += 1
        if kind == "energy_update":
            self.stats.record_energy_update(message, now_ms, at)
        elif kind == "error_event":
            self.stats.last_error = message.get("payload")
        if kind == "startup_complete" and self.options.paused and ws is not None:
            # pause has no URL form: re-apply it as soon as the session exists.
            await _send_json(ws, {"type": "pause_energy", "payload": {}})
        await self._deliver(message)

    async def _answer_heartbeat(self, ws: ClientConnection, message: Mapping[str, Any]) -> None:
        payload = message.get("payload")
        sequence = payload.get("sequence") if isinstance(payload, dict) else None
        if not is_int(sequence):
            return
        reply = {"type": "heartbeat_response", "payload": {"sequence": sequence, "clientTime": int(time.time() * 1000)}}
        await _send_json(ws, reply)
        self.stats.heartbeats_answered += 1

    def _start_session(self, message: Mapping[str, Any], ws: ClientConnection | None, at: float) -> None:
        """Adopt a startup_complete: epoch, resume outcome, rates; count the reconnect."""
        payload = message.get("payload")
        payload = dict(payload) if isinstance(payload, dict) else {}
        if ws is not None and "protocol" not in payload and ws.subprotocol == SUBPROTOCOL_1_1:
            payload["protocol"] = "1.1"  # defensive: the subprotocol is authoritative
        self.session = payload

        resume = payload.get("resume")
        self.last_resume = dict(resume) if isinstance(resume, dict) else None
        status = self.last_resume.get("status") if self.last_resume else "none"
        reason = self.last_resume.get("reason") if self.last_resume else None
        replayed = self.last_resume.get("replayed", 0) if self.last_resume else 0
        if is_int(replayed):
            self.stats.recovered += replayed
        if status == "incomplete":
            self.stats.incomplete_resumes += 1
            logger.warning("resume incomplete (%s): re-synchronise state", reason)
        fresh = status == "none" or (status == "incomplete" and reason in ("epoch_changed", "invalid_request"))
        epoch = payload.get("epoch")
        seq = message.get("seq")
        self.cursor.start_session(str(epoch) if epoch is not None else None, seq if is_int(seq) else None, fresh=fresh)

        rate = payload.get("energyRateHz")
        self.stats.start_session(self.frame_rate, rate if isinstance(rate, (int, float)) else None)
        if self.stats.sessions > 1 and self._lost_at is not None:
            self.stats.record_reconnect(at - self._lost_at)
        self._lost_at = None
        self._session_started = at
        self._session_ready.set()

    async def _deliver(self, message: Message) -> None:
        for entry in list(self._waiters):
            predicate, future = entry
            if future.done():
                continue
            try:
                matched = predicate(message)
            except Exception as exc:  # a broken predicate fails its own waiter only
                future.set_exception(exc)
                continue
            if matched:
                future.set_result(message)
        if self.on_message is None:
            return
        try:
            result = self.on_message(message)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # The consumer's bug must not take the connection down with it.
            logger.exception("on_message callback failed for a %s message", message.get("type"))


async def _send_json(ws: ClientConnection, message: Mapping[str, Any]) -> None:
    await ws.send(orjson.dumps(message), text=True)


def _close_info(exc: ConnectionClosed) -> tuple[int, str]:
    """The close code and reason the *server* sent; 1006 when none arrived."""
    if exc.rcvd is not None:
        return int(exc.rcvd.code), exc.rcvd.reason
    return ABNORMAL_CLOSURE, ""
