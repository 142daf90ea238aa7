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

A resume replay can be far longer than ``limit``. It enters as one *feed*
entry (:meth:`Outbox.put_feed`): an iterator that is pulled one message at
a time when the writer reaches it, so the replay is paced by what the
client reads and never occupies more than one slot. Messages queued behind
the feed wait for it to finish, which keeps seq order.

:meth:`Outbox.wait_for_room` lets a producer of a large batch (POST
/publish) wait until the writer has drained enough to take the next chunk.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator


class _Entry:
    """One queued message. Compared by identity, so equal texts never collide."""

    __slots__ = ("text", "latest_key", "feed")

    def __init__(self, text: str, latest_key: str | None, feed: Iterator[str] | None = None) -> None:
        self.text = text
        self.latest_key = latest_key
        self.feed = feed  # a lazy replay: pulled one message at a time


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
        self._reliable_left = asyncio.Event()  # set whenever a reliable message leaves
        self._closed = False

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

    def put_feed(self, feed: Iterator[str]) -> None:
        """Queue a lazy sequence of reliable messages (a resume replay) as one entry."""
        self._entries.append(_Entry("", None, feed))
        self._not_empty.set()

    @property
    def feeding(self) -> bool:
        """True while a queued feed (replay) has not been exhausted."""
        return any(entry.feed is not None for entry in self._entries)

    def close(self) -> None:
        """The connection is closing: wake anyone waiting for room, for good."""
        self._closed = True
        self._reliable_left.set()

    async def wait_for_room(self, free: int) -> None:
        """Wait until at least *free* more reliable messages fit (or the outbox is closed)."""
        threshold = self.limit - free
        while self._reliable_count > threshold and not self._closed:
            self._reliable_left.clear()
            await self._reliable_left.wait()

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
        entries = self._entries
        while entries:
            entry = entries[0]
            if entry.feed is not None:
                text = next(entry.feed, None)
                if text is not None:
                    return text
                entries.popleft()  # the feed is exhausted: on to what queued behind it
                continue
            entries.popleft()
            if entry.latest_key is None:
                self._reliable_count -= 1
                self._reliable_left.set()
            else:
                del self._pending_latest[entry.latest_key]
            return entry.text
        self._not_empty.clear()
        return None

    async def get(self) -> str:
        """Wait for and return the oldest queued message."""
        while True:
            text = self.get_nowait()
            if text is not None:
                return text
            await self._not_empty.wait()
