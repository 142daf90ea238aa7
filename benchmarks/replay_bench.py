#!/usr/bin/env python
"""A fast replay of a dense recording beside two healthy readers (docs/SECURITY.md, section "Replay").

    .venv/bin/python benchmarks/replay_bench.py               # 2 runs, about 2 minutes
    .venv/bin/python benchmarks/replay_bench.py --runs 1 --messages 5000   # a quick look
    .venv/bin/python benchmarks/replay_bench.py --scenario concurrent --messages 100000 --runs 1
    .venv/bin/python benchmarks/replay_bench.py --scenario loop --runs 1

Each run starts a real server (tests/server_process.py: the simulator,
persistence on in a temporary directory, ``POST /publish`` on) and builds a
dense recording through the server's own paths: ``--messages`` reliable
messages (reward events and token streams, alternating) published in
batches of ``--batch`` every ``--every`` seconds. Two protocol 1.1 readers
that read everything then connect, and ``POST /api/replay`` plays the time
range of the recording at ``--speed``. Reported per run:

- ``framesSkipped``, ``budgetOverruns``: the server's counters (``/health``)
  over the replay;
- ``worstFrameMs``: the longest frame's processing time (``/health``
  ``processingMs.max``, sampled every 0.5 s during the replay);
- per reader: close code and reason (None while open), frameNumber gaps,
  the longest time between two energy frames, and replayed messages received;
- ``replaySeconds``: from the ``202`` to the end of the replay;
- ``serverWaitedForCpuMs``: how long the server's main thread was runnable
  but had no CPU meanwhile (a shared machine's share of the stalls).

``--scenario concurrent`` fires ``--concurrent`` replays of the range at
once beside one reader and reports their statuses, the server's RSS
(before, peak over ``--window`` seconds, after a stop) and the reader's
stream; ``--scenario loop`` starts and stops a replay in a loop for
``--window`` seconds and reports the statuses, the server's CPU and the
reader's stream. Results are printed as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server_process import ServerProcess  # noqa: E402


class Reader:
    """A healthy protocol 1.1 client: reads everything, records energy frames and replayed messages."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: list[tuple[float, int]] = []
        self.replayed = 0
        self.closed: tuple[int | None, str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._read())
        deadline = time.monotonic() + 10
        while len(self.frames) < 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _read(self) -> None:
        try:
            async with connect(
                self.url, subprotocols=[Subprotocol("wirthforge.1.1")], compression=None, proxy=None
            ) as ws:
                async for text in ws:
                    head = text[:40]
                    if '"energy_update"' in head:
                        self.frames.append((time.monotonic(), json.loads(text)["frameNumber"]))
                    elif "replay-" in text[-200:] or '"reward_event"' in head:
                        self.replayed += 1
        except ConnectionClosed as closed:
            received = closed.rcvd
            self.closed = (received.code, received.reason) if received else (None, "no close frame")

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def report(self, start: float, end: float) -> dict[str, Any]:
        window = [(t, n) for t, n in self.frames if start <= t <= end]
        numbers = [n for _, n in window]
        times = [t for t, _ in window]
        gaps = sum(1 for a, b in zip(numbers, numbers[1:]) if b != a + 1)
        worst = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        seconds = max(end - start, 1e-9)
        return {
            "closed": self.closed,
            "frameHz": round(len(window) / seconds, 1),
            "frameGaps": gaps,
            "worstFrameIntervalMs": round(worst * 1000, 1),
            "replayedReceived": self.replayed,
        }


def dense_batch(start: int, size: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for index in range(start, start + size):
        if index % 2:
            items.append(
                {"type": "reward_event", "payload": {"rewardType": "milestone", "title": "r", "points": index}}
            )
        else:
            payload = {"tokens": [f" w{index}"], "isComplete": False, "sessionId": "dense", "modelId": "bench"}
            items.append({"type": "token_stream", "payload": payload})
    return items


async def one_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    env = {"WF_ENABLE_PUBLISH": "1", "WF_PERSIST": "1", "WF_PERSIST_PATH": str(tmp / "events.sqlite3"), "WF_SEED": "7"}
    with ServerProcess(env=env) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
            first_ms = time.time() * 1000
            for start in range(0, args.messages, args.batch):
                response = await http.post("/publish", json=dense_batch(start, min(args.batch, args.messages - start)))
                response.raise_for_status()
                await asyncio.sleep(args.every)
            last_ms = time.time() * 1000
            await asyncio.sleep(1.0)  # the event log commits
            readers = [Reader(server.ws_url) for _ in range(2)]
            for reader in readers:
                await reader.start()
            await asyncio.sleep(1.0)
            before = (await http.get("/health")).json()["frameLoop"]
            assert server.process is not None
            waited0 = cpu_wait_seconds(server.process.pid)
            started = time.monotonic()
            response = await http.post("/api/replay", json={"from": first_ms, "to": last_ms, "speed": args.speed})
            answer = response.json()
            worst_ms = 0.0
            deadline = started + args.timeout
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                loop = (await http.get("/health")).json()["frameLoop"]
                worst_ms = max(worst_ms, loop["processingMs"]["max"] or 0.0)
                if not (await http.get("/api/replay")).json()["active"]:
                    break
                if all(reader.closed for reader in readers):
                    break
            ended = time.monotonic()
            waited = cpu_wait_seconds(server.process.pid) - waited0
            await asyncio.sleep(0.5)
            after = (await http.get("/health")).json()["frameLoop"]
            for reader in readers:
                await reader.stop()
    return {
        "status": response.status_code,
        "replayMessages": answer.get("messages"),
        "speed": args.speed,
        "replaySeconds": round(ended - started, 2),
        "framesSkipped": after["framesSkipped"] - before["framesSkipped"],
        "budgetOverruns": after["budgetOverruns"] - before["budgetOverruns"],
        "worstFrameMs": round(max(worst_ms, after["processingMs"]["max"] or 0.0), 2),
        "serverWaitedForCpuMs": round(waited * 1000),
        "readers": [reader.report(started, ended) for reader in readers],
    }


def cpu_wait_seconds(pid: int) -> float:
    """Time the server's main thread was runnable but waiting for a CPU (the machine, not the server)."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def concurrent_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """``--concurrent`` replays at once of a ``--messages`` range, beside one healthy reader."""
    env = {"WF_ENABLE_PUBLISH": "1", "WF_PERSIST": "1", "WF_PERSIST_PATH": str(tmp / "events.sqlite3"), "WF_SEED": "7"}
    with ServerProcess(env=env) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
            first_ms = time.time() * 1000
            for start in range(0, args.messages, 5000):
                await http.post("/publish", json=dense_batch(start, min(5000, args.messages - start)))
            last_ms = time.time() * 1000
            await asyncio.sleep(2.0)
            reader = Reader(server.ws_url)
            await reader.start()
            rss_before = server.rss_kib()
            started = time.monotonic()
            body = {"from": first_ms, "to": last_ms, "speed": 1}
            answers = await asyncio.gather(*(http.post("/api/replay", json=body) for _ in range(args.concurrent)))
            peak = server.rss_kib()
            while time.monotonic() - started < args.window:
                await asyncio.sleep(0.25)
                peak = max(peak, server.rss_kib())
            ended = time.monotonic()
            await http.post("/api/replay/stop")
            await asyncio.sleep(1.0)
            rss_after = server.rss_kib()
            await reader.stop()
    return {
        "concurrent": args.concurrent,
        "statuses": sorted(a.status_code for a in answers),
        "rssMB": {
            "before": round(rss_before / 1024),
            "peak": round(peak / 1024),
            "afterStop": round(rss_after / 1024),
        },
        "reader": reader.report(started, ended),
    }


async def loop_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Start and stop a replay in a loop for ``--window`` seconds beside one healthy reader."""
    env = {"WF_ENABLE_PUBLISH": "1", "WF_PERSIST": "1", "WF_PERSIST_PATH": str(tmp / "events.sqlite3"), "WF_SEED": "7"}
    with ServerProcess(env=env) as server:
        assert server.process is not None
        async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
            first_ms = time.time() * 1000
            for start in range(0, args.messages, 5000):
                await http.post("/publish", json=dense_batch(start, min(5000, args.messages - start)))
            last_ms = time.time() * 1000
            await asyncio.sleep(2.0)
            reader = Reader(server.ws_url)
            await reader.start()
            body = {"from": first_ms, "to": last_ms, "speed": 100}
            statuses: list[int] = []
            started, cpu0 = time.monotonic(), cpu_seconds(server.process.pid)
            while time.monotonic() - started < args.window:
                statuses.append((await http.post("/api/replay", json=body)).status_code)
                await http.post("/api/replay/stop")
            ended, cpu = time.monotonic(), cpu_seconds(server.process.pid) - cpu0
            await reader.stop()
    return {
        "starts": {str(code): statuses.count(code) for code in sorted(set(statuses))},
        "serverCpuPctOfCore": round(cpu / (ended - started) * 100, 1),
        "reader": reader.report(started, ended),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--messages", type=int, default=20_000, help="reliable messages in the recording")
    parser.add_argument("--batch", type=int, default=500, help="messages per POST /publish")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between batches")
    parser.add_argument("--speed", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="longest wait for the replay to end")
    parser.add_argument(
        "--scenario",
        choices=("fast", "concurrent", "loop"),
        default="fast",
        help="fast: one replay at --speed beside two readers; concurrent: --concurrent replays at once "
        "(use --messages 100000); loop: start/stop in a loop for --window seconds",
    )
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured (concurrent, loop)")
    args = parser.parse_args()
    scenario = {"fast": one_run, "concurrent": concurrent_run, "loop": loop_run}[args.scenario]
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="wf-replay-bench-") as tmp:
            runs.append(await scenario(args, Path(tmp)))
    print(json.dumps({"runs": runs}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
