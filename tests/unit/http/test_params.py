"""Numeric route parameters (http/params.py): what int() and float() would take, or crash on, is refused."""

from __future__ import annotations

from typing import Any

import pytest

from wirthforge_ws.http.params import MAX_EPOCH_MS, MAX_ID, epoch_ms, recording_id


@pytest.mark.parametrize(
    "value",
    ["²", "١٢", "9" * 5000, str(2**64), str(MAX_ID + 1), "-1", " 1", "1 ", "+1", "1.0", "", "range", True, False]
    + [None, 1.0, -1, 2**64, MAX_ID + 1, [1], {"id": 1}],
)
def test_what_names_no_recording(value: Any) -> None:
    assert recording_id(value) is None


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("42", 42), (str(MAX_ID), MAX_ID), (7, 7), (MAX_ID, MAX_ID)])
def test_ids_sqlite_can_bind(value: Any, expected: int) -> None:
    assert recording_id(value) == expected


@pytest.mark.parametrize(
    "value",
    ["nan", "inf", "-inf", "1_000", "٣", " 12", "12 ", "1e400", "0x10", "", "1" * 100, "9e99"]
    + [float("nan"), float("inf"), 2**64, -(2**64), MAX_EPOCH_MS * 2, True, None, "²"],
)
def test_what_is_no_time_bound(value: Any) -> None:
    assert epoch_ms(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1700000000000", 1.7e12), ("12.5", 12.5), ("-5", -5.0), ("1e3", 1000.0), (1700000000000, 1.7e12), (2.5, 2.5)],
)
def test_time_bounds(value: Any, expected: float) -> None:
    assert epoch_ms(value) == expected
