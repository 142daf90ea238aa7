"""Small async helpers shared by the integration tests; every wait is bounded and scaled.

Example::

    ws = await open_client(server.ws_url, "wirthforge.1.1")
    error = await next_of_type(ws, "error_event")
    await wait_until(lambda: len(seen) == 10, 5.0, "ten messages")
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.timing import scaled


async def open_client(url: str, subprotocol: str | None = None, **kwargs: Any) -> ClientConnection:
    """A client past its startup_complete: protocol 1.0 (no subprotocol) unless *subprotocol* is given."""
    ws = await connect(
        url,
        compression=None,
        proxy=None,
        open_timeout=scaled(5),
        subprotocols=[subprotocol] if subprotocol else None,
        **kwargs,
    )  # type: ignore[list-item]
    first = json.loads(await asyncio.wait_for(ws.recv(), scaled(2)))
    assert first["type"] == "startup_complete"
    return ws


async def next_of_type(ws: ClientConnection, wanted: str, timeout: float = 2.0) -> dict[str, Any]:
    """The next message of type *wanted* (others are skipped), within *timeout* seconds (scaled)."""
    async with asyncio.timeout(scaled(timeout)):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == wanted:
                return message


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *condition* until it holds, or fail after *timeout* seconds (scaled) naming *what*."""
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.1f} s waiting for {what}")
        await asyncio.sleep(0.02)
