"""Shutdown on SIGTERM/SIGINT, and the frame loop with nobody connected (real server subprocess).

On a signal, connected clients get a close frame (1012, service restart, or
1001, going away) and the process exits promptly and cleanly: the frame loop
and heartbeat tasks are gone, or the process could not exit. With no client
connected the clock keeps ticking at 60 Hz but no frame is built or serialised.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.server_process import ServerProcess
from tests.timing import TIME_FACTOR, scaled, within

EXIT_WITHIN = scaled(2.0)  # seconds from the signal to the process exit


@dataclass
class Shutdown:
    closes: list[tuple[int | None, str]]  # (code, reason) each client received
    exit_seconds: float | None  # from the signal to the exit; None if it did not exit in time
    returncode: int | None
    log: str


async def shut_down(sig: signal.Signals) -> Shutdown:
    """Start a server, connect a 1.0 and a 1.1 client, send *sig*, and watch what happens."""
    with ServerProcess() as server:
        process = server.process
        assert process is not None

        async def until_closed(ws: ClientConnection) -> tuple[int | None, str]:
            try:
                async with asyncio.timeout(EXIT_WITHIN + scaled(1)):
                    while True:
                        await ws.recv()
            except ConnectionClosed:
                pass
            received = ws.protocol.close_rcvd
            return (None, "no close frame") if received is None else (received.code, received.reason)

        clients = [
            await connect(server.ws_url, compression=None, proxy=None, open_timeout=scaled(5)),
            await connect(
                server.ws_url, compression=None, proxy=None, open_timeout=scaled(5), subprotocols=["wirthforge.1.1"]
            ),
        ]
        for ws in clients:  # connected and streaming
            for _ in range(5):
                json.loads(await ws.recv())
        signalled = time.monotonic()
        process.send_signal(sig)
        closes = list(await asyncio.gather(*(until_closed(ws) for ws in clients)))
        try:
            returncode: int | None = await asyncio.to_thread(
                process.wait, max(signalled + EXIT_WITHIN - time.monotonic(), 0.01)
            )
            exit_seconds: float | None = time.monotonic() - signalled
        except subprocess.TimeoutExpired:
            returncode, exit_seconds = None, None  # ServerProcess.__exit__ stops it the hard way
        return Shutdown(closes, exit_seconds, returncode, server.log_text())


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=[signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
async def shutdown(request: pytest.FixtureRequest) -> Shutdown:
    return await shut_down(request.param)


def test_clients_get_a_restart_close_and_the_process_exits_promptly(shutdown: Shutdown) -> None:
    for code, reason in shutdown.closes:
        assert code in (1012, 1001), f"client closed with {code} {reason!r}"
    assert shutdown.exit_seconds is not None, f"still running {EXIT_WITHIN} s after the signal"
    assert shutdown.exit_seconds < EXIT_WITHIN
    assert "Application shutdown complete" in shutdown.log
    assert "background task" not in shutdown.log  # no task died on the way out


def test_exit_is_clean(shutdown: Shutdown) -> None:
    assert shutdown.returncode == 0, f"exit code {shutdown.returncode}; log tail:\n{shutdown.log[-1500:]}"
    assert "Traceback" not in shutdown.log


def test_exits_promptly_with_a_stalled_client(stalled_client: Any) -> None:
    """A client that stopped reading (its writer blocked on a full socket) does not hold up the exit."""
    with ServerProcess(env={"WF_ENABLE_PUBLISH": "1"}) as server:
        assert server.process is not None
        stalled_client(server)
        big = {
            "type": "reward_event",
            "payload": {"rewardType": "feedback", "title": "t", "points": 1, "description": "能" * 500},
        }
        for _ in range(40):  # about 4 MB: more than the socket buffers take, so a send blocks
            server.publish([big] * 50)
        assert server.health()["connections"]["clients"][0]["queued"] > 0, "the stalled client's writer is not blocked"
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_WITHIN} s after SIGTERM with a stalled client")
        assert time.monotonic() - signalled < EXIT_WITHIN


# ---------------------------------------------------------------------------
# The frame loop with nobody connected


def frame_loop(server: ServerProcess) -> dict[str, Any]:
    health = server.health()
    loop: dict[str, Any] = health["frameLoop"]
    loop["connections"] = health["connections"]["count"]
    loop["energyPublished"] = health["messages"]["published"].get("energy_update", 0)
    return loop


async def wait_for_no_connections(server: ServerProcess, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while server.health()["connections"]["count"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert server.health()["connections"]["count"] == 0


async def test_clock_keeps_frame_time_and_builds_nothing_without_clients(server: ServerProcess) -> None:
    # Frames are built while someone listens (so the counter below can move at all) ...
    before_client = frame_loop(server)
    async with connect(server.ws_url, compression=None, proxy=None, open_timeout=scaled(5)) as ws:
        for _ in range(20):
            await ws.recv()
    await wait_for_no_connections(server)
    after_client = frame_loop(server)
    assert after_client["framesBuilt"] > before_client["framesBuilt"]

    # ... and not while nobody does. Frame numbers keep advancing at 60 Hz,
    # but the idle clock wakes only ~10 times a second.
    await asyncio.sleep(0.2)
    first, started = frame_loop(server), time.monotonic()
    await asyncio.sleep(1.5)
    second, elapsed = frame_loop(server), time.monotonic() - started
    assert first["connections"] == second["connections"] == 0
    assert second["idle"] is True
    assert second["framesBuilt"] == first["framesBuilt"], "frames were built with no client connected"
    assert second["energyPublished"] == first["energyPublished"], "energy_update serialised with no client"
    frame_rate = (second["frameNumber"] - first["frameNumber"]) / elapsed
    assert within(frame_rate, 55.0, 65.0), f"frame time advanced at {frame_rate:.1f} Hz with no clients"
    wake_rate = (second["idleTicks"] - first["idleTicks"]) / elapsed
    assert 7.0 / TIME_FACTOR <= wake_rate <= 13.0 * TIME_FACTOR, f"{wake_rate:.1f} idle wake-ups/s"
    assert second["ticks"] == first["ticks"], "active ticks while idle"
    assert second["framesSkipped"] == first["framesSkipped"]


async def test_clock_returns_to_60_hz_when_a_client_connects(server: ServerProcess) -> None:
    await wait_for_no_connections(server)
    await asyncio.sleep(0.3)
    assert frame_loop(server)["idle"] is True

    numbers: list[int] = []
    async with connect(server.ws_url, compression=None, proxy=None, open_timeout=scaled(5)) as ws:
        started = time.monotonic()
        heartbeat: dict[str, Any] = {}
        while time.monotonic() - started < 1.6:
            message = json.loads(await asyncio.wait_for(ws.recv(), scaled(2)))
            if message["type"] == "energy_update":
                numbers.append(message["frameNumber"])
            elif message["type"] == "heartbeat":
                heartbeat = message["payload"]
    steps = [b - a for a, b in zip(numbers, numbers[1:])]
    assert len(numbers) >= 85 / TIME_FACTOR, f"only {len(numbers)} frames in 1.6 s after leaving idle"
    assert max(steps) == 1, f"frame steps after leaving idle: {sorted(set(steps))}"
    assert within(heartbeat["frameRate"], 55.0, 65.0), heartbeat
