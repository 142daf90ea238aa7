"""Flow control against the real server: a client that stops reading, and one that reads slowly.

A stalled client must not change another client's frame rate or latency, and
must be closed as a slow consumer (1013) before it costs unbounded memory. A
slow reader must get the newest frames (latest-wins), not a growing backlog
(PROTOCOL.md §3 and §7).

The server runs with a short send timeout and a small send queue
(WF_SEND_TIMEOUT=1, WF_SEND_QUEUE_LIMIT=64) and a small resume history, so
that memory growth would show what a stalled connection holds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.server_process import ServerProcess
from tests.timing import scaled

QUEUE_LIMIT = 64
BATCH = 50  # reward_events per POST /publish
MAX_BATCHES = 400  # 20,000 messages, about 40 MB of JSON: far more than the queue may hold
STALL_ALONE_SECONDS = 2.0  # the stalled client sits there with frames only, before any publishing
# Measured: a bounded server grows by well under 1 MB here; one that kept every message for the
# stalled client (queue limit 1,000,000) grows by about 25 MB.
MAX_RSS_GROWTH_MB = 12.0


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {
        "WF_ENABLE_PUBLISH": "1",
        "WF_SEND_TIMEOUT": "1",
        "WF_SEND_QUEUE_LIMIT": str(QUEUE_LIMIT),
        "WF_HISTORY_MESSAGES": "100",
    }
    with ServerProcess(env=env) as process:
        yield process


def rss_mb(server: ServerProcess) -> float:
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def reward_batch(first: int) -> list[dict[str, Any]]:
    """Reliable messages of about 2 KB of JSON each (non-ASCII text, the largest the schema allows)."""
    return [
        {
            "type": "reward_event",
            "payload": {
                "rewardType": "feedback",
                "title": f"#{first + i} " + "流" * 90,
                "points": first + i,
                "description": "能" * 500,
            },
        }
        for i in range(BATCH)
    ]


def connection_ids(server: ServerProcess) -> set[str]:
    return {client["id"] for client in server.health()["connections"]["clients"]}


def slow_consumer_closes(server: ServerProcess) -> int:
    closed = server.health()["messages"]["connectionsClosed"]
    return sum(count for reason, count in closed.items() if reason.startswith("slow consumer"))


def publish(server: ServerProcess, closes_before: int, *, stop_when_closed: bool) -> tuple[int, float | None]:
    """Publish up to MAX_BATCHES batches: (messages published, when a slow-consumer close was first seen)."""
    published, closed_at = 0, None
    for batch in range(MAX_BATCHES):
        result = server.publish(reward_batch(published))
        assert result["published"] == BATCH
        published += BATCH
        if closed_at is None and batch % 5 == 4 and slow_consumer_closes(server) > closes_before:
            closed_at = time.monotonic()
            if stop_when_closed:
                break
    return published, closed_at


async def test_stalled_client_does_not_disturb_others_and_is_closed(
    server: ServerProcess, frame_watcher: type, stalled_client: Callable[[ServerProcess], socket.socket]
) -> None:
    """Several seconds with a client that never reads: the others do not notice, memory stays bounded.

    First the stalled client only misses frames; then 20,000 reliable messages
    (about 40 MB of JSON) are published while it is connected. Unless the server
    closes it at its queue bound, it would hold all of them.
    """
    found: dict[str, Any] = {}
    # The watcher takes energy and system only: it measures frames, not how fast it can swallow rewards.
    async with frame_watcher(server.ws_url, channels="energy,system", server=server) as watcher:
        found["rss_before"] = rss_mb(server)
        closes_before = await asyncio.to_thread(slow_consumer_closes, server)
        ids_before = await asyncio.to_thread(connection_ids, server)
        await asyncio.to_thread(stalled_client, server)
        start = await asyncio.to_thread(watcher.mark)
        stalled_ids = await asyncio.to_thread(connection_ids, server) - ids_before
        assert len(stalled_ids) == 1
        await asyncio.sleep(STALL_ALONE_SECONDS)
        publish_started = time.monotonic()
        found["published"], closed_at = await asyncio.to_thread(publish, server, closes_before, stop_when_closed=False)
        found["close_seconds"] = None if closed_at is None else closed_at - publish_started
        # Memory after all of it, the stalled socket still open on our side.
        found["rss_after"] = rss_mb(server)
        await asyncio.sleep(0.3)
        watcher.assert_steady(start, time.monotonic(), max_median_latency_ms=scaled(5.0))
    assert found["close_seconds"] is not None, (
        f"no slow-consumer close after {found['published']} reliable messages; "
        f"closed: {server.health()['messages']['connectionsClosed']}"
    )
    assert found["close_seconds"] < scaled(5.0)
    growth = found["rss_after"] - found["rss_before"]
    assert growth < MAX_RSS_GROWTH_MB, f"server RSS grew by {growth:.1f} MB"


def test_stalled_client_disappears_after_close(
    server: ServerProcess, stalled_client: Callable[[ServerProcess], socket.socket]
) -> None:
    """Once closed as a slow consumer, the stalled connection is gone (aborted), not just marked."""
    closes_before = slow_consumer_closes(server)
    ids_before = connection_ids(server)
    stalled_client(server)
    (stalled_id,) = connection_ids(server) - ids_before
    published, closed_at = publish(server, closes_before, stop_when_closed=True)
    assert closed_at is not None, f"no slow-consumer close after {published} messages"
    deadline = closed_at + scaled(3.0)  # close timeout (1 s) plus a heartbeat, with margin
    while stalled_id in connection_ids(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stalled_id not in connection_ids(server), "the stalled connection is still listed in /health"


SLOW_READ_SECONDS = 6.0
SLOW_READ_PAUSE = 0.05


async def test_slow_reader_gets_the_newest_frames(server: ServerProcess) -> None:
    """A client that reads one message every 50 ms gets the newest frames: jumps, and an age that stops growing."""
    coalesced_before = server.health()["messages"]["coalesced"].get("latest_wins", 0)
    reads: list[tuple[float, int, float]] = []  # (seconds since start, frameNumber, latency ms)

    # The client side is made as favourable as possible: a small receive buffer and a one-message queue.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    # Energy and system only: a reader slower than the reliable channels' own
    # rate is (rightly) closed with 1013 once its queue bound is reached,
    # and while reliable messages keep arriving they go ahead of the frame.
    async with connect(
        server.ws_url + "?channels=energy,system",
        sock=sock,
        compression=None,
        proxy=None,
        max_queue=1,
        subprotocols=["wirthforge.1.1"],
        ping_interval=None,
        close_timeout=scaled(0.5),
    ) as ws:
        start = time.monotonic()
        while time.monotonic() - start < SLOW_READ_SECONDS:
            message = json.loads(await asyncio.wait_for(ws.recv(), scaled(2)))
            if message["type"] == "energy_update":
                latency = time.time() * 1000 - message["timestamp"]
                reads.append((time.monotonic() - start, message["frameNumber"], latency))
            await asyncio.sleep(SLOW_READ_PAUSE)
    coalesced = server.health()["messages"]["coalesced"].get("latest_wins", 0) - coalesced_before
    late = [read for read in reads if read[0] >= SLOW_READ_SECONDS - 1.0]  # the last second, once steady
    assert late, "no energy_update read in the last second"
    numbers = [number for _, number, _ in reads]
    jumps = [b - a for a, b in zip(numbers, numbers[1:]) if b - a > 1]
    worst = max(latency for _, _, latency in late)
    summary = f"{len(reads)} frames read, {len(jumps)} jumps, latest_wins +{coalesced}, worst latency {worst:.0f} ms"
    assert jumps, f"no frameNumber jumps: the reader gets every frame, an ever older backlog ({summary})"
    assert coalesced > 0, summary
    # What remains is the reader's own socket buffer plus the few KiB the
    # server keeps below its outbox (wirthforge_ws/connection/direct.py): a
    # backlog of a couple of seconds at this read rate. Beyond it the server
    # coalesces, so the age of what is read stops growing (without coalescing
    # it would grow by ~0.75 s every second, without bound).
    earlier = [latency for at, _, latency in reads if SLOW_READ_SECONDS - 3.0 <= at < SLOW_READ_SECONDS - 2.0]
    assert earlier, summary
    assert worst < scaled(4000.0), f"stale frames ({summary})"
    assert worst <= max(earlier) + 500.0, f"latency still growing: {max(earlier):.0f} ms -> {worst:.0f} ms ({summary})"
