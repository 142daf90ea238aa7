"""Flow control against the real server: long resumes, large publish batches, slow readers.

- A resume that needs more replayed messages than a send queue holds
  completes, in order, paced by the client (not closed with 1013 before
  anything is sent, which the client would retry the same way forever).
- A POST /publish batch larger than a send queue reaches a fast reader
  without closing it (the batch must not overflow every queue at once).
- A client that reads slower than the server sends (40 messages/s against
  ~70) never reads an energy frame older than a second: its energy rate is
  paced from its heartbeat answers (unpaced, the backlog grows in its own
  receive buffer, to 10 s of age after 20 s).

The module-scoped ``server`` fixture (tests/conftest.py) has POST /publish.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.server_process import ServerProcess
from tests.timing import scaled

RESUME_MESSAGES = 3000
PUBLISH_BATCH = 5000


def rewards(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"type": "reward_event", "payload": {"rewardType": "milestone", "title": f"#{first + i}", "points": first + i}}
        for i in range(count)
    ]


async def publish(server: ServerProcess, batch: list[dict[str, Any]]) -> list[int]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=scaled(60)) as http:
        response = await http.post("/publish", json=batch)
    assert response.status_code == 202, response.text
    return response.json()["seqs"]


async def read_rewards(ws: Any, count: int, timeout: float) -> list[dict[str, Any]]:
    """Read until *count* reward_events arrived (other types are skipped)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            message = json.loads(await ws.recv())
            if message["type"] == "reward_event":
                got.append(message)
    return got


async def test_resume_of_3000_messages_completes_in_order(server: ServerProcess) -> None:
    url = server.ws_url + "?channels=reward,system"
    async with connect(url, subprotocols=["wirthforge.1.1"], compression=None, proxy=None) as ws:
        startup = json.loads(await ws.recv())
    epoch, last_seq = startup["payload"]["epoch"], startup["seq"]
    seqs = await publish(server, rewards(0, RESUME_MESSAGES))  # while the client is away
    started = time.monotonic()
    async with connect(
        f"{url}&epoch={epoch}&lastSeq={last_seq}",
        subprotocols=["wirthforge.1.1"],
        compression=None,
        proxy=None,
        max_size=None,
    ) as ws:
        startup = json.loads(await ws.recv())
        resume = startup["payload"]["resume"]
        assert resume["status"] == "complete", resume
        assert resume["replayed"] >= RESUME_MESSAGES
        try:
            got = await read_rewards(ws, RESUME_MESSAGES, scaled(30))
        except ConnectionClosed as closed:
            pytest.fail(f"closed during the replay: {closed}")
    elapsed = time.monotonic() - started
    assert [m["seq"] for m in got] == seqs
    assert [m["payload"]["points"] for m in got] == list(range(RESUME_MESSAGES))
    print(f"resume of {RESUME_MESSAGES}: {elapsed:.2f} s")


async def test_a_fast_reader_receives_a_5000_message_publish_batch(server: ServerProcess) -> None:
    url = server.ws_url + "?channels=reward,system"
    async with connect(url, subprotocols=["wirthforge.1.1"], compression=None, proxy=None) as ws:
        json.loads(await ws.recv())
        reader = asyncio.create_task(read_rewards(ws, PUBLISH_BATCH, scaled(60)))
        started = time.monotonic()
        seqs = await publish(server, rewards(0, PUBLISH_BATCH))
        try:
            got = await reader
        except ConnectionClosed as closed:
            pytest.fail(f"a fast reader was closed by a {PUBLISH_BATCH}-message batch: {closed}")
        elapsed = time.monotonic() - started
    assert [m["seq"] for m in got] == seqs
    print(f"publish of {PUBLISH_BATCH} to a fast reader: {elapsed:.2f} s")


SLOW_READ_SECONDS = 20.0
READS_PER_SECOND = 40.0
MAX_FRAME_AGE_MS = 1000.0


@pytest.mark.parametrize("protocol", ["1.0", "1.1"])
async def test_a_slow_reader_never_reads_an_energy_frame_older_than_a_second(
    server: ServerProcess, protocol: str
) -> None:
    """40 messages/s for 20 s, answering heartbeats like every project client: frames stay fresh.

    Age is wall clock at read time minus the frame's timestamp (same machine,
    same clock). The client reads with the websockets library's defaults, so
    the backlog the server must avoid builds in the library's queue and the
    kernel's receive buffer, where the server cannot coalesce it.
    """
    subprotocols = ["wirthforge.1.1"] if protocol == "1.1" else None
    reads: list[tuple[float, float]] = []  # (seconds since start, age ms) of each energy_update read
    async with connect(
        server.ws_url,
        subprotocols=subprotocols,
        compression=None,
        proxy=None,  # type: ignore[arg-type]
        ping_interval=None,
    ) as ws:
        start = next_read = time.monotonic()
        while (elapsed := time.monotonic() - start) < SLOW_READ_SECONDS:
            message = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
            now_ms = time.time() * 1000
            if message["type"] == "energy_update":
                reads.append((elapsed, now_ms - message["timestamp"]))
            elif message["type"] == "heartbeat":
                await ws.send(
                    json.dumps({"type": "heartbeat_response", "payload": {"sequence": message["payload"]["sequence"]}})
                )
            # At most READS_PER_SECOND: time spent waiting for a message is not saved up for a burst.
            next_read = max(next_read, time.monotonic() - 1 / READS_PER_SECOND) + 1 / READS_PER_SECOND
            delay = next_read - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    assert reads, "no energy_update read"
    worst_at, worst = max(reads, key=lambda read: read[1])
    last_seconds = [at for at, _ in reads if at >= SLOW_READ_SECONDS - 5.0]
    ages = [age for _, age in reads]
    summary = (
        f"{len(reads)} frames in {SLOW_READ_SECONDS:g} s, age p50 {sorted(ages)[len(ages) // 2]:.0f} ms, "
        f"worst {worst:.0f} ms at {worst_at:.1f} s"
    )
    print(f"slow reader {protocol}: {summary}")
    assert worst <= max(MAX_FRAME_AGE_MS, scaled(MAX_FRAME_AGE_MS)), summary
    # Fresh frames keep coming: pacing slows the stream down, it does not stop it.
    assert len(last_seconds) >= 5 * 5, f"only {len(last_seconds)} frames in the last 5 s ({summary})"
