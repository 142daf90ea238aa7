"""Unit tests of the server's building blocks, without a server.

Outbox (ordering, latest-wins, bound), FrameClock (rate, skipping instead of
bursting), security helpers (Host parsing, rate limits, the Origin/Host guard
on hand-made ASGI scopes), settings (env and CLI), the energy maths and
subprotocol negotiation.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from wirthforge_ws import settings as settings_module
from wirthforge_ws.connection.limits import TokenBucket
from wirthforge_ws.connection.outbox import Outbox
from wirthforge_ws.connection.security import InvalidMessageWindow, OriginHostGuard, host_name
from wirthforge_ws.energy.meter import DECAY_HALF_LIFE_S, EnergyMeter, certainty, jensen_shannon
from wirthforge_ws.protocol.codes import negotiate
from wirthforge_ws.settings import Settings
from wirthforge_ws.stream.clock import FrameClock, Tick

# ---------------------------------------------------------------------------
# Outbox


def drain(outbox: Outbox) -> list[str]:
    texts = []
    while (text := outbox.get_nowait()) is not None:
        texts.append(text)
    return texts


def test_outbox_preserves_order() -> None:
    outbox = Outbox(limit=10)
    for text in ("a", "b", "c"):
        assert outbox.put_reliable(text)
    outbox.put_latest("energy_update", "f1")
    assert outbox.put_reliable("d")
    assert drain(outbox) == ["a", "b", "c", "f1", "d"]
    assert outbox.get_nowait() is None
    assert len(outbox) == 0


def test_outbox_latest_wins_replaces_and_reappends() -> None:
    outbox = Outbox(limit=10)
    outbox.put_reliable("r1")
    assert outbox.put_latest("energy_update", "u1") is False  # nothing replaced
    outbox.put_latest("energy_field", "f1")
    outbox.put_reliable("r2")
    assert outbox.put_latest("energy_update", "u2") is True  # u1 replaced ...
    assert len(outbox) == 4
    # ... and u2 goes to the tail, after r2, so the order on the wire stays the publish order.
    assert drain(outbox) == ["r1", "f1", "r2", "u2"]


def test_outbox_latest_entry_can_be_queued_again_after_it_left() -> None:
    outbox = Outbox(limit=10)
    outbox.put_latest("energy_update", "u1")
    assert outbox.get_nowait() == "u1"
    assert outbox.put_latest("energy_update", "u2") is False  # u1 was sent: nothing to replace
    assert drain(outbox) == ["u2"]


def test_outbox_equal_texts_are_distinct_entries() -> None:
    outbox = Outbox(limit=10)
    outbox.put_reliable("same")
    outbox.put_latest("energy_update", "same")
    outbox.put_latest("energy_update", "newer")  # must remove the frame, not the reliable message
    assert drain(outbox) == ["same", "newer"]


def test_outbox_bounds_reliable_messages_only() -> None:
    outbox = Outbox(limit=3)
    assert [outbox.put_reliable(str(i)) for i in range(4)] == [True, True, True, False]
    assert outbox.reliable_count == 3
    outbox.put_latest("energy_update", "frame")  # frames are not counted against the bound
    assert len(outbox) == 4
    assert outbox.get_nowait() == "0"
    assert outbox.put_reliable("3")  # room again
    assert outbox.put_reliable("4") is False
    assert drain(outbox) == ["1", "2", "frame", "3"]
    with pytest.raises(ValueError):
        Outbox(limit=0)


def test_outbox_get_waits_for_a_message() -> None:
    async def scenario() -> None:
        outbox = Outbox(limit=4)
        getter = asyncio.create_task(outbox.get())
        await asyncio.sleep(0.02)
        assert not getter.done()  # nothing queued: it waits
        outbox.put_latest("energy_update", "u1")
        assert await asyncio.wait_for(getter, 1.0) == "u1"
        # Emptied again, a second get waits again (the event was cleared).
        getter = asyncio.create_task(outbox.get())
        await asyncio.sleep(0.02)
        assert not getter.done()
        outbox.put_reliable("r1")
        assert await asyncio.wait_for(getter, 1.0) == "r1"

    asyncio.run(asyncio.wait_for(scenario(), 5))


# ---------------------------------------------------------------------------
# FrameClock


def test_frame_clock_rate() -> None:
    async def scenario() -> tuple[list[float], list[Tick], float]:
        clock = FrameClock(60.0)
        times: list[float] = []
        ticks: list[Tick] = []
        async for tick in clock.run():
            times.append(time.monotonic())
            ticks.append(tick)
            if len(ticks) == 61:
                break
        return times, ticks, clock.achieved_rate

    times, ticks, achieved = asyncio.run(asyncio.wait_for(scenario(), 5))
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 57.0 <= rate <= 63.0, f"{rate:.2f} Hz"
    assert 57.0 <= achieved <= 63.0, f"achieved_rate {achieved:.2f} Hz"
    assert [tick.frame_number for tick in ticks] == list(range(61))
    # Deadlines are on the absolute grid: no drift from per-frame work.
    period = 1 / 60
    assert all(abs((b.deadline - a.deadline) - period) < 1e-9 for a, b in zip(ticks, ticks[1:]))


def test_frame_clock_skips_after_a_stall_instead_of_bursting() -> None:
    async def scenario() -> tuple[FrameClock, list[Tick], list[float], float, int]:
        clock = FrameClock(60.0)
        ticks: list[Tick] = []
        times: list[float] = []
        stall_end = 0.0
        skipped_before = 0
        async for tick in clock.run():
            ticks.append(tick)
            times.append(time.monotonic())
            if len(ticks) == 10:
                skipped_before = clock.frames_skipped
                time.sleep(0.1)  # a blocking 100 ms stall inside the loop (6 periods)
                stall_end = time.monotonic()
            if len(ticks) == 20:
                break
        return clock, ticks, times, stall_end, skipped_before

    clock, ticks, times, stall_end, skipped_before = asyncio.run(asyncio.wait_for(scenario(), 5))
    skipped = clock.frames_skipped - skipped_before
    assert 4 <= skipped <= 7, f"{skipped} frames skipped after a 100 ms stall"
    # The frame number jumps over the skipped frames.
    assert ticks[10].frame_number - ticks[9].frame_number == skipped + 1
    # No burst: at most the one overdue tick fires at once; the rest keep the period.
    after = times[10:]
    assert sum(1 for t in after if t - stall_end < 0.010) <= 1, [round((t - stall_end) * 1000, 1) for t in after]
    intervals = [b - a for a, b in zip(after[1:], after[2:])]
    assert min(intervals) > 0.010, [round(i * 1000, 1) for i in intervals]
    assert all(abs(tick.lateness) < 1 / 60 for tick in ticks[10:])


def test_frame_clock_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        FrameClock(0)


# ---------------------------------------------------------------------------
# Security helpers


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8145", "localhost"),
        ("LocalHost:8145", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8145", "[::1]"),
        ("[::1]", "[::1]"),
        ("::1", None),  # bare IPv6: not a valid Host (RFC 3986 needs brackets)
        (" evil.example:8145 ", "evil.example"),
        ("127.0.0.1.evil.example:8145", "127.0.0.1.evil.example"),
        ("[::1", None),  # malformed
        ("[::1].evil.example:8145", None),  # nothing may follow the closing bracket but a port
        ("[::1]evil", None),
        ("127.0.0.1:8145.evil.example", None),  # nor follow the port
        ("", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=5)
    now = time.monotonic()
    assert [bucket.take(now) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(now + 0.05) is False  # half a token
    assert bucket.take(now + 0.11) is True  # one token refilled
    assert bucket.take(now + 0.11) is False
    # A long pause refills up to the burst, not beyond.
    later = now + 100.0
    assert sum(bucket.take(later) for _ in range(20)) == 5


def test_token_bucket_sustained_rate() -> None:
    bucket = TokenBucket(rate=100.0, burst=200)
    start = time.monotonic()
    # 1000 messages at 150/s for 6.67 s: the burst covers 200 and the rate 667, so some are refused.
    allowed = sum(bucket.take(start + i / 150.0) for i in range(1000))
    assert 850 <= allowed <= 870
    # At 90/s everything passes.
    bucket = TokenBucket(rate=100.0, burst=200)
    assert all(bucket.take(start + i / 90.0) for i in range(1000))


def test_invalid_message_window() -> None:
    window = InvalidMessageWindow(limit=3, seconds=10.0)
    now = time.monotonic()
    assert [window.record(now + i) for i in range(4)] == [False, False, False, True]
    # Spread out beyond the window, they never add up.
    window = InvalidMessageWindow(limit=3, seconds=10.0)
    assert not any(window.record(now + 11.0 * i) for i in range(20))
    # Old ones leave the window.
    window = InvalidMessageWindow(limit=2, seconds=10.0)
    window.record(now)
    window.record(now + 1)
    assert window.record(now + 10.5) is False  # the first has left
    assert window.record(now + 10.6) is True


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "app.called"})


def guard(**kwargs: Any) -> OriginHostGuard:
    options: dict[str, Any] = {
        "allowed_origins": ["http://127.0.0.1:8145", "http://localhost:8145/"],
        "allowed_hosts": ["wf.lan"],
    }
    options.update(kwargs)
    return OriginHostGuard(_app, **options)


def scope(
    kind: str = "websocket",
    host: str | None = "127.0.0.1:8145",
    origin: str | None = None,
    method: str = "GET",
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    headers = []
    if host is not None:
        headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    result: dict[str, Any] = {
        "type": kind,
        "path": "/ws" if kind == "websocket" else "/publish",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
    }
    if kind == "http":
        result["method"] = method
    if extensions is not None:
        result["extensions"] = extensions
    return result


HOST_REFUSED = "host not allowed (only loopback names are served)"


@pytest.mark.parametrize(
    ("request_scope", "expected"),
    [
        (scope(), None),  # no Origin: a non-browser client
        (scope(origin="http://127.0.0.1:8145"), None),
        (scope(origin="HTTP://LOCALHOST:8145"), None),  # case-insensitive
        (scope(origin="http://localhost:8145/"), None),  # trailing slash on either side
        (scope(origin="http://evil.example"), "origin not allowed"),
        (scope(origin="http://127.0.0.1:8145.evil.example"), "origin not allowed"),
        (scope(origin="https://127.0.0.1:8145"), "origin not allowed"),
        (scope(origin="null"), "origin 'null' not allowed"),
        (scope(host="evil.example:8145"), HOST_REFUSED),
        (scope(host="127.0.0.1.evil.example"), HOST_REFUSED),
        (scope(host=None), HOST_REFUSED),
        (scope(host="[::1]:8145"), None),
        (scope(host="localhost"), None),
        (scope(host="wf.lan:8145"), None),  # an extra allowed host
        (scope(host="evil.example", origin="http://127.0.0.1:8145"), HOST_REFUSED),  # Host first
        (scope("http", origin="http://evil.example"), None),  # GET: a foreign page may read /health
        (scope("http", origin="http://evil.example", method="HEAD"), None),
        (scope("http", origin="http://evil.example", method="POST"), "origin not allowed"),
        (scope("http", origin="null", method="POST"), "origin 'null' not allowed"),
        (scope("http", method="POST"), None),  # a local tool without Origin may publish
        (scope("http", host="evil.example"), HOST_REFUSED),  # DNS rebinding: even a GET
    ],
)
def test_guard_refusal(request_scope: dict[str, Any], expected: str | None) -> None:
    refusal = guard().refusal(request_scope)
    assert (refusal[1] if refusal else None) == expected
    if refusal:
        assert refusal[0] == 403


def test_guard_null_origin_opt_in() -> None:
    assert guard(allow_null_origin=True).refusal(scope(origin="null")) is None
    assert guard(allow_null_origin=True).refusal(scope(origin="http://evil.example")) == (403, "origin not allowed")


def call_guard(request_scope: dict[str, Any]) -> tuple[list[dict[str, Any]], OriginHostGuard]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the guard must not read the request")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    the_guard = guard()
    asyncio.run(the_guard(request_scope, receive, send))
    return sent, the_guard


def test_guard_denies_websocket_with_http_403_before_upgrade() -> None:
    sent, the_guard = call_guard(scope(origin="http://evil.example", extensions={"websocket.http.response": {}}))
    assert [message["type"] for message in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 403
    assert sent[1]["body"] == b"origin not allowed\n"
    assert the_guard.refused == 1


def test_guard_denies_websocket_without_the_extension_by_closing() -> None:
    sent, _ = call_guard(scope(origin="http://evil.example"))
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "origin not allowed"}]


def test_guard_denies_http_with_403() -> None:
    sent, the_guard = call_guard(scope("http", host="evil.example"))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 403
    assert sent[1]["body"].decode().strip() == HOST_REFUSED
    assert the_guard.refused == 1


def test_guard_passes_allowed_requests_through() -> None:
    sent, the_guard = call_guard(scope(origin="http://127.0.0.1:8145"))
    assert sent == [{"type": "app.called"}]
    assert the_guard.refused == 0


# ---------------------------------------------------------------------------
# Settings


def test_settings_defaults() -> None:
    loaded = settings_module.load([], environ={})
    assert loaded == Settings()
    assert loaded.frame_rate == 60.0 and loaded.port == 8145 and loaded.host == "127.0.0.1"
    assert "http://127.0.0.1:8145" in loaded.own_origins and "http://localhost:8145" in loaded.own_origins


def test_settings_env_then_cli() -> None:
    env = {"WF_FRAME_RATE": "30", "WF_PORT": "9000", "WF_SEND_TIMEOUT": "1.5", "WF_TIER": "High-Tier"}
    from_env = settings_module.load([], environ=env)
    assert (from_env.frame_rate, from_env.port, from_env.send_timeout, from_env.tier) == (30.0, 9000, 1.5, "High-Tier")
    # Flags win over the environment; what no flag sets keeps the environment's value.
    both = settings_module.load(["--frame-rate", "50", "--send-queue-limit", "7"], environ=env)
    assert (both.frame_rate, both.send_queue_limit, both.port) == (50.0, 7, 9000)
    assert isinstance(both.frame_rate, float) and isinstance(both.send_queue_limit, int)


def test_settings_tuples() -> None:
    env = {"WF_ALLOWED_ORIGINS": " https://a.example , https://b.example,,", "WF_ALLOWED_HOSTS": ""}
    loaded = settings_module.load([], environ=env)
    assert loaded.allowed_origins == ("https://a.example", "https://b.example")
    assert loaded.allowed_hosts == ()
    # Repeated flags, each possibly comma-separated; they replace the environment's list.
    loaded = settings_module.load(
        ["--allowed-origins", "https://c.example", "--allowed-origins", "https://d.example,https://e.example"],
        environ=env,
    )
    assert loaded.allowed_origins == ("https://c.example", "https://d.example", "https://e.example")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_settings_bool_from_env(raw: str, value: bool) -> None:
    assert settings_module.load([], environ={"WF_ALLOW_NULL_ORIGIN": raw}).allow_null_origin is value


def test_settings_bool_flags() -> None:
    env = {"WF_ENABLE_PUBLISH": "1"}
    assert settings_module.load([], environ=env).enable_publish is True
    assert settings_module.load(["--no-enable-publish"], environ=env).enable_publish is False
    assert settings_module.load(["--enable-publish"], environ={}).enable_publish is True


def test_settings_optional_int() -> None:
    assert settings_module.load([], environ={"WF_SEED": "42"}).seed == 42
    assert settings_module.load([], environ={"WF_SEED": "none"}).seed is None
    assert settings_module.load(["--seed", "7"], environ={"WF_SEED": "42"}).seed == 7


INVALID_ENV = [
    ({"WF_ALLOW_NULL_ORIGIN": "maybe"}, "allow_null_origin"),
    ({"WF_FRAME_RATE": "fast"}, "frame_rate"),
    ({"WF_PORT": "80.5"}, "port"),
    ({"WF_SEED": "random"}, "seed"),
    ({"WF_FRAME_RATE": "0"}, "frame_rate"),
    ({"WF_FRAME_RATE": "-60"}, "frame_rate"),
    ({"WF_HEARTBEAT_INTERVAL": "0"}, "heartbeat_interval"),
    ({"WF_SEND_QUEUE_LIMIT": "0"}, "limit"),
    ({"WF_MAX_MESSAGE_BYTES": "0"}, "limit"),
    ({"WF_TIER": "Huge-Tier"}, "tier"),
]


@pytest.mark.parametrize(
    ("env", "named"), INVALID_ENV, ids=[next(iter(env)) + "=" + next(iter(env.values())) for env, _ in INVALID_ENV]
)
def test_settings_invalid_env_raises(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        settings_module.from_env(env)


@pytest.mark.parametrize(("env", "named"), INVALID_ENV[:3], ids=["bool", "float", "int"])
def test_settings_invalid_env_is_a_usage_error(
    env: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Loading for the command line turns a bad value into a usage error that names the setting."""
    with pytest.raises(SystemExit) as exited:
        settings_module.load([], environ=env)
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--port", "http"], "port"),
        (["--frame-rate", "0"], "frame_rate"),
        (["--tier", "Top"], "tier"),
        (["--enable-publish", "yes"], "unrecognized"),
    ],
)
def test_settings_invalid_flag_is_a_usage_error(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        settings_module.load(argv, environ={})
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_settings_unknown_flag_exits() -> None:
    with pytest.raises(SystemExit):
        settings_module.load(["--no-such-setting", "1"], environ={})


def test_settings_own_origins_follow_host_and_port() -> None:
    assert Settings(port=9001).own_origins == ("http://127.0.0.1:9001", "http://[::1]:9001", "http://localhost:9001")
    assert "http://wf.lan:9001" in Settings(host="wf.lan", port=9001).own_origins


# ---------------------------------------------------------------------------
# Energy


def test_certainty_uniform_vs_peaked() -> None:
    assert certainty([0.2] * 5) == pytest.approx(0.0, abs=1e-12)
    assert certainty([1.0, 0.0, 0.0, 0.0, 0.0]) == pytest.approx(1.0)
    peaked = certainty([0.9, 0.04, 0.03, 0.02, 0.01])
    flatter = certainty([0.4, 0.2, 0.2, 0.1, 0.1])
    assert 0.0 < flatter < peaked < 1.0
    assert peaked > 0.5
    assert certainty([2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)  # unnormalised input is normalised
    assert certainty([1.0]) is None  # K < 2: no certainty


def test_jensen_shannon_bounds() -> None:
    same = [0.5, 0.3, 0.2]
    assert jensen_shannon([same, same]) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon([same, same, same]) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(1.0)
    assert jensen_shannon([[1, 0, 0], [0, 1, 0], [0, 0, 1]]) == pytest.approx(1.0)
    partial = jensen_shannon([[0.7, 0.3], [0.3, 0.7]])
    assert 0.0 < partial < 1.0
    assert jensen_shannon([[0.7, 0.3], [0.3, 0.7]]) == pytest.approx(jensen_shannon([[0.3, 0.7], [0.7, 0.3]]))
    assert jensen_shannon([same]) == 0.0


def charged_meter(start: float) -> tuple[EnergyMeter, float, float]:
    """A meter after a second of steady tokens: (meter, time of the last update, level)."""
    meter = EnergyMeter()
    now = start
    level = 0.0
    for frame in range(60):
        now = start + frame / 60
        tokens = 1 if frame % 4 == 0 else 0
        if tokens:
            meter.on_token(now, [0.8, 0.1, 0.05, 0.03, 0.02])
        level = meter.update(now, tokens).level
    return meter, now, level


def test_energy_decays_with_a_700_ms_half_life() -> None:
    meter, now, level = charged_meter(100.0)
    assert level > 0.1
    # Frame by frame, no tokens, for exactly one half-life (42 frames at 60 Hz) ...
    for frame in range(1, 43):
        reading = meter.update(now + frame / 60, 0)
    assert reading.level == pytest.approx(level / 2, rel=1e-6)
    assert reading.delta < 0
    # ... and for another one, in a single step.
    assert meter.update(now + 42 / 60 + DECAY_HALF_LIFE_S, 0).level == pytest.approx(level / 4, rel=1e-6)
    assert DECAY_HALF_LIFE_S == pytest.approx(0.7)


def test_energy_rises_with_tokens_and_stays_in_range() -> None:
    meter = EnergyMeter()
    levels = []
    for frame in range(120):
        now = frame / 60
        meter.on_token(now, [1.0, 0, 0, 0, 0])  # a token every frame: 60 tokens/s, full speed
        levels.append(meter.update(now, 1).level)
    assert levels[-1] > levels[5] > 0
    assert all(0.0 <= level <= 1.0 for level in levels)
    assert levels[-1] > 0.9
    assert math.isclose(sum(meter.update(2.0, 1).distribution().values()), meter.update(2.0, 1).level, rel_tol=1e-9)


# ---------------------------------------------------------------------------
# Subprotocol negotiation


@pytest.mark.parametrize(
    ("offered", "result"),
    [
        ([], ("1.0", None)),
        (["wirthforge.1.0"], ("1.0", "wirthforge.1.0")),
        (["wirthforge.1.1"], ("1.1", "wirthforge.1.1")),
        (["wirthforge.1.0", "wirthforge.1.1"], ("1.1", "wirthforge.1.1")),
        (["wirthforge.1.1", "wirthforge.1.0"], ("1.1", "wirthforge.1.1")),
        (["chat", "wirthforge.1.0"], ("1.0", "wirthforge.1.0")),
        (["chat"], None),
        (["wirthforge.2.0"], None),
        (["WIRTHFORGE.1.1"], None),  # subprotocol names are case-sensitive
    ],
)
def test_negotiate(offered: list[str], result: tuple[str, str | None] | None) -> None:
    assert negotiate(offered) == result
