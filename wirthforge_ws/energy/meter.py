"""Energy E from one model's tokens (WF-FND-002; formulas in docs/ENERGY.md).

Per token t of an answer, with that token's own Δt:

- speed     v = clamp((tps - tps_min) / (tps_max - tps_min), 0, 1), tps over a window ending at t
- friction  f = 1 - clamp((Δt - stall_ms) / (ceil_ms - stall_ms), 0, 1)
- certainty c = 1 - H / ln K, H the natural-log entropy of the normalised top-K
- E_base = 0.5 v + 0.3 c + 0.2 f, or 0.7 v + 0.3 f without top-K
- E_t = alpha E_base + (1 - alpha) E_(t-1), E_0 = 0 at the start of each answer.

A frame shows the last token's E decayed to the frame's time with the
profile's half-life. Inputs are rounded before any arithmetic (Δt to 0.1 ms,
each top-K probability to 4 decimals, at most 8 of them) and the meter's
clock is the sum of the rounded Δt, so a trace that keeps the rounded values
reproduces every E exactly.

The council's divergence of several models' top-K, :func:`jensen_shannon`,
is here beside the entropy it is built from.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .profiles import EnergyProfile
from .states import SessionMachine, SessionState

__all__ = [
    "AnswerClosedError",
    "MeterSnapshot",
    "ModelMeter",
    "SessionState",
    "TokenReading",
    "certainty",
    "entropy",
    "jensen_shannon",
    "round_dt_ms",
    "round_top_k",
]

TOP_K_LIMIT = 8
TOP_K_DECIMALS = 4
ENERGY_UNITS_PER_TOKEN = 0.01


def _clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return min(max(value, low), high)


def round_dt_ms(dt_ms: float) -> float:
    """Δt as the meter keeps it: at least 0, rounded to 0.1 ms."""
    return max(round(dt_ms * 10), 0) / 10


def round_top_k(top_k: Sequence[float] | None) -> tuple[float, ...] | None:
    """The top-K as the meter keeps it: finite, >= 0, the largest 8, descending, rounded to 4 decimals.

    None when nothing usable is left.
    """
    if top_k is None:
        return None
    usable = sorted((float(p) for p in top_k if math.isfinite(p) and p >= 0), reverse=True)[:TOP_K_LIMIT]
    if not usable:
        return None
    return tuple(round(p, TOP_K_DECIMALS) for p in usable)


def entropy(probabilities: Sequence[float]) -> float | None:
    """Natural-log entropy of the top-K normalised to sum 1; None for K < 2 or a zero sum."""
    if len(probabilities) < 2:
        return None
    total = math.fsum(probabilities)
    if not total > 0:
        return None
    return -math.fsum((p / total) * math.log(p / total) for p in probabilities if p > 0)


def certainty(probabilities: Sequence[float]) -> float | None:
    """1 - H / ln K in [0, 1]: 1 for a sure pick, 0 for a uniform top-K; None when :func:`entropy` is None."""
    h = entropy(probabilities)
    if h is None:
        return None
    return _clamp(1.0 - h / math.log(len(probabilities)))


@dataclass(frozen=True, slots=True)
class TokenReading:
    """One token's evidence and the E it leaves."""

    index: int  # 0-based within this model's answer
    t_ms: float  # since the prompt was accepted (cumulative rounded Δt)
    dt_ms: float  # rounded to 0.1 ms; the first token's is the TTFT
    tps: float
    top_k: tuple[float, ...] | None  # rounded, <= 8, descending
    certainty: float | None
    entropy: float | None
    stall: bool  # dt_ms > stall_ms (never for the first token)
    burst: bool  # tps > burst_tps
    energy: float  # E after this token


@dataclass(frozen=True, slots=True)
class MeterSnapshot:
    """One model at a frame's time."""

    model_id: str
    energy: float  # E decayed to now
    state: SessionState
    tps: float  # tokens in the window ending now, per second
    certainty: float | None  # of the last token
    entropy: float | None
    since_token_ms: float | None  # None before the first token of the answer
    stall: bool
    burst: bool
    ttft_ms: float | None
    energy_units: float  # accumulated over this answer
    tokens: int  # tokens of this answer so far
    dt_ms: float | None  # last token's Δt


class AnswerClosedError(RuntimeError):
    """A token reached a meter whose answer is not open (before ``start`` or after ``end``)."""


class ModelMeter:
    """E, tps, certainty and the session state of one model's answers.

    Times passed in are monotonic seconds; the meter keeps its own answer
    clock in whole tenths of a millisecond since ``start`` (the sum of the
    rounded Δt), so its arithmetic does not depend on the caller's float noise.
    """

    def __init__(self, model_id: str, profile: EnergyProfile) -> None:
        self.model_id = model_id
        self.profile = profile
        self._machine = SessionMachine(profile)
        self._window_tenths = round(profile.window_ms * 10)
        self._accepted_at: float | None = None
        self._clear()

    def _clear(self) -> None:
        self._readings: list[TokenReading] = []
        self._recent: deque[int] = deque()  # t (tenths of ms) of the tokens inside the window
        self._t_tenths = 0
        self._energy = 0.0
        self._energy_units = 0.0

    @property
    def state(self) -> SessionState:
        return self._machine.state

    @property
    def is_open(self) -> bool:
        """True between ``start`` and ``end``: tokens are accepted."""
        return self._machine.is_open

    @property
    def energy_units(self) -> float:
        return self._energy_units

    @property
    def readings(self) -> list[TokenReading]:
        """This answer's readings, oldest first (a copy)."""
        return list(self._readings)

    def start(self, accepted_at: float) -> None:
        """A new answer, its prompt accepted at *accepted_at* (monotonic seconds): E = 0, CHARGING."""
        self._accepted_at = accepted_at
        self._clear()
        self._machine.start()

    def end(self, when: float) -> None:
        """The answer is over: DRAINED, or IDLE when no token came.

        E keeps decaying from the last token's time, so *when* changes no value; it is taken for symmetry
        with :meth:`start` and :meth:`on_token`.
        """
        self._machine.end()

    def on_token(self, when: float, top_k: Sequence[float] | None = None) -> TokenReading:
        """A token arrived at *when* (monotonic seconds), with its top-K probabilities when known."""
        if self._accepted_at is None or not self.is_open:
            raise AnswerClosedError(f"model {self.model_id!r}: token outside an open answer (state {self.state})")
        dt_tenths = max(round((when - self._accepted_at) * 10000) - self._t_tenths, 0)
        return self._add(dt_tenths, top_k)

    def add_token(self, dt_ms: float, top_k: Sequence[float] | None = None) -> TokenReading:
        """A token *dt_ms* after the previous one (or after ``start``): the replay path of recorded Δt."""
        if self._accepted_at is None or not self.is_open:
            raise AnswerClosedError(f"model {self.model_id!r}: token outside an open answer (state {self.state})")
        return self._add(max(round(dt_ms * 10), 0), top_k)

    def _add(self, dt_tenths: int, raw_top_k: Sequence[float] | None) -> TokenReading:
        profile = self.profile
        first = not self._readings
        self._t_tenths += dt_tenths
        t = self._t_tenths
        recent = self._recent
        recent.append(t)
        while recent[0] <= t - self._window_tenths:
            recent.popleft()
        tps = len(recent) * 1000.0 / profile.window_ms
        dt_ms = dt_tenths / 10

        top_k = round_top_k(raw_top_k)
        h = entropy(top_k) if top_k is not None else None
        c = certainty(top_k) if top_k is not None else None
        v = _clamp((tps - profile.tps_min) / (profile.tps_max - profile.tps_min))
        f = 1.0 - _clamp((dt_ms - profile.stall_ms) / (profile.ceil_ms - profile.stall_ms))
        base = 0.7 * v + 0.3 * f if c is None else 0.5 * v + 0.3 * c + 0.2 * f
        self._energy = _clamp(profile.alpha * base + (1.0 - profile.alpha) * self._energy)
        self._energy_units += ENERGY_UNITS_PER_TOKEN * self._energy

        stall = not first and dt_ms > profile.stall_ms
        reading = TokenReading(
            index=len(self._readings),
            t_ms=t / 10,
            dt_ms=dt_ms,
            tps=tps,
            top_k=top_k,
            certainty=c,
            entropy=h,
            stall=stall,
            burst=tps > profile.burst_tps,
            energy=self._energy,
        )
        self._readings.append(reading)
        self._machine.token(reading.t_ms, stall, self._energy)
        return reading

    def snapshot(self, now: float) -> MeterSnapshot:
        """The model at *now* (monotonic seconds), on the answer clock rounded to 0.1 ms.

        A time before the last token counts as the last token's time.
        """
        profile = self.profile
        state = self.state
        last = self._readings[-1] if self._readings else None
        if self._accepted_at is None:
            now_tenths = 0
        else:
            now_tenths = max(round((now - self._accepted_at) * 10000), self._t_tenths)
        if last is None:
            energy = 0.0
            since_ms = None
            waited_ms = now_tenths / 10
            last_stall = False
        else:
            since_ms = (now_tenths - self._t_tenths) / 10
            energy = self._energy * 0.5 ** (since_ms / profile.half_life_ms)
            waited_ms = since_ms
            last_stall = last.stall
        low = now_tenths - self._window_tenths
        in_window = sum(1 for t in self._recent if low < t <= now_tenths)
        tps = in_window * 1000.0 / profile.window_ms
        stall = self.is_open and (waited_ms > profile.stall_ms or last_stall)
        return MeterSnapshot(
            model_id=self.model_id,
            energy=_clamp(energy),
            state=state,
            tps=tps,
            certainty=last.certainty if last else None,
            entropy=last.entropy if last else None,
            since_token_ms=since_ms,
            stall=stall,
            burst=tps > profile.burst_tps,
            ttft_ms=self._readings[0].dt_ms if self._readings else None,
            energy_units=self._energy_units,
            tokens=len(self._readings),
            dt_ms=last.dt_ms if last else None,
        )


# ---------------------------------------------------------------------------
# Disagreement of several models' top-K (the council)


def jensen_shannon(distributions: Sequence[Sequence[float]]) -> float:
    """Generalised JS divergence (base 2) of equally weighted distributions, divided by log2 n: in [0, 1]."""
    usable = [list(d) for d in distributions if math.fsum(d) > 0]
    if len(usable) < 2:
        return 0.0
    normalised = [[p / math.fsum(d) for p in d] for d in usable]
    width = max(len(d) for d in normalised)
    padded = [d + [0.0] * (width - len(d)) for d in normalised]
    mixture = [math.fsum(column) / len(padded) for column in zip(*padded)]

    def shannon(d: Sequence[float]) -> float:
        return -math.fsum(p * math.log2(p) for p in d if p > 0)

    divergence = shannon(mixture) - math.fsum(shannon(d) for d in padded) / len(padded)
    return _clamp(divergence / math.log2(len(padded)))
