"""One knob for every timing bound in the tests.

``WF_TEST_TIME_FACTOR`` (default 1) multiplies every timeout, wait and
tolerance that a test derives from wall-clock time, the way websockets'
``WEBSOCKETS_TESTS_TIMEOUT_FACTOR`` does. Raise it on a slow or busy
machine (``WF_TEST_TIME_FACTOR=3 make test``); never lower a bound in a test
itself instead.

Example::

    from tests.timing import scaled
    await asyncio.wait_for(reader, timeout=scaled(2.0))
"""

from __future__ import annotations

import os

TIME_FACTOR = max(float(os.environ.get("WF_TEST_TIME_FACTOR", "1") or 1), 1.0)


def scaled(seconds: float) -> float:
    """*seconds* stretched by the test time factor."""
    return seconds * TIME_FACTOR


def within(value: float, low: float, high: float) -> bool:
    """*low* <= *value* <= *high*, both bounds widened by the time factor (for rates and counts)."""
    return low / TIME_FACTOR <= value <= high * TIME_FACTOR
