"""Checks and conversions for numbers in JSON messages and URLs."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["is_int", "is_number", "plain_number"]


def is_int(value: object) -> TypeGuard[int]:
    """An integer, and not a bool: JSON ``true`` parses to ``True``, which Python counts as an int."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """An integer or a float, and not a bool (see :func:`is_int`)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plain_number(value: float) -> int | float:
    """15.0 -> 15, 7.5 -> 7.5: the form a person would write in a URL or a request."""
    return int(value) if float(value).is_integer() else float(value)
