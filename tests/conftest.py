"""Shared fixtures: a real server per test module, its WebSocket URL, a frame watcher, stalled clients.

Test modules that need a differently configured server start their own
``ServerProcess``; a module may also override ``server`` with its own fixture.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.server_process import ServerProcess
from tests.timing import TIME_FACTOR, scaled

FRAME_RATE = 60.0

# In-process servers and settings of the existing suite use the simulator
# (deterministic, nothing to load); tests of real models set their source.
os.environ.setdefault("WF_SOURCE", "sim")


@pytest.hookimpl(trylast=True)  # after pytest-timeout has read --timeout
def pytest_configure(config: pytest.Config) -> None:
    """Keep every test and server out of the user's data directory; stretch the per-test timeout too."""
    if "WF_TEST_KEEP_DATA_HOME" not in os.environ:
        os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="wf-test-data-")
    if getattr(config, "_env_timeout", None):
        config._env_timeout = scaled(config._env_timeout)  # type: ignore[attr-defined]


# The test process measures latency and frame age on its own clients, so its
# own pauses count against the server. With the whole suite loaded, a full
# (generation 2) collection walks a few hundred thousand objects: measured
# with gc.callbacks over a full run, 12 of them stopped the process for
# 50-139 ms during tests, enough to fail a 100 ms latency bound now and then.
# Freezing what is alive between tests keeps those collections to what the
# current tests allocate: 7 pauses of 50-73 ms in the same measurement.
FREEZE_EVERY_TESTS = 50
_tests_since_freeze = 0


def _freeze_heap() -> None:
    gc.collect()
    gc.freeze()  # survivors move to the permanent generation: later collections skip them


def pytest_collection_finish(session: pytest.Session) -> None:
    _freeze_heap()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    global _tests_since_freeze
    _tests_since_freeze += 1
    if _tests_since_freeze >= FREEZE_EVERY_TESTS:
        _tests_since_freeze = 0
        _freeze_heap()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """The real server (subprocess) on a free loopback port, with POST /publish enabled."""
    with ServerProcess(env={"WF_ENABLE_PUBLISH": "1"}) as process:
        yield process


@pytest.fixture
def ws_url(server: ServerProcess) -> str:
    return server.ws_url


class FrameWatcher:
    """A well-behaved protocol 1.1 client that records every energy_update it receives.

    Each record is (monotonic arrival time, frameNumber, latency ms), where
    latency is wall-clock arrival minus the message timestamp (same machine,
    same clock). Use as ``async with FrameWatcher(url) as watcher:``.
    """

    def __init__(self, url: str, *, channels: str | None = None, server: ServerProcess | None = None) -> None:
        self.url = url + (f"?channels={channels}" if channels else "")
        self.server = server  # if given, a failure message tells what the server saw (skips, CPU wait)
        self._marks: dict[float, dict[str, float]] = {}
        self.frames: list[tuple[float, int, float]] = []
        self.closed: ConnectionClosed | None = None
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FrameWatcher:
        self._ws = await connect(
            self.url,
            compression=None,
            proxy=None,
            open_timeout=scaled(5),
            close_timeout=1,
            subprotocols=["wirthforge.1.1"],
        )
        self._task = asyncio.create_task(self._read())
        deadline = time.monotonic() + scaled(3.0)
        while len(self.frames) < 10 and time.monotonic() < deadline:  # warmed up and flowing
            await asyncio.sleep(0.02)
        if len(self.frames) < 10:
            await self.__aexit__()
            raise AssertionError("the watcher receives no energy frames")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None and self._ws is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._ws.close()

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for text in self._ws:
                wall_ms, arrival = time.time() * 1000.0, time.monotonic()
                if '"energy_update"' in text[:40]:
                    message: dict[str, Any] = json.loads(text)
                    self.frames.append((arrival, message["frameNumber"], wall_ms - message["timestamp"]))
        except ConnectionClosed as closed:
            self.closed = closed

    def mark(self) -> float:
        """Now (monotonic), remembering the server's counters for a failure message."""
        now = time.monotonic()
        if self.server is not None:
            self._marks[now] = self._server_counters()
        return now

    def _server_counters(self) -> dict[str, float]:
        assert self.server is not None and self.server.process is not None
        health = self.server.health()
        pid = self.server.process.pid
        with open(f"/proc/{pid}/task/{pid}/schedstat") as stat:  # ns on CPU, ns waiting for a CPU, slices
            waiting_ns = int(stat.read().split()[1])
        return {
            "framesSkipped": health["frameLoop"]["framesSkipped"],
            "latestWins": health["messages"]["coalesced"].get("latest_wins", 0),
            "cpuWaitMs": waiting_ns / 1e6,
            "maxTickLatenessMs": health["frameLoop"]["tickLatenessMs"]["max"] or 0.0,
        }

    def diagnosis(self, start: float) -> str:
        """What the server saw since mark() returned *start* (empty without a server)."""
        if self.server is None or start not in self._marks:
            return ""
        before, after = self._marks[start], self._server_counters()
        return (
            f"; server since start: +{after['framesSkipped'] - before['framesSkipped']:g} frames skipped, "
            f"+{after['latestWins'] - before['latestWins']:g} coalesced, "
            f"waited {after['cpuWaitMs'] - before['cpuWaitMs']:.1f} ms for a CPU, "
            f"max tick lateness (10 s window) {after['maxTickLatenessMs']} ms"
        )

    def window(self, start: float, end: float) -> list[tuple[float, int, float]]:
        return [frame for frame in self.frames if start <= frame[0] <= end]

    def assert_steady(self, start: float, end: float, *, max_median_latency_ms: float | None = None) -> None:
        """~60 Hz and no frameNumber gap between monotonic times *start* and *end*.

        The rate bound (+-10 %) is widened by the test time factor (tests/timing.py).
        """
        assert self.closed is None, f"the well-behaved client was closed: {self.closed}"
        frames = self.window(start, end)
        duration = end - start
        rate = len(frames) / duration
        numbers = [number for _, number, _ in frames]
        gaps = [(a, b) for a, b in zip(numbers, numbers[1:]) if b != a + 1]
        assert not gaps, f"frame gaps (frameNumber before, after) in {duration:.2f} s: {gaps[:10]}" + self.diagnosis(
            start
        )
        low, high = 0.9 * FRAME_RATE / TIME_FACTOR, 1.1 * FRAME_RATE * TIME_FACTOR
        assert low <= rate <= high, f"{len(frames)} frames in {duration:.2f} s = {rate:.1f} Hz"
        if max_median_latency_ms is not None:
            latencies = sorted(latency for _, _, latency in frames)
            median = latencies[len(latencies) // 2]
            assert median < max_median_latency_ms, f"median latency {median:.2f} ms"


@pytest.fixture
def frame_watcher() -> type[FrameWatcher]:
    """The :class:`FrameWatcher` class (a fixture, so test modules need not import conftest)."""
    return FrameWatcher


def open_stalled_client(server: ServerProcess) -> socket.socket:
    """A WebSocket client (protocol 1.0) that completes the handshake by hand and then never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: it fills quickly
    sock.settimeout(5)
    sock.connect((server.host, server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {server.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 4096:
        head += sock.recv(1)  # byte by byte: read nothing past the response head
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return sock


@pytest.fixture
def stalled_client() -> Iterator[Callable[[ServerProcess], socket.socket]]:
    """Opens clients that never read (closed at teardown): ``sock = stalled_client(server)``."""
    opened: list[socket.socket] = []

    def open_one(server: ServerProcess) -> socket.socket:
        opened.append(open_stalled_client(server))
        return opened[-1]

    yield open_one
    for sock in opened:
        sock.close()
