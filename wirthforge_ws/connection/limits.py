"""One token bucket for every rate limit of the transport.

A connection's inbound messages (:meth:`TokenBucket.take`, one token each,
refused when none is left) and the wire layer's inbound frames (counted
after a slice is parsed with :meth:`TokenBucket.spend`, so the balance may
go negative and the debt is paid by waiting, :meth:`TokenBucket.seconds_until`)
use the same bucket: *rate* tokens per second, holding at most *burst*.
"""

from __future__ import annotations

import time


class TokenBucket:
    """*rate* tokens per second on average, bursts up to *burst*; starts full."""

    __slots__ = ("rate", "burst", "tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._updated = time.monotonic() if now is None else now

    def refill(self, now: float) -> float:
        """Add what *rate* earned since the last refill, up to *burst*; the balance."""
        self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        return self.tokens

    def take(self, now: float | None = None) -> bool:
        """Take one token if there is one (refilling first); False when the rate is exceeded."""
        self.refill(time.monotonic() if now is None else now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def spend(self, tokens: float) -> None:
        """Take *tokens* whatever the balance: it may go negative (a debt)."""
        self.tokens -= tokens

    def seconds_until(self, tokens: float) -> float:
        """How long until the balance reaches *tokens* at *rate* (0 if it already has)."""
        return max(tokens - self.tokens, 0.0) / self.rate
