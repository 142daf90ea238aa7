"""Connection state transitions, in-process, with a fake WebSocket: no sockets, no sleeps.

Each test drives one ordering that can race: a connection that fails while
it is being set up, a close racing a write, a heartbeat before
``startup_complete``, a writer that dies, and a resume replay longer than
the send queue.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any

import pytest

from wirthforge_ws.connection.connection import Connection, InvalidTransition, State
from wirthforge_ws.connection.options import ConnectOptions
from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.settings import Settings
from wirthforge_ws.stream.hub import Hub

SCHEMAS = SchemaSet()
NOMINAL = {"energy_update": 60.0, "energy_field": 10.0}


class FakeWebSocket:
    """What Connection uses of Starlette's WebSocket. ``gate`` (a future) blocks send until set."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {}
        self.accepted = False
        self.sent: list[dict[str, Any]] = []
        self.closes: list[tuple[int, str]] = []
        self.sent_after_close = 0
        self.gate: asyncio.Future[None] | None = None
        self.send_error: BaseException | None = None
        self.inbound: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def accept(self, subprotocol: str | None = None) -> None:
        self.accepted = True

    async def send(self, message: dict[str, Any]) -> None:
        if self.gate is not None:
            await self.gate
        if self.send_error is not None:
            raise self.send_error
        if self.closes:
            self.sent_after_close += 1
        self.sent.append(json.loads(message["text"]))

    async def receive(self) -> dict[str, Any]:
        return await self.inbound.get()

    async def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        self.inbound.put_nowait({"type": "websocket.disconnect", "code": code})

    def disconnect(self, code: int = 1000) -> None:
        self.inbound.put_nowait({"type": "websocket.disconnect", "code": code})

    def types(self) -> list[str]:
        return [message["type"] for message in self.sent]


def make(
    settings: Settings | None = None, *, query: dict[str, str] | None = None, hub: Hub | None = None
) -> tuple[Connection, FakeWebSocket, Hub]:
    settings = settings or Settings(tier="Mid-Tier")  # the Server resolves "auto" before any connection
    if hub is None:
        hub = Hub(SCHEMAS, history_messages=settings.history_messages, history_seconds=settings.history_seconds)
    websocket = FakeWebSocket()
    connection = Connection(
        websocket,
        hub=hub,
        settings=settings,
        version="1.1",  # type: ignore[arg-type]
        subprotocol="wirthforge.1.1",
        options=ConnectOptions.parse(query or {}, settings, "1.1"),
        nominal_rates=NOMINAL,
    )
    return connection, websocket, hub


async def settle(rounds: int = 20) -> None:
    """Let every ready task run (yields to the loop; no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def reward(i: int) -> messages.Event:
    return messages.reward_event(reward_type="milestone", title=f"#{i}", points=i)


async def test_a_connection_that_fails_while_being_set_up_is_never_attached() -> None:
    connection, websocket, hub = make()
    connection.outbox.put_reliable = lambda text: False  # type: ignore[method-assign]  # queue refuses startup
    serving = asyncio.create_task(connection.serve())
    await asyncio.sleep(0)  # the handler ran up to its first real wait; the closer has not run yet
    assert len(hub) == 0, "a connection that failed during setup was attached to the hub"
    assert connection.state is State.CLOSING
    hub.publish(reward(1))
    assert len(connection.outbox) == 0, "a message was queued for a connection that failed during setup"
    await settle()
    assert websocket.closes == [(1013, "slow consumer: send queue full")]
    assert websocket.sent == []
    await asyncio.wait_for(serving, 1)
    assert connection.state is State.CLOSED


async def test_no_heartbeat_before_startup_complete() -> None:
    connection, websocket, hub = make()
    now = connection.connected_at + 10.0  # long overdue
    connection.heartbeat(60.0, now)  # the heartbeat task may run before the handler accepted
    assert len(connection.outbox) == 0, "a heartbeat was queued before startup_complete"
    serving = asyncio.create_task(connection.serve())
    await settle()
    assert connection.state is State.OPEN
    connection.heartbeat(60.0, now)
    await settle()
    assert websocket.types() == ["startup_complete", "heartbeat"]
    websocket.disconnect()
    await asyncio.wait_for(serving, 1)
    assert connection.state is State.CLOSED
    connection.heartbeat(60.0, now + 5)  # after the close: nothing, no error
    assert websocket.types() == ["startup_complete", "heartbeat"]


async def test_close_racing_a_write_sends_nothing_after_the_close() -> None:
    connection, websocket, hub = make()
    serving = asyncio.create_task(connection.serve())
    await settle()
    websocket.gate = asyncio.get_running_loop().create_future()  # the next send blocks
    hub.publish(reward(1))
    hub.publish(reward(2))
    await settle()
    assert connection._send_started is not None  # the writer is inside a send
    connection.fail(1013, "slow consumer: send stalled")
    connection.fail(1011, "second call is ignored")
    assert connection.state is State.CLOSING
    assert len(hub) == 0
    websocket.gate.set_result(None)
    await asyncio.wait_for(serving, 1)
    assert websocket.closes == [(1013, "slow consumer: send stalled")]
    assert websocket.sent_after_close == 0
    assert connection.state is State.CLOSED


async def test_a_stalled_send_is_detected_on_the_monotonic_clock() -> None:
    settings = Settings(send_timeout=1.0, tier="Mid-Tier")
    connection, websocket, hub = make(settings)
    serving = asyncio.create_task(connection.serve())
    await settle()
    websocket.gate = asyncio.get_running_loop().create_future()
    hub.publish(reward(1))
    await settle()
    started = connection._send_started
    assert started is not None
    connection.heartbeat(60.0, started + 0.5)
    assert connection.state is State.OPEN
    connection.heartbeat(60.0, started + 1.5)
    assert connection.state is State.CLOSING
    websocket.gate.set_result(None)
    await asyncio.wait_for(serving, 1)
    assert websocket.closes == [(1013, "slow consumer: send stalled")]


async def test_a_writer_that_dies_closes_the_connection_with_1011() -> None:
    connection, websocket, hub = make()
    serving = asyncio.create_task(connection.serve())
    await settle()
    websocket.send_error = ValueError("a bug in the send path")
    hub.publish(reward(1))
    await settle()
    assert websocket.closes == [(1011, "internal server error")]
    await asyncio.wait_for(serving, 1)
    assert connection.state is State.CLOSED


async def test_a_replay_longer_than_the_send_queue_completes_in_order() -> None:
    settings = Settings(send_queue_limit=8, history_messages=1000, tier="Mid-Tier")
    hub = Hub(SCHEMAS, history_messages=1000, history_seconds=120)
    published = [hub.publish(reward(i)) for i in range(100)]
    connection, websocket, _ = make(
        settings, hub=hub, query={"epoch": hub.epoch, "lastSeq": "0", "channels": "reward,system"}
    )
    serving = asyncio.create_task(connection.serve())
    await settle(5)
    assert len(connection.outbox) <= 1, "the replay was copied into the queue instead of fed lazily"
    live = hub.publish(reward(100))  # arrives while the replay is still being sent
    await settle(400)
    startup = websocket.sent[0]
    assert startup["type"] == "startup_complete"
    assert startup["payload"]["resume"] == {"status": "complete", "replayed": 100}
    seqs = [message["seq"] for message in websocket.sent[1:]]
    assert seqs == [outbound.seq for outbound in published] + [live.seq]
    assert websocket.closes == []
    assert connection.state is State.OPEN
    websocket.disconnect()
    await asyncio.wait_for(serving, 1)


def test_transitions_only_go_forward() -> None:
    connection, _, _ = make()
    connection._transition(State.OPEN)
    connection._transition(State.CLOSING)
    with pytest.raises(InvalidTransition):
        connection._transition(State.OPEN)
    connection._transition(State.CLOSED)
    with pytest.raises(InvalidTransition):
        connection._transition(State.CLOSING)


async def test_a_closed_connection_is_freed_by_reference_counting_alone() -> None:
    # A burst of closes would otherwise leave every connection's objects to one long full collection.
    gc.collect()
    gc.disable()
    try:
        connection, websocket, hub = make()
        serving = asyncio.create_task(connection.serve())
        await settle()
        connection.send_own(reward(1))
        await settle()
        websocket.disconnect()
        await asyncio.wait_for(serving, 1)
        freed = weakref.ref(connection)
        del connection, serving
        await settle()
        assert freed() is None, [type(r).__name__ for r in gc.get_referrers(freed())]
    finally:
        gc.enable()
