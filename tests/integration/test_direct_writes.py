"""The direct path (pre-built frames written straight to the transport) against the queued path.

The in-process tests run the real application under uvicorn's real
WebSocket protocol object, with a fake transport that records every byte
and lets the test pause and resume writing, as a slow reader would. Two
connections receive the same published messages; one may use the direct
path, the other is held to the queued path: their streams must be the same
bytes, through stalls, coalescing and a close racing a write.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import urllib.request
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import connect

from tests.server_process import ServerProcess
from tests.timing import scaled
from wirthforge_ws.connection import direct as transport
from wirthforge_ws.connection.connection import Connection
from wirthforge_ws.http.app import create_app
from wirthforge_ws.protocol import messages
from wirthforge_ws.settings import Settings


class RecordingTransport(asyncio.Transport):
    """Keeps what is written; never pushes back by itself (the test calls pause_writing)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8145)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def server_frames(stream: bytes) -> list[bytes]:
    """Split an unmasked server byte stream (after the HTTP response) into whole frames."""
    stream = stream[stream.index(b"\r\n\r\n") + 4 :]
    frames, at = [], 0
    while at < len(stream):
        length, header = stream[at + 1] & 0x7F, 2
        if length == 126:
            length, header = int.from_bytes(stream[at + 2 : at + 4], "big"), 4
        elif length == 127:
            length, header = int.from_bytes(stream[at + 2 : at + 10], "big"), 10
        frames.append(bytes(stream[at : at + header + length]))
        at += header + length
    return frames


def fan_out_frames(stream: bytes) -> list[bytes]:
    """Every frame but this connection's own messages (startup_complete differs by connection id)."""
    return [f for f in server_frames(stream) if b'"startup_complete"' not in f[:64]]


async def open_connection(app: Any, server: Any) -> tuple[WebSocketsSansIOProtocol, RecordingTransport, Connection]:
    config = Config(app=app, ws="websockets-sansio", lifespan="off", log_level="warning")
    config.load()
    protocol = WebSocketsSansIOProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    fake = RecordingTransport()
    protocol.connection_made(fake)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.data_received(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8145\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: wirthforge.1.1\r\n\r\n".encode()
    )
    before = set(server.connections)
    for _ in range(200):
        await asyncio.sleep(0)
        new = set(server.connections) - before
        if new and b"\r\n\r\n" in fake.written:
            break
    (connection,) = set(server.connections) - before
    return protocol, fake, connection


async def drain() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def test_uvicorn_protocol_still_has_what_direct_writes_read() -> None:
    """Fails loudly when a uvicorn upgrade renames what transport.DirectWriter relies on."""
    config = Config(app=lambda *args: None, ws="websockets-sansio")
    config.load()
    protocol = WebSocketsSansIOProtocol(config, ServerState(), {}, asyncio.new_event_loop())
    missing = [name for name in transport.UVICORN_PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)]
    assert not missing, f"uvicorn's WebSocket protocol lacks {missing}: update transport.DirectWriter"
    assert isinstance(protocol.writable, asyncio.Event)
    assert protocol.conn.extensions == []


def frame_delivery(hub: Any, mode: str) -> Any:
    """How a test frame's publishes are delivered: one by one, in a write batch, or as one frame bundle."""
    if mode == "batch":
        return hub.write_batch.collect()
    if mode.startswith("frame"):
        return hub.frame_scope()
    return contextlib.nullcontext()


@pytest.mark.parametrize(
    "mode",
    ["message", "batch", "frame", "frame-channels", "frame-rate"],
    ids=[
        "write-per-message",
        "write-per-frame",
        "frame-bundle",
        "frame-bundle-fewer-channels",
        "frame-bundle-decimated",
    ],
)
async def test_direct_and_queued_paths_send_identical_bytes(mode: str) -> None:
    app = create_app(Settings(council=False, seed=1, persist=False))
    server = app.app.app.state.server  # ExposeTransport -> OriginHostGuard -> FastAPI
    fast_protocol, fast, fast_connection = await open_connection(app, server)
    slow_protocol, queued, queued_connection = await open_connection(app, server)
    queued_connection._direct = None  # held to the queued path (its startup_complete went directly)
    startup_writes = queued_connection.direct_writes
    assert fast_connection._direct is not None, "the direct path is not available under uvicorn"
    partial = mode in ("frame-channels", "frame-rate")  # nobody takes whole frames: message by message
    for connection in (fast_connection, queued_connection):
        if mode == "frame-channels":
            connection.subscriptions = {"energy", "system"}
        if mode == "frame-rate":
            connection.energy_rate = 20.0
            connection.pacer.set_ceiling(20.0)

    def energy(n: int) -> messages.Event:
        return messages.energy_update(
            frame_number=n,
            total_energy=0.5,
            delta_energy=0.0,
            tokens_generated=1,
            processing_time_ms=0.1,
            model_id="m",
            distribution={"generation": 0.2, "attention": 0.2, "reasoning": 0.1},
            evidence=messages.energy_evidence(profile="Dual"),
        )

    def tokens(n: int) -> messages.Event:
        return messages.token_stream(
            tokens=[f" t{n}"], is_complete=False, session_id="s", model_id="m", energy_cost=0.01
        )

    frame = 0
    for phase in ("flowing", "stalled", "flowing again", "closing"):
        if phase == "stalled":  # both sockets push back: messages queue, energy frames coalesce
            fast_protocol.pause_writing()
            slow_protocol.pause_writing()
        if phase == "flowing again":
            fast_protocol.resume_writing()
            slow_protocol.resume_writing()
        if phase == "closing":  # a close racing writes already queued
            fast_protocol.pause_writing()
            slow_protocol.pause_writing()
        for _ in range(20):
            frame += 1
            # As the frame loop does: one batch per frame, so each client gets one write for it.
            with frame_delivery(server.hub, mode):
                server.hub.publish(energy(frame))
                if frame % 3 == 0:
                    server.hub.publish(tokens(frame))
            if phase != "stalled":
                await drain()
        if phase == "closing":
            fast_connection.fail(1013, "slow consumer: test")
            queued_connection.fail(1013, "slow consumer: test")
            fast_protocol.resume_writing()
            slow_protocol.resume_writing()
        await drain()

    assert fast_connection.direct_writes > (5 if partial else 20)
    if mode in ("batch", "frame"):  # two messages in one frame went out in one write
        assert fast.writes < fast_connection.direct_writes
    assert queued_connection.direct_writes == startup_writes
    assert server.hub.stats.coalesced["latest_wins"] > 0, "the stall did not make the queue coalesce"
    fast_frames, queued_frames = fan_out_frames(fast.written), fan_out_frames(queued.written)
    assert len(fast_frames) > (10 if partial else 40)
    if mode == "frame-channels":
        assert not any(b'"token_stream"' in frame[:64] for frame in fast_frames)
    assert fast_frames == queued_frames
    assert fast_frames[-1][:2] == b"\x88" + bytes([len(fast_frames[-1]) - 2])  # both end with the close frame
    for protocol in (fast_protocol, slow_protocol):
        protocol.connection_lost(None)
    await drain()


async def test_direct_path_is_used_by_the_real_server(server: ServerProcess) -> None:
    async with connect(server.ws_url, subprotocols=["wirthforge.1.1"], origin=server.origin) as ws:
        received = 0
        while received < 30:
            await asyncio.wait_for(ws.recv(), scaled(2.0))
            received += 1
        with urllib.request.urlopen(server.http_url + "/health", timeout=scaled(5)) as response:
            (client,) = json.loads(response.read())["connections"]["clients"]
    assert client["directWrites"] >= 20, client


@pytest.mark.parametrize("deflate", [True])
async def test_no_direct_path_with_compression(deflate: bool) -> None:
    with ServerProcess(env={"WF_PERMESSAGE_DEFLATE": "1"}) as compressed:
        async with connect(compressed.ws_url, subprotocols=["wirthforge.1.1"], origin=compressed.origin) as ws:
            for _ in range(10):
                await asyncio.wait_for(ws.recv(), scaled(2.0))
            (client,) = compressed.health()["connections"]["clients"]
    assert client["directWrites"] == 0
