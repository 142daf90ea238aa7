"""Unit tests of wirthforge_ws.client that need no WIRTHFORGE server.

The last group drives the client against tiny in-process ``websockets``
servers on loopback, to check close-code handling and the resume URL on
reconnect without depending on the real server.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Response

from tests.timing import scaled
from wirthforge_ws.client import (
    ArrivalRate,
    Backoff,
    ClientStats,
    FrameGapCounter,
    LatencyWindow,
    PolicyCloseError,
    ResumeCursor,
    SessionOptions,
    StatsPrinter,
    UnsupportedByProtocolError,
    WirthforgeClient,
    build_url,
    percentile,
)

# ---------------------------------------------------------------------------
# Backoff


def test_backoff_full_jitter_bounds_and_sequence() -> None:
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(1234))
    reference = random.Random(1234)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for attempt, ceiling in enumerate(ceilings):
        assert backoff.ceiling(attempt) == pytest.approx(ceiling)
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling
        # Full jitter: exactly uniform(0, ceiling) from the given generator.
        assert delay == reference.uniform(0.0, ceiling)
    assert backoff.attempt == len(ceilings)


def test_backoff_never_exceeds_cap_and_spreads() -> None:
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(2000)]
    assert max(delays) <= 2.0 and min(delays) >= 0.0
    late = delays[10:]
    # Full jitter spreads over the whole window, not around the ceiling.
    assert min(late) < 0.2 and max(late) > 1.8
    assert 0.8 < sum(late) / len(late) < 1.2


def test_backoff_reset_and_huge_attempts() -> None:
    backoff = Backoff(rng=random.Random(0))
    for _ in range(5000):
        backoff.next_delay()  # 2**5000 must not overflow
    assert backoff.ceiling(5000) == 1.0  # the protocol cap (PROTOCOL.md §10.2)
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() <= 0.1


def test_backoff_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=1.0, cap=0.5)


# ---------------------------------------------------------------------------
# Percentiles, latency window, rate


def test_percentile_nearest_rank() -> None:
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.0) == 1
    assert percentile([3.5], 0.99) == 3.5
    assert percentile([], 0.5) is None
    # Fewer than 100 samples: P99 is the maximum; no interpolation.
    assert percentile([1.0, 2.0, 10.0], 0.99) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_latency_window_is_time_and_count_bounded() -> None:
    window = LatencyWindow(window_s=10.0, max_samples=5)
    for i in range(8):
        window.add(float(i), float(i))
    assert window.values(7.0) == [3.0, 4.0, 5.0, 6.0, 7.0]  # count bound
    assert window.values(15.5) == [6.0, 7.0]  # samples older than 10 s leave
    summary = window.summary(15.5)
    assert summary == {"median": 6.0, "p99": 7.0, "max": 7.0, "samples": 2}
    assert window.summary(100.0) == {"median": None, "p99": None, "max": None, "samples": 0}


def test_arrival_rate_counts_the_last_second() -> None:
    rate = ArrivalRate(1.0)
    for i in range(120):
        rate.mark(i / 60)  # two seconds at 60 Hz
    assert rate.rate(119 / 60) == pytest.approx(60, abs=1)
    assert rate.rate(119 / 60 + 0.5) == pytest.approx(30, abs=1)
    assert rate.rate(10.0) == 0.0


# ---------------------------------------------------------------------------
# Frame gap rule


def _feed(counter: FrameGapCounter, frames: list[int]) -> list[bool]:
    return [counter.observe(frame) for frame in frames]


def test_gap_rule_full_rate_counts_any_skip() -> None:
    counter = FrameGapCounter()
    counter.configure(60, 60)
    assert counter.expected_step == 1.0
    assert _feed(counter, [10, 11, 12, 14, 15, 18]) == [False, False, False, True, False, True]
    assert counter.gaps == 2
    assert counter.frames_missed == 1 + 2
    assert counter.max_step == 3


def test_gap_rule_integral_decimation_counts_any_step_beyond_e() -> None:
    counter = FrameGapCounter()
    counter.configure(60, 15)  # e = 4
    assert counter.expected_step == 4.0
    # 4 is nominal; 5 is a skipped tick (a frame the viewer did not get); 8 is a missed sample.
    assert _feed(counter, [0, 4, 8, 13, 16, 20, 28, 34]) == [False, False, False, True, False, False, True, True]
    assert counter.gaps == 3
    assert counter.frames_missed == 1 + 1 + 1  # max(1, floor(5/4+.5)-1), floor(8/4+.5)-1, floor(6/4+.5)-1


def test_gap_rule_fractional_decimation() -> None:
    counter = FrameGapCounter()
    counter.configure(60, 25)  # e = 2.4: steps of 2 and 3 are normal
    steps = [2, 3, 2, 3, 2, 2, 3]
    frames = [0]
    for step in steps:
        frames.append(frames[-1] + step)
    assert not any(_feed(counter, frames))
    assert counter.observe(frames[-1] + 4)  # 4 > ceil(2.4)
    assert counter.gaps == 1


def test_gap_rule_resets_and_regressions() -> None:
    counter = FrameGapCounter()
    counter.configure(60, None)  # unknown rate: full rate
    counter.observe(100)
    counter.reset()  # e.g. pause/resume: the jump is expected
    assert counter.observe(400) is False
    assert counter.observe(5) is False  # a new frame counter (restart)
    assert counter.regressions == 1
    assert counter.observe(6) is False
    assert counter.gaps == 0
    counter.configure(60, 120)  # a rate above the frame rate is full rate
    assert counter.expected_step == 1.0


# ---------------------------------------------------------------------------
# URL building and options


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_build_url_replaces_and_keeps() -> None:
    url = build_url("ws://127.0.0.1:8145/ws?token=a&epoch=old", {"epoch": "8f2c", "lastSeq": "48211"})
    assert url.startswith("ws://127.0.0.1:8145/ws?")
    assert _query(url) == {"token": ["a"], "epoch": ["8f2c"], "lastSeq": ["48211"]}
    url = build_url("ws://h/ws", {"channels": "energy,experience,system", "energyRate": None})
    assert url == "ws://h/ws?channels=energy,experience,system"


def test_session_options_query_and_validation() -> None:
    options = SessionOptions()
    assert options.query() == {}
    options = SessionOptions(["reward", "energy"], energy_rate=15.0)
    assert options.query() == {"channels": "energy,reward,system", "energyRate": "15"}
    assert options.subscribe(["council"]) == ["council"]
    assert options.query()["channels"] == "energy,council,reward,system"
    assert options.unsubscribe(["energy"]) == ["energy"]
    assert options.query()["channels"] == "council,reward,system"
    options.set_energy_rate(7.5, frame_rate=60)
    assert options.query()["energyRate"] == "7.5"
    with pytest.raises(ValueError):
        options.set_energy_rate(0.5)
    with pytest.raises(ValueError):
        options.set_energy_rate(61, frame_rate=60)
    with pytest.raises(ValueError):
        options.set_energy_rate("15")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        options.subscribe(["nope"])
    with pytest.raises(ValueError):
        options.unsubscribe(["system"])
    everything = SessionOptions()
    everything.unsubscribe(["council"])  # from "all" to all but council
    assert everything.query() == {"channels": "energy,experience,reward,system"}


def test_client_resume_url() -> None:
    client = WirthforgeClient("ws://127.0.0.1:9/ws", channels=["energy", "reward"], energy_rate=30)
    assert _query(client.build_url()) == {"channels": ["energy,reward,system"], "energyRate": ["30"]}
    client.cursor.start_session("ep1", 5, fresh=True)
    client.cursor.accept(6)
    client.cursor.accept(42)
    assert _query(client.build_url()) == {
        "epoch": ["ep1"],
        "lastSeq": ["42"],
        "channels": ["energy,reward,system"],
        "energyRate": ["30"],
    }
    legacy = WirthforgeClient("ws://127.0.0.1:9/ws?x=1", protocol="1.0")
    legacy.cursor.start_session("ep1", 5, fresh=True)
    assert legacy.build_url() == "ws://127.0.0.1:9/ws?x=1"  # 1.0 knows no query options


# ---------------------------------------------------------------------------
# Resume cursor and dedupe


def test_cursor_one_watermark_for_every_channel() -> None:
    cursor = ResumeCursor()
    assert cursor.resume_query() == {}
    cursor.start_session("A", 10, fresh=True)
    assert cursor.resume_query() == {"epoch": "A", "lastSeq": "10"}  # the fresh floor
    assert [cursor.accept(s) for s in (11, 12, 15)] == ["new"] * 3
    assert cursor.accept(12) == "duplicate"
    assert cursor.accept(13) == "duplicate"  # behind the mark: the server never sends that (§6)
    assert cursor.last_seq == 15
    assert cursor.resume_query() == {"epoch": "A", "lastSeq": "15"}


def test_cursor_epoch_change_resets_and_resumed_startup_does_not_move_floor() -> None:
    cursor = ResumeCursor()
    cursor.start_session("A", 3, fresh=True)
    cursor.accept(100)
    cursor.start_session("A", 500, fresh=False)  # resumed: startup seq is ahead of its replay
    assert cursor.resume_query()["lastSeq"] == "100"
    assert cursor.accept(101) == "new"
    cursor.start_session("B", 2, fresh=True)  # the server restarted: new seq space
    assert cursor.last_seq == 0
    assert cursor.accept(3) == "new"
    assert cursor.resume_query() == {"epoch": "B", "lastSeq": "3"}


# ---------------------------------------------------------------------------
# Message handling without a socket


class FakeConnection:
    """Just enough of a websockets connection for handle_raw."""

    subprotocol = "wirthforge.1.1"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, data: bytes, text: bool = False) -> None:
        assert text is True
        self.sent.append(orjson.loads(data))


def _msg(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def _startup(seq: int, epoch: str = "E1", resume: dict[str, Any] | None = None, rate: float = 60) -> bytes:
    payload = {
        "model": "m",
        "tier": "Mid-Tier",
        "version": "1.1.0",
        "frameRate": 60,
        "protocol": "1.1",
        "epoch": epoch,
        "heartbeatIntervalMs": 1000,
        "energyRateHz": rate,
        "resume": resume or {"status": "none"},
    }
    return _msg(type="startup_complete", channel="system", timestamp=1.0, seq=seq, payload=payload)


def test_handle_raw_dedupes_answers_heartbeats_and_counts() -> None:
    async def scenario() -> None:
        received: list[dict[str, Any]] = []
        client = WirthforgeClient(on_message=received.append)
        ws = FakeConnection()
        now = 1_764_000_000_000.0
        await client.handle_raw(_startup(1), ws)  # type: ignore[arg-type]
        got = client.wait_for(lambda m: m["type"] == "reward_event" and m["payload"]["points"] == 2)
        for seq, frame in ((2, 10), (3, 11), (5, 13)):
            await client.handle_raw(
                _msg(type="energy_update", channel="energy", timestamp=now, seq=seq, frameNumber=frame, payload={}),
                ws,  # type: ignore[arg-type]
            )
        await client.handle_raw(
            _msg(type="reward_event", channel="reward", timestamp=now, seq=6, payload={"points": 1})
        )
        await client.handle_raw(
            _msg(type="reward_event", channel="reward", timestamp=now, seq=6, payload={"points": 1})
        )
        await client.handle_raw(
            _msg(type="reward_event", channel="reward", timestamp=now, seq=7, payload={"points": 2})
        )
        heartbeat = {"sequence": 4, "serverTime": 1, "connectionId": "c"}
        await client.handle_raw(_msg(type="heartbeat", channel="system", timestamp=now, seq=8, payload=heartbeat), ws)  # type: ignore[arg-type]
        await client.handle_raw(b"not json")
        await client.handle_raw(b"[1, 2]")
        message = await got
        assert message["seq"] == 7
        assert [m["type"] for m in received].count("reward_event") == 2
        assert client.stats.duplicates == 1
        assert client.stats.invalid_frames == 2
        # Frame 10 is the session's first (not judged); 11 -> 13 at full rate is a gap.
        assert client.stats.gaps.gaps == 1
        assert client.last_seq == 8
        assert client.epoch == "E1"
        assert ws.sent[0]["type"] == "heartbeat_response"
        assert ws.sent[0]["payload"]["sequence"] == 4
        assert isinstance(ws.sent[0]["payload"]["clientTime"], int)
        snapshot = client.snapshot()
        assert snapshot["messages_by_type"] == {
            "energy_update": 3,
            "heartbeat": 1,
            "reward_event": 2,
            "startup_complete": 1,
        }
        assert snapshot["latency_ms"]["samples"] == 2  # the first frame of a session is left out
        assert snapshot["protocol"] == "1.1"
        StatsPrinter.format_line(snapshot)  # does not raise
        orjson.dumps(snapshot)  # JSON-ready

    asyncio.run(scenario())


def test_handle_raw_resume_status_and_epoch_change() -> None:
    async def scenario() -> None:
        client = WirthforgeClient()
        ws = FakeConnection()
        await client.handle_raw(_startup(10), ws)  # type: ignore[arg-type]
        await client.handle_raw(_msg(type="reward_event", channel="reward", timestamp=1, seq=11, payload={}))
        # Resumed: startup_complete has a seq ahead of the replay behind it.
        await client.handle_raw(_startup(30, resume={"status": "complete", "replayed": 2}), ws)  # type: ignore[arg-type]
        await client.handle_raw(_msg(type="reward_event", channel="reward", timestamp=1, seq=12, payload={}))
        await client.handle_raw(_msg(type="reward_event", channel="reward", timestamp=1, seq=20, payload={}))
        assert client.stats.recovered == 2
        assert client.stats.duplicates == 0
        assert client.stats.messages["reward_event"] == 3
        # Restart: new epoch, seqs start again from 1.
        await client.handle_raw(
            _startup(1, epoch="E2", resume={"status": "incomplete", "replayed": 0, "reason": "epoch_changed"}),
            ws,  # type: ignore[arg-type]
        )
        assert client.last_resume == {"status": "incomplete", "replayed": 0, "reason": "epoch_changed"}
        assert client.stats.incomplete_resumes == 1
        await client.handle_raw(_msg(type="reward_event", channel="reward", timestamp=1, seq=2, payload={}))
        assert client.stats.messages["reward_event"] == 4
        assert client.epoch == "E2" and client.last_seq == 2

    asyncio.run(scenario())


def test_decimated_session_configures_the_gap_rule() -> None:
    async def scenario() -> None:
        client = WirthforgeClient()
        await client.handle_raw(_startup(1, rate=15), FakeConnection())  # type: ignore[arg-type]
        assert client.stats.gaps.expected_step == 4.0

    asyncio.run(scenario())


def test_first_frame_of_a_session_is_neither_latency_nor_gap() -> None:
    stats = ClientStats()
    stats.start_session(60, 60)
    old_handover = {"timestamp": 1_000.0, "frameNumber": 100}
    stats.record_energy_update(old_handover, now_ms=1_400.0, at=1.0)  # 400 ms old
    stats.record_energy_update({"timestamp": 1_399.0, "frameNumber": 124}, now_ms=1_400.0, at=1.01)
    stats.record_energy_update({"timestamp": 1_415.0, "frameNumber": 125}, now_ms=1_416.0, at=1.02)
    snapshot = stats.snapshot(now=1.05)
    assert snapshot["frame_gaps"] == 0
    assert snapshot["latency_ms"]["max"] == 1.0
    assert snapshot["energy_hz"] == 3.0
    assert snapshot["sessions"] == 1


def test_1_1_requests_refused_on_1_0_client() -> None:
    async def scenario() -> None:
        client = WirthforgeClient(protocol="1.0")
        with pytest.raises(UnsupportedByProtocolError):
            await client.subscribe(["energy"])
        with pytest.raises(UnsupportedByProtocolError):
            await client.pause_energy()
        modern = WirthforgeClient()
        assert await modern.subscribe(["energy"]) is False  # not connected: applies on connect
        assert await modern.set_energy_rate(20) is False
        assert _query(modern.build_url())["energyRate"] == ["20"]

    asyncio.run(scenario())


def test_on_message_errors_do_not_break_the_client() -> None:
    async def scenario() -> None:
        async def broken(message: dict[str, Any]) -> None:
            raise RuntimeError("consumer bug")

        client = WirthforgeClient(on_message=broken)
        await client.handle_raw(_startup(1), FakeConnection())  # type: ignore[arg-type]
        await client.handle_raw(_msg(type="reward_event", channel="reward", timestamp=1, seq=2, payload={}))
        assert client.stats.messages["reward_event"] == 1

    asyncio.run(scenario())


# ---------------------------------------------------------------------------
# Against tiny in-process websockets servers (loopback): close codes, reconnect


Handler = Callable[[ServerConnection], Awaitable[None]]


def _fake_server(handler: Handler, **kwargs: Any) -> Server:
    """A loopback server on a free port; ``async with`` it to have it closed at the end."""
    return serve(handler, "127.0.0.1", 0, subprotocols=["wirthforge.1.1", "wirthforge.1.0"], **kwargs)


def _port(server: Server) -> int:
    return server.sockets[0].getsockname()[1]


def _startup_text(seq: int, epoch: str = "E1", resume: dict[str, Any] | None = None) -> str:
    return _startup(seq, epoch, resume).decode()


def test_policy_close_is_not_retried() -> None:
    async def scenario() -> None:
        connections = 0

        async def handler(ws: ServerConnection) -> None:
            nonlocal connections
            connections += 1
            await ws.send(_startup_text(1))
            await ws.close(1008, "rate limit exceeded")

        async with _fake_server(handler) as server:
            client = WirthforgeClient(f"ws://127.0.0.1:{_port(server)}/ws", backoff=Backoff(0.01, 0.05))
            async with client:
                await asyncio.wait_for(client.wait_stopped(), scaled(5))
                assert client.state == "refused"
                assert (client.close_code, client.close_reason) == (1008, "rate limit exceeded")
                with pytest.raises(PolicyCloseError):
                    await client.wait_for(lambda m: True, timeout=1)
                await asyncio.sleep(0.2)
            assert connections == 1
            assert client.state == "refused"

    asyncio.run(scenario())


def test_http_403_is_not_retried() -> None:
    async def scenario() -> None:
        def reject(connection: ServerConnection, request: Any) -> Response:
            return connection.respond(403, "Origin not allowed\n")

        async with _fake_server(lambda ws: ws.wait_closed(), process_request=reject) as server:
            async with WirthforgeClient(f"ws://127.0.0.1:{_port(server)}/ws", origin="http://evil.example") as client:
                await asyncio.wait_for(client.wait_stopped(), scaled(5))
                assert client.state == "refused"
                assert client.close_code is None
                assert client.close_reason is not None and client.close_reason.startswith("HTTP 403")
                with pytest.raises(PolicyCloseError):
                    await client.wait_connected(timeout=1)

    asyncio.run(scenario())


@pytest.mark.parametrize("code", [1011, 1012, 1013, None])
def test_transient_closes_reconnect_with_resume(code: int | None) -> None:
    """1011/1012/1013 and an aborted TCP connection (None) lead to a resumed reconnect."""

    async def scenario() -> None:
        requests: list[str] = []
        offered: list[str | None] = []

        async def handler(ws: ServerConnection) -> None:
            requests.append(ws.request.path)
            offered.append(ws.request.headers.get("Sec-WebSocket-Protocol"))
            if len(requests) == 1:
                await ws.send(_startup_text(1))
                await ws.send(_msg(type="reward_event", channel="reward", timestamp=1, seq=7, payload={}).decode())
                await asyncio.sleep(0.05)
                if code is None:
                    ws.transport.abort()
                else:
                    await ws.close(code, "bye")
                return
            await ws.send(_startup_text(9, resume={"status": "complete", "replayed": 1}))
            await ws.send(_msg(type="reward_event", channel="reward", timestamp=1, seq=8, payload={}).decode())
            await ws.wait_closed()

        async with _fake_server(handler) as server:
            url = f"ws://127.0.0.1:{_port(server)}/ws"
            async with WirthforgeClient(url, channels=["reward"], backoff=Backoff(0.01, 0.05)) as client:
                second = client.wait_for(lambda m: m.get("seq") == 8, timeout=scaled(5))
                await second
                assert client.stats.reconnects == 1
                assert client.stats.recovered == 1
                assert client.close_code == (code or 1006)
                assert client.state == "open"
                assert client.stats.last_reconnect_ms is not None and client.stats.last_reconnect_ms < 2000
            assert client.state == "closed"
            assert offered == ["wirthforge.1.1", "wirthforge.1.1"]
            assert _query(requests[0]) == {"channels": ["reward,system"]}
            assert _query(requests[1]) == {"epoch": ["E1"], "lastSeq": ["7"], "channels": ["reward,system"]}

    asyncio.run(scenario())


def test_connection_refused_is_retried_until_the_server_appears() -> None:
    async def scenario() -> None:
        async with _fake_server(lambda ws: ws.wait_closed()) as probe:
            port = _port(probe)

        async def handler(ws: ServerConnection) -> None:
            await ws.send(_startup_text(1))
            await ws.wait_closed()

        async with WirthforgeClient(f"ws://127.0.0.1:{port}/ws", backoff=Backoff(0.01, 0.05)) as client:
            await asyncio.sleep(0.3)
            assert client.stats.connect_failures >= 2
            assert client.state in ("connecting", "reconnecting")
            async with serve(handler, "127.0.0.1", port, subprotocols=["wirthforge.1.1"]):
                try:
                    session = await client.wait_connected(timeout=scaled(5))
                    assert session["epoch"] == "E1"
                finally:
                    await client.close()

    asyncio.run(scenario())


def test_silent_connection_is_aborted_by_the_watchdog() -> None:
    async def scenario() -> None:
        sessions = 0

        async def handler(ws: ServerConnection) -> None:
            nonlocal sessions
            sessions += 1
            await ws.send(_startup_text(sessions, epoch="E1"))
            await ws.wait_closed()  # then silence: no heartbeats

        async with _fake_server(handler) as server:
            url = f"ws://127.0.0.1:{_port(server)}/ws"
            async with WirthforgeClient(url, stale_after=0.3, backoff=Backoff(0.01, 0.05)) as client:
                await client.wait_connected(timeout=scaled(5))
                again = client.wait_for(lambda m: m["type"] == "startup_complete", timeout=scaled(5))
                await again
                assert client.close_code == 1006

    asyncio.run(scenario())


def test_pause_is_reapplied_after_reconnect() -> None:
    async def scenario() -> None:
        inbound: list[list[str]] = []

        async def handler(ws: ServerConnection) -> None:
            seen: list[str] = []
            inbound.append(seen)
            await ws.send(_startup_text(len(inbound) * 10))
            async for text in ws:
                seen.append(orjson.loads(text)["type"])
                if len(inbound) == 1 and seen == ["pause_energy"]:
                    await ws.close(1012, "restarting")

        async with _fake_server(handler) as server:
            url = f"ws://127.0.0.1:{_port(server)}/ws"
            async with WirthforgeClient(url, backoff=Backoff(0.01, 0.05)) as client:
                await client.wait_connected(timeout=scaled(5))
                again = client.wait_for(lambda m: m["type"] == "startup_complete", timeout=scaled(5))
                assert await client.pause_energy() is True
                await again
                for _ in range(50):
                    if len(inbound) == 2 and inbound[1]:
                        break
                    await asyncio.sleep(0.02)
            assert inbound[1][0] == "pause_energy"

    asyncio.run(scenario())


def test_stats_snapshot_shape() -> None:
    stats = ClientStats()
    stats.record_reconnect(0.25)
    stats.record_reconnect(0.1)
    snapshot = stats.snapshot()
    assert snapshot["reconnects"] == 2
    assert snapshot["reconnect_ms"] == {"last": 100.0, "max": 250.0}
    assert snapshot["state"] == "idle"


async def test_dead_link_rule_is_three_announced_heartbeat_intervals_of_any_frame() -> None:
    """PROTOCOL.md §10.3 with the default watchdog: any frame keeps the link; 3 silent intervals drop it."""
    interval_ms = 100
    kept_alive_s = 0.6  # six intervals of energy frames and no heartbeat at all
    sessions: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        sessions.append(loop.time())
        startup = orjson.loads(_startup(len(sessions) * 100))
        startup["payload"]["heartbeatIntervalMs"] = interval_ms
        await ws.send(orjson.dumps(startup).decode())
        if len(sessions) == 1:
            for i in range(int(kept_alive_s / 0.05)):
                await asyncio.sleep(0.05)
                frame = {
                    "type": "energy_update",
                    "channel": "energy",
                    "timestamp": 1.0,
                    "seq": 101 + i,
                    "frameNumber": i,
                    "payload": {},
                }
                await ws.send(orjson.dumps(frame).decode())
        await ws.wait_closed()  # then silence

    async with _fake_server(handler) as server:
        url = f"ws://127.0.0.1:{_port(server)}/ws"
        async with WirthforgeClient(url, backoff=Backoff(0.01, 0.05)) as client:
            await client.wait_connected(timeout=scaled(5))
            again = client.wait_for(lambda m: m["type"] == "startup_complete", timeout=scaled(5))
            await again
            assert client.close_code == 1006  # aborted by the watchdog
            alive = sessions[1] - sessions[0]
            # Not before the frames stopped, and well before the 5 s connect timeout would have fired.
            assert kept_alive_s + 0.25 <= alive <= kept_alive_s + scaled(2.0), alive
