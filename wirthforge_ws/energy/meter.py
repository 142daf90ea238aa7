"""Energy from token activity (WF-FND-002).

Per frame, for one model:

- speed     v = clamp(TPS / 20, 0, 1), TPS over a 1 s window
- certainty c = 1 - H(top-K) / log K, when top-K probabilities are known
- friction  f = 1 - clamp((dt - 400) / (1500 - 400), 0, 1), dt = ms since the previous token
- E_base = 0.5 v + 0.3 c + 0.2 f, or 0.7 v + 0.3 f without probabilities
- E(t) = 0.35 E_base + 0.65 E(t-1) on frames with tokens; otherwise E decays
  with a 700 ms half-life.

The council's disagreement is the Jensen-Shannon divergence of the models'
top-K distributions (base 2, so it lies in [0, 1]).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

TPS_FULL_SPEED = 20.0
STALL_MS = 400.0
FRICTION_CEILING_MS = 1500.0
SMOOTHING = 0.35
DECAY_HALF_LIFE_S = 0.7
BURST_TPS = 12.0


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """The energy state after one frame."""

    level: float  # E(t) in [0, 1]
    delta: float  # E(t) - E(t-1)
    speed: float
    certainty: float | None
    friction: float
    tokens_per_second: float

    @property
    def is_burst(self) -> bool:
        return self.tokens_per_second > BURST_TPS

    def distribution(self) -> dict[str, float]:
        """Split the level into generation (speed), attention (certainty) and reasoning (flow)."""
        if self.certainty is None:
            weights = (0.7 * self.speed, 0.0, 0.3 * self.friction)
        else:
            weights = (0.5 * self.speed, 0.3 * self.certainty, 0.2 * self.friction)
        total = sum(weights)
        if total <= 0:
            return {"generation": 0.0, "attention": 0.0, "reasoning": 0.0}
        share = self.level / total
        return {"generation": weights[0] * share, "attention": weights[1] * share, "reasoning": weights[2] * share}


def certainty(probabilities: Sequence[float]) -> float:
    """1 - H(p) / log K: 1 for a sure pick, 0 for a uniform top-K."""
    k = len(probabilities)
    if k < 2:
        return 1.0
    total = sum(probabilities)
    entropy = -sum((p / total) * math.log(p / total) for p in probabilities if p > 0)
    return _clamp(1.0 - entropy / math.log(k))


def jensen_shannon(distributions: Sequence[Sequence[float]]) -> float:
    """Generalised JS divergence (base 2) of equally weighted distributions, in [0, 1]."""
    if len(distributions) < 2:
        return 0.0
    normalised = [[p / sum(d) for p in d] for d in distributions]
    width = max(len(d) for d in normalised)
    padded = [d + [0.0] * (width - len(d)) for d in normalised]
    mixture = [sum(column) / len(padded) for column in zip(*padded)]

    def entropy(d: Sequence[float]) -> float:
        return -sum(p * math.log2(p) for p in d if p > 0)

    divergence = entropy(mixture) - sum(entropy(d) for d in padded) / len(padded)
    # With n distributions the bound is log2(n); scale so the result stays in [0, 1].
    return _clamp(divergence / math.log2(len(padded)))


class EnergyMeter:
    """Turns token arrival times into an :class:`EnergyReading` once per frame."""

    def __init__(self) -> None:
        self._token_times: deque[float] = deque()
        self._last_token: float | None = None
        self._certainty: float | None = None
        self._level = 0.0
        self._last_update: float | None = None

    def on_token(self, when: float, top_k: Sequence[float] | None = None) -> None:
        self._last_token = when
        self._token_times.append(when)
        if top_k is not None:
            self._certainty = certainty(top_k)

    def update(self, now: float, tokens_this_frame: int) -> EnergyReading:
        while self._token_times and self._token_times[0] <= now - 1.0:
            self._token_times.popleft()
        tps = float(len(self._token_times))
        speed = _clamp(tps / TPS_FULL_SPEED)
        if self._last_token is None:
            friction = 0.0
        else:
            since_ms = (now - self._last_token) * 1000.0
            friction = 1.0 - _clamp((since_ms - STALL_MS) / (FRICTION_CEILING_MS - STALL_MS))

        previous = self._level
        if tokens_this_frame > 0:
            if self._certainty is None:
                base = 0.7 * speed + 0.3 * friction
            else:
                base = 0.5 * speed + 0.3 * self._certainty + 0.2 * friction
            self._level = SMOOTHING * base + (1.0 - SMOOTHING) * previous
        elif self._last_update is not None:
            elapsed = now - self._last_update
            self._level = previous * 0.5 ** (elapsed / DECAY_HALF_LIFE_S)
        self._last_update = now

        return EnergyReading(
            level=self._level,
            delta=self._level - previous,
            speed=speed,
            certainty=self._certainty,
            friction=friction,
            tokens_per_second=tps,
        )


def _clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return min(max(value, low), high)
