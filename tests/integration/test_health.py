"""An honest /health: a background task that dies is reported within a second, and restarted.

The app runs in-process (uvicorn as a task of the test's event loop) so that
the test can break the frame loop from the inside: the energy source starts
raising, the way a bug in a real model adapter would. Before the supervisor,
``/health`` kept saying ``ok`` at 59.999 Hz with the loop dead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from tests.server_process import free_port
from tests.timing import scaled
from wirthforge_ws.http.app import create_app
from wirthforge_ws.settings import Settings


class InProcessServer:
    def __init__(self, app: Any, server: Any, uv: uvicorn.Server, url: str) -> None:
        self.app, self.server, self.uv, self.url = app, server, uv, url


@pytest.fixture
async def in_process() -> AsyncIterator[InProcessServer]:
    settings = Settings(port=free_port(), loop="asyncio", persist=False)
    app = create_app(settings)
    server = app.app.app.state.server  # ExposeTransport -> OriginHostGuard -> FastAPI
    uv = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            ws="websockets-sansio",
            lifespan="on",
            log_level="critical",
            loop="asyncio",
        )
    )
    task = asyncio.create_task(uv.serve())
    async with asyncio.timeout(scaled(10)):
        while not uv.started:
            await asyncio.sleep(0.02)
    try:
        yield InProcessServer(app, server, uv, f"http://{settings.host}:{settings.port}")
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, scaled(10))


async def test_a_dead_frame_loop_shows_in_health_within_a_second(in_process: InProcessServer) -> None:
    source = in_process.server.source
    async with httpx.AsyncClient(base_url=in_process.url, timeout=scaled(5)) as http:
        healthy = (await http.get("/health")).json()
        assert healthy["status"] == "ok", healthy
        assert healthy["problems"] == []

        def broken(*args: object, **kwargs: object) -> Any:
            raise RuntimeError("simulated fault in the energy source")

        original, source.step = source.step, broken
        broken_at = time.monotonic()
        health: dict[str, Any] = healthy
        while time.monotonic() - broken_at < scaled(3):
            health = (await http.get("/health")).json()
            if health["status"] != "ok":
                break
            await asyncio.sleep(0.02)
        seen_after = time.monotonic() - broken_at
        print(f"frame loop death shown by /health after {seen_after * 1000:.0f} ms")
        assert health["status"] in ("failed", "degraded"), health
        assert seen_after <= scaled(1.0), f"/health showed the dead frame loop only after {seen_after:.2f} s"
        assert any("frame-loop" in problem for problem in health["problems"]), health["problems"]
        assert health["tasks"]["frame-loop"]["deaths"] >= 1
        assert "simulated fault" not in str(health), "an exception's text reached /health"

        # The fault heals: the supervisor restarts the loop; the status stays degraded for a while, and says why.
        source.step = original
        async with asyncio.timeout(scaled(10)):
            while True:
                health = (await http.get("/health")).json()
                if health["tasks"]["frame-loop"]["running"] and health["status"] == "degraded":
                    break
                await asyncio.sleep(0.05)
        frame = health["frameLoop"]["frameNumber"]
        await asyncio.sleep(0.5)
        health = (await http.get("/health")).json()
        assert health["frameLoop"]["frameNumber"] > frame, "the restarted frame loop does not advance"
        assert health["status"] == "degraded"
