"""Latency and frame-rate suite: the numbers the upstream design promises.

As a pytest suite it starts the real server on a free loopback port and
connects 1 and 10 real clients (``wirthforge_ws.client``), then asserts the
upstream bounds with margin for a noisy CI machine: latency median < 5 ms
and P99 < 10 ms, 60 ± 5 Hz, and no frame gaps for a healthy client. Our
tighter targets (median <= 1 ms, P99 <= 2 ms) are measured by
``benchmarks/bench.py`` and reported in docs/PERFORMANCE.md.

As a script it measures a running server and prints a report::

    python test_latency.py --url ws://127.0.0.1:8145/ws --clients 10 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from tests.server_process import ServerProcess
from tests.timing import scaled
from wirthforge_ws.client import ClientStats, WirthforgeClient, percentile

MEDIAN_BOUND_MS = 5.0
P99_BOUND_MS = 10.0
RATE_HZ, RATE_TOLERANCE_HZ = 60.0, 5.0


@dataclass
class ClientResult:
    latencies_ms: list[float]
    frames: int
    seconds: float
    frame_gaps: int
    frames_missed: int
    max_frame_step: int
    reconnects: int

    @property
    def rate_hz(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class LatencyReport:
    clients: list[ClientResult]
    protocol: str
    server_skipped: int | None = None  # frames the server's clock skipped during the run (from /health)

    @property
    def latencies_ms(self) -> list[float]:
        return [value for client in self.clients for value in client.latencies_ms]

    def summary(self) -> dict[str, Any]:
        values = self.latencies_ms
        rates = [client.rate_hz for client in self.clients]
        return {
            "protocol": self.protocol,
            "clients": len(self.clients),
            "frames": sum(client.frames for client in self.clients),
            "median_ms": round(percentile(values, 0.5) or 0.0, 3) if values else None,
            "p99_ms": round(percentile(values, 0.99) or 0.0, 3) if values else None,
            "max_ms": round(max(values), 3) if values else None,
            "rate_hz_min": round(min(rates), 2) if rates else None,
            "rate_hz_max": round(max(rates), 2) if rates else None,
            "frame_gaps": sum(client.frame_gaps for client in self.clients),
            "frames_missed_max": max((client.frames_missed for client in self.clients), default=0),
            "server_skipped": self.server_skipped,
            "max_frame_step": max((client.max_frame_step for client in self.clients), default=0),
            "reconnects": sum(client.reconnects for client in self.clients),
        }

    def text(self) -> str:
        s = self.summary()
        return (
            f"{s['clients']} client(s), protocol {s['protocol']}, {s['frames']} frames\n"
            f"  latency  median {s['median_ms']} ms   P99 {s['p99_ms']} ms   max {s['max_ms']} ms\n"
            f"  rate     {s['rate_hz_min']} .. {s['rate_hz_max']} Hz per client\n"
            f"  gaps     {s['frame_gaps']} (largest frame step {s['max_frame_step']}, at most {s['frames_missed_max']}"
            f" frames missed by a client; the server's clock skipped {s['server_skipped']})"
            f"   reconnects {s['reconnects']}"
        )


async def measure(
    url: str, *, clients: int = 1, duration: float = 3.0, protocol: str = "1.1", warmup: float = 0.5
) -> LatencyReport:
    """Connect *clients* clients, discard *warmup* seconds, then record for *duration* seconds."""
    recording = False
    samples: list[list[float]] = [[] for _ in range(clients)]
    frames = [0] * clients

    def recorder(index: int) -> Any:
        def on_message(message: dict[str, Any]) -> None:
            if recording and message.get("type") == "energy_update":
                samples[index].append(time.time_ns() / 1e6 - message["timestamp"])
                frames[index] += 1

        return on_message

    connections = [WirthforgeClient(url, protocol=protocol, on_message=recorder(i)) for i in range(clients)]
    for client in connections:
        client.start()
    try:
        await asyncio.gather(*(client.wait_connected(timeout=scaled(10)) for client in connections))
        await asyncio.sleep(warmup)
        gaps_before = [(client.stats.gaps.gaps, client.stats.gaps.frames_missed) for client in connections]
        skipped_before = await asyncio.to_thread(server_frames_skipped, url)
        recording, started = True, time.monotonic()
        await asyncio.sleep(duration)
        recording, elapsed = False, time.monotonic() - started
        skipped_after = await asyncio.to_thread(server_frames_skipped, url)
        results = []
        for index, client in enumerate(connections):
            stats: ClientStats = client.stats
            gaps, missed = gaps_before[index]
            results.append(
                ClientResult(
                    samples[index],
                    frames[index],
                    elapsed,
                    stats.gaps.gaps - gaps,
                    stats.gaps.frames_missed - missed,
                    stats.gaps.max_step,
                    stats.reconnects,
                )
            )
    finally:
        await asyncio.gather(*(client.close() for client in connections), return_exceptions=True)
    skipped = None if skipped_before is None or skipped_after is None else skipped_after - skipped_before
    return LatencyReport(results, protocol, skipped)


def server_frames_skipped(ws_url: str) -> int | None:
    """framesSkipped from the server's /health, or None if it cannot be read."""
    parts = urllib.parse.urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{parts.netloc}/health", timeout=scaled(5)) as response:
            return int(json.loads(response.read())["frameLoop"]["framesSkipped"])
    except (OSError, ValueError, KeyError):
        return None


def assert_upstream_bounds(report: LatencyReport) -> None:
    s = report.summary()
    assert s["median_ms"] is not None and s["median_ms"] < MEDIAN_BOUND_MS, report.text()
    assert s["p99_ms"] < P99_BOUND_MS, report.text()
    assert RATE_HZ - RATE_TOLERANCE_HZ <= s["rate_hz_min"] <= s["rate_hz_max"] <= RATE_HZ + RATE_TOLERANCE_HZ, (
        report.text()
    )
    # A healthy client loses no frame the server produced. On an overloaded
    # machine the server's clock may skip ticks (frameNumber jumps, counted
    # in /health framesSkipped); those are not transport losses.
    allowed = report.server_skipped or 0
    assert all(client.frames_missed <= allowed for client in report.clients), report.text()
    assert s["reconnects"] == 0, report.text()


# ---------------------------------------------------------------------------
# pytest


@pytest.fixture(scope="module")
def server():
    with ServerProcess() as running:
        yield running


@pytest.mark.parametrize("clients", [1, 10])
@pytest.mark.parametrize("protocol", ["1.0", "1.1"])
def test_latency_and_rate_within_upstream_bounds(server: ServerProcess, clients: int, protocol: str) -> None:
    report = asyncio.run(measure(server.ws_url, clients=clients, duration=3.0, protocol=protocol))
    print("\n" + report.text())
    assert_upstream_bounds(report)


def test_server_reports_its_own_frame_clock(server: ServerProcess) -> None:
    async def health_while_watched() -> dict[str, Any]:
        async with WirthforgeClient(server.ws_url) as client:
            await client.wait_connected(timeout=scaled(10))
            await asyncio.sleep(2.2)  # a full rate window of active ticks
            return await asyncio.to_thread(server.health)

    loop = asyncio.run(health_while_watched())["frameLoop"]
    assert loop["idle"] is False
    assert abs(loop["achievedHz"] - RATE_HZ) <= RATE_TOLERANCE_HZ
    assert loop["tickLatenessMs"]["p99"] < 16.67
    # A frame that takes longer than its budget on an idle machine is a bug; one
    # descheduled in the middle on a busy 2-core machine is not: allow 1 %.
    assert loop["budgetOverruns"] <= loop["ticks"] * 0.01


# ---------------------------------------------------------------------------
# script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure latency and frame rate of a running WIRTHFORGE server.")
    parser.add_argument("--url", default="ws://127.0.0.1:8145/ws")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--protocol",
        choices=["1.0", "1.1"],
        default="1.1",
        help="1.1 timestamps carry microseconds; 1.0 rounds down to whole milliseconds",
    )
    args = parser.parse_args(argv)
    report = asyncio.run(measure(args.url, clients=args.clients, duration=args.duration, protocol=args.protocol))
    print(report.text())
    try:
        assert_upstream_bounds(report)
    except AssertionError:
        print("FAIL: outside the upstream bounds (median < 5 ms, P99 < 10 ms, 60 ± 5 Hz, no gaps)")
        return 1
    print("PASS: within the upstream bounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
