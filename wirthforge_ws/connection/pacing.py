"""Energy pacing: send a client no more frames than it can read.

Latest-wins in the outbox (outbox.py) only helps once the server's own
buffers fill. A client that reads a little slower than 60 Hz never fills
them: its operating system accepts everything into its receive buffer (and
a browser or a client library into its own queue), so it reads every frame,
in order, ever later. Nothing on the server's side of the socket can see
that backlog. The client's answers to heartbeats can: a heartbeat sits in
the same queue as the frames, so the time from sending it to reading its
``heartbeat_response`` is the age of what the client is reading now, and a
heartbeat still unanswered after ``d`` seconds proves a backlog of at least
``d``.

:class:`EnergyPacer` turns that into an energy rate for one connection,
like TCP congestion control (gentle increase, fast decrease):

- Each heartbeat marks a position in the stream (messages queued before
  it); the messages between two marks over the time between their answers
  is the client's read rate. An answer slower than :data:`LAG_LOW` while
  the backlog grows (the client read less than :data:`GROWING_SHARE` of
  what was sent, or the previous answer was slow too and this one is
  slower) means it reads flat out: the energy rate is cut so that
  everything sent fits in :data:`TARGET_SHARE` of its read rate (the rest
  drains the backlog), and the rate that would fill its read rate exactly
  becomes the connection's *threshold*. After a fast answer, though, the
  first slow one cuts by at most half and leaves the threshold alone: it
  can also be a hiccup (a busy page), which should not cost a fast client
  its stream for long. A slow answer without a clearly growing backlog
  multiplies the rate by :data:`EASE`; one slower than :data:`LAG_HIGH`
  halves it.
- While a heartbeat has been unanswered for longer than :data:`LAG_HIGH`,
  no energy frame is queued at all, so the backlog drains (reliable
  messages still flow).
- An answer faster than :data:`LAG_LOW` raises the rate by a quarter (at
  least :data:`STEP_HZ`) up to the threshold, and by :data:`PROBE_INCREASE`
  (at least :data:`PROBE_STEP_HZ`) above it, up to the rate the client
  asked for: the rate climbs back fast to what the client was seen to
  read, then carefully beyond.
- While the client is paced (its rate is below the ceiling, or it is
  held) the connection sends a heartbeat every :data:`PROBE_INTERVAL`
  instead of every heartbeat interval, so that a rate that proves too high
  is corrected before its backlog is old. A client that keeps up gets the
  regular heartbeats only.

Only clients that answer heartbeats are paced: until a first answer arrives
(and again after :data:`SILENT_AFTER` seconds without one) the pacer stays
out of the way, and such a client is protected by latest-wins alone. The
first heartbeats go out :data:`EARLY_HEARTBEATS` after the connection
opens (then one per heartbeat interval): at full rate a 40 messages/s
reader's backlog grows by a second every second, so the first measures
must come within a few tenths of a second.

Measured with ``benchmarks/pacing_model.py`` (this class against a model
client reading *R* messages/s from a FIFO, with the project's stream of 83
messages/s; benchmarks/results/NOTES.md §11): over 12 seeds of 20 s, the worst
energy frame age at 40 messages/s fell from 1.07 s to 0.54 s against the
law without the early heartbeats, the probing and the threshold, and a
fast client that stalls for 150-300 ms still keeps 57-60 Hz on average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LAG_HIGH = 0.3  # seconds: a backlog this old means the client cannot keep up (leaves room to drain within 1 s)
LAG_LOW = 0.1  # seconds: below this the client keeps up with room to spare
GROWING_SHARE = 0.8  # read less than this share of what was sent: the backlog grows
TARGET_SHARE = 0.75  # of the measured read rate that live traffic may use
STEP_HZ = 5.0  # smallest increase per fast heartbeat answer
INCREASE = 0.25  # otherwise the rate grows by this share per fast answer
EASE = 0.8  # a slow answer without a clearly growing backlog: the rate is multiplied by this
MIN_RATE_HZ = 1.0
SILENT_AFTER = 3.0  # seconds without any answer: treat the client as one that does not answer
EARLY_HEARTBEATS = (0.0, 0.05, 0.1, 0.2, 0.5)  # seconds after open: pacing measures before a backlog builds
PROBE_INCREASE = 0.1  # growth per fast answer above the threshold ...
PROBE_STEP_HZ = 1.0  # ... at least this much
PROBE_INTERVAL = 0.25  # seconds between heartbeats while the client is paced
_PROBES_REMEMBERED = 16


@dataclass(frozen=True, slots=True)
class _Mark:
    """A point in one connection's outbound stream: when, and how much had been queued."""

    at: float
    queued: int  # position: messages queued before the heartbeat (for an answer: before the one answered)
    queued_by_then: int  # messages queued by `at`
    queued_energy: int  # energy messages queued by `at`


class EnergyPacer:
    """The energy rate one connection's client has shown it can read.

    The connection counts what it queues or writes with :meth:`counted`
    (into :attr:`queued` and :attr:`queued_energy`; a replaced, never-sent
    frame is not counted), reports each heartbeat it queues (:meth:`probe_sent`) and each answer
    (:meth:`probe_answered`), and asks :meth:`holding_at` before queuing
    an energy frame.
    """

    def __init__(self, ceiling: float, *, nominal_rates: Sequence[float], now: float) -> None:
        self.ceiling = ceiling  # what the client asked for (or the frame rate)
        self.rate = ceiling
        self.threshold = ceiling  # the rate seen to fill the client's reading (since the last confirmed cut)
        self.nominal_rates = tuple(nominal_rates)  # of each energy type (energy_update 60, energy_field 10)
        self.answering = False  # has answered a heartbeat recently
        self._last_round_trip = 0.0
        self.holding = False  # no energy until the outstanding heartbeat is answered
        self.reductions = 0  # times the rate was cut: shown in /health
        self.queued = 0
        self.queued_energy = 0
        self._outstanding: dict[int, _Mark] = {}  # heartbeat sequence -> mark, oldest first
        self._last_answer = _Mark(now, 0, 0, 0)  # the connection opened with nothing read

    # -- what the connection reports ------------------------------------------

    def counted(self, messages: int, energy: int = 0) -> None:
        """*messages* more went into the stream (queued or written), *energy* of them energy frames.

        The pacer counts positions in the stream, however they were sent.
        """
        self.queued += messages
        self.queued_energy += energy

    def probe_sent(self, sequence: int, now: float) -> None:
        """Heartbeat *sequence* was queued (after everything counted so far)."""
        self._outstanding[sequence] = _Mark(now, self.queued, self.queued, self.queued_energy)
        if len(self._outstanding) > _PROBES_REMEMBERED:
            del self._outstanding[next(iter(self._outstanding))]

    def probe_answered(self, sequence: int, now: float) -> float | None:
        """The client answered heartbeat *sequence*: its round-trip time (None if unknown)."""
        mark = self._outstanding.pop(sequence, None)
        if mark is None:
            return None
        # Older heartbeats were read before this one: the client chose not to
        # answer them. They must not look like an ever older backlog.
        for older in [s for s in self._outstanding if s < sequence]:
            del self._outstanding[older]
        previous = self._last_answer
        self._last_answer = _Mark(now, mark.queued, self.queued, self.queued_energy)
        round_trip = now - mark.at
        elapsed = now - previous.at
        if elapsed > 0:
            read = (mark.queued - previous.queued) / elapsed
            sent = (self.queued - previous.queued_by_then) / elapsed
            other = sent - (self.queued_energy - previous.queued_energy) / elapsed
            growing = read < GROWING_SHARE * sent
        else:
            read, other, growing = 0.0, 0.0, False
        behind = round_trip > LAG_LOW
        persistent = self._last_round_trip > LAG_LOW  # the previous answer was slow too
        growing = behind and (growing or persistent and round_trip >= self._last_round_trip)
        self._last_round_trip = round_trip
        self._answered(round_trip, read if growing else None, other, persistent)
        return round_trip

    def holding_at(self, now: float) -> bool:
        """True while no energy frame should be queued (the client is too far behind)."""
        if not self.answering:
            return False
        oldest = next(iter(self._outstanding.values()), None)
        unanswered_for = now - oldest.at if oldest is not None else 0.0
        if unanswered_for > SILENT_AFTER:
            # It stopped answering: pacing on silence would starve it. From now
            # on only latest-wins and the send timeout protect it.
            self.answering = False
            self.holding = False
            self.rate = self.ceiling
        elif unanswered_for > LAG_HIGH:
            self.holding = True
        else:
            self.holding = False
        return self.holding

    def probe_due(self, last_probe_at: float) -> float:
        """When pacing wants the next heartbeat, given the last one (infinity: the regular schedule)."""
        if self.answering and (self.holding or self.rate < self.ceiling):
            return last_probe_at + PROBE_INTERVAL
        return float("inf")

    def set_ceiling(self, ceiling: float) -> None:
        """The client asked for another rate (set_energy_rate)."""
        self.ceiling = ceiling
        self.rate = min(self.rate, ceiling) if self.answering else ceiling

    # -- the control law ----------------------------------------------------

    @property
    def effective_rate(self) -> float:
        return self.rate if self.answering else self.ceiling

    def _answered(self, round_trip: float, read_rate: float | None, other_rate: float, persistent: bool) -> None:
        self.answering = True
        self.holding = False
        if round_trip > LAG_LOW and read_rate is not None and read_rate > 0:
            # Behind, with a growing backlog, so reading flat out: fit the
            # energy into what is left of TARGET_SHARE of its read rate.
            budget = TARGET_SHARE * read_rate - other_rate
            fitted = self.rate_for(budget)
            if persistent:  # confirmed, not a hiccup: remember what it reads
                self.threshold = max(MIN_RATE_HZ, self.rate_for(read_rate - other_rate))
            self._reduce_to(fitted if persistent else max(fitted, self.rate / 2.0))
        elif round_trip > LAG_HIGH:
            self._reduce_to(self.rate / 2.0)
        elif round_trip > LAG_LOW:
            self._reduce_to(self.rate * EASE)  # behind, not clearly growing: ease off before it does
        elif round_trip < LAG_LOW:
            if self.rate < self.threshold:
                self.rate = min(self.threshold, self.rate + max(STEP_HZ, INCREASE * self.rate))
            else:
                self.rate += max(PROBE_STEP_HZ, PROBE_INCREASE * self.rate)
            if self.rate >= self.ceiling:  # it reads all it asked for: what it read before is stale
                self.rate = self.threshold = self.ceiling

    def messages_at(self, rate: float) -> float:
        """Energy messages per second at energy rate *rate* (each type is capped at the rate)."""
        return sum(min(rate, nominal) for nominal in self.nominal_rates)

    def rate_for(self, messages_per_second: float) -> float:
        """The energy rate that sends *messages_per_second* energy messages (inverse of messages_at)."""
        low, high = 0.0, max(self.nominal_rates, default=self.ceiling)
        for _ in range(30):  # messages_at is increasing and piecewise linear: bisect
            middle = (low + high) / 2
            if self.messages_at(middle) > messages_per_second:
                high = middle
            else:
                low = middle
        return low

    def _reduce_to(self, rate: float) -> None:
        rate = max(MIN_RATE_HZ, min(rate, self.rate, self.ceiling))
        if rate < self.rate:
            self.rate = rate
            self.reductions += 1
