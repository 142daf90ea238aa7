"""FullCollections: no automatic full collection, one at a frame boundary when it is due, young ones untouched."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.stream.test_clock import FakeTime
from tests.unit.stream.test_frame_loop import Recorder
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.settings import Settings
from wirthforge_ws.sources.simulated import SimulatedModel
from wirthforge_ws.stream import collector
from wirthforge_ws.stream.clock import FrameClock
from wirthforge_ws.stream.collector import FullCollections
from wirthforge_ws.stream.frame_loop import FrameLoop
from wirthforge_ws.stream.hub import Hub

BASE = 100_000  # heap blocks at start in the fake heap


class Node:
    """A tracked object that can sit in a reference cycle and be watched with a weakref."""

    def __init__(self) -> None:
        self.other: Any = None


class Fake:
    """Clock and heap of a collector under test."""

    def __init__(self) -> None:
        self.now = 0.0
        self.blocks = BASE
        self.idle = False
        self.open = 0


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    """The process's thresholds, put back whatever a test did."""
    saved = gc.get_threshold()
    yield saved
    gc.set_threshold(*saved)


@pytest.fixture
def fake(thresholds: tuple[int, int, int]) -> Iterator[tuple[FullCollections, Fake]]:
    state = Fake()
    full = FullCollections(
        30.0,
        idle=lambda: state.idle,
        open_connections=lambda: state.open,
        clock=lambda: state.now,
        heap=lambda: state.blocks,
    )
    full.start()
    yield full, state
    full.stop()


def test_start_takes_only_the_full_collection_and_stop_gives_it_back(thresholds: tuple[int, int, int]) -> None:
    full = FullCollections(30.0)
    full.start()
    young0, young1, oldest = gc.get_threshold()
    assert (young0, young1) == thresholds[:2]
    assert oldest == collector.OUT_OF_REACH
    assert full.health()["fullCollections"] == "scheduled"
    full.stop()
    assert gc.get_threshold() == thresholds
    assert full.health()["fullCollections"] == "automatic"


def test_stop_leaves_thresholds_someone_else_set(thresholds: tuple[int, int, int]) -> None:
    full = FullCollections(30.0)
    full.start()
    gc.set_threshold(500, 5, 5)
    full.stop()
    assert gc.get_threshold() == (500, 5, 5)


def test_an_interval_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="automatic"):
        FullCollections(0.0)
    with pytest.raises(ValueError, match="gc_interval"):
        Settings(gc_interval=-1)


def test_growth_waits_for_the_interval(fake: tuple[FullCollections, Fake]) -> None:
    full, state = fake
    state.blocks = int(BASE * 1.9)  # grown, but not fivefold, nor idle
    state.now = 29.0
    assert full.due() is None
    state.now = 30.0
    assert full.due() == "growth"


def test_too_little_growth_is_never_due_while_clients_are_connected(fake: tuple[FullCollections, Fake]) -> None:
    full, state = fake
    state.blocks = int(BASE * 1.2)
    state.now = 1_000.0
    assert full.due() is None


def test_a_fivefold_heap_is_due_at_once(fake: tuple[FullCollections, Fake]) -> None:
    full, state = fake
    state.now = 0.5
    state.blocks = int(BASE * 4.9)
    assert full.due() is None
    state.blocks = BASE * 5
    assert full.due() == "bound"


def test_connection_churn_is_due_at_once_when_the_closed_outnumber_the_open(
    fake: tuple[FullCollections, Fake],
) -> None:
    full, state = fake
    state.now = 0.5
    for _ in range(collector.CHURN - 1):
        full.connection_closed()
    assert full.due() is None
    full.connection_closed()
    state.open = collector.CHURN // 2 + 1  # more than half as many open: their garbage is not yet worth it
    assert full.due() is None
    state.open = collector.CHURN // 2
    assert full.due() == "churn"
    full.after_frame()
    assert full.closed_since_last == 0
    assert full.due() is None


def test_idle_collects_small_growth_at_most_once_per_gap(fake: tuple[FullCollections, Fake]) -> None:
    full, state = fake
    state.idle = True
    state.blocks = int(BASE * 1.05)
    state.now = 0.5
    assert full.due() is None  # too soon after the last one
    state.now = 1.0
    assert full.due() == "idle"
    full.after_frame()
    assert full.collections["idle"] == 1
    state.blocks = int(BASE * 1.05 * 1.01)  # under IDLE_GROWTH of the new base
    state.now = 5.0
    assert full.due() is None


def test_a_collection_resets_the_base_and_reports_it(fake: tuple[FullCollections, Fake]) -> None:
    full, state = fake
    state.blocks, state.now = BASE * 5, 2.0
    full.after_frame()
    health = full.health()
    assert health["collections"] == {"idle": 0, "growth": 0, "churn": 0, "bound": 1}
    assert health["heapBlocksAfterLast"] == BASE * 5
    assert health["secondsSinceLast"] == 0.0
    assert isinstance(health["trackedAfterLast"], int) and health["trackedAfterLast"] > 0
    assert health["longestPauseMs"] >= health["lastPauseMs"] >= 0
    state.blocks = BASE * 9  # not fivefold the new base, and the interval has not passed
    assert full.due() is None


def promoted_cycle() -> weakref.ref[Node]:
    """A reference cycle moved to the oldest generation while alive, then dropped: garbage only a full GC finds."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    gc.collect(1)  # survivors of a generation 1 collection go to generation 2
    watch = weakref.ref(first)
    del first, second
    return watch


def test_cyclic_garbage_in_the_oldest_generation_waits_for_a_due_collection(
    fake: tuple[FullCollections, Fake],
) -> None:
    full, state = fake
    watch = promoted_cycle()
    for _ in range(3):
        gc.collect(1)  # what the automatic young collections do: they never reach generation 2
    assert watch() is not None
    full.after_frame()  # not due: nothing happens
    assert watch() is not None
    state.blocks = BASE * 5
    full.after_frame()
    assert watch() is None
    assert full.collected >= 2


def test_young_cyclic_garbage_is_still_collected_automatically(fake: tuple[FullCollections, Fake]) -> None:
    first, second = Node(), Node()
    first.other, second.other = second, first
    watch = weakref.ref(first)
    del first, second
    young0 = gc.get_threshold()[0]
    keep = [[] for _ in range(young0 * 3)]  # allocations that trigger young collections
    assert watch() is None
    del keep


async def test_the_frame_loop_asks_after_every_tick() -> None:
    settings = Settings(seed=1)
    hub = Hub(SchemaSet(), history_messages=100, history_seconds=60)
    hub.attach(Recorder(hub))  # a client: the clock does not idle
    clock = FakeTime()
    source = SimulatedModel(settings.model_id, council=False, seed=1)
    asked: list[int] = []
    loop = FrameLoop(
        settings,
        hub,
        source,
        FrameClock(60.0, time_function=clock, sleep_until=clock.sleep_until),
        after_frame=lambda: asked.append(source_steps[0]),
    )
    source_steps = [0]
    step = source.step

    def stepping(frame_number: int, now: float) -> Any:
        source_steps[0] += 1
        if source_steps[0] > 5:
            raise asyncio.CancelledError
        return step(frame_number, now)

    source.step = stepping  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await loop.run()
    assert asked == [1, 2, 3, 4, 5]  # once per tick, after that tick's frame
