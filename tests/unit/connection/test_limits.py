"""TokenBucket: the burst, then the sustained rate, on explicit timestamps."""

from __future__ import annotations

import time

from wirthforge_ws.connection.limits import TokenBucket


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=5)
    now = time.monotonic()
    assert [bucket.take(now) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(now + 0.05) is False  # half a token
    assert bucket.take(now + 0.11) is True  # one token refilled
    assert bucket.take(now + 0.11) is False
    # A long pause refills up to the burst, not beyond.
    later = now + 100.0
    assert sum(bucket.take(later) for _ in range(20)) == 5


def test_token_bucket_sustained_rate() -> None:
    bucket = TokenBucket(rate=100.0, burst=200)
    start = time.monotonic()
    # 1000 messages at 150/s for 6.67 s: the burst covers 200 and the rate 667, so some are refused.
    allowed = sum(bucket.take(start + i / 150.0) for i in range(1000))
    assert 850 <= allowed <= 870
    # At 90/s everything passes.
    bucket = TokenBucket(rate=100.0, burst=200)
    assert all(bucket.take(start + i / 90.0) for i in range(1000))
