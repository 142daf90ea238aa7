"""The hub: publish a message once, deliver it to every connection.

Publishing stamps a message with its ``seq`` and time, validates it against
the schema of each protocol version in use and serialises it with orjson,
*once per version*, never per client. Connections then receive the same
string; all per-client work is a few attribute checks and a queue append.

The hub also keeps what protocol 1.1 needs for resume: a bounded history of
reliable messages (count and age) and the newest frame of each energy type.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from . import messages
from .messages import Event
from .protocol import LATEST_WINS_CHANNEL, ErrorCode
from .schemas import MessageValidationError, SchemaSet

log = logging.getLogger("wirthforge.hub")


class Outbound:
    """A stamped message. Rendered (validated + serialised) at most once per version, on demand.

    Rendering is lazy so that nothing is serialised for a version no client
    speaks, and a message kept for resume while nobody listens costs nothing
    until someone asks for it.
    """

    __slots__ = ("event", "seq", "timestamp_ms", "created", "_texts")

    def __init__(self, event: Event, seq: int, timestamp_ms: float, created: float) -> None:
        self.event = event
        self.seq = seq
        self.timestamp_ms = timestamp_ms
        self.created = created
        self._texts: dict[str, str | None] = {}  # version -> JSON text, or None if invalid

    @property
    def channel(self) -> str:
        return self.event.channel

    @property
    def reliable(self) -> bool:
        return self.event.channel != LATEST_WINS_CHANNEL


def _by_seq(outbound: Outbound) -> int:
    return outbound.seq


class Subscriber(Protocol):
    """What the hub needs of a connection."""

    version: str

    def deliver(self, outbound: Outbound) -> None: ...


@dataclass
class HubStats:
    published: Counter[str] = field(default_factory=Counter)  # by type
    validation_failures: int = 0
    coalesced: Counter[str] = field(default_factory=Counter)  # by reason
    dropped: Counter[str] = field(default_factory=Counter)  # by reason
    closed: Counter[str] = field(default_factory=Counter)  # connections closed by us, by reason


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    epoch: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class ResumeResult:
    """What startup_complete.payload.resume tells a 1.1 client."""

    status: str  # none | complete | incomplete
    replayed: int = 0
    reason: str | None = None

    def as_payload(self) -> dict[str, object]:
        payload: dict[str, object] = {"status": self.status}
        if self.status != "none":
            payload["replayed"] = self.replayed
        if self.reason is not None:
            payload["reason"] = self.reason
        return payload


@dataclass(frozen=True, slots=True)
class ResumePlan:
    result: ResumeResult
    replay: list[Outbound]
    newest_frames: list[Outbound]

    def in_seq_order(self) -> list[Outbound]:
        """The replay and the newest frames merged in seq order: what the client gets before live traffic."""
        return sorted((*self.replay, *self.newest_frames), key=_by_seq)


class Hub:
    """Validates, serialises and fans out messages; remembers what resume needs."""

    def __init__(self, schemas: SchemaSet, *, history_messages: int, history_seconds: float) -> None:
        self.schemas = schemas
        self.epoch = secrets.token_hex(8)
        self.stats = HubStats()
        self._subscribers: set[Subscriber] = set()
        self._versions_in_use: Counter[str] = Counter()
        self._seq = 0
        self._history: deque[Outbound] = deque()
        self._history_limit = history_messages
        self._history_seconds = history_seconds
        self._evicted_through = 0  # highest seq that has left the history
        self._newest_frames: dict[str, Outbound] = {}
        self._reporting_failure = False
        self.on_attach: Callable[[], None] | None = None  # e.g. wake an idle frame clock

    # -- connections --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._subscribers)

    def plan_resume(self, channels: Iterable[str], resume: ResumeRequest | None) -> ResumePlan:
        """Work out what a (re)connecting client missed, without delivering anything yet.

        The caller sends startup_complete (which carries the result), queues
        the plan's messages (or passes the plan to :meth:`attach`) and then
        attaches, with no ``await`` in between: no live message can then slip
        between the replay and the live stream. The plan holds references to
        messages already kept in the history, so a long replay costs no copy.
        """
        if resume is None:
            return ResumePlan(ResumeResult("none"), [], [])
        if resume.epoch != self.epoch:
            return ResumePlan(ResumeResult("incomplete", 0, "epoch_changed"), [], self._fresh_frames())
        if resume.last_seq > self._seq:
            return ResumePlan(ResumeResult("incomplete", 0, "invalid_request"), [], self._fresh_frames())
        self._trim_by_age(time.monotonic())
        wanted = set(channels)
        missed: list[Outbound] = []
        for outbound in reversed(self._history):
            if outbound.seq <= resume.last_seq:
                break
            if outbound.channel in wanted:
                missed.append(outbound)
        missed.reverse()
        if resume.last_seq < self._evicted_through:
            result = ResumeResult("incomplete", len(missed), "history_exceeded")
        else:
            result = ResumeResult("complete", len(missed))
        return ResumePlan(result, missed, self._fresh_frames(after_seq=resume.last_seq))

    def attach(self, subscriber: Subscriber, plan: ResumePlan | None = None) -> None:
        """Deliver the plan's replay and newest frames in seq order (if given), then the live stream.

        A :class:`~.connection.Connection` queues its replay lazily itself
        (see Outbox.put_feed) and attaches without a plan.
        """
        if plan is not None:
            for outbound in plan.in_seq_order():
                subscriber.deliver(outbound)
        self._subscribers.add(subscriber)
        self._versions_in_use[subscriber.version] += 1
        if self.on_attach is not None:
            self.on_attach()

    def _fresh_frames(self, after_seq: int = 0) -> list[Outbound]:
        """The newest frame of each energy type the client has not seen, if still current.

        "Current" because frames stop being built while nobody is connected.
        """
        horizon = time.monotonic() - 0.5
        return [f for f in self._newest_frames.values() if f.created >= horizon and f.seq > after_seq]

    def detach(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            self._versions_in_use[subscriber.version] -= 1
            if self._versions_in_use[subscriber.version] <= 0:
                del self._versions_in_use[subscriber.version]

    # -- publishing ---------------------------------------------------------

    def stamp(self, event: Event) -> Outbound:
        """Give *event* its seq and publish time."""
        self._seq += 1
        return Outbound(event, self._seq, messages.now_ms(), time.monotonic())

    def publish(self, event: Event) -> Outbound | None:
        """Stamp, validate, serialise and deliver *event* to every subscriber.

        Energy frames with no subscriber are not even stamped: with nobody
        connected the loop serialises nothing. Reliable messages are always
        kept for resume (rendered only when a resuming client asks).
        """
        reliable = event.channel != LATEST_WINS_CHANNEL
        if not reliable and not self._subscribers:
            return None
        outbound = self.stamp(event)
        for version in self._versions_in_use:
            self.render(outbound, version)
        self.stats.published[event.type] += 1
        if reliable:
            log.debug("published %s seq %d", event.type, outbound.seq)
            self._remember(outbound)
        else:
            self._newest_frames[event.type] = outbound
        for subscriber in tuple(self._subscribers):
            subscriber.deliver(outbound)
        return outbound

    def render(self, outbound: Outbound, version: str) -> str | None:
        """The JSON text of *outbound* for *version*, or None if it fails validation.

        Validation and serialisation run once per (message, version); the
        result, including a failure, is cached on the message.
        """
        try:
            return outbound._texts[version]
        except KeyError:
            pass
        message = messages.envelope(version, outbound.event, outbound.timestamp_ms, outbound.seq)
        text: str | None
        try:
            self.schemas.validate_outbound(version, message)
        except MessageValidationError as error:
            text = None
            self._validation_failed(outbound.event.type, version, error)
        else:
            text = orjson.dumps(message).decode()
        outbound._texts[version] = text
        return text

    def render_direct(self, event: Event, version: str) -> str | None:
        """Render a message meant for one connection only (startup, heartbeat, replies)."""
        return self.render(self.stamp(event), version)

    # -- resume -------------------------------------------------------------

    def _remember(self, outbound: Outbound) -> None:
        history = self._history
        history.append(outbound)
        oldest_allowed = outbound.created - self._history_seconds
        while history and (len(history) > self._history_limit or history[0].created < oldest_allowed):
            self._evicted_through = history.popleft().seq

    def _trim_by_age(self, now: float) -> None:
        oldest_allowed = now - self._history_seconds
        while self._history and self._history[0].created < oldest_allowed:
            self._evicted_through = self._history.popleft().seq

    # -- failures -----------------------------------------------------------

    def _validation_failed(self, message_type: str, version: str, error: MessageValidationError) -> None:
        self.stats.validation_failures += 1
        self.stats.dropped["validation_failed"] += 1
        # The reason names a path, never a value: token text stays out of the log.
        log.error("outbound %s (protocol %s) failed validation at %s: %s; not sent",
                  message_type, version, error.path or "/", error.reason)
        if self._reporting_failure or message_type == "error_event":
            return
        self._reporting_failure = True
        try:
            self.publish(
                messages.error_event(
                    ErrorCode.OUTBOUND_VALIDATION_FAILED,
                    f"The server built an invalid {message_type} message; it was not sent.",
                    severity="error",
                    details={"messageType": message_type, "protocol": version, "reason": error.reason},
                )
            )
        finally:
            self._reporting_failure = False
