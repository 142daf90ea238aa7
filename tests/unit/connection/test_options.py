"""The connect URL's numbers (connection/options.py): odd digits and huge values are invalid options, not crashes."""

from __future__ import annotations

import pytest

from wirthforge_ws.connection.options import MAX_SEQ, ConnectOptions, parse_rate, parse_seq
from wirthforge_ws.protocol.codes import ErrorCode
from wirthforge_ws.settings import Settings


@pytest.mark.parametrize("raw", ["²", "١٢", "-1", "1e3", " 7", "7 ", "+7", "", "9" * 19, "9" * 5000, str(2**64)])
def test_odd_last_seq_is_none(raw: str) -> None:
    assert parse_seq(raw) is None


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("123", 123), (str(MAX_SEQ), MAX_SEQ)])
def test_last_seq(raw: str, expected: int) -> None:
    assert parse_seq(raw) == expected


@pytest.mark.parametrize("raw", ["1_0", " 30", "٣", "nan", "inf", "1e1", "", "0", "61", "9" * 5000, True, None])
def test_odd_rates_are_none(raw: object) -> None:
    assert parse_rate(raw, 60.0) is None


@pytest.mark.parametrize(("raw", "expected"), [("30", 30.0), ("2.5", 2.5), ("60", 60.0), (15, 15.0), (7.5, 7.5)])
def test_rates(raw: object, expected: float) -> None:
    assert parse_rate(raw, 60.0) == expected


@pytest.mark.parametrize("last_seq", ["9" * 5000, str(MAX_SEQ + 1), "²"])
def test_a_huge_or_odd_last_seq_opens_fresh_with_invalid_resume(last_seq: str) -> None:
    options = ConnectOptions.parse({"epoch": "e", "lastSeq": last_seq}, Settings(), "1.1")
    assert options.resume is None
    assert options.resume_invalid
    assert [e.payload["code"] for e in options.errors] == [ErrorCode.INVALID_RESUME.value]  # type: ignore[index]


def test_a_rate_float_alone_would_take_is_invalid_energy_rate() -> None:
    options = ConnectOptions.parse({"energyRate": "1_0"}, Settings(), "1.1")
    assert options.energy_rate == Settings().frame_rate
    assert [e.payload["code"] for e in options.errors] == [ErrorCode.INVALID_ENERGY_RATE.value]  # type: ignore[index]
