"""Protocol 1.1 end to end: the real server (subprocess) and real clients on loopback.

Covers: resume after an abrupt disconnect without loss or duplicates, the
incomplete resume after a server restart, 1.0 clients side by side (no
``seq``, upstream-valid), channel subscriptions, the energy rate, pause and
resume, and the error_event answers to bad client messages.

Every wait is bounded; every load is a fixed number of messages. The
module-scoped ``server`` fixture (tests/conftest.py) runs with POST /publish.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.server_process import ServerProcess
from tests.timing import TIME_FACTOR, scaled, within
from tests.wsutil import wait_until
from wirthforge_ws.client import Backoff, WirthforgeClient
from wirthforge_ws.protocol.schemas import SchemaSet

# The upstream contract, in the workspace beside the checkout (absent beside a fresh clone).
UPSTREAM_SCHEMA = Path(__file__).resolve().parents[3] / "shared/reference/WF-TECH-003-event-schemas.json"
TOTAL_RELIABLE = 1000
BATCH = 100


class Collector:
    """Keeps every message a client delivers, with its arrival time and latency."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # monotonic seconds
        self.latencies: list[float] = []  # ms, per message with a timestamp

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.arrivals.append(time.monotonic())
        self.latencies.append(time.time() * 1000.0 - message.get("timestamp", 0))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def types(self) -> set[str]:
        return {m["type"] for m in self.messages}

    def count_between(self, kind: str, start: float, end: float) -> int:
        return sum(1 for m, at in zip(self.messages, self.arrivals) if m["type"] == kind and start <= at < end)

    def latencies_between(self, kind: str, start: float, end: float) -> list[float]:
        return [
            lat
            for m, at, lat in zip(self.messages, self.arrivals, self.latencies)
            if m["type"] == kind and start <= at < end
        ]


class SlowestRandom(random.Random):
    """Makes a Backoff always wait its full ceiling (to be away for a known time)."""

    def uniform(self, a: float, b: float) -> float:
        return b


def reward(index: int) -> dict[str, Any]:
    return {"type": "reward_event", "payload": {"rewardType": "milestone", "title": f"r{index}", "points": index}}


async def publish(http: httpx.AsyncClient, messages: list[dict[str, Any]]) -> list[int]:
    response = await http.post("/publish", json=messages)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["published"] == len(messages)
    return body["seqs"]


async def wait_applied(http: httpx.AsyncClient, connection_id: str, check: Callable[[dict[str, Any]], bool]) -> None:
    """Poll /health until the server shows the request applied to this connection (no ack in the protocol)."""
    deadline = time.monotonic() + scaled(5.0)
    while time.monotonic() < deadline:
        clients = (await http.get("/health")).json()["connections"]["clients"]
        mine = [c for c in clients if c["id"] == connection_id]
        if mine and check(mine[0]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"request not applied to {connection_id} within {scaled(5.0):.1f} s")


# ---------------------------------------------------------------------------
# Abrupt disconnect mid-stream of 1,000 reliable messages; 1.0 clients meanwhile


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def abrupt_run(server: ServerProcess) -> dict[str, Any]:
    """One scenario, asserted on by the tests below.

    A 1.1 client is aborted (TCP abort, no close frame) right after batch 3
    of 10 is published; batches 4-6 are published while it is away (its
    backoff is pinned to 0.5 s); 7-9 after it is back. Two 1.0 clients (no
    subprotocol, and ``wirthforge.1.0``) stay connected throughout.
    """
    modern, legacy_plain, legacy_named = Collector(), Collector(), Collector()
    client = WirthforgeClient(server.ws_url, on_message=modern, backoff=Backoff(0.5, 0.5, rng=SlowestRandom()))
    plain = WirthforgeClient(server.ws_url, protocol=None, on_message=legacy_plain)
    named = WirthforgeClient(server.ws_url, protocol="1.0", on_message=legacy_named)
    away_states: list[str] = []
    async with httpx.AsyncClient(base_url=server.http_url, timeout=scaled(10)) as http, client, plain, named:
        for each in (client, plain, named):
            await each.wait_connected(timeout=scaled(10))
        first_epoch = client.epoch
        seqs: list[int] = []
        for batch in range(3):
            seqs += await publish(http, [reward(i) for i in range(batch * BATCH, (batch + 1) * BATCH)])
            await asyncio.sleep(0.05)
        back = client.wait_for(lambda m: m["type"] == "startup_complete", timeout=scaled(10))
        seqs += await publish(http, [reward(i) for i in range(3 * BATCH, 4 * BATCH)])
        connection = client.connection
        assert connection is not None
        connection.transport.abort()  # mid-stream: batch 3 may still be in flight
        for batch in range(4, 7):
            await asyncio.sleep(0.03)
            away_states.append(client.state)
            seqs += await publish(http, [reward(i) for i in range(batch * BATCH, (batch + 1) * BATCH)])
        startup = await back
        reconnected_at = time.monotonic()
        close_seen = client.close_code
        for batch in range(7, 10):
            seqs += await publish(http, [reward(i) for i in range(batch * BATCH, (batch + 1) * BATCH)])
            await asyncio.sleep(0.05)
        for collector in (modern, legacy_plain, legacy_named):
            await wait_until(
                lambda c=collector: any(
                    m["payload"].get("points") == TOTAL_RELIABLE - 1 for m in c.of_type("reward_event")
                ),
                15,
                "the last reward",
            )
        await asyncio.sleep(max(0.0, reconnected_at + 1.3 - time.monotonic()))
        return {
            "modern": modern,
            "plain": legacy_plain,
            "named": legacy_named,
            "client": client,
            "plain_client": plain,
            "named_client": named,
            "startup": startup,
            "reconnected_at": reconnected_at,
            "away_states": away_states,
            "seqs": seqs,
            "first_epoch": first_epoch,
            "close_seen": close_seen,
        }


def test_resume_after_abort_delivers_all_reliable_in_order_once(abrupt_run: dict[str, Any]) -> None:
    client: WirthforgeClient = abrupt_run["client"]
    modern: Collector = abrupt_run["modern"]
    points = [m["payload"]["points"] for m in modern.of_type("reward_event")]
    assert points == list(range(TOTAL_RELIABLE))
    seqs = [m["seq"] for m in modern.of_type("reward_event")]
    assert seqs == abrupt_run["seqs"]  # the seqs /publish assigned, in order
    assert client.stats.duplicates == 0
    # The client really was away while batches 4-6 were published.
    assert all(state in ("reconnecting", "connecting") for state in abrupt_run["away_states"])
    assert client.stats.reconnects == 1
    assert abrupt_run["close_seen"] == 1006  # no close frame: the TCP connection was aborted
    startup = abrupt_run["startup"]["payload"]
    assert startup["epoch"] == abrupt_run["first_epoch"]
    assert startup["resume"]["status"] == "complete"
    assert startup["resume"]["replayed"] >= 3 * BATCH
    assert client.stats.recovered == startup["resume"]["replayed"]
    assert client.stats.incomplete_resumes == 0
    assert client.stats.last_reconnect_ms is not None and client.stats.last_reconnect_ms < scaled(2000)


def test_energy_stream_resumes_after_reconnect(abrupt_run: dict[str, Any]) -> None:
    modern: Collector = abrupt_run["modern"]
    start = abrupt_run["reconnected_at"] + 0.2
    frames = modern.count_between("energy_update", start, start + 1.0)
    assert 50 / TIME_FACTOR <= frames <= 66 * TIME_FACTOR, frames
    # Fresh frames, not old ones held over the outage: a frame from before the
    # abort would be at least the 0.5 s backoff old. 250 ms leaves room for a
    # pause of the test process (GC, a busy CI machine) without hiding that.
    latencies = modern.latencies_between("energy_update", start, start + 1.0)
    assert max(latencies) < scaled(250), max(latencies)


def _legacy_messages(abrupt_run: dict[str, Any]) -> list[dict[str, Any]]:
    return abrupt_run["plain"].messages + abrupt_run["named"].messages


def test_1_0_clients_meanwhile_get_no_seq_and_all_reliable(abrupt_run: dict[str, Any]) -> None:
    for name in ("plain", "named"):
        collector: Collector = abrupt_run[name]
        assert [m["payload"]["points"] for m in collector.of_type("reward_event")] == list(range(TOTAL_RELIABLE))
        assert {"startup_complete", "energy_update", "heartbeat", "reward_event"} <= collector.types()
        client: WirthforgeClient = abrupt_run[f"{name}_client"]
        assert client.protocol == "1.0"
        assert client.stats.reconnects == 0
    for message in _legacy_messages(abrupt_run):
        assert "seq" not in message
        assert isinstance(message["timestamp"], int)


def test_1_0_messages_validate_against_our_1_0_schemas(abrupt_run: dict[str, Any]) -> None:
    schemas = SchemaSet()
    for message in _legacy_messages(abrupt_run):
        schemas.validate_outbound("1.0", message)


def test_1_0_messages_validate_against_the_upstream_contract(abrupt_run: dict[str, Any]) -> None:
    if not UPSTREAM_SCHEMA.exists():
        pytest.skip(f"{UPSTREAM_SCHEMA} is absent")
    import jsonschema

    document = json.loads(UPSTREAM_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(document)  # the whole document: its refs are internal
    seen: set[str] = set()
    failures = []
    for message in _legacy_messages(abrupt_run):
        # Identical messages (apart from time) are common; validate every one anyway, it is bounded.
        errors = sorted(validator.iter_errors(message), key=lambda e: e.path)
        if errors:
            failures.append((message["type"], errors[0].message[:200]))
        seen.add(message["type"])
    assert not failures, failures[:5]
    assert {"startup_complete", "energy_update", "energy_field", "heartbeat", "reward_event"} <= seen


# ---------------------------------------------------------------------------
# Server restart


async def test_server_restart_reconnects_and_reports_epoch_changed() -> None:
    with ServerProcess(env={"WF_ENABLE_PUBLISH": "1"}) as process:
        collector = Collector()
        async with WirthforgeClient(process.ws_url, channels=["reward"], on_message=collector) as client:
            await client.wait_connected(timeout=scaled(10))
            old_epoch = client.epoch
            async with httpx.AsyncClient(base_url=process.http_url, timeout=scaled(10)) as http:
                await publish(http, [reward(i) for i in range(5)])
            await wait_until(lambda: len(collector.of_type("reward_event")) == 5, 5, "5 rewards")
            assert client.last_seq > 0

            back = client.wait_for(lambda m: m["type"] == "startup_complete", timeout=scaled(30))
            await asyncio.to_thread(process.restart)  # same port; returns once /health answers
            up_at = time.monotonic()
            startup = await back
            took = time.monotonic() - up_at
            assert took < scaled(2.5), f"reconnected {took:.2f} s after the server was back"
            assert client.close_code in (1012, 1006), client.close_code
            resume = startup["payload"]["resume"]
            assert resume == {"status": "incomplete", "replayed": 0, "reason": "epoch_changed"}
            assert client.last_resume == resume
            assert client.stats.incomplete_resumes == 1
            assert client.epoch != old_epoch
            assert client.state == "open"
            assert startup["payload"]["subscriptions"] == ["reward", "system"]  # re-applied via the URL

            # The new epoch restarted seq numbering: messages after the restart still get through.
            async with httpx.AsyncClient(base_url=process.http_url, timeout=scaled(10)) as http:
                await publish(http, [reward(100 + i) for i in range(3)])
            await wait_until(lambda: len(collector.of_type("reward_event")) == 8, 5, "3 more rewards")
            assert [m["payload"]["points"] for m in collector.of_type("reward_event")] == [0, 1, 2, 3, 4, 100, 101, 102]
            assert client.stats.duplicates == 0
            assert client.stats.reconnects == 1


# ---------------------------------------------------------------------------
# Subscriptions, energy rate, pause/resume


async def test_subscriptions_filter_channels(server: ServerProcess) -> None:
    collector = Collector()
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=scaled(10)) as http,
        WirthforgeClient(server.ws_url, channels=["reward"], on_message=collector) as client,
    ):
        session = await client.wait_connected(timeout=scaled(10))
        assert session["subscriptions"] == ["reward", "system"]
        token = {
            "type": "token_stream",
            "payload": {"tokens": ["hi"], "isComplete": False, "sessionId": "s", "modelId": "m"},
        }
        got = client.wait_for(lambda m: m["type"] == "reward_event" and m["payload"]["points"] == 1, timeout=scaled(5))
        await publish(http, [token, reward(1)])
        await got
        assert collector.types() <= {"startup_complete", "heartbeat", "reward_event"}

        assert await client.subscribe(["experience"])
        await wait_applied(http, session["connectionId"], lambda c: "experience" in c["subscriptions"])
        assert await client.unsubscribe(["reward"])
        await wait_applied(http, session["connectionId"], lambda c: "reward" not in c["subscriptions"])
        got = client.wait_for(lambda m: m["type"] == "token_stream", timeout=scaled(5))
        await publish(http, [reward(2), token])
        await got  # reliable and ordered: had reward 2 been delivered, it would be here already
        assert [m["payload"]["points"] for m in collector.of_type("reward_event")] == [1]
        assert "energy_update" not in collector.types()
        assert "channels=experience,system" in client.build_url()  # what a reconnect would ask for


def _per_second_counts(collector: Collector, kind: str, start: float, seconds: int) -> list[int]:
    return [collector.count_between(kind, start + i, start + i + 1) for i in range(seconds)]


async def test_energy_rate_newest_frames_and_pause_resume(server: ServerProcess) -> None:
    collector = Collector()
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=scaled(10)) as http,
        WirthforgeClient(server.ws_url, channels=["energy"], on_message=collector) as client,
    ):
        session = await client.wait_connected(timeout=scaled(10))
        assert session["energyRateHz"] == 60

        # Runtime rate change.
        assert await client.set_energy_rate(15)
        await wait_applied(http, session["connectionId"], lambda c: c["energyRateHz"] == 15)
        await asyncio.sleep(0.3)
        start = time.monotonic() + 1 / 30  # between two frames
        await asyncio.sleep(3.1 + 1 / 30)
        counts = _per_second_counts(collector, "energy_update", start, 3)
        assert all(within(n, 14, 16) for n in counts), counts
        latencies = collector.latencies_between("energy_update", start, start + 3)
        assert sorted(latencies)[len(latencies) // 2] < scaled(10), latencies  # newest state: fresh timestamps
        # One scheduler or GC hiccup on a busy 2-core machine can hold a frame ~100 ms; a backlog would hold all.
        assert max(latencies) < scaled(250), latencies
        frames = [
            m["frameNumber"]
            for m, at in zip(collector.messages, collector.arrivals)
            if m["type"] == "energy_update" and start <= at < start + 3
        ]
        steps = {b - a for a, b in zip(frames, frames[1:])}
        assert steps <= {4, 5}, steps  # 60/15: every 4th frame (5 only when the server skipped a tick)
        assert client.stats.gaps.gaps == 0

        # Pause: no energy at all; resume: frames again, starting fresh.
        assert await client.pause_energy()
        await wait_applied(http, session["connectionId"], lambda c: c["energyPaused"])
        await asyncio.sleep(0.1)  # frames already on the wire
        quiet_from = time.monotonic()
        await asyncio.sleep(1.0)
        assert collector.count_between("energy_update", quiet_from, time.monotonic()) == 0
        assert collector.count_between("energy_field", quiet_from, time.monotonic()) == 0
        resumed = client.wait_for(lambda m: m["type"] == "energy_update", timeout=scaled(2))
        assert await client.resume_energy()
        first = await resumed
        # Built after the resume, not held since the pause (that one would be over 1 s old).
        assert time.time() * 1000 - first["timestamp"] < scaled(250)
        start = time.monotonic()
        await asyncio.sleep(1.05)
        assert within(collector.count_between("energy_update", start, start + 1), 13, 17)


async def test_energy_rate_from_the_connect_url(server: ServerProcess) -> None:
    collector = Collector()
    async with WirthforgeClient(server.ws_url, channels=["energy"], energy_rate=15, on_message=collector) as client:
        session = await client.wait_connected(timeout=scaled(10))
        assert session["energyRateHz"] == 15
        await asyncio.sleep(0.3)
        start = time.monotonic() + 1 / 30
        await asyncio.sleep(2.1 + 1 / 30)
        counts = _per_second_counts(collector, "energy_update", start, 2)
        assert all(within(n, 14, 16) for n in counts), counts
        assert client.snapshot()["expected_frame_step"] == 4.0


# ---------------------------------------------------------------------------
# Bad client messages


async def _expect_error(
    client: WirthforgeClient, send: Callable[[], Coroutine[Any, Any, Any]], code: str
) -> dict[str, Any]:
    got = client.wait_for(lambda m: m["type"] == "error_event", timeout=scaled(3))
    await send()
    message = await got
    assert message["payload"]["code"] == code, message
    assert message["payload"]["component"] == "websocket"
    return message


async def test_bad_requests_get_specific_errors_and_keep_the_connection(server: ServerProcess) -> None:
    async with WirthforgeClient(server.ws_url, channels=["reward"]) as client:
        await client.wait_connected(timeout=scaled(10))
        ws = client.connection
        assert ws is not None
        cases: list[tuple[Any, str]] = [
            ({"type": "unsubscribe", "payload": {"channels": ["system"]}}, "INVALID_SUBSCRIPTION"),
            ({"type": "set_energy_rate", "payload": {"rateHz": 1000}}, "INVALID_ENERGY_RATE"),
            # A wrong type where a rate belongs still gets the specific code.
            ({"type": "set_energy_rate", "payload": {"rateHz": "fast"}}, "INVALID_ENERGY_RATE"),
            ({"type": "subscribe", "payload": {"channels": "energy"}}, "INVALID_MESSAGE"),
            ({"type": "heartbeat_response", "payload": {"sequence": "x"}}, "INVALID_MESSAGE"),
            ({"type": "teleport", "payload": {}}, "UNKNOWN_MESSAGE_TYPE"),
        ]
        for request, code in cases:
            message = await _expect_error(client, lambda r=request: client.send(r), code)
            if code == "INVALID_MESSAGE":
                assert message["payload"]["details"]["reason"]
        await _expect_error(client, lambda: ws.send("{not json"), "INVALID_JSON")
        # Still the same connection, and it still works.
        assert client.connection is ws and client.stats.reconnects == 0
        await client.wait_for(lambda m: m["type"] == "heartbeat", timeout=scaled(3))
        assert client.state == "open"


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
async def test_unknown_channel_request_gets_unknown_channel(server: ServerProcess, kind: str) -> None:
    """PROTOCOL.md §4: subscribe/unsubscribe naming a channel that does not exist -> UNKNOWN_CHANNEL."""
    async with WirthforgeClient(server.ws_url, channels=["reward"]) as client:
        await client.wait_connected(timeout=scaled(10))
        request = {"type": kind, "payload": {"channels": ["energy", "nope"]}}
        await _expect_error(client, lambda: client.send(request), "UNKNOWN_CHANNEL")
        assert client.state == "open" and client.stats.reconnects == 0


@pytest.mark.parametrize("rate", [0.5, 61, 0, -5])
async def test_out_of_range_energy_rate_gets_invalid_energy_rate(server: ServerProcess, rate: float) -> None:
    """PROTOCOL.md §4: set_energy_rate outside 1..frame rate -> INVALID_ENERGY_RATE."""
    async with WirthforgeClient(server.ws_url, channels=["reward"]) as client:
        await client.wait_connected(timeout=scaled(10))
        request = {"type": "set_energy_rate", "payload": {"rateHz": rate}}
        await _expect_error(client, lambda: client.send(request), "INVALID_ENERGY_RATE")
        assert client.state == "open"


@pytest.mark.parametrize(
    ("query", "codes", "status"),
    [
        ("epoch=zz&lastSeq=-5", ["INVALID_RESUME"], "incomplete"),
        ("epoch=abc", ["INVALID_RESUME"], "incomplete"),
        ("lastSeq=12", ["INVALID_RESUME"], "incomplete"),
        ("epoch=abc&lastSeq=twelve", ["INVALID_RESUME"], "incomplete"),
        ("channels=reward,bogus", ["UNKNOWN_CHANNEL"], "none"),
        ("energyRate=fast", ["INVALID_ENERGY_RATE"], "none"),
    ],
)
async def test_malformed_connect_query_gets_errors_not_a_dropped_connection(
    server: ServerProcess, query: str, codes: list[str], status: str
) -> None:
    collector = Collector()
    async with WirthforgeClient(f"{server.ws_url}?{query}", on_message=collector) as client:
        await client.wait_connected(timeout=scaled(10))
        await client.wait_for(lambda m: m["type"] == "heartbeat", timeout=scaled(3))
        errors = [m["payload"]["code"] for m in collector.of_type("error_event")]
        assert errors == codes
        assert client.last_resume is not None and client.last_resume["status"] == status
        if status == "incomplete":
            assert client.last_resume == {"status": "incomplete", "replayed": 0, "reason": "invalid_request"}
        assert client.state == "open" and client.stats.reconnects == 0


async def test_1_1_request_on_a_1_0_connection(server: ServerProcess) -> None:
    async with WirthforgeClient(server.ws_url, protocol="1.0") as client:
        await client.wait_connected(timeout=scaled(10))
        await _expect_error(
            client,
            lambda: client.send({"type": "subscribe", "payload": {"channels": ["energy"]}}),
            "UNSUPPORTED_BY_PROTOCOL",
        )
        assert client.state == "open"


async def test_too_many_invalid_messages_is_a_policy_close_without_reconnect(server: ServerProcess) -> None:
    async with WirthforgeClient(server.ws_url, channels=["reward"]) as client:
        await client.wait_connected(timeout=scaled(10))
        ws = client.connection
        assert ws is not None
        for _ in range(12):
            if not await client.send({"type": "teleport", "payload": {}}):
                break
        await asyncio.wait_for(client.wait_stopped(), scaled(5))
        assert client.state == "refused"
        assert client.close_code == 1008
        assert client.close_reason == "too many invalid messages"
        await asyncio.sleep(0.3)
        assert client.stats.sessions == 1  # no reconnect


# ---------------------------------------------------------------------------
# Resume combined with another URL option


async def test_resume_with_an_unknown_channel_in_the_url_still_replays(server: ServerProcess) -> None:
    """PROTOCOL.md §2/§6: ``seq`` strictly increasing on a connection, replay without loss.

    A resume URL that also names an unknown channel gets an UNKNOWN_CHANNEL
    error_event; the replay that follows must still be deliverable in order.
    """
    first = Collector()
    async with httpx.AsyncClient(base_url=server.http_url, timeout=scaled(10)) as http:
        async with WirthforgeClient(server.ws_url, channels=["reward"], on_message=first) as client:
            await client.wait_connected(timeout=scaled(10))
            await publish(http, [reward(1)])
            await wait_until(lambda: len(first.of_type("reward_event")) == 1, 5, "reward 1")
            epoch, last_seq = client.epoch, client.last_seq
        await publish(http, [reward(2), reward(3)])
        second = Collector()
        url = f"{server.ws_url}?epoch={epoch}&lastSeq={last_seq}&channels=reward,bogus"
        async with WirthforgeClient(url, on_message=second) as client:
            await client.wait_connected(timeout=scaled(10))
            await client.wait_for(lambda m: m["type"] == "heartbeat", timeout=scaled(3))
            assert client.last_resume == {"status": "complete", "replayed": 2}
            assert [m["payload"]["code"] for m in second.of_type("error_event")] == ["UNKNOWN_CHANNEL"]
            assert client.stats.duplicates == 0, "replay arrived with seqs below the error_event's"
            assert [m["payload"]["points"] for m in second.of_type("reward_event")] == [2, 3]


async def test_resume_wire_order_is_strictly_increasing_after_startup(server: ServerProcess) -> None:
    """PROTOCOL.md §2: seq strictly increasing on each connection; §6: no duplicates, no reordering.

    startup_complete is left out: it is stamped at connect time, ahead of the
    replay it announces (the client treats it as the session boundary).
    """
    from websockets.asyncio.client import connect

    async with connect(server.ws_url, subprotocols=["wirthforge.1.1"], compression=None, proxy=None) as ws:
        epoch = json.loads(await ws.recv())["payload"]["epoch"]
        last_seq = 0
        for _ in range(30):
            last_seq = json.loads(await ws.recv())["seq"]
    async with httpx.AsyncClient(base_url=server.http_url, timeout=scaled(10)) as http:
        await publish(http, [reward(1)])  # while nobody listens: no frames are built
    url = f"{server.ws_url}?epoch={epoch}&lastSeq={last_seq}"
    async with connect(url, subprotocols=["wirthforge.1.1"], compression=None, proxy=None) as ws:
        startup = json.loads(await ws.recv())
        assert startup["payload"]["resume"]["status"] == "complete"
        seqs = [json.loads(await ws.recv())["seq"] for _ in range(startup["payload"]["resume"]["replayed"] + 4)]
    assert all(seq > last_seq for seq in seqs), (last_seq, seqs)
    assert seqs == sorted(set(seqs)), seqs
