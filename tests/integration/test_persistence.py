"""The durable event log end to end: restart and crash resume, record and replay, faults.

Every server here runs on its own database under ``tmp_path`` (never the
user's data directory); every wait is bounded and scaled by tests/timing.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ServerProcess
from tests.timing import scaled
from tests.wsutil import wait_until
from wirthforge_ws.client import Backoff, WirthforgeClient

FRAME_S = 1 / 60
# pytest.ini's --timeout=120 per test, stretched by the time factor like every other bound here.
pytestmark = pytest.mark.timeout(scaled(120))


def persistent(db: Path, **extra: str) -> dict[str, str]:
    return {"WF_ENABLE_PUBLISH": "1", "WF_PERSIST": "1", "WF_PERSIST_PATH": str(db), **extra}


def reward(index: int, description: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"rewardType": "milestone", "title": f"r{index}", "points": index}
    if description:
        payload["description"] = description
    return {"type": "reward_event", "payload": payload}


class Collector:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def points(self) -> list[int]:
        return [m["payload"]["points"] for m in self.of_type("reward_event")]


async def publish(http: httpx.AsyncClient, items: list[dict[str, Any]]) -> list[int]:
    response = await http.post("/publish", json=items)
    assert response.status_code == 202, response.text
    return response.json()["seqs"]


def quick_backoff() -> Backoff:
    return Backoff(0.1, 0.3)


# ---------------------------------------------------------------------------
# Resume across a restart


async def test_graceful_restart_resumes_complete_with_every_message_once(tmp_path: Path) -> None:
    """SIGTERM, start again on the same database: nothing lost, nothing twice, in order."""
    with ServerProcess(env=persistent(tmp_path / "events.sqlite3")) as process:
        collector = Collector()
        async with (
            WirthforgeClient(
                process.ws_url, channels=["reward"], on_message=collector, backoff=quick_backoff()
            ) as client,
            httpx.AsyncClient(base_url=process.http_url, timeout=scaled(10)) as http,
        ):
            await client.wait_connected(timeout=scaled(10))
            epoch = client.epoch
            await publish(http, [reward(i) for i in range(100)])
            await wait_until(lambda: len(collector.points()) == 100, 10, "the first 100 rewards")
            # Published just before the stop: the client may or may not get them live.
            await publish(http, [reward(i) for i in range(100, 300)])
            back = client.wait_for(lambda m: m["type"] == "startup_complete", timeout=scaled(40))
            await asyncio.to_thread(process.stop)  # SIGTERM: uvicorn closes with 1012, the log flushes
            await asyncio.to_thread(process.start)
            # Published after the restart, maybe before the client is back.
            await publish(http, [reward(i) for i in range(300, 350)])
            startup = await back
            await publish(http, [reward(i) for i in range(350, 400)])
            await wait_until(lambda: len(collector.points()) >= 400, 10, "all 400 rewards")
            await asyncio.sleep(0.2)  # a duplicate would arrive now

            resume = startup["payload"]["resume"]
            assert startup["payload"]["epoch"] == epoch
            assert resume["status"] == "complete", resume
            assert collector.points() == list(range(400))
            seqs = [m["seq"] for m in collector.of_type("reward_event")]
            assert seqs == sorted(set(seqs))
            assert client.stats.duplicates == 0
            assert client.stats.reconnects == 1


async def test_sigkill_mid_stream_never_duplicates_and_reports_server_crashed(tmp_path: Path) -> None:
    with ServerProcess(env=persistent(tmp_path / "events.sqlite3")) as process:
        collector = Collector()
        async with (
            WirthforgeClient(
                process.ws_url, channels=["reward"], on_message=collector, backoff=quick_backoff()
            ) as client,
            httpx.AsyncClient(base_url=process.http_url, timeout=scaled(10)) as http,
        ):
            await client.wait_connected(timeout=scaled(10))
            epoch = client.epoch
            for batch in range(5):
                await publish(http, [reward(i) for i in range(batch * 100, (batch + 1) * 100)])
            await asyncio.sleep(0.3)  # most of it committed
            await publish(http, [reward(i) for i in range(500, 600)])  # the last batch may be lost
            back = client.wait_for(lambda m: m["type"] == "startup_complete", timeout=scaled(40))
            await asyncio.to_thread(process.stop, signal.SIGKILL)
            await asyncio.to_thread(process.start)
            startup = await back
            after = await publish(http, [reward(i) for i in range(1000, 1010)])
            await wait_until(lambda: collector.points()[-1:] == [1009], 10, "the rewards after the crash")
            await asyncio.sleep(0.2)

            resume = startup["payload"]["resume"]
            assert startup["payload"]["epoch"] == epoch  # the epoch survives a crash too
            assert resume["status"] == "incomplete" and resume["reason"] == "server_crashed", resume
            points = collector.points()
            assert points == sorted(set(points)), "a reward arrived twice or out of order"
            assert points[:500] == list(range(500))  # committed well before the kill
            assert points[-10:] == list(range(1000, 1010))
            seqs = [m["seq"] for m in collector.of_type("reward_event")]
            assert seqs == sorted(set(seqs)) and min(after) > max(seqs[:-10])  # seqs never reused
            assert client.stats.duplicates == 0
            health = await http.get("/health")
            assert health.json()["persistence"]["previousRunCrashed"] is True


# ---------------------------------------------------------------------------
# Record and replay


async def test_recorded_session_replays_same_tokens_same_order_same_timing(tmp_path: Path) -> None:
    with ServerProcess(env=persistent(tmp_path / "events.sqlite3", WF_SEED="3", WF_RECORD_TEXT="1")) as process:
        collector = Collector()
        async with (
            WirthforgeClient(process.ws_url, channels=["experience"], on_message=collector) as client,
            httpx.AsyncClient(base_url=process.http_url, timeout=scaled(10)) as http,
        ):
            await client.wait_connected(timeout=scaled(10))
            recording: dict[str, Any] | None = None
            deadline = time.monotonic() + scaled(40)
            while recording is None and time.monotonic() < deadline:
                sessions = (await http.get("/api/sessions")).json()["sessions"]
                done = [s for s in sessions if s["complete"] and s["tokens"] >= 20]
                recording = done[0] if done else None
                await asyncio.sleep(0.25)
            assert recording is not None, "no complete generation was recorded"

            exported = await http.get(f"/api/sessions/{recording['id']}/events")
            assert exported.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in exported.text.splitlines()]
            recorded = [m for m in lines if m["type"] == "token_stream"]
            assert {m["payload"]["sessionId"] for m in recorded} == {recording["sessionId"]}
            assert sum(len(m["payload"]["tokens"]) for m in recorded) == recording["tokens"]
            assert any(m["type"] == "energy_update" for m in lines)  # frames were recorded too
            span = await http.get(
                "/api/sessions/range/events", params={"from": recording["startedAt"], "to": recording["endedAt"]}
            )
            in_span = [json.loads(line) for line in span.text.splitlines()]
            assert [m for m in in_span if m["type"] == "token_stream"] == recorded  # a time range, same tokens

            label = "replay-" + recording["sessionId"]
            finished = client.wait_for(
                lambda m: (
                    m["type"] == "token_stream" and m["payload"]["sessionId"] == label and m["payload"]["isComplete"]
                ),
                timeout=scaled(60),
            )
            started = await http.post("/api/replay", json={"session": recording["id"], "speed": 1})
            assert started.status_code == 202, started.text
            await finished
            replayed = [m for m in collector.of_type("token_stream") if m["payload"]["sessionId"] == label]

            def token_times(stream: list[dict[str, Any]]) -> list[tuple[str, float]]:
                return [(token, m["timestamp"]) for m in stream for token in m["payload"]["tokens"]]

            original, again = token_times(recorded), token_times(replayed)
            assert [t for t, _ in again] == [t for t, _ in original]  # same tokens, same order
            offsets = [((b - again[0][1]) - (a - original[0][1])) / 1000.0 for (_, a), (_, b) in zip(original, again)]
            worst = max(abs(o) for o in offsets)
            assert worst <= FRAME_S + scaled(0.012), f"relative timing off by up to {worst * 1000:.1f} ms"
            deadline = time.monotonic() + scaled(5)
            while (await http.get("/api/replay")).json()["active"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert (await http.get("/api/replay")).json() == {"active": False}  # the live source is back


def test_replay_api_rejects_bad_requests(tmp_path: Path) -> None:
    with ServerProcess(env=persistent(tmp_path / "events.sqlite3")) as process:
        with httpx.Client(base_url=process.http_url, timeout=scaled(10)) as http:
            assert http.post("/api/replay", json={"session": "999999999", "speed": 1}).status_code == 404
            assert http.post("/api/replay", json={"session": "1", "speed": 0}).status_code == 422
            assert http.post("/api/replay", json={"session": "1", "speed": "fast"}).status_code == 422
            assert http.post("/api/replay", content=b"{").status_code == 400
            assert http.get("/api/sessions/nope/events").status_code == 404
            refused = http.post("/api/replay", json={"session": "1"}, headers={"Origin": "http://evil.example"})
            assert refused.status_code == 403


def test_sessions_api_says_when_persistence_is_off() -> None:
    with ServerProcess() as process:  # the test default: --no-persist
        with httpx.Client(base_url=process.http_url, timeout=scaled(10)) as http:
            assert http.get("/api/sessions").json() == {"sessions": [], "recording": False}
            assert http.get("/api/sessions/1/events").status_code == 503
            assert http.post("/api/replay", json={"session": "1"}).status_code == 503
            assert http.get("/health").json()["persistence"] == {"status": "disabled"}


# ---------------------------------------------------------------------------
# Faults: the live stream goes on and the fault is reported


async def _stream_goes_on_and_fault_is_reported(process: ServerProcess, *, publish_load: bool) -> dict[str, Any]:
    collector = Collector()
    async with (
        WirthforgeClient(process.ws_url, channels=["energy", "reward"], on_message=collector) as client,
        httpx.AsyncClient(base_url=process.http_url, timeout=scaled(10)) as http,
    ):
        await client.wait_connected(timeout=scaled(10))
        if publish_load:
            for batch in range(10):
                await publish(http, [reward(i, "x" * 400) for i in range(batch * 100, (batch + 1) * 100)])
        await wait_until(
            lambda: any(m["payload"]["code"] == "PERSISTENCE_DEGRADED" for m in collector.of_type("error_event")),
            10,
            "a PERSISTENCE_DEGRADED error_event",
        )
        frames_before = len(collector.of_type("energy_update"))
        await asyncio.sleep(1.0)
        assert len(collector.of_type("energy_update")) - frames_before >= 30, "the energy stream stopped"
        if publish_load:
            assert collector.points() == list(range(1000))  # live delivery is unaffected
        return (await http.get("/health")).json()


async def test_disk_full_keeps_streaming_and_reports(tmp_path: Path) -> None:
    """A size cap as small as allowed: SQLite reports 'database or disk is full' (max_page_count)."""
    with ServerProcess(env=persistent(tmp_path / "events.sqlite3", WF_PERSIST_MAX_BYTES="65536")) as process:
        health = await _stream_goes_on_and_fault_is_reported(process, publish_load=True)
        persistence = health["persistence"]
        assert persistence["dropped"] > 0
        assert persistence["diskBytes"] <= 65536 + 4 * 1024 * 1024  # the file itself never passes the cap
        assert os.path.getsize(tmp_path / "events.sqlite3") <= 65536


async def test_read_only_directory_keeps_streaming_and_reports(tmp_path: Path) -> None:
    prefix: list[str] = []
    if os.geteuid() == 0:  # root ignores permissions: drop the capabilities that let it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a directory read-only for the server")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with ServerProcess(env=persistent(folder / "events.sqlite3"), prefix=prefix) as process:
            health = await _stream_goes_on_and_fault_is_reported(process, publish_load=False)
            assert health["persistence"]["status"] == "unavailable"
            assert "ro" in health["persistence"]["error"]
    finally:
        folder.chmod(0o700)


def test_corrupt_database_is_moved_aside_and_a_fresh_one_used(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    db.write_bytes(b"this is not an SQLite database, just some bytes " * 200)
    with ServerProcess(env=persistent(db)) as process:
        with httpx.Client(base_url=process.http_url, timeout=scaled(10)) as http:
            assert http.post("/publish", json=[reward(1)]).status_code == 202
            time.sleep(0.5)
            persistence = http.get("/health").json()["persistence"]
        assert persistence["status"] == "ok" and persistence["written"] >= 1
        assert "moved it to" in process.log_text()
    aside = list(tmp_path.glob("events.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM events WHERE type = 'reward_event'").fetchone()[0] == 1


def test_second_server_on_the_same_file_refuses_clearly(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    with ServerProcess(env=persistent(db)):
        second = ServerProcess(env=persistent(db))
        with pytest.raises(RuntimeError) as refused:
            second.start()
        assert "exited with 3" in str(refused.value)
        assert "another server is using" in str(refused.value)
