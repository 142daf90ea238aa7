#!/usr/bin/env python
"""Scale benchmark: 1 to 1,000 clients at 60 Hz, the project beside a bare broadcast server.

    .venv/bin/python benchmarks/scale.py                          # 1, 10, 100, 500, 1000 clients, both servers
    .venv/bin/python benchmarks/scale.py --clients 100,500 --duration 10 --servers project
    .venv/bin/python benchmarks/scale.py --plot-only              # redraw docs/scale.svg from the last results

For each client count, each server runs as its own process (the project via
``tests/server_process.py``, the baseline ``benchmarks/baseline_server.py``)
and the clients come from separate load processes started by this script.
Everything runs on loopback and stops by itself (each load process has a
hard alarm; the harness stops every process on exit).

The load client is deliberately lean, so that it is not the bottleneck: an
``asyncio.Protocol`` per connection that splits the server's unmasked frames
by hand and reads ``frameNumber``, ``timestamp`` and ``type`` with one regular
expression on the first bytes, without parsing JSON. Its CPU per message is
reported (``client_us_per_message``) beside the server's, and the number of
load processes grows with the client count (one per 250 clients, at least 2
past 100), so the harness can show that the clients had CPU to spare. The
load processes run as SCHED_BATCH tasks by default (``--client-sched``):
every frame wakes them, and on a 2-core machine woken load processes would
otherwise preempt the server they measure; as batch tasks they still get
all the CPU the server leaves, they just wait their turn.

The bare server (``baseline``) sends the project's whole stream, message for
message, so that both put the same bytes on the wire; ``baseline-energy``
sends energy_update only (see baseline_server.py).

Per run it records: achieved rate per client (mean and minimum), frames
delivered (received / due over each client's frame-number span), frame gaps,
latency (client receive wall time minus message timestamp, same machine),
reliable messages lost (the harness publishes one numbered ``reward_event``
per second through ``POST /publish``; the baseline has no such route),
server CPU, RSS per connection, and tick lateness from ``/health``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.server_process import ServerProcess, free_port  # noqa: E402
from wirthforge_ws.stream.rolling import percentile  # noqa: E402

# The bare server's variants: the project's whole stream (same bytes on the wire), or energy_update only.
BASELINES = {"baseline": "full", "baseline-energy": "energy"}
RESULTS = HERE / "results" / "scale-results.json"
PLOT = ROOT / "docs" / "scale.svg"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CLIENTS_PER_PROCESS = 250
_HEAD = re.compile(rb'"type":"([a-z_]+)".*?"timestamp":([0-9.]+)(?:.*?"frameNumber":([0-9]+))?')


# ---------------------------------------------------------------------------
# The load client (runs in its own process: ``scale.py _client``)


class _Client(asyncio.Protocol):
    """One WebSocket connection that counts what it receives; never sends after the handshake."""

    def __init__(self, stats: _Stats) -> None:
        self.stats = stats
        self.buffer = bytearray()
        self.open = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_frame: int | None = None
        self.frames = 0
        self.first_frame: int | None = None
        self.window_last_frame: int | None = None
        self.gaps = 0
        self.rewards = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(bytes(buffer[:80]).decode(errors="replace")))
                return
            del buffer[: end + 4]
            self.open = True
            self.opened.set_result(None)
        now_ms = time.time_ns() / 1e6
        at, size = 0, len(buffer)
        while size - at >= 2:
            length, header = buffer[at + 1] & 0x7F, 2
            if length == 126:
                if size - at < 4:
                    break
                length, header = int.from_bytes(buffer[at + 2 : at + 4], "big"), 4
            elif length == 127:
                if size - at < 10:
                    break
                length, header = int.from_bytes(buffer[at + 2 : at + 10], "big"), 10
            if size - at < header + length:
                break
            if buffer[at] & 0x0F == 1:  # text
                self._message(bytes(buffer[at + header : at + header + min(length, 200)]), now_ms)
            at += header + length
        del buffer[:at]

    def _message(self, head: bytes, now_ms: float) -> None:
        match = _HEAD.search(head)
        if match is None:
            return
        kind = match.group(1)
        stats = self.stats
        if kind == b"energy_update" and match.group(3) is not None:
            frame = int(match.group(3))
            if self.last_frame is not None and frame > self.last_frame + 1:
                if stats.recording:
                    self.gaps += frame - self.last_frame - 1
            self.last_frame = frame
            if stats.recording:
                if self.first_frame is None:
                    self.first_frame = frame
                self.window_last_frame = frame
                self.frames += 1
                stats.latencies.append(now_ms - float(match.group(2)))
        elif kind == b"reward_event":
            self.rewards += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.lost += 1


class _Stats:
    def __init__(self) -> None:
        self.recording = False
        self.latencies: list[float] = []
        self.lost = 0


async def _client_main(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stats = _Stats()
    clients: list[_Client] = []
    failures = 0
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: wirthforge.1.1\r\n\r\n"
    ).encode()
    for _ in range(args.n):  # one at a time: a burst of 1,000 handshakes measures the accept queue, not fan-out
        try:
            _, client = await asyncio.wait_for(loop.create_connection(lambda: _Client(stats), args.host, args.port), 10)
            client.transport.write(request)
            await asyncio.wait_for(client.opened, 10)
            clients.append(client)
        except (TimeoutError, OSError, ConnectionError):
            failures += 1
    await asyncio.sleep(max(args.start - time.time(), 0))
    stats.recording = True
    cpu0 = time.process_time()
    rewards0 = [c.rewards for c in clients]
    await asyncio.sleep(max(args.end - time.time(), 0))
    stats.recording = False
    cpu = time.process_time() - cpu0
    rewards = [c.rewards - r0 for c, r0 in zip(clients, rewards0)]
    # Rewards published at the very end of the window may still be on their way.
    await asyncio.sleep(0.3)
    rewards_late = [c.rewards - r0 for c, r0 in zip(clients, rewards0)]
    for client in clients:
        client.transport.abort()
    return {
        "connected": len(clients),
        "failures": failures,
        "lost_during_run": stats.lost,
        "cpu_seconds": cpu,
        "frames": [c.frames for c in clients],
        "spans": [(c.window_last_frame - c.first_frame + 1) if c.first_frame is not None else 0 for c in clients],
        "gaps": sum(c.gaps for c in clients),
        "rewards": rewards_late,
        "rewards_in_window": rewards,
        "latencies": stats.latencies,
    }


def client_entry(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="scale.py _client")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--start", type=float, required=True, help="wall clock (s) when recording starts")
    parser.add_argument("--end", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sched", choices=("batch", "normal"), default="batch")
    args = parser.parse_args(argv)
    limit = args.end - time.time() + 20
    if not 0 < limit < 900:
        raise SystemExit("the recording window must end within 15 minutes")
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))  # bounded whatever happens
    signal.alarm(int(limit) + 1)
    if args.sched == "batch":
        # Woken by every frame, the load processes would otherwise preempt the server under test
        # on this 2-core machine; as batch tasks they still get all idle CPU, but wait their turn.
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    import uvloop

    Path(args.out).write_text(json.dumps(uvloop.run(_client_main(args))))


# ---------------------------------------------------------------------------
# The harness


class BaselineProcess:
    """benchmarks/baseline_server.py on a free loopback port, shaped like ServerProcess."""

    def __init__(self, stream: str = "full") -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.stream = stream
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BaselineProcess:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "baseline_server.py"), "--port", str(self.port), "--stream", self.stream],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.health()
                return self
            time.sleep(0.05)
        raise TimeoutError("the baseline server did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.http_url + "/health", timeout=5) as response:
            return json.loads(response.read())

    def publish(self, message: dict[str, Any]) -> None:
        pass  # the bare server has no reliable channel to test


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def running(kind: str) -> Iterator[Any]:
    if kind in BASELINES:
        with BaselineProcess(BASELINES[kind]) as server:
            yield server
    else:
        with ServerProcess(env={"WF_SEED": "7", "WF_ENABLE_PUBLISH": "1", "WF_SOURCE": "sim"}) as server:
            yield server


def run(kind: str, clients: int, duration: float, tmpdir: str, sched: str = "batch") -> dict[str, Any]:
    procs = (
        max(1, math.ceil(clients / CLIENTS_PER_PROCESS))
        if clients <= 100
        else max(2, math.ceil(clients / CLIENTS_PER_PROCESS))
    )
    print(f"  {kind:15s} {clients:5d} clients, {procs} load process(es), {duration:g} s ...", end="", flush=True)
    with running(kind) as server:
        pid = server.process.pid
        time.sleep(0.5)
        rss_idle = rss_kib(pid)
        connect_time = 2.0 + clients * 0.004  # one handshake at a time per load process
        start = time.time() + connect_time + 2.0
        end = start + duration
        sizes = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        started = []
        for i, size in enumerate(sizes):
            out = os.path.join(tmpdir, f"{kind}-{clients}-{i}.json")
            started.append(
                (
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "_client",
                            "--port",
                            str(server.port),
                            "--n",
                            str(size),
                            "--start",
                            repr(start),
                            "--end",
                            repr(end),
                            "--out",
                            out,
                            "--sched",
                            sched,
                        ],
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    ),
                    out,
                )
            )
        time.sleep(max(start - time.time(), 0))
        cpu0, t0, health0 = cpu_seconds(pid), time.monotonic(), server.health()
        published = 0
        while time.time() < end - 1.0 and published < 3600:  # one numbered reliable message per second
            server.publish(
                {"type": "reward_event", "payload": {"rewardType": "milestone", "title": f"r{published}", "points": 1}}
            )
            published += 1
            time.sleep(max(min(1.0, end - 1.0 - time.time()), 0))
        time.sleep(max(end - time.time(), 0))
        cpu1, t1, health1 = cpu_seconds(pid), time.monotonic(), server.health()
        rss_end = rss_kib(pid)
        results = []
        for process, out in started:
            _, err = process.communicate(timeout=60)
            if process.returncode != 0:
                raise RuntimeError(f"load client failed: {err.decode(errors='replace')[-1500:]}")
            results.append(json.loads(Path(out).read_text()))
    if kind in BASELINES:
        published = 0
    frames = [f for r in results for f in r["frames"]]
    spans = [s for r in results for s in r["spans"]]
    latencies = sorted(x for r in results for x in r["latencies"])
    rewards = [x for r in results for x in r["rewards"]]
    elapsed = t1 - t0
    client_cpu = sum(r["cpu_seconds"] for r in results)
    messages = max(sum(frames), 1)
    lateness = health1["frameLoop"]["tickLatenessMs"]
    result = {
        "server": kind,
        "clients": clients,
        "connected": sum(r["connected"] for r in results),
        "load_processes": procs,
        "duration_s": round(elapsed, 2),
        "hz_mean": round(sum(frames) / len(frames) / duration, 3) if frames else None,
        "hz_min": round(min(frames) / duration, 3) if frames else None,
        "delivered_pct": round(100.0 * sum(frames) / max(sum(spans), 1), 3),
        "frame_gaps": sum(r["gaps"] for r in results),
        "server_ticks_hz": round((health1["frameLoop"]["ticks"] - health0["frameLoop"]["ticks"]) / elapsed, 3),
        "server_frames_skipped": health1["frameLoop"]["framesSkipped"] - health0["frameLoop"]["framesSkipped"],
        "tick_lateness_ms": lateness,
        "frame_processing_ms": health1["frameLoop"].get("processingMs"),
        "latency_ms": {
            "median": _round(percentile(latencies, 0.5)),
            "p99": _round(percentile(latencies, 0.99)),
            "max": _round(latencies[-1] if latencies else None),
        },
        "reliable_published": published,
        "reliable_lost": sum(max(published - x, 0) for x in rewards) if published else 0,
        "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / elapsed, 1),
        "server_us_per_message": round(1e6 * (cpu1 - cpu0) / messages, 2),
        "client_cpu_pct": round(100.0 * client_cpu / elapsed, 1),
        "client_us_per_message": round(1e6 * client_cpu / messages, 2),
        "rss_kib": {"idle": rss_idle, "end": rss_end},
        "rss_per_connection_kib": round((rss_end - rss_idle) / clients, 1) if clients else None,
        "client_sched": sched,
        "loadavg": os.getloadavg(),
    }
    print(
        f" {result['hz_mean']} Hz (min {result['hz_min']}), delivered {result['delivered_pct']} %, "
        f"p99 {result['latency_ms']['p99']} ms, server CPU {result['server_cpu_pct']} %, "
        f"clients CPU {result['client_cpu_pct']} %, lost {result['reliable_lost']}",
        flush=True,
    )
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ---------------------------------------------------------------------------
# Report


def knee(runs: list[dict[str, Any]], kind: str) -> int | None:
    """The smallest client count where the rate or the latency broke (< 59.9 Hz, < 99.9 % delivered, p99 > 50 ms)."""
    for r in sorted((r for r in runs if r["server"] == kind), key=lambda r: r["clients"]):
        if (r["hz_mean"] or 0) < 59.9 or r["delivered_pct"] < 99.9 or (r["latency_ms"]["p99"] or 0) > 50:
            return r["clients"]
    return None


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| server | clients | Hz mean / min | delivered | gaps | latency median / p99 ms | tick lateness p99 ms "
        "| server CPU % | µs/msg server | clients CPU % | RSS/conn KiB | reliable lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['server']} | {r['clients']} | {r['hz_mean']} / {r['hz_min']} | {r['delivered_pct']} % "
            f"| {r['frame_gaps']} | {r['latency_ms']['median']} / {r['latency_ms']['p99']} "
            f"| {r['tick_lateness_ms'].get('p99')} | {r['server_cpu_pct']} | {r['server_us_per_message']} "
            f"| {r['client_cpu_pct']} | {r['rss_per_connection_kib']} "
            f"| {r['reliable_lost'] if r['server'] == 'project' else '—'} |"
        )
    for kind in ("project", *BASELINES):
        if any(r["server"] == kind for r in runs):
            found = knee(runs, kind)
            lines.append(
                f"\nKnee of {kind}: {found if found else 'none up to ' + str(max(r['clients'] for r in runs))}"
                + (" clients" if found else "")
            )
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path = PLOT) -> None:
    """A small SVG: achieved Hz and latency p99 against client count, both servers."""
    width, height, left, bottom, top = 640, 300, 60, 40, 20
    counts = sorted({r["clients"] for r in runs})
    xs = {c: left + (width - left - 60) * i / max(len(counts) - 1, 1) for i, c in enumerate(counts)}
    max_p99 = max([r["latency_ms"]["p99"] or 0 for r in runs] + [1.0])

    hz_low, hz_high = 54.0, 61.0  # zoomed on the target: a rate below 54 Hz is drawn at the bottom

    def y_hz(hz: float) -> float:
        return top + (height - top - bottom) * (1 - (min(max(hz, hz_low), hz_high) - hz_low) / (hz_high - hz_low))

    def y_ms(ms: float) -> float:
        return top + (height - top - bottom) * (1 - ms / (max_p99 * 1.1))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="14">Achieved Hz (solid, left axis, 54-61) and latency p99 (dashed, right axis, '
        f"max {max_p99:.0f} ms) by client count</text>",
    ]
    for c, x in xs.items():
        parts.append(f'<text x="{x:.0f}" y="{height - 20}" text-anchor="middle">{c}</text>')
    for hz in (54, 57, 60):
        parts.append(
            f'<text x="{left - 6}" y="{y_hz(hz) + 4:.0f}" text-anchor="end">{hz}</text>'
            f'<line x1="{left}" x2="{width - 60}" y1="{y_hz(hz):.0f}" y2="{y_hz(hz):.0f}" stroke="#ddd"/>'
        )
    for fraction in (0.0, 0.5, 1.0):
        ms = max_p99 * 1.1 * fraction
        parts.append(f'<text x="{width - 56}" y="{y_ms(ms) + 4:.0f}" fill="#666">{ms:.0f} ms</text>')
    colours = {"project": "#c0392b", "baseline": "#2c3e50", "baseline-energy": "#7f8c8d"}
    for row, (kind, colour) in enumerate(colours.items()):
        mine = sorted((r for r in runs if r["server"] == kind), key=lambda r: r["clients"])
        if not mine:
            continue
        hz = " ".join(f"{xs[r['clients']]:.0f},{y_hz(r['hz_mean'] or 0):.0f}" for r in mine)
        ms = " ".join(f"{xs[r['clients']]:.0f},{y_ms(r['latency_ms']['p99'] or 0):.0f}" for r in mine)
        parts.append(f'<polyline points="{hz}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<polyline points="{ms}" fill="none" stroke="{colour}" stroke-width="1.5" stroke-dasharray="5,4"/>'
        )
        parts.append(f'<text x="{left + 10 + 150 * row}" y="{height - 4}" fill="{colour}">— {kind}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_client":
        client_entry(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,10,100,500,1000", help="comma-separated client counts")
    parser.add_argument(
        "--servers",
        default="project,baseline",
        help="comma-separated: project, baseline (the same stream), baseline-energy (energy_update only)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="recording window per run, seconds")
    parser.add_argument(
        "--client-sched",
        choices=("batch", "normal"),
        default="batch",
        help="scheduling class of the load processes (batch: they do not preempt the server)",
    )
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from --results")
    args = parser.parse_args(argv)
    if args.plot_only:
        runs = json.loads(Path(args.results).read_text())["runs"]
    else:
        counts = [int(c) for c in args.clients.split(",") if c.strip()]
        kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
        if not 0 < args.duration <= 120 or max(counts) > 2000:
            parser.error("duration must be within (0, 120] s and clients at most 2000")
        runs = []
        with tempfile.TemporaryDirectory(prefix="wf-scale-") as tmpdir:
            for clients in counts:
                for kind in kinds:
                    runs.append(run(kind, clients, args.duration, tmpdir, args.client_sched))
        Path(args.results).write_text(
            json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(), "runs": runs}, indent=1)
            + "\n"
        )
    print(table(runs))
    # The plot in docs/ follows the default results file only: trial runs elsewhere leave it alone.
    plot_path = PLOT if Path(args.results).resolve() == RESULTS else Path(args.results).with_suffix(".svg")
    plot(runs, plot_path)
    print(f"results: {args.results}; plot: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
