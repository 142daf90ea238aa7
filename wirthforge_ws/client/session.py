"""What carries over from one connection to the next.

:class:`ResumeCursor` is the client's position in the server's stream (epoch,
last ``seq``) and its defence against duplicates; :class:`SessionOptions` is
what the caller asked to receive. Both feed the URL of every reconnect
(:func:`build_url`), so that a new connection resumes where the last one
stopped, with the same channels and energy rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..protocol.codes import ALWAYS_ON_CHANNEL, CHANNELS
from .utils import is_number, plain_number

__all__ = ["ResumeCursor", "SeqVerdict", "SessionOptions", "build_url"]

SeqVerdict = Literal["new", "duplicate"]


class ResumeCursor:
    """Where this client is in the server's stream: ``epoch`` and the highest ``seq`` processed.

    The rule (PROTOCOL.md §10, "Resume and de-duplication"): within one
    epoch, every message after startup_complete carries a higher ``seq``
    than the one before, replayed reliable messages and the hand-over energy
    frames included (§6 merges them in seq order and never sends one at or
    below ``lastSeq``). So one high-water mark is the whole defence: a
    message at or below it is a ``duplicate`` and is dropped, whatever its
    channel. startup_complete is never judged and never moves the mark: on
    a resumed connection it is numbered *after* the replay that follows it.
    """

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.last_seq = 0
        # Stream position of the latest *fresh* session's startup_complete:
        # see resume_query().
        self._fresh_floor = 0

    def accept(self, seq: int) -> SeqVerdict:
        """Classify *seq*; raise the mark when it is new."""
        if seq <= self.last_seq:
            return "duplicate"
        self.last_seq = seq
        return "new"

    def start_session(self, epoch: str | None, startup_seq: int | None, *, fresh: bool) -> None:
        """Enter the session announced by a startup_complete.

        A different epoch is a different seq space (the server restarted), so
        the mark starts over; otherwise it is kept, including after an
        incomplete resume. *fresh* means the server replayed nothing.
        """
        if epoch != self.epoch:
            self.epoch = epoch
            self.last_seq = 0
            self._fresh_floor = 0
        if fresh and startup_seq is not None:
            self._fresh_floor = max(self._fresh_floor, startup_seq)

    def resume_query(self) -> dict[str, str]:
        """``epoch``/``lastSeq`` for the reconnect URL; empty before the first 1.1 session.

        ``lastSeq`` is ``max(last seq processed, seq of the latest fresh
        session's startup_complete)``: a fresh session that ended before any
        other message would otherwise ask with ``lastSeq=0`` and be replayed
        the whole history, messages published before this client connected.
        A *resumed* session's startup_complete is numbered after its replay,
        so it must not raise the floor: a drop in the middle of the replay
        would skip the rest of it.
        """
        if self.epoch is None:
            return {}
        return {"epoch": self.epoch, "lastSeq": str(max(self.last_seq, self._fresh_floor))}


class SessionOptions:
    """What the caller wants to receive: channels, energy rate, pause.

    Kept as desired state, not just sent once, so that a reconnect puts
    channels and rate on the URL (they then apply before the first live
    message) and re-sends ``pause_energy`` (which has no URL form).
    """

    def __init__(self, channels: Iterable[str] | None = None, energy_rate: float | None = None) -> None:
        self.channels: frozenset[str] | None = None if channels is None else _checked(channels)
        self.energy_rate: float | None = None
        self.paused = False
        if energy_rate is not None:
            self.set_energy_rate(energy_rate)

    def subscribe(self, channels: Iterable[str]) -> list[str]:
        """Add *channels*; returns them in canonical order for the request."""
        names = _checked(channels)
        if self.channels is not None:
            self.channels = self.channels | names
        return _canonical(names)

    def unsubscribe(self, channels: Iterable[str]) -> list[str]:
        """Remove *channels* (``system`` cannot be removed)."""
        names = _checked(channels)
        if ALWAYS_ON_CHANNEL in names:
            raise ValueError(f"the {ALWAYS_ON_CHANNEL!r} channel cannot be unsubscribed")
        current = self.channels if self.channels is not None else frozenset(CHANNELS)
        self.channels = current - names
        return _canonical(names)

    def set_energy_rate(self, rate_hz: float, frame_rate: float | None = None) -> None:
        """Validate against §5 (1..frame rate) before the server has to say no."""
        if not is_number(rate_hz) or not math.isfinite(rate_hz):
            raise ValueError(f"energy rate must be a number, not {rate_hz!r}")
        if rate_hz < 1 or (frame_rate is not None and rate_hz > frame_rate):
            upper = plain_number(frame_rate) if frame_rate is not None else "the frame rate"
            raise ValueError(f"energy rate must be within 1..{upper} Hz, not {rate_hz}")
        self.energy_rate = float(rate_hz)

    def query(self) -> dict[str, str]:
        """``channels``/``energyRate`` for the connect URL (only what differs from the defaults)."""
        params: dict[str, str] = {}
        if self.channels is not None:
            params["channels"] = ",".join(_canonical(self.channels | {ALWAYS_ON_CHANNEL}))
        if self.energy_rate is not None:
            params["energyRate"] = str(plain_number(self.energy_rate))
        return params


def _checked(channels: Iterable[str]) -> frozenset[str]:
    """*channels* as a set; ValueError naming any that the protocol does not know."""
    names = frozenset(channels)
    unknown = names - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channel(s): {', '.join(sorted(unknown))}; known: {', '.join(CHANNELS)}")
    return names


def _canonical(names: frozenset[str]) -> list[str]:
    """*names* in the protocol's channel order, so requests and URLs are stable."""
    return [name for name in CHANNELS if name in names]


def build_url(base: str, params: Mapping[str, str | None]) -> str:
    """*base* with *params* set in its query: same-named parameters are replaced, others kept.

    Commas stay literal (``channels=energy,system``) as in PROTOCOL.md §6.
    """
    parts = urlsplit(base)
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key not in params]
    query.extend((key, value) for key, value in params.items() if value is not None)
    return urlunsplit(parts._replace(query=urlencode(query, safe=",")))
