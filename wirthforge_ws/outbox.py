"""A per-connection send queue: bounded for reliable messages, latest-wins for frames.

Flow control in one paragraph: the hub never waits for a client. It drops
each message into every connection's outbox and moves on; each connection's
writer task drains its own outbox at the pace its socket allows. Energy
frames are *latest-wins*: a new frame of a type replaces the unsent one of
that type, so a slow client always gets the newest state and never a
backlog. Reliable messages are never replaced or dropped; if more than
``limit`` of them wait, :meth:`Outbox.put_reliable` says no and the caller
closes the connection (1013) so the client reconnects and resumes. Memory
per connection is therefore bounded by ``limit`` reliable messages plus one
frame per energy type.

Invariant: entries leave in the order they entered, so ``seq`` stays
strictly increasing on the wire. A replaced frame is removed and its
successor appended at the tail, which keeps that order.
"""

from __future__ import annotations

import asyncio
from collections import deque


class _Entry:
    """One queued message. Compared by identity, so equal texts never collide."""

    __slots__ = ("text", "latest_key")

    def __init__(self, text: str, latest_key: str | None) -> None:
        self.text = text
        self.latest_key = latest_key


class Outbox:
    """Bounded FIFO of serialised messages for one connection's writer task."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._entries: deque[_Entry] = deque()
        self._pending_latest: dict[str, _Entry] = {}
        self._reliable_count = 0
        self._not_empty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def reliable_count(self) -> int:
        return self._reliable_count

    def put_reliable(self, text: str) -> bool:
        """Queue a message that must not be lost. False when the bound is reached."""
        if self._reliable_count >= self.limit:
            return False
        self._entries.append(_Entry(text, None))
        self._reliable_count += 1
        self._not_empty.set()
        return True

    def put_latest(self, key: str, text: str) -> bool:
        """Queue a frame of kind *key*, replacing an unsent one. True if one was replaced."""
        stale = self._pending_latest.get(key)
        if stale is not None:
            # O(queue length); the queue is short unless the client is slow,
            # and then it is bounded by `limit`.
            self._entries.remove(stale)
        entry = _Entry(text, key)
        self._pending_latest[key] = entry
        self._entries.append(entry)
        self._not_empty.set()
        return stale is not None

    def get_nowait(self) -> str | None:
        """The oldest queued message, or None."""
        if not self._entries:
            self._not_empty.clear()
            return None
        entry = self._entries.popleft()
        if entry.latest_key is None:
            self._reliable_count -= 1
        else:
            del self._pending_latest[entry.latest_key]
        return entry.text

    async def get(self) -> str:
        """Wait for and return the oldest queued message."""
        while True:
            text = self.get_nowait()
            if text is not None:
                return text
            await self._not_empty.wait()
