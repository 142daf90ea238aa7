"""``POST /publish``: an orchestrator injects messages into the stream (only with ``--enable-publish``).

Every message of a request is checked against the 1.1 schemas before any
of it is published, so a bad request gets a 422 and changes nothing. The
check runs a slice at a time with the event loop free in between
(:meth:`Publisher.checked_events`), so a batch of MAX_PUBLISH_BATCH never
holds the frame loop for more than a few milliseconds. A valid batch then
goes out in order, in chunks the clients' send queues can take, one chunk
per frame (:meth:`Publisher.publish_paced`). Requests are served one at a
time in arrival order, checking included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Sequence
from typing import Any

from ..connection.connection import Connection, State
from ..protocol import messages
from ..protocol.codes import CHANNEL_OF, FRAME_BOUND_TYPES
from ..protocol.messages import Event
from ..protocol.schemas import MessageValidationError, SchemaSet
from ..stream.frame_loop import FrameLoop

# Messages an orchestrator may inject. startup_complete and heartbeat
# belong to one connection each and are the server's own.
PUBLISHABLE_TYPES = frozenset(CHANNEL_OF) - {"startup_complete", "heartbeat"}
MAX_PUBLISH_BATCH = 5000
# Messages validated between two yields to the event loop: about 4 ms of work on a slow core.
CHECK_SLICE = 500
MAX_FRAME_NUMBER = 2**63 - 1  # the durable log's INTEGER column is signed 64-bit


class Publisher:
    """Checks publish requests and publishes them, one batch at a time, paced to the clients' queues."""

    def __init__(
        self,
        schemas: SchemaSet,
        frame_loop: FrameLoop,
        connections: Collection[Connection],
        *,
        send_queue_limit: int,
        send_timeout: float,
    ) -> None:
        self._schemas = schemas
        self._frame_loop = frame_loop
        self._connections = connections
        self._send_queue_limit = send_queue_limit
        self._send_timeout = send_timeout
        self._publishing = asyncio.Lock()  # one batch at a time, in order
        self._requests = asyncio.Lock()  # one request at a time, checked and published in arrival order

    def events_of(self, body: Any) -> list[Event] | tuple[int, dict[str, Any]]:
        """The request's messages as events, or the (status, answer) that refuses the whole request.

        All at once, without yielding: :meth:`publish_request` checks a
        large batch slice by slice instead (see :meth:`checked_events`).
        """
        items = _items(body)
        if isinstance(items, tuple):
            return items
        events: list[Event] = []
        return self._check(items, 0, len(items), events) or events

    async def checked_events(self, body: Any) -> list[Event] | tuple[int, dict[str, Any]]:
        """:meth:`events_of`, CHECK_SLICE messages at a time, letting the event loop run between slices.

        Validating MAX_PUBLISH_BATCH messages takes tens of milliseconds:
        in one go it would hold the frame loop for several frames. Between
        slices, a frame that falls due is built and sent.
        """
        items = _items(body)
        if isinstance(items, tuple):
            return items
        events: list[Event] = []
        for start in range(0, len(items), CHECK_SLICE):
            if start:
                await asyncio.sleep(0)
            refused = self._check(items, start, min(start + CHECK_SLICE, len(items)), events)
            if refused is not None:
                return refused
        return events

    def _check(self, items: list[Any], start: int, stop: int, events: list[Event]) -> tuple[int, dict[str, Any]] | None:
        """Check items[start:stop], appending their events to *events*; the refusal of the first bad one, or None."""
        for index in range(start, stop):
            item = items[index]
            if not isinstance(item, dict) or item.get("type") not in PUBLISHABLE_TYPES:
                return 422, {"error": "unknown or missing type", "index": index, "accepted": sorted(PUBLISHABLE_TYPES)}
            frame_number = item.get("frameNumber")
            if item["type"] in FRAME_BOUND_TYPES and frame_number is None:
                frame_number = self._frame_loop.frame_number
            if isinstance(frame_number, int) and frame_number > MAX_FRAME_NUMBER:
                # The schema says integer >= 0; the durable log stores it as a signed 64-bit INTEGER.
                return 422, {"error": f"frameNumber is larger than {MAX_FRAME_NUMBER}", "index": index}
            payload = item.get("payload")
            if not isinstance(payload, dict):  # the answer schema validation gives for it, without building an Event
                return 422, {
                    "error": "invalid message",
                    "index": index,
                    "reason": "payload must be object",
                    "path": "/payload",
                }
            event = Event(item["type"], payload, frame_number)
            try:
                self._schemas.validate_outbound("1.1", messages.envelope("1.1", event, messages.now_ms(), 1))
            except MessageValidationError as error:
                return 422, {"error": "invalid message", "index": index, "reason": error.reason, "path": error.path}
            events.append(event)
        return None

    async def publish_request(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Validate every message of a publish request first, then publish them all in order."""
        async with self._requests:  # asyncio.Lock is first come, first served
            events = await self.checked_events(body)
            if isinstance(events, tuple):
                return events
            seqs = await self.publish_paced(events)
        return 202, {"published": len(events), "seqs": seqs}

    async def publish_paced(self, events: Sequence[Event]) -> list[int | None]:
        """Publish *events* in order, in chunks the clients' send queues can take.

        A batch may be larger than a send queue (MAX_PUBLISH_BATCH against
        send_queue_limit). Published in one go, it would overflow every
        subscriber's queue, and close even a fast reader with 1013, before
        any writer ran. So the batch goes out a quarter of a queue at a time;
        between chunks we wait until every open connection has room for the
        next chunk, at most send_timeout per chunk. A client that does not
        drain within that bound gets the next chunk anyway, overflows and is
        closed as a slow consumer, exactly as without batching. Each chunk
        rides with the next frame (FrameLoop.publish_in_next_frame): it
        shares the frame's one socket write to each client.
        """
        chunk = max(self._send_queue_limit // 4, 1)
        seqs: list[int | None] = []
        async with self._publishing:
            for start in range(0, len(events), chunk):
                if start:
                    await self._wait_for_room(chunk)
                published = await self._frame_loop.publish_in_next_frame(events[start : start + chunk])
                seqs.extend(outbound.seq if outbound else None for outbound in published)
        return seqs

    async def _wait_for_room(self, free: int) -> None:
        waits = [c.outbox.wait_for_room(free) for c in self._connections if c.state is State.OPEN]
        if not waits:
            await asyncio.sleep(0)  # still let the writers and the frame loop run between chunks
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._send_timeout):
                await asyncio.gather(*waits)


def _items(body: Any) -> list[Any] | tuple[int, dict[str, Any]]:
    """The request's messages as a list (one object counts as a batch of one), or the 422 for its size."""
    items = body if isinstance(body, list) else [body]
    if not items or len(items) > MAX_PUBLISH_BATCH:
        return 422, {"error": f"send 1 to {MAX_PUBLISH_BATCH} messages"}
    return items
