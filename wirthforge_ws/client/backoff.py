"""Reconnect delays: exponential backoff with full jitter (PROTOCOL.md §10)."""

from __future__ import annotations

import random

from .rules import RECONNECT_BASE_S, RECONNECT_CAP_S

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``.

    Full jitter spreads the reconnects of many clients after a server restart
    over the whole window instead of synchronising them into waves. The
    defaults are the protocol's (0.1 s base, 1 s cap: back within about a
    second of the server); the client calls :meth:`reset` when a stable
    session ends, so that a single drop is retried within ``base`` seconds.
    """

    def __init__(
        self, base: float = RECONNECT_BASE_S, cap: float = RECONNECT_CAP_S, *, rng: random.Random | None = None
    ) -> None:
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
        """Start over from attempt 0 (after a successful session)."""
        self.attempt = 0
