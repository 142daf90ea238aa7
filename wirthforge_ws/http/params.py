"""Numeric parameters of the HTTP routes, parsed strictly: a bad one is a clear 404 or 422, never a 500.

Python's own parsers accept more than a URL or a JSON body should carry:
``str.isdigit()`` is true for ``'²'``, which ``int()`` refuses;
``float()`` takes ``'1_000'``, ``' 12 '``, ``'٣'``, ``'nan'`` and
``'inf'``; and an id that ``int()`` does take may still not fit SQLite's
signed 64-bit INTEGER (binding ``2**63`` raises ``OverflowError``). Every
route that reads a number from its path, query or body goes through this
module, so each of those inputs is refused before it reaches the database.

- :func:`recording_id`: a recording id, ASCII digits (or a JSON integer)
  from 0 to :data:`MAX_ID`.
- :func:`epoch_ms`: a time bound in epoch milliseconds, a finite number
  within :data:`MAX_EPOCH_MS`, written in plain ASCII decimal in a URL.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_ID = 2**63 - 1  # SQLite INTEGER is a signed 64-bit integer
ID_RULE = f"a session id is a decimal integer from 0 to {MAX_ID}"
# Epoch milliseconds up to about the year 33658: any real timestamp, and far from float's limits.
MAX_EPOCH_MS = 1e15
EPOCH_RULE = "from and to are epoch milliseconds: finite numbers, from <= to"

_ID_TEXT = re.compile(r"[0-9]{1,19}")  # 19 digits hold 2**63-1; the value is checked too
# Optional sign, digits, optional fraction and exponent; ASCII only, bounded in length.
_NUMBER_TEXT = re.compile(r"[-+]?[0-9]{1,20}(?:\.[0-9]{1,20})?(?:[eE][-+]?[0-9]{1,3})?")


def recording_id(value: Any) -> int | None:
    """The recording id *value* names (a path segment or a JSON value), or None if it names none.

    A string must be ASCII digits; a JSON integer (not a boolean) is taken
    as it is. Either must lie in 0..MAX_ID.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _ID_TEXT.fullmatch(value):
        number = int(value)
    else:
        return None
    return number if 0 <= number <= MAX_ID else None


def epoch_ms(value: Any) -> float | None:
    """A finite time bound in epoch ms from a query string or a JSON number, or None if *value* is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not _NUMBER_TEXT.fullmatch(value):
            return None
        number = float(value)
    elif isinstance(value, (int, float)):
        number = float(value)  # a JSON integer beyond 64 bits becomes a float here, never an SQLite overflow
    else:
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_EPOCH_MS else None
