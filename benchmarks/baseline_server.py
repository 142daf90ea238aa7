#!/usr/bin/env python
"""A bare broadcast server: the floor the project's fan-out is measured against.

What it does per frame is the least a 60 Hz push server can do: build each
message as a JSON text (protocol 1.1 envelope), serialise it once with orjson
and hand it to ``websockets.broadcast``, which writes it to every connection.
No validation, no per-connection queue, no latest-wins, no resume, no limits.
The frame clock uses absolute deadlines like the project's, so rates compare.

``--stream full`` (the default) sends the same stream as the project's
simulator, message for message in type, size and rate: an energy_update
every frame, an energy_field every 6th, token_stream, interference and
resonance events, one reward_event a second (the harness's POST /publish on
the project) and each connection's own heartbeat once a second, so that both
servers put the same bytes on the wire. ``--stream energy`` sends only the
energy_update, the floor of floors.

It answers ``GET /health`` with the few ``frameLoop`` fields the benchmark
harness reads (ticks, framesSkipped, budgetOverruns, tick lateness), so the
same load runs drive both servers.

    .venv/bin/python benchmarks/baseline_server.py --port 8150
"""

from __future__ import annotations

import argparse
import asyncio
import http
import json
import math
import secrets
import signal
import time
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

FRAME_RATE = 60.0
SUBPROTOCOLS = ["wirthforge.1.1", "wirthforge.1.0"]


class Baseline:
    def __init__(self, stream: str = "full") -> None:
        self.stream = stream
        self.clients: set[ServerConnection] = set()
        # Heartbeats spread over the second: one set of connections per frame of it.
        self.heartbeat_slots: list[set[ServerConnection]] = [set() for _ in range(int(FRAME_RATE))]
        self.joined = 0
        self.ticks = 0
        self.skipped = 0
        self.lateness: list[float] = []
        self.seq = 0
        self.epoch = secrets.token_hex(8)
        self.started = time.monotonic()

    async def handler(self, connection: ServerConnection) -> None:
        self.seq += 1
        await connection.send(
            orjson.dumps(
                {
                    "type": "startup_complete",
                    "channel": "system",
                    "timestamp": time.time_ns() / 1e6,
                    "seq": self.seq,
                    "payload": {
                        "model": "baseline",
                        "tier": "Mid-Tier",
                        "version": "0",
                        "frameRate": FRAME_RATE,
                        "capabilities": ["visualization"],
                        "protocol": "1.1",
                        "epoch": self.epoch,
                    },
                }
            ).decode()
        )
        self.clients.add(connection)
        slot = self.heartbeat_slots[self.joined % len(self.heartbeat_slots)]
        self.joined += 1
        slot.add(connection)
        try:
            await connection.wait_closed()
        finally:
            self.clients.discard(connection)
            slot.discard(connection)

    def message(self, kind: str, channel: str, payload: dict[str, Any], frame_number: int | None = None) -> str:
        self.seq += 1
        message: dict[str, Any] = {
            "type": kind,
            "channel": channel,
            "timestamp": round(time.time_ns() / 1e6, 3),
            "seq": self.seq,
        }
        if frame_number is not None:
            message["frameNumber"] = frame_number
        message["payload"] = payload
        return orjson.dumps(message).decode()

    def send_frame(self, index: int) -> None:
        """Everything the frame sends: each message its own broadcast, as a bare server does."""
        clients = self.clients
        broadcast(clients, self.frame(index))
        if self.stream == "energy":
            return
        level = round(0.5 + 0.4 * math.sin(index / 30.0), 6)
        if index % 6 == 0:
            points = [
                {
                    "x": round(i / 11, 4),
                    "y": round(0.5 + 0.25 * math.sin(index / 9 + i), 4),
                    "energy": round(level * (0.8 + 0.02 * i), 4),
                }
                for i in range(12)
            ]
            broadcast(
                clients,
                self.message(
                    "energy_field", "energy", {"fieldType": "stream", "intensity": level, "coordinates": points}, index
                ),
            )
        if index % 7 == 0:
            broadcast(
                clients,
                self.message(
                    "token_stream",
                    "experience",
                    {
                        "tokens": [" token"],
                        "isComplete": False,
                        "sessionId": "session-00001",
                        "modelId": "baseline",
                        "energyCost": 0.01,
                    },
                ),
            )
        if index % 30 == 15:
            broadcast(
                clients,
                self.message(
                    "interference_event",
                    "council",
                    {
                        "patternType": "constructive",
                        "models": ["baseline", "council_analyst", "council_critic"],
                        "intensity": level,
                        "coherenceScore": 0.99,
                    },
                    index,
                ),
            )
        if index % 150 == 75:
            broadcast(
                clients,
                self.message(
                    "resonance_event",
                    "council",
                    {
                        "resonanceType": "fundamental",
                        "frequency": 9.0,
                        "amplitude": level,
                        "participants": ["baseline", "council_analyst", "council_critic"],
                        "phase": 0.0,
                    },
                    index,
                ),
            )
        if index % 60 == 30:
            broadcast(
                clients,
                self.message("reward_event", "reward", {"rewardType": "milestone", "title": f"r{index}", "points": 1}),
            )
        for connection in self.heartbeat_slots[index % len(self.heartbeat_slots)]:
            broadcast(
                [connection],
                self.message(
                    "heartbeat",
                    "system",
                    {
                        "sequence": index // 60,
                        "serverTime": time.time_ns() // 1_000_000,
                        "frameRate": FRAME_RATE,
                        "connectionId": f"conn-{id(connection):012x}"[:17],
                    },
                ),
            )

    def frame(self, frame_number: int) -> str:
        self.seq += 1
        level = 0.5 + 0.4 * math.sin(frame_number / 30.0)
        return orjson.dumps(
            {
                "type": "energy_update",
                "channel": "energy",
                "timestamp": round(time.time_ns() / 1e6, 3),
                "seq": self.seq,
                "frameNumber": frame_number,
                "payload": {
                    "totalEnergy": level,
                    "deltaEnergy": 0.0,
                    "tokensGenerated": 0,
                    "processingTime": 0.01,
                    "modelId": "baseline",
                    "energyDistribution": {"generation": level / 2, "attention": level / 4, "reasoning": level / 4},
                },
            }
        ).decode()

    async def frame_loop(self) -> None:
        period = 1.0 / FRAME_RATE
        start = time.monotonic()
        index = 0
        while True:
            index += 1
            deadline = start + index * period
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            late = time.monotonic() - deadline
            if late >= period:
                missed = int(late // period)
                index += missed
                self.skipped += missed
            self.lateness.append(late)
            del self.lateness[:-600]
            self.ticks += 1
            if self.clients:
                self.send_frame(index)

    def health(self) -> dict[str, Any]:
        ordered = sorted(self.lateness)

        def pct(fraction: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[max(1, math.ceil(fraction * len(ordered))) - 1] * 1000, 3)

        lateness = {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}
        return {
            "status": "ok",
            "connections": {"count": len(self.clients)},
            "frameLoop": {
                "ticks": self.ticks,
                "framesSkipped": self.skipped,
                "budgetOverruns": 0,
                "tickLatenessMs": lateness,
                "processingMs": {"p50": None, "p99": None, "max": None},
            },
            "messages": {"coalesced": {}},
        }

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/health":
            body = json.dumps(self.health()).encode()
            headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return Response(http.HTTPStatus.OK.value, "OK", headers, body)
        return None


async def main(host: str, port: int, stream: str) -> None:
    baseline = Baseline(stream)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        baseline.handler,
        host,
        port,
        subprotocols=SUBPROTOCOLS,
        compression=None,
        process_request=baseline.process_request,
        max_size=65536,
    ):
        ticker = asyncio.create_task(baseline.frame_loop())
        await stop
        ticker.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8150)
    parser.add_argument(
        "--stream",
        choices=("full", "energy"),
        default="full",
        help="the project's whole stream (default) or energy_update only",
    )
    args = parser.parse_args()
    import uvloop  # the project's server runs on uvloop too

    uvloop.run(main(args.host, args.port, args.stream))
