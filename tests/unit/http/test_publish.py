"""POST /publish's checks: a request with one bad message is refused whole, before anything is published."""

from __future__ import annotations

import asyncio
from typing import Any

from wirthforge_ws.http.publish import CHECK_SLICE, MAX_PUBLISH_BATCH, PUBLISHABLE_TYPES, Publisher
from wirthforge_ws.protocol.messages import Event
from wirthforge_ws.protocol.schemas import SchemaSet


class _Loop:
    frame_number = 7


def _publisher() -> Publisher:
    return Publisher(SchemaSet(), _Loop(), set(), send_queue_limit=8, send_timeout=1.0)  # type: ignore[arg-type]


def _reward(**payload: Any) -> dict[str, Any]:
    return {"type": "reward_event", "payload": {"rewardType": "milestone", "title": "#1", "points": 1, **payload}}


def test_connection_own_types_are_not_publishable() -> None:
    assert "heartbeat" not in PUBLISHABLE_TYPES
    assert "startup_complete" not in PUBLISHABLE_TYPES
    assert "reward_event" in PUBLISHABLE_TYPES


def test_an_empty_or_oversized_batch_is_422() -> None:
    publisher = _publisher()
    assert publisher.events_of([])[0] == 422  # type: ignore[index]
    assert publisher.events_of([{"type": "x"}] * (MAX_PUBLISH_BATCH + 1))[0] == 422  # type: ignore[index]


def test_an_unknown_type_names_its_index() -> None:
    status, answer = _publisher().events_of([{"type": "heartbeat", "payload": {}}])  # type: ignore[misc]
    assert status == 422
    assert answer["index"] == 0
    assert answer["error"] == "unknown or missing type"


def test_one_invalid_message_refuses_the_whole_batch_and_says_where() -> None:
    status, answer = _publisher().events_of([_reward(), _reward(points="many")])  # type: ignore[misc]
    assert status == 422
    assert answer["error"] == "invalid message"
    assert answer["index"] == 1
    assert answer["path"].startswith("/payload")


def test_a_valid_batch_becomes_events_in_order() -> None:
    events = _publisher().events_of([_reward(title="a"), _reward(title="b")])
    assert isinstance(events, list)
    assert [e.payload["title"] for e in events] == ["a", "b"]  # type: ignore[index]
    assert all(isinstance(e, Event) for e in events)


def test_a_frame_number_the_durable_log_cannot_store_is_422() -> None:
    item = {"type": "energy_update", "frameNumber": 2**63, "payload": {}}
    status, answer = _publisher().events_of([item])  # type: ignore[misc]
    assert status == 422
    assert "frameNumber" in answer["error"]
    assert answer["index"] == 0


async def test_a_full_batch_is_checked_slice_by_slice_with_the_loop_free_between() -> None:
    batch = [_reward(title=str(i)) for i in range(MAX_PUBLISH_BATCH)]
    ran = 0
    stop = asyncio.Event()

    async def other_work() -> None:  # stands for the frame loop: it must get turns during the check
        nonlocal ran
        while not stop.is_set():
            ran += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    ran = 0
    events = await _publisher().checked_events(batch)
    stop.set()
    await other
    assert isinstance(events, list) and len(events) == MAX_PUBLISH_BATCH
    assert [e.payload["title"] for e in events[:3]] == ["0", "1", "2"]  # type: ignore[index]
    assert ran >= MAX_PUBLISH_BATCH // CHECK_SLICE - 1, f"the check yielded only {ran} times"


async def test_the_sliced_check_refuses_like_the_whole_one() -> None:
    batch = [_reward()] * (CHECK_SLICE + 3) + [_reward(points="many")]
    assert await _publisher().checked_events(batch) == _publisher().events_of(batch)
