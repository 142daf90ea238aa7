#!/usr/bin/env python
"""Cost of the durable event log (benchmarks/results/NOTES.md, section "Event persistence").

    .venv/bin/python benchmarks/persistence_bench.py              # about 5 minutes
    .venv/bin/python benchmarks/persistence_bench.py --seconds 10 --rounds 1   # a quick look

Three measurements, each on a real server process (tests/server_process.py,
``WF_SEED=7``) with its database in a temporary directory:

1. **On vs off**: one protocol 1.1 client reads everything at 60 Hz while the
   harness publishes 100 reliable messages per second (10 every 100 ms) via
   ``POST /publish``; an "off" and an "on" server run side by side over the
   same window (the shared machine's load falls on both), ``--rounds`` times. Per run: energy
   frames received per second, frameNumber gaps, rewards received, tick
   lateness p99 (``/health``, 10 s window, sampled every 10 s and averaged),
   server CPU (``/proc/<pid>/stat``) and the machine's load.
2. **Disk use per hour**: growth of the database (``/health``
   ``persistence.diskBytes``) during an "on" run (with the 100 messages/s load)
   and during a typical session (one client, the simulated model alone).
3. **Replay start** of a 10-minute recording (written into a fresh database
   in-process, then served): time to the ``202`` of ``POST /api/replay`` and
   to the first replayed token at a client.

Results are printed as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server_process import ServerProcess  # noqa: E402
from wirthforge_ws.protocol import messages  # noqa: E402
from wirthforge_ws.storage.event_log import EventLog  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def busy_pct(seconds: float = 1.0) -> float:
    """CPU used by every process over *seconds*, in % of one core."""
    before = machine_cpu()
    time.sleep(seconds)
    after = machine_cpu()
    return (after[0] - before[0]) / max(after[1] - before[1], 1) * (os.cpu_count() or 1) * 100


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    """The machine is shared: wait (bounded) until others use less than *threshold* % of a core."""
    deadline = time.monotonic() + max_wait
    busy = busy_pct()
    while busy > threshold and time.monotonic() < deadline:
        time.sleep(2.0)
        busy = busy_pct()
    return round(busy, 1)


async def load_run(server: ServerProcess, seconds: float, rate: int) -> dict[str, Any]:
    """One client at 60 Hz, *rate* reliable messages per second published, for *seconds*."""
    frames: list[int] = []
    rewards = 0

    async def read(ws: Any) -> None:
        nonlocal rewards
        async for text in ws:
            head = text[:40]
            if '"energy_update"' in head:
                frames.append(json.loads(text)["frameNumber"])
            elif '"reward_event"' in head:
                rewards += 1

    assert server.process is not None
    async with (
        connect(server.ws_url, subprotocols=["wirthforge.1.1"], compression=None, proxy=None) as ws,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        reader = asyncio.create_task(read(ws))
        await asyncio.sleep(2.0)  # warm up
        frames.clear()
        rewards = 0
        cpu0, machine0, wall0 = cpu_seconds(server.process.pid), machine_cpu(), time.monotonic()
        lateness: list[float] = []
        published = 0
        batch = max(rate // 10, 1)
        next_at = time.monotonic()
        next_sample = wall0 + 10.0
        while time.monotonic() - wall0 < seconds:
            if rate:
                items = [
                    {
                        "type": "reward_event",
                        "payload": {"rewardType": "milestone", "title": f"r{published + i}", "points": published + i},
                    }
                    for i in range(batch)
                ]
                await http.post("/publish", json=items)
                published += batch
            next_at += 0.1
            if time.monotonic() >= next_sample:
                next_sample += 10.0
                lateness.append((await http.get("/health")).json()["frameLoop"]["tickLatenessMs"]["p99"])
            await asyncio.sleep(max(next_at - time.monotonic(), 0.0))
        wall = time.monotonic() - wall0
        numbers = list(frames)  # the window's frames, before the reader adds more
        cpu = cpu_seconds(server.process.pid) - cpu0
        machine1 = machine_cpu()
        health = (await http.get("/health")).json()
        lateness.append(health["frameLoop"]["tickLatenessMs"]["p99"])
        await asyncio.sleep(0.5)  # the last rewards arrive
        reader.cancel()
    gaps = sum(1 for a, b in zip(numbers, numbers[1:]) if b != a + 1)
    busy = (machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1) * (os.cpu_count() or 1) * 100
    return {
        "seconds": round(wall, 2),
        "frameHz": round(len(numbers) / wall, 2),
        "gaps": gaps,
        "published": published,
        "rewardsReceived": rewards,
        "tickLatenessP99Ms": round(statistics.fmean(lateness), 3) if lateness else None,
        "serverCpuPct": round(cpu / wall * 100, 2),
        "machineBusyPctOfCore": round(busy, 1),
        "uptimeSeconds": health["uptimeSeconds"],
        "persistence": {k: health["persistence"].get(k) for k in ("status", "written", "dropped", "backlog")},
        "loadavg": loadavg(),
    }


def publish_cost(tmp: str, count: int = 20_000) -> dict[str, float]:
    """In-process: µs per Hub.publish of a reward_event (rendered for 1.1) with and without the event log.

    The difference is what the frame loop's thread pays per message; the
    writer thread's work is not in it (it runs beside the loop).
    """
    from wirthforge_ws.protocol.schemas import SchemaSet
    from wirthforge_ws.stream.hub import Hub

    class Sink:
        version = "1.1"

        def deliver(self, outbound: Any) -> None:
            pass

    result: dict[str, float] = {}
    for mode in ("off", "on"):
        log = None
        if mode == "on":
            log = EventLog(
                Path(tmp) / "micro.sqlite3",
                max_bytes=1 << 30,
                max_age_seconds=86400.0,
                energy_rate=2.0,
                queue_limit=count + 10,
            )
            log.open()
        hub = Hub(SchemaSet(), history_messages=10_000, history_seconds=120.0, durable=log)
        hub.attach(Sink(), hub.plan_resume(["reward"], None))  # type: ignore[arg-type]
        events = [messages.reward_event(reward_type="milestone", title=f"r{i}", points=i) for i in range(count)]
        best = float("inf")
        for part in range(5):  # best of 5 slices: the machine is shared
            chunk = events[part::5]
            started = time.perf_counter()
            for event in chunk:
                hub.publish(event)
            best = min(best, (time.perf_counter() - started) / len(chunk))
        result[mode] = round(best * 1e6, 2)
        if log is not None:
            log.close()
    return result


def write_recording(path: Path, minutes: float) -> None:
    """A recording of *minutes* as the server would have written it: tokens, frames and council."""
    log = EventLog(path, max_bytes=1 << 30, max_age_seconds=86400.0, energy_rate=2.0)
    log.open()
    start = time.time() * 1000.0 - minutes * 60_000.0
    seq = 0
    steps = int(minutes * 60 * 60)  # 60 Hz frames
    for frame in range(steps):
        ms = start + frame * 1000.0 / 60
        seq += 1
        log.append(
            seq,
            messages.energy_update(
                frame_number=frame,
                total_energy=0.5,
                delta_energy=0.0,
                tokens_generated=1,
                processing_time_ms=0.2,
                model_id="wirthforge-sim",
                distribution={"generation": 0.3, "attention": 0.1, "reasoning": 0.1},
                evidence=messages.energy_evidence(profile="Dual"),
            ),
            ms,
        )
        if frame % 6 == 0:  # a token_stream 10 times a second
            seq += 1
            log.append(
                seq,
                messages.token_stream(
                    tokens=[" energy", " flows"],
                    is_complete=frame == steps - 6,
                    session_id="bench-10min",
                    model_id="wirthforge-sim",
                ),
                ms,
            )
        if frame % 30 == 0:  # council twice a second
            seq += 1
            log.append(
                seq,
                messages.interference_event(
                    frame_number=frame,
                    pattern_type="neutral",
                    models=["wirthforge-sim", "council_critic"],
                    intensity=0.4,
                    coherence=0.9,
                ),
                ms,
            )
        if seq % 2000 == 0:
            time.sleep(0.05)  # let the writer keep up (its queue is bounded)
    log.close()
    assert log.stats.dropped == 0, log.stats


async def replay_start(server: ServerProcess) -> dict[str, Any]:
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=30) as http,
        connect(server.ws_url + "?channels=experience", subprotocols=["wirthforge.1.1"], proxy=None) as ws,
    ):
        sessions = (await http.get("/api/sessions")).json()["sessions"]
        recording = next(s for s in sessions if s["sessionId"] == "bench-10min")
        started = time.perf_counter()
        response = await http.post("/api/replay", json={"session": recording["id"], "speed": 1})
        accepted = time.perf_counter() - started
        async for text in ws:
            if "replay-bench-10min" in text:
                break
        first = time.perf_counter() - started
        await http.post("/api/replay/stop")
        body = response.json()
    return {
        "recordingSeconds": recording["durationSeconds"],
        "messages": body["messages"],
        "acceptedMs": round(accepted * 1000, 1),
        "firstTokenMs": round(first * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each on/off run")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    parser.add_argument("--rate", type=int, default=100, help="reliable messages per second published")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=30.0,
        help="before each run, wait until other processes use less than this %% of a core",
    )
    parser.add_argument("--max-wait", type=float, default=120.0, help="longest wait for a quiet machine")
    parser.add_argument("--typical-seconds", type=float, default=60.0, help="length of the typical-session disk run")
    args = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "loadavgStart": loadavg(), "runs": {"off": [], "on": []}}
    with tempfile.TemporaryDirectory(prefix="wf-persist-bench-") as tmp:
        results["publishMicroseconds"] = publish_cost(tmp)
        print("publish cost (µs per message, in-process)", json.dumps(results["publishMicroseconds"]), flush=True)
        if args.rounds == 0:
            return
        for round_ in range(args.rounds):
            # Off and on run side by side over the same 30 s, so that the shared
            # machine's load falls on both alike.
            envs = {
                mode: {
                    "WF_ENABLE_PUBLISH": "1",
                    "WF_SEED": "7",
                    "WF_PERSIST": "1" if mode == "on" else "0",
                    "WF_PERSIST_PATH": f"{tmp}/load-{round_}-{mode}.sqlite3",
                }
                for mode in ("off", "on")
            }
            quiet = wait_for_quiet(args.quiet_threshold, args.max_wait)
            with ServerProcess(env=envs["off"]) as off, ServerProcess(env=envs["on"]) as on:

                async def both() -> list[dict[str, Any]]:
                    return list(
                        await asyncio.gather(
                            load_run(off, args.seconds, args.rate), load_run(on, args.seconds, args.rate)
                        )
                    )

                pair = asyncio.run(both())
            for mode, result in zip(("off", "on"), pair):
                result["busyBeforePctOfCore"] = quiet
                # After a clean stop the WAL is checkpointed and truncated: the file is the data.
                result["diskBytes"] = Path(envs[mode]["WF_PERSIST_PATH"]).stat().st_size if mode == "on" else 0
                results["runs"][mode].append(result)
                print(mode, json.dumps(result), flush=True)
        env = {"WF_SEED": "7", "WF_PERSIST": "1", "WF_PERSIST_PATH": f"{tmp}/typical.sqlite3"}
        with ServerProcess(env=env) as server:
            typical = asyncio.run(load_run(server, args.typical_seconds, 0))
        typical["diskBytes"] = Path(env["WF_PERSIST_PATH"]).stat().st_size
        results["typical"] = typical
        print("typical", json.dumps(typical), flush=True)
        path = Path(tmp) / "replay.sqlite3"
        written = time.perf_counter()
        write_recording(path, 10.0)
        results["recordingWriteSeconds"] = round(time.perf_counter() - written, 2)
        results["recordingBytes"] = path.stat().st_size
        with ServerProcess(env={"WF_PERSIST": "1", "WF_PERSIST_PATH": str(path)}) as server:
            results["replay"] = asyncio.run(replay_start(server))
        print("replay", json.dumps(results["replay"]), flush=True)
    results["loadavgEnd"] = loadavg()

    def mean(mode: str, key: str) -> float:
        return round(statistics.fmean(r[key] for r in results["runs"][mode]), 3)

    print(
        "\n| persistence | frame Hz | gaps | rewards received / published | tick lateness p99 ms | server CPU % | "
        "machine busy (% of a core) | database after the run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("off", "on"):
        for r in results["runs"][mode]:
            print(
                f"| {mode} | {r['frameHz']} | {r['gaps']} | {r['rewardsReceived']} / {r['published']} | "
                f"{r['tickLatenessP99Ms']} | {r['serverCpuPct']} | {r['machineBusyPctOfCore']} | "
                f"{r['diskBytes'] / 1e6:.2f} MB after {r['uptimeSeconds']:.0f} s |"
            )
    print(
        f"\nmean p99 lateness off {mean('off', 'tickLatenessP99Ms')} ms, on {mean('on', 'tickLatenessP99Ms')} ms; "
        f"mean CPU off {mean('off', 'serverCpuPct')} %, on {mean('on', 'serverCpuPct')} %"
    )
    hour = 3600.0
    on = results["runs"]["on"]
    print(
        f"disk per hour under load: {statistics.fmean(r['diskBytes'] / r['uptimeSeconds'] for r in on) * hour / 1e6:.1f} MB; "
        f"typical: {typical['diskBytes'] / typical['uptimeSeconds'] * hour / 1e6:.1f} MB"
    )
    print(
        f"replay of a 10-minute recording ({results['replay']['messages']} messages, "
        f"{results['recordingBytes'] / 1e6:.1f} MB): 202 after {results['replay']['acceptedMs']} ms, "
        f"first token after {results['replay']['firstTokenMs']} ms"
    )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
