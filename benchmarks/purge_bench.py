#!/usr/bin/env python
"""What deleting every recording costs: file size before and after, its duration, the frames meanwhile.

    .venv/bin/python benchmarks/purge_bench.py                   # 100,000 rows (about 57 MB), about a minute
    .venv/bin/python benchmarks/purge_bench.py --thousands 20    # a quick look

A real server (tests/server_process.py, the simulator) with its database in
a temporary directory is filled through ``POST /publish`` with reward
events of 400 characters, a thousand per request. A protocol 1.1 client
(tests/conftest.py's FrameWatcher, energy channel) then watches the frames
while ``DELETE /api/sessions`` runs; the window is at least one second.
Printed: the database file and its WAL before and right after, the time to
the answer, the frames received per second, frameNumber gaps, and the
frame clock's own rate over the window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import FrameWatcher  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

DESCRIPTION = "d" * 400


def on_disk(db: Path) -> int:
    return sum(os.path.getsize(f"{db}{suffix}") for suffix in ("", "-wal") if os.path.exists(f"{db}{suffix}"))


async def run(thousands: int) -> None:
    with tempfile.TemporaryDirectory(prefix="wf-purge-") as folder:
        db = Path(folder) / "events.sqlite3"
        env = {"WF_PERSIST": "1", "WF_PERSIST_PATH": str(db), "WF_ENABLE_PUBLISH": "1"}
        with ServerProcess(env=env) as server:
            async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
                reward = {"rewardType": "milestone", "title": "t", "points": 1, "description": DESCRIPTION}
                for _ in range(thousands):
                    response = await http.post("/publish", json=[{"type": "reward_event", "payload": reward}] * 1000)
                    response.raise_for_status()
                await asyncio.sleep(1.0)  # committed
                async with FrameWatcher(server.ws_url, channels="energy", server=server) as watcher:
                    await asyncio.sleep(0.5)
                    before = on_disk(db)
                    start = watcher.mark()
                    response = await http.delete("/api/sessions")
                    took = time.monotonic() - start
                    after = on_disk(db)
                    await asyncio.sleep(max(0.0, 1.0 - took))
                    end = time.monotonic()
                    frames = watcher.window(start, end)
        numbers = [number for _, number, _ in frames]
        gaps = sum(1 for a, b in zip(numbers, numbers[1:]) if b != a + 1)
        clock = (numbers[-1] - numbers[0]) / (frames[-1][0] - frames[0][0])
        print(
            f"{response.json()['rows']} rows: {before / 1e6:.1f} MB -> {after / 1e6:.2f} MB in {took * 1000:.0f} ms; "
            f"{len(frames) / (end - start):.1f} Hz received over {end - start:.2f} s, {gaps} gaps, "
            f"frame clock {clock:.1f} Hz"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--thousands", type=int, default=100, help="thousands of rows to write first")
    asyncio.run(run(parser.parse_args().thousands))


if __name__ == "__main__":
    main()
