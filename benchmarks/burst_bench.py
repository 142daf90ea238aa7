#!/usr/bin/env python
"""What a connection burst and large publish batches cost a healthy reader (docs/SECURITY.md, "Bursts").

    .venv/bin/python benchmarks/burst_bench.py                       # 1,000-connection burst + 3 x 5,000 published, 3 rounds
    .venv/bin/python benchmarks/burst_bench.py --clients 1160 --cap 1100 --rounds 1
    .venv/bin/python benchmarks/burst_bench.py --server-root ../other-checkout   # the same load on another tree

Per round, on a real server process (tests/server_process.py, loopback only,
``WF_ENABLE_PUBLISH=1``), one healthy protocol 1.1 client records every
``energy_update`` (arrival time, frameNumber) while:

1. **quiet**: nothing else happens (the machine's noise level);
2. **publish** (before the burst, so that the garbage of the burst's closed
   connections is not collected during it): ``--batches`` ``POST /publish``
   requests of ``--batch-size`` reward_event messages, one after the other.
3. **burst**: a separate process (tests/burst.py) opens ``--clients`` connections at once
   (raw sockets, every upgrade request sent within a few milliseconds),
   reads what the server sends for ``--hold`` seconds and closes them. Burst
   clients subscribe to the system channel only (``--burst-channels``), so
   that what is measured is the connection work, not 1,000 more energy
   streams (docs/PERFORMANCE.md measures those);

For each phase: the reader's worst stall (longest time between two energy
frames), the frames it missed (frameNumber gaps), the server's skipped
frames and budget overruns (``/health``), and the time the server waited
for a CPU (scheduler statistics: above a few percent of the phase, the
machine, not the server, is what the reader measures). The burst phase also
reports how the connections fared (101 / 503 / failed) and how long the
slowest one took to open. Every loop is bounded in count and time; the
burst process has a hard alarm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import server_process  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

# ---------------------------------------------------------------------------
# The harness


class Reader:
    """The healthy protocol 1.1 client: (arrival, frameNumber) of every energy_update."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None
        self._ws: Any = None

    async def __aenter__(self) -> Reader:
        from websockets.asyncio.client import connect

        self._ws = await connect(self.url, subprotocols=["wirthforge.1.1"], compression=None, proxy=None)  # type: ignore[list-item]
        self._task = asyncio.create_task(self._read())
        await asyncio.sleep(1.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._ws.close()

    async def _read(self) -> None:
        async for text in self._ws:
            if '"energy_update"' in text[:40]:
                self.frames.append((time.monotonic(), json.loads(text)["frameNumber"]))

    def window(self, start: float, end: float) -> dict[str, Any]:
        frames = [f for f in self.frames if start <= f[0] <= end]
        times = [t for t, _ in frames]
        numbers = [n for _, n in frames]
        stall = max((b - a for a, b in zip(times, times[1:])), default=float("nan"))
        missed = sum(b - a - 1 for a, b in zip(numbers, numbers[1:]) if b > a + 1)
        return {"frames": len(frames), "worstStallMs": round(stall * 1000, 1), "framesMissed": missed}


def server_counters(server: ServerProcess) -> dict[str, float]:
    health = server.health()
    assert server.process is not None
    pid = server.process.pid
    with open(f"/proc/{pid}/task/{pid}/schedstat") as stat:
        waited = int(stat.read().split()[1]) / 1e9
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    loop = health["frameLoop"]
    return {
        "cpu": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"),
        "skipped": loop["framesSkipped"],
        "overruns": loop["budgetOverruns"],
        "waited": waited,
        "admission": health["connections"].get("admission"),
    }


def publish(server: ServerProcess, size: int, index: int) -> float:
    """One POST /publish of *size* reward_event messages; seconds until its answer."""
    body = json.dumps(
        [
            {"type": "reward_event", "payload": {"rewardType": "milestone", "title": f"b{index}-{i}", "points": 1}}
            for i in range(size)
        ]
    ).encode()
    request = urllib.request.Request(
        f"{server.http_url}/publish", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        assert response.status == 202, response.status
    return time.monotonic() - started


def loop_held(monitor: str, start: float, end: float) -> dict[str, Any]:
    """From loop_monitor.py's lines between *start* and *end*: how long the loop was held, in CPU ms.

    ``loopHeldCpuMs`` is the longest hold; ``largestGcCpuMs`` the largest
    garbage collection; ``loopHeldBesidesGcCpuMs`` the longest hold once the
    collections that ran inside it are taken out (the server's own work).
    """
    held: list[dict[str, Any]] = []
    collections: list[dict[str, Any]] = []
    with open(monitor) as lines:
        for line in lines:
            record = json.loads(line)
            if start <= record["t"] <= end:
                (held if record["kind"] == "held" else collections).append(record)
    besides_gc = 0.0
    for hold in held:
        since = hold["t"] - (hold["wallMs"] + 10) / 1000
        in_it = sum(c["cpuMs"] for c in collections if since <= c["t"] <= hold["t"])
        besides_gc = max(besides_gc, hold["cpuMs"] - in_it)
    return {
        "loopHeldCpuMs": max((h["cpuMs"] for h in held), default=0.0),
        "largestGcCpuMs": max((c["cpuMs"] for c in collections), default=0.0),
        "loopHeldBesidesGcCpuMs": round(besides_gc, 1),
    }


async def phase(
    server: ServerProcess, reader: Reader, monitor: str, name: str, action: Any, settle: float
) -> dict[str, Any]:
    before, start = server_counters(server), time.monotonic()
    extra = await action()
    await asyncio.sleep(settle)
    end, after = time.monotonic(), server_counters(server)
    result = {
        "phase": name,
        "seconds": round(end - start, 2),
        **reader.window(start, end),
        "serverSkipped": after["skipped"] - before["skipped"],
        "budgetOverruns": after["overruns"] - before["overruns"],
        "serverWaitedForCpuMs": round((after["waited"] - before["waited"]) * 1000),
        "serverCpuMs": round((after["cpu"] - before["cpu"]) * 1000),
        **loop_held(monitor, start, end),
    }
    if extra:
        result.update(extra)
    if name == "burst":
        result["admission"] = after["admission"]
        # The burst's clients all close at once at the end of the hold: that part apart.
        closing = start + float(extra["holdSeconds"]) - 0.2
        result["whileOpening"] = {**reader.window(start, closing), **loop_held(monitor, start, closing)}
        result["whileClosing"] = {**reader.window(closing, end), **loop_held(monitor, closing, end)}
    return result


async def one_round(args: argparse.Namespace) -> list[dict[str, Any]]:
    env = {"WF_ENABLE_PUBLISH": "1"}
    if args.cap:
        env["WF_MAX_CONNECTIONS"] = str(args.cap)
    results = []
    monitor = tempfile.NamedTemporaryFile(prefix="wf-loop-", suffix=".jsonl", delete=False).name
    prefix = [sys.executable, str(HERE / "loop_monitor.py"), monitor]
    with ServerProcess(env=env, prefix=prefix) as server:
        async with Reader(server.ws_url) as reader:

            async def quiet() -> None:
                await asyncio.sleep(args.hold)

            async def connect_burst() -> dict[str, Any]:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.burst",
                    server.host,
                    str(server.port),
                    str(args.clients),
                    str(args.hold),
                    args.burst_channels,
                    stdout=subprocess.PIPE,
                    cwd=ROOT,
                )
                output, _ = await asyncio.wait_for(process.communicate(), args.hold + 90)
                answer = json.loads(output or b"{}")
                answer.pop("openedAt", None)
                return {"burst": answer, "holdSeconds": args.hold}

            async def publish_batches() -> dict[str, Any]:
                answers = [
                    await asyncio.to_thread(publish, server, args.batch_size, index) for index in range(args.batches)
                ]
                return {"answerSeconds": [round(a, 2) for a in answers]}

            # Publishing before the burst: the garbage 1,000 closed connections leave would
            # otherwise be collected during the publish phase and counted against it.
            results.append(await phase(server, reader, monitor, "quiet", quiet, 0.5))
            results.append(await phase(server, reader, monitor, "publish", publish_batches, 1.0))
            results.append(await phase(server, reader, monitor, "burst", connect_burst, 1.0))
    os.unlink(monitor)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000, help="connections opened at once (at most 5,000)")
    parser.add_argument("--cap", type=int, default=0, help="the server's --max-connections (0: its default)")
    parser.add_argument("--hold", type=float, default=6.0, help="seconds the burst connections stay open")
    parser.add_argument("--burst-channels", default="system", help="channels of the burst clients ('' = all)")
    parser.add_argument("--batches", type=int, default=3, help="POST /publish requests in the publish phase")
    parser.add_argument("--batch-size", type=int, default=5000, help="messages per request (the server's maximum)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-root", type=Path, default=None, help="run ws_server.py of another checkout")
    args = parser.parse_args()
    args.clients = min(max(args.clients, 1), 5000)
    args.rounds = min(max(args.rounds, 1), 10)
    args.batches = min(max(args.batches, 0), 10)
    if args.server_root is not None:
        server_process.ROOT = args.server_root.resolve()
    rows = []
    for index in range(args.rounds):
        for row in asyncio.run(one_round(args)):
            row["round"] = index + 1
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        "\n| round | phase | worst stall | frames missed | loop held (CPU) | of it, not GC | largest GC | waited for CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['round']} | {row['phase']} | {row['worstStallMs']} ms | {row['framesMissed']} | "
            f"{row['loopHeldCpuMs']} ms | {row['loopHeldBesidesGcCpuMs']} ms | {row['largestGcCpuMs']} ms | "
            f"{row['serverWaitedForCpuMs']} ms |"
        )


if __name__ == "__main__":
    main()
