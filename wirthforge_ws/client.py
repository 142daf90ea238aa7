"""Asyncio client for the WIRTHFORGE real-time protocol (docs/PROTOCOL.md).

:class:`WirthforgeClient` owns one background task that connects, reads,
answers heartbeats and reconnects with backoff; it resumes the reliable
channels after a drop (protocol 1.1) and keeps live statistics::

    async with WirthforgeClient("ws://127.0.0.1:8145/ws", channels=["energy", "reward"]) as client:
        await client.wait_connected(timeout=5)
        reward = await client.wait_for(lambda m: m["type"] == "reward_event", timeout=10)
        print(client.stats.snapshot())

Run ``python -m wirthforge_ws.client --help`` for the command-line monitor.

Building blocks, one job each: :class:`Backoff` (reconnect delays),
:class:`ResumeCursor` (epoch, last ``seq``, dedupe), :class:`SessionOptions`
(channels, energy rate, pause; re-applied on reconnect), :class:`LatencyWindow`,
:class:`ArrivalRate` and :class:`FrameGapCounter` (gathered in
:class:`ClientStats`), and :class:`StatsPrinter` for the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import math
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from websockets.typing import Origin, Subprotocol

from .protocol import ALWAYS_ON_CHANNEL, CHANNELS, LATEST_WINS_CHANNEL, SUBPROTOCOL_1_0, SUBPROTOCOL_1_1, CloseCode

__all__ = [
    "DEFAULT_URL",
    "ArrivalRate",
    "Backoff",
    "ClientClosedError",
    "ClientStats",
    "FrameGapCounter",
    "LatencyWindow",
    "PolicyCloseError",
    "ResumeCursor",
    "SessionOptions",
    "StatsPrinter",
    "UnsupportedByProtocolError",
    "WirthforgeClient",
    "build_url",
    "main",
    "percentile",
]

logger = logging.getLogger(__name__)

DEFAULT_URL: Final = "ws://127.0.0.1:8145/ws"
ABNORMAL_CLOSURE: Final = 1006  # no close frame: the TCP connection dropped

Message = dict[str, Any]
MessageCallback = Callable[[Message], "Awaitable[None] | None"]
Predicate = Callable[[Message], bool]
ClientState = Literal["idle", "connecting", "open", "reconnecting", "refused", "failed", "closed"]


# ---------------------------------------------------------------------------
# Errors


class WirthforgeClientError(Exception):
    """Base class of the errors this module raises."""


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


# ---------------------------------------------------------------------------
# Reconnect delays


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``.

    Full jitter spreads the reconnects of many clients after a server restart
    over the whole window instead of synchronising them into waves. The small
    defaults (0.1 s base, 2 s cap) serve the project's goal of reconnecting
    within 2 s; :meth:`reset` after each successful session so that a single
    drop is retried within ``base`` seconds.
    """

    def __init__(self, base: float = 0.1, cap: float = 2.0, *, rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt number *attempt* (from 0) can draw."""
        # min() on the exponent first: 2**attempt overflows float after ~1000 attempts.
        return min(self.cap, self.base * 2.0 ** min(attempt, 64))

    def next_delay(self) -> float:
        """Draw the delay before the next attempt and count the attempt."""
        delay = self._rng.uniform(0.0, self.ceiling(self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


# ---------------------------------------------------------------------------
# Resume position and options re-applied on reconnect


SeqVerdict = Literal["new", "duplicate", "stale", "old_frame"]


class ResumeCursor:
    """Where this client is in the server's stream: ``epoch`` and the highest ``seq`` processed.

    It decides which messages are new and builds the resume query. The
    server promises no duplicates; this is the client's defence if that
    promise breaks. Two kinds of message are judged differently:

    - reliable messages (every channel but energy) must arrive in ``seq``
      order: one at or below the high-water mark is dropped, as a
      ``duplicate`` if its ``seq`` was seen (the last *remember* are kept)
      or as ``stale`` (out of order) if not. Delivering either would make
      ``lastSeq`` lie about what was processed.
    - energy frames (latest-wins) are judged only against earlier energy
      frames: one at or below the newest frame processed is an ``old_frame``
      (state older than what is on screen) and dropped. They are not held to
      the reliable order because §6 sends "the newest energy frame of each
      type" *after* the replay, so that frame can carry a lower ``seq`` than
      the last replayed message; and when the client already showed that
      frame before the drop, the server sends it again.

    Every new message, frame or not, raises the high-water mark.
    """

    def __init__(self, remember: int = 4096) -> None:
        self.epoch: str | None = None
        self.last_seq = 0
        self.last_frame_seq = 0
        # Stream position of the latest *fresh* session's startup_complete:
        # see resume_query().
        self._fresh_floor = 0
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self._remember = remember

    def accept(self, seq: int, *, latest_wins: bool = False) -> SeqVerdict:
        """Classify *seq* (*latest_wins* for energy frames); advance the marks when it is new."""
        if latest_wins:
            if seq <= self.last_frame_seq:
                return "old_frame"
            self.last_frame_seq = seq
        elif seq <= self.last_seq:
            return "duplicate" if seq in self._seen else "stale"
        self.last_seq = max(self.last_seq, seq)
        self._seen.add(seq)
        self._order.append(seq)
        if len(self._order) > self._remember:
            self._seen.discard(self._order.popleft())
        return "new"

    def start_session(self, epoch: str | None, startup_seq: int | None, *, fresh: bool) -> None:
        """Enter the session announced by a startup_complete.

        A different epoch is a different seq space (the server restarted), so
        the high-water mark starts over; otherwise it is kept, including after
        an incomplete resume. *fresh* means the server replayed nothing.
        """
        if epoch != self.epoch:
            self.epoch = epoch
            self.last_seq = 0
            self.last_frame_seq = 0
            self._fresh_floor = 0
            self._seen.clear()
            self._order.clear()
        if fresh and startup_seq is not None:
            self._fresh_floor = max(self._fresh_floor, startup_seq)

    def resume_query(self) -> dict[str, str]:
        """``epoch``/``lastSeq`` for the reconnect URL; empty before the first 1.1 session.

        ``lastSeq`` never goes below the stream position of the latest fresh
        session's startup_complete: a session that ended before any other
        message would otherwise ask with ``lastSeq=0`` and be replayed the
        whole history, messages published before this client ever connected.
        That position is kept out of the dedupe mark on purpose: how a
        *resumed* session numbers its startup_complete relative to the replay
        behind it is not specified.
        """
        if self.epoch is None:
            return {}
        return {"epoch": self.epoch, "lastSeq": str(max(self.last_seq, self._fresh_floor))}


def _format_number(value: float) -> str:
    """15.0 -> "15", 7.5 -> "7.5": the form a person would type in a URL."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class SessionOptions:
    """What the caller wants to receive: channels, energy rate, pause.

    Kept as desired state, not just sent once, so that a reconnect puts
    channels and rate on the URL (they then apply before the first live
    message) and re-sends ``pause_energy`` (which has no URL form).
    """

    def __init__(self, channels: Iterable[str] | None = None, energy_rate: float | None = None) -> None:
        self.channels: frozenset[str] | None = None if channels is None else self._checked(channels)
        self.energy_rate: float | None = None
        self.paused = False
        if energy_rate is not None:
            self.set_energy_rate(energy_rate)

    @staticmethod
    def _checked(channels: Iterable[str]) -> frozenset[str]:
        names = frozenset(channels)
        unknown = names - set(CHANNELS)
        if unknown:
            raise ValueError(f"unknown channel(s): {', '.join(sorted(unknown))}; known: {', '.join(CHANNELS)}")
        return names

    def subscribe(self, channels: Iterable[str]) -> list[str]:
        """Add *channels*; returns them in canonical order for the request."""
        names = self._checked(channels)
        if self.channels is not None:
            self.channels = self.channels | names
        return [name for name in CHANNELS if name in names]

    def unsubscribe(self, channels: Iterable[str]) -> list[str]:
        """Remove *channels* (``system`` cannot be removed)."""
        names = self._checked(channels)
        if ALWAYS_ON_CHANNEL in names:
            raise ValueError(f"the {ALWAYS_ON_CHANNEL!r} channel cannot be unsubscribed")
        current = self.channels if self.channels is not None else frozenset(CHANNELS)
        self.channels = current - names
        return [name for name in CHANNELS if name in names]

    def set_energy_rate(self, rate_hz: float, frame_rate: float | None = None) -> None:
        """Validate against §5 (1..frame rate) before the server has to say no."""
        if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float)) or not math.isfinite(rate_hz):
            raise ValueError(f"energy rate must be a number, not {rate_hz!r}")
        if rate_hz < 1 or (frame_rate is not None and rate_hz > frame_rate):
            upper = _format_number(frame_rate) if frame_rate is not None else "the frame rate"
            raise ValueError(f"energy rate must be within 1..{upper} Hz, not {rate_hz}")
        self.energy_rate = float(rate_hz)

    def query(self) -> dict[str, str]:
        """``channels``/``energyRate`` for the connect URL (only what differs from the defaults)."""
        params: dict[str, str] = {}
        if self.channels is not None:
            wanted = self.channels | {ALWAYS_ON_CHANNEL}
            params["channels"] = ",".join(name for name in CHANNELS if name in wanted)
        if self.energy_rate is not None:
            params["energyRate"] = _format_number(self.energy_rate)
        return params


def build_url(base: str, params: Mapping[str, str | None]) -> str:
    """*base* with *params* set in its query: same-named parameters are replaced, others kept.

    Commas stay literal (``channels=energy,system``) as in PROTOCOL.md §6.
    """
    parts = urlsplit(base)
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key not in params]
    query.extend((key, value) for key, value in params.items() if value is not None)
    return urlunsplit(parts._replace(query=urlencode(query, safe=",")))


# ---------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile, *fraction* in [0, 1]; None when there are no values.

    The smallest sample with at least ``fraction`` of all samples at or below
    it. It always returns an observed value (no interpolation) and is the
    definition the server uses in ``/health``, so both sides report the same
    numbers. Consequence to keep in mind: with fewer than 100 samples P99 is
    the maximum.
    """
    if not values:
        return None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be within [0, 1]")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class LatencyWindow:
    """Latency samples of the last *window_s* seconds (at most *max_samples*).

    A time window rather than a fixed count keeps the percentiles about "now"
    whatever the energy rate is; the count bound caps memory at high rates.
    """

    def __init__(self, window_s: float = 10.0, max_samples: int = 4096) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, at: float, latency_ms: float) -> None:
        """Record *latency_ms* observed at monotonic time *at* (seconds)."""
        self._samples.append((at, latency_ms))

    def values(self, now: float) -> list[float]:
        """The samples still inside the window at monotonic time *now*."""
        horizon = now - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        return [latency for _, latency in self._samples]

    def summary(self, now: float) -> dict[str, float | int | None]:
        values = self.values(now)

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "median": rounded(percentile(values, 0.5)),
            "p99": rounded(percentile(values, 0.99)),
            "max": rounded(max(values) if values else None),
            "samples": len(values),
        }


class ArrivalRate:
    """Events per second: how many arrived in the last *window_s* seconds, divided by it."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def mark(self, at: float) -> None:
        self._times.append(at)
        self._prune(at)

    def rate(self, now: float) -> float:
        self._prune(now)
        return len(self._times) / self.window_s

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._times and self._times[0] <= horizon:
            self._times.popleft()


class FrameGapCounter:
    """Counts gaps in the ``frameNumber`` of consecutive energy_update frames.

    The rule. Let F be the server's frame rate and R the energy rate this
    connection receives; the expected step between received frames is
    ``e = F / R`` (``e = 1`` at full rate). A step ``d`` is a gap when

    - ``d > 1`` at full rate (``e == 1``): every frame is sent, so any skipped
      number is a frame the client never saw;
    - ``d > e + 1`` when decimating (``e > 1``): decimation legitimately
      produces steps of ``floor(e)`` and ``ceil(e)`` when F/R is not whole
      (60/25 gives 2 and 3), and one extra frame number appears when the
      server's frame clock skipped a tick inside a decimated interval (the
      server decimates by counting built frames) or, with a time-based
      sampler, when a sample is taken a moment late. None of that is a lost
      delivery. A step beyond ``e + 1`` is at least one whole frame more than
      decimation can explain, and a missed sample (``d`` close to ``2e``)
      always exceeds it.

    A gap may come from latest-wins coalescing (the connection fell behind)
    or from the server's frame clock skipping ticks; both are frames the
    viewer did not get. Steps <= 0 are not gaps but regressions (a new frame
    counter, e.g. after a restart) and restart the count. Call :meth:`reset`
    wherever a jump is expected: a new session, a rate change, pause/resume
    (and see :class:`ClientStats` for the first frame of a session).
    ``frames_missed`` estimates the frames (or samples, when decimating)
    that a gap lost: ``round(d / e) - 1``, at least 1.
    """

    def __init__(self) -> None:
        self.expected_step = 1.0
        self.gaps = 0
        self.frames_missed = 0
        self.max_step = 0
        self.regressions = 0
        self._last: int | None = None

    def configure(self, frame_rate: float | None, energy_rate: float | None) -> None:
        """Set the expected step from F and R (None: unknown, taken as full rate) and reset."""
        if frame_rate and energy_rate and 0 < energy_rate < frame_rate:
            self.expected_step = frame_rate / energy_rate
        else:
            self.expected_step = 1.0
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame: the next one starts a new run."""
        self._last = None

    def is_gap(self, step: int) -> bool:
        """The rule above, for one step ``d`` > 0."""
        if self.expected_step <= 1.0:
            return step > 1
        return step > self.expected_step + 1.0

    def observe(self, frame_number: int) -> bool:
        """Record one received frame; True when it ends a gap."""
        last, self._last = self._last, frame_number
        if last is None:
            return False
        step = frame_number - last
        if step <= 0:
            self.regressions += 1
            return False
        self.max_step = max(self.max_step, step)
        if not self.is_gap(step):
            return False
        self.gaps += 1
        self.frames_missed += max(1, round(step / self.expected_step) - 1)
        return True


class ClientStats:
    """Live statistics of one client across all its sessions; :meth:`snapshot` for a dict.

    Latency is ``time.time() * 1000 - timestamp`` of energy_update frames,
    taken when the frame is read from the socket. Client and server share a
    clock on loopback; with 1.0's integer timestamps it is ~0.5 ms high.

    The first energy_update of each session counts for the rate but neither
    for latency nor for gaps: a resumed session starts with the newest frame
    the server holds (§6), which can be up to half a second old, so its age
    is not transport latency and the step from it to the first live frame
    is not a delivery gap.
    """

    def __init__(self, latency_window_s: float = 10.0, max_latency_samples: int = 4096) -> None:
        self.state: ClientState = "idle"
        self.latency = LatencyWindow(latency_window_s, max_latency_samples)
        self.energy_rate = ArrivalRate(1.0)
        self.gaps = FrameGapCounter()
        self.sessions = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.recovered = 0
        self.incomplete_resumes = 0
        self.duplicates = 0
        self.stale = 0
        self.old_frames = 0
        self.invalid_frames = 0
        self.heartbeats_answered = 0
        self.messages: Counter[str] = Counter()
        self.last_error: Mapping[str, Any] | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.last_reconnect_ms: float | None = None
        self.max_reconnect_ms: float | None = None
        self._first_frame_pending = False

    def start_session(self, frame_rate: float | None, energy_rate: float | None) -> None:
        """A startup_complete arrived: count the session, reset the gap rule for its rates."""
        self.sessions += 1
        self.gaps.configure(frame_rate, energy_rate)
        self._first_frame_pending = True

    def record_energy_update(self, message: Mapping[str, Any], now_ms: float, at: float) -> None:
        """Latency, rate and gap accounting for one energy_update."""
        self.energy_rate.mark(at)
        if self._first_frame_pending:
            self._first_frame_pending = False  # possibly the §6 hand-over frame: see the class doc
            return
        timestamp = message.get("timestamp")
        if isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
            self.latency.add(at, now_ms - timestamp)
        frame_number = message.get("frameNumber")
        if isinstance(frame_number, int) and not isinstance(frame_number, bool):
            self.gaps.observe(frame_number)

    def record_rejected(self, verdict: str) -> None:
        """Count a message the :class:`ResumeCursor` did not let through."""
        if verdict == "duplicate":
            self.duplicates += 1
        elif verdict == "stale":
            self.stale += 1
        else:
            self.old_frames += 1

    def record_reconnect(self, took_s: float) -> None:
        took_ms = took_s * 1000.0
        self.reconnects += 1
        self.last_reconnect_ms = took_ms
        self.max_reconnect_ms = took_ms if self.max_reconnect_ms is None else max(self.max_reconnect_ms, took_ms)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Everything above as plain JSON-ready values; *now* is monotonic seconds."""
        now = time.monotonic() if now is None else now

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "state": self.state,
            "energy_hz": round(self.energy_rate.rate(now), 1),
            "latency_ms": self.latency.summary(now),
            "frame_gaps": self.gaps.gaps,
            "frames_missed": self.gaps.frames_missed,
            "max_frame_step": self.gaps.max_step,
            "expected_frame_step": round(self.gaps.expected_step, 3),
            "frame_regressions": self.gaps.regressions,
            "sessions": self.sessions,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "reconnect_ms": {"last": ms(self.last_reconnect_ms), "max": ms(self.max_reconnect_ms)},
            "recovered": self.recovered,
            "incomplete_resumes": self.incomplete_resumes,
            "duplicates": self.duplicates,
            "stale": self.stale,
            "old_frames": self.old_frames,
            "invalid_frames": self.invalid_frames,
            "heartbeats_answered": self.heartbeats_answered,
            "messages": sum(self.messages.values()),
            "messages_by_type": dict(sorted(self.messages.items())),
            "last_error": dict(self.last_error) if self.last_error is not None else None,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
        }


# ---------------------------------------------------------------------------
# The client


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

    It stops reconnecting only when the server says this client is the
    problem: a policy close (1003, 1008, 1009) or a 4xx handshake refusal.
    State then becomes ``"refused"`` with :attr:`close_code` and
    :attr:`close_reason`. Everything else (1006, 1011, 1012, 1013, also 1000
    and 1001, which a shutting-down server may send, connection refused,
    timeouts) is retried.

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
        backoff: reconnect delays (default 0.1 s base, 2 s cap).
        stale_after: seconds without any message (heartbeats come every
            second) before the connection is presumed dead and aborted;
            stretched to three heartbeat intervals when the server announces
            longer ones; ``None`` disables.
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
        open_timeout: float = 5.0,
        close_timeout: float = 2.0,
        stale_after: float | None = 5.0,
        max_size: int = 2**22,
        no_reconnect_codes: Iterable[int] = CloseCode.POLICY_CLOSES,
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
        self.no_reconnect_codes = frozenset(no_reconnect_codes)
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
        self._lost_at: float | None = None

    # -- properties ------------------------------------------------------

    @property
    def state(self) -> ClientState:
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
        return self.cursor.epoch

    @property
    def last_seq(self) -> int:
        return self.cursor.last_seq

    @property
    def close_code(self) -> int | None:
        return self.stats.close_code

    @property
    def close_reason(self) -> str | None:
        return self.stats.close_reason

    @property
    def frame_rate(self) -> float | None:
        value = (self.session or {}).get("frameRate")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    # -- lifecycle --------------------------------------------------------

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

    # -- requests (§5) ----------------------------------------------------

    async def send(self, message: Mapping[str, Any]) -> bool:
        """Send one JSON message as a text frame; False when there is no open connection.

        Also the way to send anything raw (tests send malformed requests with it).
        """
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(orjson.dumps(message), text=True)
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
        payload_rate: float | int = int(rate_hz) if float(rate_hz).is_integer() else float(rate_hz)
        return await self.send({"type": "set_energy_rate", "payload": {"rateHz": payload_rate}})

    async def pause_energy(self) -> bool:
        """Stop energy frames until :meth:`resume_energy` (e.g. a hidden view) (1.1)."""
        self._require_1_1("pause_energy")
        self.options.paused = True
        self.stats.gaps.reset()
        return await self.send({"type": "pause_energy", "payload": {}})

    async def resume_energy(self) -> bool:
        """Energy frames again, starting with the newest (1.1)."""
        self._require_1_1("resume_energy")
        self.options.paused = False
        self.stats.gaps.reset()
        return await self.send({"type": "resume_energy", "payload": {}})

    def _require_1_1(self, request: str) -> None:
        if self.requested_protocol != "1.1" or self.protocol == "1.0":
            raise UnsupportedByProtocolError(f"{request} needs protocol 1.1")

    # -- URL and statistics ---------------------------------------------

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

    # -- the connection task --------------------------------------------

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
        url = self.build_url()
        subprotocols: list[Subprotocol] | None = None
        if self.requested_protocol == "1.1":
            subprotocols = [Subprotocol(SUBPROTOCOL_1_1)]
        elif self.requested_protocol == "1.0":
            subprotocols = [Subprotocol(SUBPROTOCOL_1_0)]
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
            if 400 <= status < 500 and status not in (408, 429):
                # 403 (Origin/Host) and 400 (subprotocols) will not change by retrying.
                return self._refuse(None, f"HTTP {status} {body}".strip())
            logger.info("handshake refused with HTTP %d; retrying", status)
            return True
        except (InvalidURI, ValueError):
            raise
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
            self._session_ready.clear()
        # _read() only returns when the connection is closed.
        return self._after_close(ABNORMAL_CLOSURE, "")  # pragma: no cover

    def _after_close(self, code: int, reason: str) -> bool:
        self.stats.close_code = code
        self.stats.close_reason = reason
        if self._closing:
            return False
        if code in self.no_reconnect_codes:
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

    async def _read(self, ws: ClientConnection) -> None:
        """Read messages until the connection closes (raises ConnectionClosed)."""
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
        """Abort a connection that went silent: heartbeats stopped, no close, no FIN."""
        if self.stale_after is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            limit = self.stale_after
            interval_ms = (self.session or {}).get("heartbeatIntervalMs")
            if isinstance(interval_ms, (int, float)) and interval_ms > 0:
                limit = max(limit, 3 * interval_ms / 1000.0)
            idle = loop.time() - self._last_receive
            if idle >= limit:
                logger.warning("no message for %.1f s; dropping the connection", idle)
                ws.transport.abort()  # seen as 1006, then reconnect and resume
                return
            await asyncio.sleep(min(limit - idle, 1.0) + 0.01)

    # -- message handling -----------------------------------------------

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
            if isinstance(seq, int) and not isinstance(seq, bool):
                verdict = self.cursor.accept(seq, latest_wins=message.get("channel") == LATEST_WINS_CHANNEL)
                if verdict != "new":
                    self.stats.record_rejected(verdict)
                    if verdict != "old_frame":
                        logger.warning("dropping %s message seq %d (%s)", kind, seq, verdict)
                    return
        self.stats.messages[str(kind)] += 1
        if kind == "energy_update":
            self.stats.record_energy_update(message, now_ms, at)
        elif kind == "error_event":
            self.stats.last_error = message.get("payload")
        if kind == "startup_complete" and self.options.paused and ws is not None:
            # pause has no URL form: re-apply it as soon as the session exists.
            await ws.send(orjson.dumps({"type": "pause_energy", "payload": {}}), text=True)
        await self._deliver(message)

    async def _answer_heartbeat(self, ws: ClientConnection, message: Mapping[str, Any]) -> None:
        payload = message.get("payload")
        sequence = payload.get("sequence") if isinstance(payload, dict) else None
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            return
        reply = {"type": "heartbeat_response", "payload": {"sequence": sequence, "clientTime": int(time.time() * 1000)}}
        await ws.send(orjson.dumps(reply), text=True)
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
        if isinstance(replayed, int) and not isinstance(replayed, bool):
            self.stats.recovered += replayed
        if status == "incomplete":
            self.stats.incomplete_resumes += 1
            logger.warning("resume incomplete (%s): re-synchronise state", reason)
        fresh = status == "none" or (status == "incomplete" and reason in ("epoch_changed", "invalid_request"))
        epoch = payload.get("epoch")
        seq = message.get("seq")
        self.cursor.start_session(
            str(epoch) if epoch is not None else None,
            seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            fresh=fresh,
        )

        rate = payload.get("energyRateHz")
        self.stats.start_session(self.frame_rate, rate if isinstance(rate, (int, float)) else None)
        if self.stats.sessions > 1 and self._lost_at is not None:
            self.stats.record_reconnect(at - self._lost_at)
        self._lost_at = None
        self.backoff.reset()
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


def _close_info(exc: ConnectionClosed) -> tuple[int, str]:
    """The close code and reason the *server* sent; 1006 when none arrived."""
    if exc.rcvd is not None:
        return int(exc.rcvd.code), exc.rcvd.reason
    return ABNORMAL_CLOSURE, ""


# ---------------------------------------------------------------------------
# Command line


class StatsPrinter:
    """Prints one line of a client's statistics every *interval* seconds."""

    def __init__(self, client: WirthforgeClient, stream: IO[str], interval: float = 1.0) -> None:
        self.client = client
        self.stream = stream
        self.interval = interval

    @staticmethod
    def format_line(snapshot: Mapping[str, Any]) -> str:
        latency = snapshot["latency_ms"]

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        return (
            f"{snapshot['state']:<12} {snapshot['energy_hz']:5.1f} Hz  "
            f"latency p50 {ms(latency['median'])} p99 {ms(latency['p99'])} max {ms(latency['max'])} ms  "
            f"gaps {snapshot['frame_gaps']}  reconnects {snapshot['reconnects']}  "
            f"recovered {snapshot['recovered']}  messages {snapshot['messages']}"
        )

    async def run(self) -> None:
        """Print until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            print(self.format_line(self.client.snapshot()), file=self.stream, flush=True)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wirthforge_ws.client",
        description="Connect to a WIRTHFORGE server and print live statistics every second.",
    )
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("--protocol", choices=("1.0", "1.1"), default="1.1", help="protocol to offer (default 1.1)")
    parser.add_argument(
        "--channels", nargs="+", metavar="CHANNEL", help=f"channels to receive (1.1), space or comma separated: {', '.join(CHANNELS)}"
    )
    parser.add_argument("--energy-rate", type=float, metavar="HZ", help="energy frames per second (1.1)")
    parser.add_argument("--duration", type=float, metavar="S", help="exit after S seconds with a summary")
    parser.add_argument("--origin", help="Origin header to send (none by default)")
    parser.add_argument("--json", action="store_true", help="print the final summary as one JSON object on stdout")
    return parser


def _split_channels(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


async def _run_cli(args: argparse.Namespace) -> int:
    client = WirthforgeClient(
        args.url,
        protocol=args.protocol,
        channels=_split_channels(args.channels),
        energy_rate=args.energy_rate,
        origin=args.origin,
    )
    if args.protocol == "1.0" and (args.channels or args.energy_rate):
        print("note: --channels/--energy-rate need protocol 1.1; ignored", file=sys.stderr)
        client.options = SessionOptions()
    live = sys.stderr if args.json else sys.stdout
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, interrupted.set)
    printer = StatsPrinter(client, live)
    async with client:
        printer_task = loop.create_task(printer.run())
        watchers = {
            loop.create_task(interrupted.wait()),
            loop.create_task(client.wait_stopped()),
        }
        try:
            await asyncio.wait(watchers, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (printer_task, *watchers):
                task.cancel()
            await asyncio.gather(printer_task, *watchers, return_exceptions=True)
    summary = client.snapshot()  # after close: state is closed, refused or failed
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        print("summary: " + StatsPrinter.format_line(summary))
        print(
            f"  sessions {summary['sessions']}  reconnect ms last/max "
            f"{summary['reconnect_ms']['last']}/{summary['reconnect_ms']['max']}  "
            f"incomplete resumes {summary['incomplete_resumes']}  duplicates {summary['duplicates']}  "
            f"frames missed {summary['frames_missed']}  close {summary['close_code']} {summary['close_reason'] or ''}".rstrip()
        )
        if summary["last_error"]:
            print(f"  last error: {summary['last_error'].get('code')}: {summary['last_error'].get('message')}")
    if client.state == "refused":
        return 2
    if client.state == "failed" or summary["sessions"] == 0:
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 refused, 1 never connected)."""
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return asyncio.run(_run_cli(args))
    except ValueError as exc:  # bad --channels / --energy-rate
        print(f"error: {exc}", file=sys.stderr)
        return 64


if __name__ == "__main__":
    sys.exit(main())
