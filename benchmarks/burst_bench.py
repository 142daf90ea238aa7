#!/usr/bin/env python
"""What a connection burst and large publish batches cost a healthy reader (docs/SECURITY.md, "Bursts").

    .venv/bin/python benchmarks/burst_bench.py                       # 1,000-connection burst + 3 x 5,000 published, 3 rounds
    .venv/bin/python benchmarks/burst_bench.py --clients 1160 --cap 1100 --rounds 1
    .venv/bin/python benchmarks/burst_bench.py --server-root ../other-checkout   # the same load on another tree

Per round, on a real server process (tests/server_process.py, loopback only,
``WF_ENABLE_PUBLISH=1``), one healthy protocol 1.1 client records every
``energy_update`` (arrival time, frameNumber) while:

1. **quiet**: nothing else happens (the machine's noise level);
2. **burst**: a separate process opens ``--clients`` connections at once
   (raw sockets, every upgrade request sent within a few milliseconds),
   reads what the server sends for ``--hold`` seconds and closes them. Burst
   clients subscribe to the system channel only (``--burst-channels``), so
   that what is measured is the connection work, not 1,000 more energy
   streams (docs/PERFORMANCE.md measures those);
3. **publish**: ``--batches`` ``POST /publish`` requests of ``--batch-size``
   reward_event messages, one after the other.

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
import base64
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
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

FRAME_RATE = 60


# ---------------------------------------------------------------------------
# The burst (its own process: ``burst_bench.py _burst HOST PORT N HOLD CHANNELS``)


def burst(host: str, port: int, count: int, hold: float, channels: str) -> dict[str, Any]:
    """Open *count* WebSocket connections at once, read for *hold* seconds, close; return counters."""
    signal.alarm(int(hold + 60))  # whatever happens, this process ends
    selector = selectors.DefaultSelector()
    query = f"?channels={channels}" if channels else ""
    started = time.monotonic()
    state: dict[socket.socket, dict[str, Any]] = {}
    failed_connect = 0
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex((host, port)) not in (0, 115, 11):  # 115 EINPROGRESS, 11 EAGAIN
            failed_connect += 1
            sock.close()
            continue
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws{query} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wirthforge.1.1\r\n\r\n"
        ).encode()
        state[sock] = {"request": request, "head": b"", "status": None, "opened": None}
        selector.register(sock, selectors.EVENT_WRITE)
    sent_all = time.monotonic() - started
    statuses: dict[str, int] = {}
    open_times: list[float] = []
    deadline = started + hold
    bytes_read = 0
    while time.monotonic() < deadline and state:
        for key_, events in selector.select(timeout=0.05):
            sock = key_.fileobj  # type: ignore[assignment]
            entry = state.get(sock)  # type: ignore[arg-type]
            if entry is None:
                continue
            try:
                if events & selectors.EVENT_WRITE and entry["request"]:
                    sock.send(entry["request"])  # type: ignore[attr-defined]
                    entry["request"] = b""
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                data = sock.recv(65536)  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                if entry["status"] is None:
                    statuses["failed"] = statuses.get("failed", 0) + 1
                selector.unregister(sock)
                sock.close()  # type: ignore[attr-defined]
                del state[sock]  # type: ignore[arg-type]
                continue
            bytes_read += len(data)
            if entry["status"] is None:
                entry["head"] += data
                if b"\r\n" in entry["head"]:
                    status = entry["head"].split(b" ", 2)[1].decode(errors="replace")
                    entry["status"] = status
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "101":
                        open_times.append(time.monotonic() - started)
                    entry["head"] = b""
    for sock in list(state):
        if state[sock]["status"] is None:
            statuses["no answer"] = statuses.get("no answer", 0) + 1
        sock.close()
    open_times.sort()
    period, densest, first = 1.0 / FRAME_RATE, 0, 0
    for last, opened in enumerate(open_times):  # the most 101 answers within one frame period
        while opened - open_times[first] > period:
            first += 1
        densest = max(densest, last - first + 1)
    return {
        "clients": count,
        "connectFailed": failed_connect,
        "requestsSentWithinMs": round(sent_all * 1000, 1),
        "statuses": statuses,
        "openedP50Ms": round(open_times[len(open_times) // 2] * 1000) if open_times else None,
        "openedMaxMs": round(open_times[-1] * 1000) if open_times else None,
        "mostOpenedInOneFrame": densest,
        "bytesRead": bytes_read,
    }


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


async def phase(server: ServerProcess, reader: Reader, name: str, action: Any, settle: float) -> dict[str, Any]:
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
    }
    if extra:
        result.update(extra)
    if name == "burst":
        result["admission"] = after["admission"]
    return result


async def one_round(args: argparse.Namespace) -> list[dict[str, Any]]:
    env = {"WF_ENABLE_PUBLISH": "1"}
    if args.cap:
        env["WF_MAX_CONNECTIONS"] = str(args.cap)
    results = []
    with ServerProcess(env=env) as server, open(os.devnull, "w"):
        async with Reader(server.ws_url) as reader:

            async def quiet() -> None:
                await asyncio.sleep(args.hold)

            async def connect_burst() -> dict[str, Any]:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "_burst",
                    server.host,
                    str(server.port),
                    str(args.clients),
                    str(args.hold),
                    args.burst_channels,
                    stdout=subprocess.PIPE,
                )
                output, _ = await asyncio.wait_for(process.communicate(), args.hold + 90)
                return {"burst": json.loads(output or b"{}")}

            async def publish_batches() -> dict[str, Any]:
                answers = [
                    await asyncio.to_thread(publish, server, args.batch_size, index) for index in range(args.batches)
                ]
                return {"answerSeconds": [round(a, 2) for a in answers]}

            results.append(await phase(server, reader, "quiet", quiet, 0.5))
            results.append(await phase(server, reader, "burst", connect_burst, 1.0))
            results.append(await phase(server, reader, "publish", publish_batches, 1.0))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000, help="connections opened at once (at most 5,000)")
    parser.add_argument("--cap", type=int, default=0, help="the server's --max-connections (0: its default)")
    parser.add_argument("--hold", type=float, default=4.0, help="seconds the burst connections stay open")
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
    print("\n| round | phase | worst stall | frames missed | server skipped | overruns | waited for CPU |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['round']} | {row['phase']} | {row['worstStallMs']} ms | {row['framesMissed']} | "
            f"{row['serverSkipped']} | {row['budgetOverruns']} | {row['serverWaitedForCpuMs']} ms |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_burst":
        _, _, host, port, count, hold, *rest = sys.argv
        print(json.dumps(burst(host, int(port), int(count), float(hold), rest[0] if rest else "")))
    else:
        main()
