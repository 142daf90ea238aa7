"""The hub: publish a message once, deliver it to every connection.

Publishing stamps a message with its ``seq`` and time, validates it against
the schema of each protocol version in use and serialises it with orjson,
*once per version*, never per client. The frame loop publishes inside a
:meth:`Hub.frame_scope`: the frame's messages are then handed to each
connection in one :class:`FrameBundle`, whose bytes on the wire are joined
once per version, so that a client that takes the whole frame costs a few
attribute checks and one socket write.

The hub also keeps what protocol 1.1 needs for resume: a bounded history of
reliable messages (count and age) and the newest frame of each energy type.
With a durable :class:`~.persistence.EventLog` the memory history is only
the recent window: every published message is also handed to the log, the
epoch and the seq counter continue where the previous run stopped, and
:meth:`Hub.recall` fetches from disk what has left the memory window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from websockets.frames import Frame, Opcode

from ..connection.direct import WriteBatch
from ..protocol import messages
from ..protocol.codes import LATEST_WINS_CHANNEL, ErrorCode
from ..protocol.messages import Event
from ..protocol.schemas import MessageValidationError, SchemaSet
from ..storage.event_log import EventLog

log = logging.getLogger("wirthforge.hub")


class Outbound:
    """A stamped message. Rendered (validated + serialised) at most once per version, on demand.

    Rendering is lazy so that nothing is serialised for a version no client
    speaks, and a message kept for resume while nobody listens costs nothing
    until someone asks for it.
    """

    __slots__ = ("event", "seq", "timestamp_ms", "created", "channel", "reliable", "_texts", "_frames")

    def __init__(self, event: Event, seq: int, timestamp_ms: float, created: float) -> None:
        self.event = event
        # Plain attributes, read once per client on the fan-out path.
        self.channel: str = event.channel
        self.reliable: bool = self.channel != LATEST_WINS_CHANNEL
        self.seq = seq
        self.timestamp_ms = timestamp_ms
        self.created = created
        self._texts: dict[str, str | None] = {}  # version -> JSON text, or None if invalid
        self._frames: dict[str, bytes] = {}  # version -> the whole WebSocket frame, for direct writes


def _by_seq(outbound: Outbound) -> int:
    return outbound.seq


def _each(subscriber: Subscriber) -> Callable[[FrameBundle], None]:
    """A frame-bundle delivery for a subscriber that only takes one message at a time."""

    def deliver_each(bundle: FrameBundle) -> None:
        for outbound in bundle.outbounds:
            subscriber.deliver(outbound)

    return deliver_each


class FrameBundle:
    """Everything one frame published, handed to each connection in one call.

    Most connections take every message of a frame (all channels, full
    energy rate, nothing queued): for them the frame on the wire is the
    messages' WebSocket frames back to back, joined once per protocol
    version (:meth:`wire`) and written with one ``transport.write``.
    """

    __slots__ = ("outbounds", "channels", "has_energy", "now", "_hub", "_wire")

    def __init__(self, hub: Hub, outbounds: list[Outbound], now: float) -> None:
        self._hub = hub
        self.outbounds = outbounds
        self.channels = frozenset(outbound.channel for outbound in outbounds)
        self.has_energy = any(not outbound.reliable for outbound in outbounds)
        self.now = now  # time.monotonic() at delivery, for the pacers
        self._wire: dict[str, tuple[bytes, int, int]] = {}

    def wire(self, version: str) -> tuple[bytes, int, int]:
        """The frame's bytes for *version*, and how many messages (all, energy) they hold.

        A message that failed validation is left out, as the per-message path drops it.
        """
        try:
            return self._wire[version]
        except KeyError:
            pass
        frames: list[bytes] = []
        energy = 0
        for outbound in self.outbounds:
            frame = self._hub.frame(outbound, version)
            if frame is not None:
                frames.append(frame)
                energy += not outbound.reliable
        wire = self._wire[version] = (b"".join(frames), len(frames), energy)
        return wire


class Subscriber(Protocol):
    """What the hub needs of a connection.

    A subscriber may also have ``deliver_frame(bundle: FrameBundle)``, to
    take a frame's messages in one call; without it, the hub calls
    :meth:`deliver` for each.
    """

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
class Recall:
    """What the durable log held for a resume: messages with seq in (lastSeq, through]."""

    through: int
    messages: list[Outbound]
    cut: bool  # more were missed than the history limit allows


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

    def __init__(
        self, schemas: SchemaSet, *, history_messages: int, history_seconds: float, durable: EventLog | None = None
    ) -> None:
        self.schemas = schemas
        self.epoch = secrets.token_hex(8)
        self.stats = HubStats()
        # Each subscriber with how it takes a frame bundle (its deliver_frame, or deliver for each message).
        self._subscribers: dict[Subscriber, Callable[[FrameBundle], None]] = {}
        # Open during a frame scope: each connection then gets one write per frame.
        self.write_batch = WriteBatch()
        self._bundle: list[Outbound] | None = None  # what the open frame scope has published so far
        self._versions_in_use: Counter[str] = Counter()
        self._seq = 0
        self._history: deque[Outbound] = deque()
        self._history_limit = history_messages
        self._history_seconds = history_seconds
        self._evicted_through = 0  # highest seq that has left the history
        self._newest_frames: dict[str, Outbound] = {}
        self._reporting_failure = False
        self.on_attach: Callable[[], None] | None = None  # e.g. wake an idle frame clock
        self.durable = durable if durable is not None and durable.available else None
        self._reserve_at = math.inf  # the seq at which to move the durable seq reservation ahead
        if self.durable is not None:
            # Continue the previous run: same epoch, seqs above any it issued.
            self.epoch = self.durable.epoch
            self._seq = self._evicted_through = self.durable.first_seq - 1
            self._reserve_at = self.durable.first_seq

    # -- connections --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._subscribers)

    async def recall(self, channels: Iterable[str], resume: ResumeRequest | None) -> Recall | None:
        """Read from the durable log what a resume needs and what has left the memory window.

        Awaited before :meth:`plan_resume` (the read runs in a thread); None
        when memory suffices or there is no log.
        """
        durable = self.durable
        if (
            durable is None
            or resume is None
            or resume.epoch != self.epoch
            or resume.last_seq >= self._evicted_through
            or resume.last_seq > self._seq
        ):
            return None
        # Read before the query: every row up to it is committed, hence visible to the query.
        through = durable.committed_through
        stored, cut = await asyncio.to_thread(
            durable.read_reliable, resume.last_seq, through, tuple(channels), self._history_limit
        )
        return Recall(through, [Outbound(m.event, m.seq, m.timestamp_ms, 0.0) for m in stored], cut)

    def plan_resume(
        self, channels: Iterable[str], resume: ResumeRequest | None, recalled: Recall | None = None
    ) -> ResumePlan:
        """Work out what a (re)connecting client missed, without delivering anything yet.

        The caller sends startup_complete (which carries the result), queues
        the plan's messages (or passes the plan to :meth:`attach`) and then
        attaches, with no ``await`` in between: no live message can then slip
        between the replay and the live stream. The plan holds references to
        messages already kept in the history, so a long replay costs no copy.
        *recalled* is what :meth:`recall` read from the durable log.
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
        if recalled is not None:
            # Disk for what memory evicted, memory for what is not committed yet; each seq once.
            missed = [*recalled.messages, *(m for m in missed if m.seq > recalled.through)]
        if self.durable is not None and resume.last_seq < self.durable.crash_seq:
            result = ResumeResult("incomplete", len(missed), "server_crashed")
        elif resume.last_seq < self._evicted_through and not self._recall_covers(resume.last_seq, recalled):
            result = ResumeResult("incomplete", len(missed), "history_exceeded")
        else:
            result = ResumeResult("complete", len(missed))
        return ResumePlan(result, missed, self._fresh_frames(after_seq=resume.last_seq))

    def _recall_covers(self, last_seq: int, recalled: Recall | None) -> bool:
        """Whether the durable log held every reliable message from *last_seq* to the memory history."""
        durable = self.durable
        return (
            durable is not None
            and recalled is not None
            and not recalled.cut
            and recalled.through >= self._evicted_through
            and last_seq >= durable.pruned_through
            and last_seq >= durable.lost_through
        )

    def attach(self, subscriber: Subscriber, plan: ResumePlan | None = None) -> None:
        """Deliver the plan's replay and newest frames in seq order (if given), then the live stream.

        A :class:`~.connection.Connection` queues its replay lazily itself
        (see Outbox.put_feed) and attaches without a plan.
        """
        if plan is not None:
            for outbound in plan.in_seq_order():
                subscriber.deliver(outbound)
        self._subscribers[subscriber] = getattr(subscriber, "deliver_frame", None) or _each(subscriber)
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
            del self._subscribers[subscriber]
            self._versions_in_use[subscriber.version] -= 1
            if self._versions_in_use[subscriber.version] <= 0:
                del self._versions_in_use[subscriber.version]

    # -- publishing ---------------------------------------------------------

    def stamp(self, event: Event) -> Outbound:
        """Give *event* its seq and publish time."""
        self._seq += 1
        if self._seq >= self._reserve_at:
            assert self.durable is not None
            self._reserve_at = self.durable.reserve_after(self._seq)
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
        if self.durable is not None:
            self.durable.append(outbound.seq, event, outbound.timestamp_ms)  # a queue append, never a write
        for version in self._versions_in_use:
            self.render(outbound, version)
        self.stats.published[event.type] += 1
        if reliable:
            log.debug("published %s seq %d", event.type, outbound.seq)
            self._remember(outbound)
        else:
            self._newest_frames[event.type] = outbound
        if self._bundle is not None:
            self._bundle.append(outbound)  # delivered when the frame scope closes
        else:
            for subscriber in tuple(self._subscribers):
                subscriber.deliver(outbound)
        return outbound

    @contextlib.contextmanager
    def frame_scope(self) -> Iterator[None]:
        """Deliver what is published inside as one frame: one call and one socket write per connection.

        The frame loop opens it around a frame's publishes. Messages are
        stamped, validated and kept for resume as they are published, and
        delivered, in seq order, when the scope closes. The body must not
        await (nothing else may write to a connection in between) and must
        not send a connection's own messages after publishing: those would
        overtake the frame's lower seqs. A nested scope joins the outer one.
        """
        if self._bundle is not None:
            yield
            return
        with self.write_batch.collect():
            self._bundle = []
            try:
                yield
            finally:
                published, self._bundle = self._bundle, None
                if published and self._subscribers:
                    bundle = FrameBundle(self, published, time.monotonic())
                    for deliver_frame in tuple(self._subscribers.values()):
                        deliver_frame(bundle)

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

    def frame(self, outbound: Outbound, version: str) -> bytes | None:
        """The complete WebSocket text frame of *outbound* for *version*, built once.

        Server frames are unmasked, so without compression every client of a
        version receives exactly these bytes: a connection can write them to
        its socket as they are (see :class:`~.transport.DirectWriter`).
        """
        try:
            return outbound._frames[version]
        except KeyError:
            pass
        text = self.render(outbound, version)
        if text is None:
            return None
        frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
        outbound._frames[version] = frame
        return frame

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

    def forget(self, unwanted: Callable[[Event], bool]) -> int:
        """Drop the remembered messages *unwanted* selects (a deleted recording): no resume replays them."""
        kept = deque(outbound for outbound in self._history if not unwanted(outbound.event))
        dropped = len(self._history) - len(kept)
        self._history = kept
        return dropped

    # -- failures -----------------------------------------------------------

    def _validation_failed(self, message_type: str, version: str, error: MessageValidationError) -> None:
        self.stats.validation_failures += 1
        self.stats.dropped["validation_failed"] += 1
        # The reason names a path, never a value: token text stays out of the log.
        log.error(
            "outbound %s (protocol %s) failed validation at %s: %s; not sent",
            message_type,
            version,
            error.path or "/",
            error.reason,
        )
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
