"""Outbox (``wirthforge_ws/connection/outbox.py``) in process: order, latest-wins, the reliable bound.

No sockets, no sleeps: the writer side is driven with ``get_nowait`` and
``get``, the way a connection's writer task drains it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.timing import scaled
from wirthforge_ws.connection.outbox import Outbox


def drain(outbox: Outbox) -> list[str]:
    out = []
    while (text := outbox.get_nowait()) is not None:
        out.append(text)
    return out


async def test_messages_leave_in_the_order_they_entered() -> None:
    outbox = Outbox(limit=10)
    outbox.put_reliable("r1")
    outbox.put_latest("energy_update", "f1")
    outbox.put_reliable("r2")
    outbox.put_latest("energy_field", "g1")
    assert len(outbox) == 4
    assert drain(outbox) == ["r1", "f1", "r2", "g1"]
    assert len(outbox) == 0 and outbox.reliable_count == 0


async def test_a_new_frame_replaces_the_unsent_one_of_its_type_at_the_tail() -> None:
    outbox = Outbox(limit=10)
    assert outbox.put_latest("energy_update", "f1") is False
    outbox.put_reliable("r1")
    assert outbox.put_latest("energy_update", "f2") is True  # f1 replaced
    outbox.put_reliable("r2")
    assert outbox.put_latest("energy_update", "f3") is True  # f2 replaced
    # The newest frame sits where the newest frame entered: seq order is kept.
    assert drain(outbox) == ["r1", "r2", "f3"]


async def test_latest_wins_is_per_type() -> None:
    outbox = Outbox(limit=10)
    outbox.put_latest("energy_update", "u1")
    outbox.put_latest("energy_field", "g1")
    outbox.put_latest("energy_update", "u2")
    assert drain(outbox) == ["g1", "u2"]


async def test_a_sent_frame_is_not_replaced_again() -> None:
    outbox = Outbox(limit=10)
    outbox.put_latest("energy_update", "u1")
    assert outbox.get_nowait() == "u1"
    assert outbox.put_latest("energy_update", "u2") is False  # nothing unsent to replace
    assert drain(outbox) == ["u2"]


async def test_reliable_messages_are_bounded_and_never_dropped() -> None:
    outbox = Outbox(limit=3)
    assert all(outbox.put_reliable(f"r{i}") for i in range(3))
    assert outbox.put_reliable("r3") is False  # the caller closes the connection (1013)
    for i in range(5):
        outbox.put_latest("energy_update", f"f{i}")  # frames do not count against the bound
    assert outbox.reliable_count == 3
    assert drain(outbox) == ["r0", "r1", "r2", "f4"]
    assert outbox.put_reliable("r4") is True  # room again once drained


async def test_identical_texts_are_distinct_entries() -> None:
    outbox = Outbox(limit=10)
    outbox.put_reliable("same")
    outbox.put_latest("energy_update", "same")
    outbox.put_latest("energy_update", "same")  # replaces the frame, not the reliable message
    assert drain(outbox) == ["same", "same"]
    assert outbox.reliable_count == 0


async def test_get_waits_for_the_next_message() -> None:
    outbox = Outbox(limit=10)
    getter = asyncio.ensure_future(outbox.get())
    await asyncio.sleep(0)  # let it block on the empty queue
    assert not getter.done()
    outbox.put_latest("energy_update", "f1")
    outbox.put_latest("energy_update", "f2")  # replaced before the writer ran
    assert await asyncio.wait_for(getter, timeout=scaled(1)) == "f2"
    # Emptied again, the next get waits again (the wake-up was cleared).
    getter = asyncio.ensure_future(outbox.get())
    await asyncio.sleep(0)
    assert not getter.done()
    outbox.put_reliable("r1")
    assert await asyncio.wait_for(getter, timeout=scaled(1)) == "r1"


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Outbox(limit=0)
