"""``POST /publish``: an orchestrator injects messages into the stream (only with ``--enable-publish``).

Every message of a request is checked against the 1.1 schemas before any
of it is published, so a bad request gets a 422 and changes nothing. A
valid batch then goes out in order, in chunks the clients' send queues can
take (:meth:`Publisher.publish_paced`).
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

    def events_of(self, body: Any) -> list[Event] | tuple[int, dict[str, Any]]:
        """The request's messages as events, or the (status, answer) that refuses the whole request."""
        items = body if isinstance(body, list) else [body]
        if not items or len(items) > MAX_PUBLISH_BATCH:
            return 422, {"error": f"send 1 to {MAX_PUBLISH_BATCH} messages"}
        events: list[Event] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or item.get("type") not in PUBLISHABLE_TYPES:
                return 422, {"error": "unknown or missing type", "index": index, "accepted": sorted(PUBLISHABLE_TYPES)}
            frame_number = item.get("frameNumber")
            if item["type"] in FRAME_BOUND_TYPES and frame_number is None:
                frame_number = self._frame_loop.frame_number
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
        return events

    async def publish_request(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Validate every message of a publish request first, then publish them all in order."""
        events = self.events_of(body)
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
