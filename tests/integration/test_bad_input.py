"""Bad client input against the real server: answers, policy closes, and no harm to others.

A client that sends garbage gets an error_event and stays connected; a client
that breaks a limit (binary frame, oversized message, flood, too many invalid
messages) is closed with the documented code and reason. Throughout, a second
well-behaved client keeps receiving every energy frame at ~60 Hz and /health
keeps answering (PROTOCOL.md §4 error_event, §7, §8).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.server_process import ServerProcess
from tests.timing import scaled
from tests.wsutil import next_of_type, open_client
from wirthforge_ws.protocol.schemas import SchemaSet

SCHEMAS = SchemaSet()
ABUSE_SECONDS = 1.0  # abusive clients keep coming for this long, while a well-behaved client is measured
ABUSE_CYCLES = 25  # at most this many abusive clients per test


def assert_valid_error(message: dict[str, Any], code: str) -> None:
    SCHEMAS.validate_outbound("1.0", message)  # raises if the 1.0 schema rejects it
    assert set(message) == {"type", "channel", "timestamp", "payload"}
    assert message["channel"] == "system"
    payload = message["payload"]
    assert payload["code"] == code
    assert payload["component"] == "websocket"
    assert payload["message"]


# ---------------------------------------------------------------------------
# error_event answers: the connection stays up


async def test_invalid_json_answers_and_connection_stays_up(ws_url: str) -> None:
    ws = await open_client(ws_url)
    try:
        await ws.send('{"type": "heartbeat_response", "payload": {')
        error = await next_of_type(ws, "error_event")
        assert_valid_error(error, "INVALID_JSON")
        assert error["payload"]["recoverable"] is True
        # Still up: fresh energy frames keep coming after the error.
        numbers = [(await next_of_type(ws, "energy_update"))["frameNumber"] for _ in range(30)]
        assert numbers == sorted(numbers) and len(set(numbers)) == 30
    finally:
        await ws.close()


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ('{"type": "make_coffee", "payload": {}}', "UNKNOWN_MESSAGE_TYPE"),
        ('{"type": "heartbeat_response", "payload": {"sequence": "seven"}}', "INVALID_MESSAGE"),
        ('{"type": "heartbeat_response"}', "INVALID_MESSAGE"),
        ("[1, 2, 3]", "INVALID_MESSAGE"),
        ('{"payload": {}}', "INVALID_MESSAGE"),
        ('{"type": 7, "payload": {}}', "INVALID_MESSAGE"),
        ('{"type": "subscribe", "payload": {"channels": ["energy"]}}', "UNSUPPORTED_BY_PROTOCOL"),
        ('{"type": "pause_energy", "payload": {}}', "UNSUPPORTED_BY_PROTOCOL"),
    ],
    ids=[
        "unknown-type",
        "wrong-field-type",
        "missing-payload",
        "not-an-object",
        "no-type",
        "type-not-string",
        "subscribe-on-1.0",
        "pause-on-1.0",
    ],
)
async def test_bad_message_gets_error_event(ws_url: str, sent: str, code: str) -> None:
    ws = await open_client(ws_url)
    try:
        await ws.send(sent)
        error = await next_of_type(ws, "error_event")
        assert_valid_error(error, code)
        if code == "INVALID_MESSAGE":
            assert error["payload"]["details"]["reason"]
        if code == "UNKNOWN_MESSAGE_TYPE":
            assert "heartbeat_response" in error["payload"]["details"]["accepted"]
        await next_of_type(ws, "energy_update")  # still connected
    finally:
        await ws.close()


async def test_pause_energy_on_1_0_does_not_pause(ws_url: str) -> None:
    """A refused 1.1 request has no effect: the 1.0 client keeps getting energy frames."""
    ws = await open_client(ws_url)
    try:
        await ws.send('{"type": "pause_energy", "payload": {}}')
        await next_of_type(ws, "error_event")
        started = time.monotonic()
        for _ in range(30):
            await next_of_type(ws, "energy_update", timeout=0.5)
        assert time.monotonic() - started < scaled(1.0)
    finally:
        await ws.close()


# ---------------------------------------------------------------------------
# policy closes, with a well-behaved client watching


async def closed_by_server(ws: ClientConnection, timeout: float = 3.0) -> tuple[int, str]:
    """Read until the server closes *ws* (within *timeout* seconds, scaled); the close code and reason it sent."""
    async with asyncio.timeout(scaled(timeout)):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
    received = ws.protocol.close_rcvd
    assert received is not None, "the connection dropped without a close frame from the server"
    return received.code, received.reason


async def send_binary(ws: ClientConnection) -> list[dict[str, Any]]:
    await ws.send(b"\x00\x01binary\xff")
    return []


async def send_oversized(ws: ClientConnection) -> list[dict[str, Any]]:
    padding = "x" * (64 * 1024)
    await ws.send(json.dumps({"type": "heartbeat_response", "payload": {"sequence": 1, "pad": padding}}))
    return []


async def send_flood(ws: ClientConnection) -> list[dict[str, Any]]:
    """Valid messages, far faster than 100/s with bursts of 200."""
    valid = json.dumps({"type": "heartbeat_response", "payload": {"sequence": 123456}})
    for _ in range(1000):
        try:
            await ws.send(valid)
        except ConnectionClosed:
            break
    return []


async def send_invalid_messages(ws: ClientConnection) -> list[dict[str, Any]]:
    """Eleven invalid messages, one at a time, collecting the error_events."""
    errors: list[dict[str, Any]] = []
    for index in range(11):
        try:
            await ws.send(f"not json {index}")
            errors.append(await next_of_type(ws, "error_event", timeout=1.0))
        except (ConnectionClosed, TimeoutError):
            break
    return errors


ABUSES: dict[str, tuple[Callable[[ClientConnection], Awaitable[list[dict[str, Any]]]], int, str]] = {
    "binary-frame": (send_binary, 1003, "binary"),
    "oversized-message": (send_oversized, 1009, ""),
    "flood": (send_flood, 1008, "rate limit exceeded"),
    "invalid-messages": (send_invalid_messages, 1008, "too many invalid messages"),
}


@pytest.mark.parametrize("abuse", list(ABUSES))
async def test_abuse_is_closed_and_does_not_disturb_others(
    server: ServerProcess, frame_watcher: type, abuse: str
) -> None:
    """Abusive clients, one after another for about a second, while a well-behaved client watches."""
    send_abuse, expected_code, expected_reason = ABUSES[abuse]
    closes: list[tuple[int, str]] = []
    errors: list[dict[str, Any]] = []

    async with frame_watcher(server.ws_url, server=server) as watcher:
        start = await asyncio.to_thread(watcher.mark)
        while len(closes) < ABUSE_CYCLES and time.monotonic() - start < ABUSE_SECONDS:
            bad = await open_client(server.ws_url, max_size=None)  # the server's cap is the point
            errors.extend(await send_abuse(bad))
            closes.append(await closed_by_server(bad))
        health = await asyncio.to_thread(server.health, scaled(2.0))
        await asyncio.sleep(max(start + ABUSE_SECONDS - time.monotonic(), 0.0))
        watcher.assert_steady(start, time.monotonic())
    assert closes
    for code, reason in closes:
        assert code == expected_code, f"closed with {code} {reason!r}"
        assert reason, "the close frame carries no reason"
        assert expected_reason in reason.lower()
    assert health["status"] == "ok"
    if expected_code != 1009:  # 1009 is enforced by the WebSocket layer below the app
        assert health["messages"]["connectionsClosed"].get(closes[0][1], 0) >= len(closes), "/health does not count it"
    if abuse == "invalid-messages":
        assert len(errors) >= 10 * len(closes)
        for error in errors:
            assert_valid_error(error, "INVALID_JSON")


async def test_message_just_under_the_cap_is_accepted(ws_url: str) -> None:
    """The cap is 64 KiB: a 60 KiB message gets an answer, not a close."""
    ws = await open_client(ws_url, max_size=None)
    try:
        await ws.send("[" + "0," * (30 * 1024) + "0]")
        error = await next_of_type(ws, "error_event")
        assert_valid_error(error, "INVALID_MESSAGE")
        await next_of_type(ws, "energy_update")
    finally:
        await ws.close()
