"""Admission (uvicorn_protocols.py): at most per_slot new connections start per period, the rest wait in order."""

from __future__ import annotations

import asyncio

import pytest

from wirthforge_ws.connection.uvicorn_protocols import Admission


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Waiting:
    """A connection that records when it was admitted."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.admission_queued_at: float | None = None

    def admitted(self) -> None:
        self.log.append(self.name)


def _run_next_slot(admission: Admission, clock: _Clock) -> None:
    """Fire the admission timer by hand (the test does not wait for the loop's clock)."""
    timer = admission._timer
    assert timer is not None, "nobody waits, so no timer should run"
    timer.cancel()
    clock.now += admission.period
    admission._next_slot()


async def test_per_slot_start_at_once_then_the_rest_wait_in_arrival_order() -> None:
    clock, log = _Clock(), []
    admission = Admission(2, 1 / 60, clock)
    connections = [_Waiting(str(i), log) for i in range(7)]
    started = [admission.request(c) for c in connections]
    assert started == [True, True, False, False, False, False, False]
    assert admission.waiting == 5
    _run_next_slot(admission, clock)
    assert log == ["2", "3"]
    _run_next_slot(admission, clock)
    _run_next_slot(admission, clock)
    assert log == ["2", "3", "4", "5", "6"]
    assert admission.waiting == 0 and admission._timer is None
    assert admission.queued == 5
    assert admission.longest_wait == pytest.approx(3 / 60)


async def test_a_newcomer_waits_behind_those_already_waiting_even_when_a_slot_has_room() -> None:
    clock, log = _Clock(), []
    admission = Admission(1, 1 / 60, clock)
    first, second, third = (_Waiting(n, log) for n in "abc")
    assert admission.request(first)
    assert not admission.request(second)
    clock.now += 1.0  # a fresh slot, but someone waits: no overtaking
    assert not admission.request(third)
    _run_next_slot(admission, clock)
    _run_next_slot(admission, clock)
    assert log == ["b", "c"]


async def test_a_connection_that_went_away_is_skipped_and_frees_its_place() -> None:
    clock, log = _Clock(), []
    admission = Admission(1, 1 / 60, clock)
    connections = [_Waiting(n, log) for n in "abcd"]
    for connection in connections:
        admission.request(connection)
    admission.withdraw(connections[1])
    admission.withdraw(connections[1])  # twice: counted once
    assert admission.waiting == 2
    _run_next_slot(admission, clock)
    assert log == ["c"]
    _run_next_slot(admission, clock)
    assert log == ["c", "d"] and admission.waiting == 0 and admission._timer is None


async def test_the_timer_admits_without_help() -> None:
    log: list[str] = []
    admission = Admission(1, 0.001)
    connections = [_Waiting(str(i), log) for i in range(4)]
    for connection in connections:
        admission.request(connection)
    async with asyncio.timeout(5):
        while len(log) < 3:
            await asyncio.sleep(0.002)
    assert log == ["1", "2", "3"]


async def test_close_forgets_the_waiting_and_stops_the_timer() -> None:
    clock, log = _Clock(), []
    admission = Admission(1, 1 / 60, clock)
    for name in "abc":
        admission.request(_Waiting(name, log))
    admission.close()
    assert admission.waiting == 0 and admission._timer is None
    await asyncio.sleep(0.05)
    assert log == []


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError):
        Admission(0, 1 / 60)
    with pytest.raises(ValueError):
        Admission(1, 0)
