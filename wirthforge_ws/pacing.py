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
like TCP congestion control (additive increase, multiplicative decrease):

- while a heartbeat has been unanswered for longer than :data:`LAG_HIGH`,
  no energy frame is queued at all, so the backlog drains (reliable
  messages still flow), and the rate is halved once per such episode;
- an answer slower than :data:`LAG_HIGH` halves the rate;
- an answer faster than :data:`LAG_LOW` raises it by :data:`STEP_HZ`, up to
  the rate the client asked for.

Only clients that answer heartbeats are paced: until a first answer arrives
(and again after :data:`SILENT_AFTER` seconds without one) the pacer stays
out of the way, and such a client is protected by latest-wins alone. The
first heartbeat goes out :data:`FIRST_HEARTBEAT` after the connection opens
so that pacing starts before a backlog can build up.
"""

from __future__ import annotations

LAG_HIGH = 0.25  # seconds: a backlog this old means the client cannot keep up
LAG_LOW = 0.1  # seconds: below this the client keeps up with room to spare
STEP_HZ = 5.0  # additive increase per fast heartbeat answer
MIN_RATE_HZ = 1.0
SILENT_AFTER = 3.0  # seconds without any answer: treat the client as one that does not answer
FIRST_HEARTBEAT = 0.25  # seconds after open


class EnergyPacer:
    """The energy rate one connection's client has shown it can read."""

    __slots__ = ("ceiling", "rate", "answering", "holding", "reductions")

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling  # what the client asked for (or the frame rate)
        self.rate = ceiling
        self.answering = False  # has answered a heartbeat recently
        self.holding = False  # no energy until the outstanding heartbeat is answered
        self.reductions = 0  # times the rate was cut: shown in /health

    def set_ceiling(self, ceiling: float) -> None:
        """The client asked for another rate (set_energy_rate)."""
        self.ceiling = ceiling
        self.rate = min(self.rate, ceiling) if self.answering else ceiling

    def answered(self, round_trip: float) -> None:
        """A heartbeat was answered *round_trip* seconds after it was sent."""
        self.answering = True
        was_holding, self.holding = self.holding, False
        if round_trip > LAG_HIGH:
            if not was_holding:  # a hold already cut the rate for this backlog
                self._reduce()
        elif round_trip < LAG_LOW:
            self.rate = min(self.ceiling, self.rate + STEP_HZ)

    def observe(self, unanswered_for: float) -> None:
        """The oldest outstanding heartbeat has waited *unanswered_for* seconds (0 if none)."""
        if not self.answering:
            return
        if unanswered_for > SILENT_AFTER:
            # It stopped answering: pacing on silence would starve it. From now
            # on only latest-wins and the send timeout protect it.
            self.answering = False
            self.holding = False
            self.rate = self.ceiling
        elif unanswered_for > LAG_HIGH:
            if not self.holding:
                self.holding = True
                self._reduce()
        else:
            self.holding = False

    @property
    def effective_rate(self) -> float:
        return self.rate if self.answering else self.ceiling

    def _reduce(self) -> None:
        self.rate = max(MIN_RATE_HZ, min(self.rate, self.ceiling) / 2.0)
        self.reductions += 1
