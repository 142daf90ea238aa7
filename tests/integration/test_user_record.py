"""What the server keeps about the user, end to end: real servers, real clients, the real database file.

- numbers by default: after a real answer (the live source with the Ollama
  adapter against tests/fake_ollama.py: the same path as any model, from
  the backend's stream through the frame loop and the hub to the event
  log) the answer's words are nowhere in the file or its WAL; with
  ``--record-text`` they are, and a replay shows them;
- delete and purge: gone from the API, from the rows, the file shrinks,
  frames keep coming at 60 Hz meanwhile; a foreign Origin cannot delete;
- private files (0700 / 0600), fresh and tightened;
- the user's progress: one level_up across a threshold, kept across a
  restart, reset by a purge that asks;
- self-check: an interior-damaged file is moved aside at start; a resume
  whose read fails is answered ``incomplete`` (not closed 1011), and the
  routes answer 503 with a JSON reason while reads fail.

Every server runs on its own database under ``tmp_path``; every wait is
bounded and scaled by tests/timing.py. Measured numbers are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import FrameWatcher
from tests.fake_ollama import TOKENS, FakeOllama
from tests.server_process import ServerProcess
from tests.timing import TIME_FACTOR, scaled
from tests.wsutil import next_of_type, wait_until

pytestmark = pytest.mark.timeout(scaled(180))

PROMPT = "Describe the tide pools near Quokkahaven"
SECRET_WORDS = [b"Waves", b" deep", b" blue", b"Quokkahaven"]  # answer tokens, and the prompt


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


def persistent(db: Path, **extra: str) -> dict[str, str]:
    return {"WF_PERSIST": "1", "WF_PERSIST_PATH": str(db), **extra}


def live(fake: FakeOllama, db: Path, **extra: str) -> dict[str, str]:
    return persistent(db, WF_SOURCE="ollama", WF_OLLAMA_URL=fake.url, WF_OLLAMA_MODEL="tiny", **extra)


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """Start *server* for a block and stop it after (it can start again: same port, same database)."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def file_bytes(db: Path) -> bytes:
    return b"".join(Path(f"{db}{suffix}").read_bytes() for suffix in ("", "-wal") if Path(f"{db}{suffix}").exists())


def db_size(db: Path) -> int:
    return sum(os.path.getsize(f"{db}{s}") for s in ("", "-wal") if os.path.exists(f"{db}{s}"))


class Reader:
    """A protocol 1.1 client keeping every non-energy message (bounded by the test's length)."""

    def __init__(self, url: str, subprotocol: str = "wirthforge.1.1") -> None:
        self.url = url
        self.subprotocol = subprotocol
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reader:
        if self.subprotocol == "wirthforge.1.1":
            self._ws = await connect(
                self.url + "?channels=experience,reward,system", subprotocols=[self.subprotocol], proxy=None
            )  # type: ignore[list-item]
        else:  # protocol 1.0: no subprotocol, every channel
            self._ws = await connect(self.url, proxy=None)
        self._task = asyncio.create_task(self._read())
        await wait_until(lambda: any(m["type"] == "startup_complete" for m in self.messages), 5, "startup_complete")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._ws.close()

    async def _read(self) -> None:
        async for text in self._ws:
            self.messages.append(json.loads(text))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def completed(self, session_id: str) -> bool:
        return any(
            m["payload"]["sessionId"] == session_id and m["payload"]["isComplete"] for m in self.of("token_stream")
        )


async def ask(http: httpx.AsyncClient, reader: Reader) -> str:
    """One real answer: POST /api/prompt and wait for its isComplete; returns its sessionId."""
    response = await http.post("/api/prompt", json={"prompt": PROMPT})
    assert response.status_code == 202, response.text
    session_id = str(response.json()["sessionId"])
    await wait_until(lambda: reader.completed(session_id), 15, "the answer's isComplete")
    return session_id


async def recorded(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    """The recording of *session_id*, once the log has committed its completion."""
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        sessions = (await http.get("/api/sessions")).json()["sessions"]
        found[:] = [s for s in sessions if s["sessionId"] == session_id and s["complete"]]
        return bool(found)

    deadline = time.monotonic() + scaled(5)
    while not await listed():
        assert time.monotonic() < deadline, "the recording was not listed"
        await asyncio.sleep(0.1)
    return found[0]


# -- numbers by default, text by choice -----------------------------------------------


async def test_a_real_answer_leaves_no_text_in_the_file_by_default(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    # Energy frames recorded at 20 Hz: the fake answer lasts about 0.4 s, which the default 2 Hz may miss.
    with ServerProcess(env=live(fake_ollama, db, WF_PERSIST_ENERGY_RATE="20")) as server:
        async with Reader(server.ws_url) as reader, httpx.AsyncClient(base_url=server.http_url) as http:
            session_id = await ask(http, reader)
            live_words = [
                t
                for m in reader.of("token_stream")
                if m["payload"]["sessionId"] == session_id
                for t in m["payload"]["tokens"]
            ]
            assert live_words == TOKENS, "the live stream carries the words"
            recording = await recorded(http, session_id)
            assert recording["tokens"] == len(TOKENS) and recording["textKept"] is False
            assert (await http.get("/api/sessions")).json()["recordText"] is False
            assert server.health()["persistence"]["recordText"] is False
            running = file_bytes(db)  # the file and its WAL while the server runs
            exported = [
                json.loads(line)
                for line in (await http.get(f"/api/sessions/{recording['id']}/events")).text.splitlines()
            ]
            async with Reader(server.ws_url, subprotocol="") as old_client:
                started = await http.post("/api/replay", json={"session": recording["id"], "speed": 4})
                assert started.status_code == 202, started.text
                label = f"replay-{session_id}"
                await wait_until(lambda: reader.completed(label) and old_client.completed(label), 15, "the replay")
            replayed = [m["payload"] for m in reader.of("token_stream") if m["payload"]["sessionId"] == label]
            # The energy with a placeholder per token, and why: textOmitted (1.1); 1.0 keeps its upstream shape.
            assert sum(len(p["tokens"]) for p in replayed) == len(TOKENS)
            assert all(p["textOmitted"] is True and set(p["tokens"]) <= {""} for p in replayed)
            old = [m["payload"] for m in old_client.of("token_stream") if m["payload"]["sessionId"] == label]
            assert sum(len(p["tokens"]) for p in old) == len(TOKENS) and not any("textOmitted" in p for p in old)
            assert server.health()["messages"]["validationFailures"] == 0
        streams = [m for m in exported if m["type"] == "token_stream"]
        assert sum(len(m["payload"]["tokens"]) for m in streams) == len(TOKENS), "the counts are kept"
        assert all(m["payload"]["textOmitted"] is True and set(m["payload"]["tokens"]) <= {""} for m in streams)
        assert any(m["type"] == "energy_update" for m in exported), "and the energy"
    stopped = file_bytes(db)
    for word in SECRET_WORDS:
        assert word not in running and word not in stopped, word


async def test_the_embedded_models_answer_leaves_no_text_in_the_file(tmp_path: Path) -> None:
    """The default source, once and short: none of its answer's words is stored as a token."""
    pytest.importorskip("llama_cpp")
    db = tmp_path / "events.sqlite3"
    env = persistent(db, WF_SOURCE="embedded", WF_MAX_TOKENS="24")
    with ServerProcess(env=env, startup_timeout=scaled(60)) as server:
        async with Reader(server.ws_url) as reader, httpx.AsyncClient(base_url=server.http_url) as http:
            response = await http.post("/api/prompt", json={"prompt": PROMPT})
            assert response.status_code == 202, response.text
            session_id = str(response.json()["sessionId"])
            await wait_until(lambda: reader.completed(session_id), 90, "the embedded model's answer")
            words = [
                t
                for m in reader.of("token_stream")
                if m["payload"]["sessionId"] == session_id
                for t in m["payload"]["tokens"]
            ]
            recording = await recorded(http, session_id)
            assert recording["tokens"] == len(words) and recording["textKept"] is False
            running = file_bytes(db)
    stored = running + file_bytes(db)
    # Each token as the log would store it with --record-text: a JSON string of its own.
    distinct = {w for w in words if len(w.strip()) >= 3}
    assert distinct, f"an answer with words: {words!r}"
    leaked = [w for w in distinct if json.dumps(w, ensure_ascii=False).encode() in stored]
    assert not leaked, leaked
    assert b"Quokkahaven" not in stored


async def test_with_record_text_the_file_keeps_the_answer_and_a_replay_shows_it(
    fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    db = tmp_path / "events.sqlite3"
    with ServerProcess(env=live(fake_ollama, db, WF_RECORD_TEXT="1")) as server:
        assert server.health()["persistence"]["recordText"] is True
        async with Reader(server.ws_url) as reader, httpx.AsyncClient(base_url=server.http_url) as http:
            session_id = await ask(http, reader)
            recording = await recorded(http, session_id)
            assert recording["textKept"] is True
            assert b"Waves" in file_bytes(db)
            assert b"Quokkahaven" not in file_bytes(db), "prompts are never stored"
            started = await http.post("/api/replay", json={"session": recording["id"], "speed": 4})
            assert started.status_code == 202, started.text
            label = f"replay-{session_id}"
            await wait_until(lambda: reader.completed(label), 15, "the replay's isComplete")
            replayed = [
                t
                for m in reader.of("token_stream")
                if m["payload"]["sessionId"] == label
                for t in m["payload"]["tokens"]
            ]
            assert replayed == TOKENS


# -- delete and purge -------------------------------------------------------------------


def reward(index: int) -> dict[str, Any]:
    return {
        "type": "reward_event",
        "payload": {"rewardType": "milestone", "title": f"r{index}", "points": 1, "description": "d" * 400},
    }


def tokens(session_id: str, words: list[str], complete: bool) -> dict[str, Any]:
    return {
        "type": "token_stream",
        "payload": {"tokens": words, "isComplete": complete, "sessionId": session_id, "modelId": "wirthforge-sim"},
    }


async def test_delete_and_purge_remove_recordings_and_reclaim_space_while_frames_flow(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    with ServerProcess(env=persistent(db, WF_ENABLE_PUBLISH="1")) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=scaled(30)) as http:
            for batch in range(16):  # about 7 MB of rows to hand back
                response = await http.post("/publish", json=[reward(batch * 1000 + i) for i in range(1000)])
                assert response.status_code == 202, response.text
            for name in ("doomed-1", "kept-1"):
                await http.post("/publish", json=[tokens(name, ["a", "b"], False), tokens(name, ["c"], True)])
            ids: dict[str, str] = {}
            deadline = time.monotonic() + scaled(5)
            while len(ids) < 2 and time.monotonic() < deadline:
                sessions = (await http.get("/api/sessions")).json()["sessions"]
                ids = {s["sessionId"]: s["id"] for s in sessions if s["sessionId"] in ("doomed-1", "kept-1")}
                await asyncio.sleep(0.1)
            assert len(ids) == 2
            doomed = ids["doomed-1"]

            foreign = await http.delete(f"/api/sessions/{doomed}", headers={"Origin": "http://evil.example"})
            assert foreign.status_code == 403
            assert (await http.delete("/api/sessions", headers={"Origin": "http://evil.example"})).status_code == 403
            assert (await http.get(f"/api/sessions/{doomed}/events")).status_code == 200, "still there"

            deleted = await http.delete(f"/api/sessions/{doomed}", headers={"Origin": server.origin})
            assert deleted.status_code == 200, deleted.text
            assert (await http.get(f"/api/sessions/{doomed}/events")).status_code == 404
            assert (await http.post("/api/replay", json={"session": doomed})).status_code == 404
            assert (await http.delete(f"/api/sessions/{doomed}")).status_code == 404
            for bad in ("9" * 40, "abc", "-1", "١٢"):
                assert (await http.delete(f"/api/sessions/{bad}")).status_code == 404, bad
            listed = {s["id"] for s in (await http.get("/api/sessions")).json()["sessions"]}
            assert doomed not in listed and ids["kept-1"] in listed
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
                rows = connection.execute("SELECT count(*) FROM events WHERE recording = ?", (int(doomed),)).fetchone()[
                    0
                ]
                assert rows == 0
                assert (
                    connection.execute("SELECT count(*) FROM recordings WHERE id = ?", (int(doomed),)).fetchone()[0]
                    == 0
                )

            async with FrameWatcher(server.ws_url, channels="energy", server=server) as watcher:
                await asyncio.sleep(0.5)
                before = db_size(db)
                start = watcher.mark()
                purged = await http.delete("/api/sessions")
                purge_s = time.monotonic() - start
                await asyncio.sleep(max(0.0, 1.0 - purge_s))
                end = time.monotonic()
                after = db_size(db)
                frames = watcher.window(start, end)
            assert purged.status_code == 200, purged.text
            assert purged.json()["rows"] > 16_000
            assert (await http.get("/api/sessions")).json()["sessions"] == [] or all(
                s["sessionId"] not in ids for s in (await http.get("/api/sessions")).json()["sessions"]
            )
    rate = len(frames) / (end - start)
    numbers = [number for _, number, _ in frames]
    clock_rate = (numbers[-1] - numbers[0]) / (frames[-1][0] - frames[0][0])
    print(
        f"\npurge: file {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB in {purge_s * 1000:.0f} ms; "
        f"{len(frames)} frames in {end - start:.2f} s = {rate:.1f} Hz received, frame clock {clock_rate:.1f} Hz"
    )
    assert after < before / 2, (before, after)
    assert 0.9 * 60 / TIME_FACTOR <= rate <= 1.1 * 60 * TIME_FACTOR, f"{rate:.1f} Hz during the purge"


# -- files only the user can read --------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_and_log_are_private_fresh_and_after_loosening(tmp_path: Path) -> None:
    home = tmp_path / "xdg"
    folder = home / "wirthforge"
    env = {"WF_PERSIST": "1", "XDG_DATA_HOME": str(home)}  # the default path: the user's data directory
    with ServerProcess(env=env) as server:
        assert server.health()["persistence"]["path"] == str(folder / "events.sqlite3")
        assert mode(folder) == 0o700 and mode(folder / "events.sqlite3") == 0o600
        assert mode(Path(f"{folder / 'events.sqlite3'}-wal")) == 0o600
    folder.chmod(0o755)
    for name in ("events.sqlite3", "events.sqlite3.lock"):
        (folder / name).chmod(0o644)
    with ServerProcess(env=env):
        assert mode(folder) == 0o700
        assert mode(folder / "events.sqlite3") == 0o600 and mode(folder / "events.sqlite3.lock") == 0o600


# -- the user's progress ------------------------------------------------------------------


async def test_progress_levels_up_once_survives_a_restart_and_a_purge_resets_it(
    fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    db = tmp_path / "events.sqlite3"
    server = ServerProcess(env=live(fake_ollama, db))
    with running(server):
        assert (await asyncio.to_thread(lambda: httpx.get(server.http_url + "/api/progress"))).json()["level"] == 1
    below = 500 - len(TOKENS) // 2  # one answer crosses level 2's threshold
    with sqlite3.connect(db) as connection:
        connection.execute("INSERT OR REPLACE INTO progress VALUES (1, ?, ?, 3, '[]')", (below, below * 0.01))
    with running(server):
        async with Reader(server.ws_url) as reader, httpx.AsyncClient(base_url=server.http_url) as http:
            await ask(http, reader)
            await ask(http, reader)  # a second answer stays within level 2
            await asyncio.sleep(0.2)
            rewards = [m["payload"] for m in reader.of("reward_event")]
            progress = (await http.get("/api/progress")).json()
        level_ups = [r for r in rewards if r["rewardType"] == "level_up"]
        assert [r["level"] for r in level_ups] == [2], rewards
        assert [r["title"] for r in rewards if r["rewardType"] == "achievement"] == ["First answer"]
        assert progress["level"] == 2 and progress["tokens"] == below + 2 * len(TOKENS) and progress["sessions"] == 5
        assert progress["achievements"] == ["first_answer"] and progress["nextLevelAt"] == 2000
    with running(server):  # a restart keeps it
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (await http.get("/api/progress")).json()["level"] == 2
            kept = await http.delete("/api/sessions")  # a purge alone keeps the progress
            assert kept.json()["progressReset"] is False and (await http.get("/api/progress")).json()["level"] == 2
            reset = await http.delete("/api/sessions", params={"resetProgress": "true"})
            assert reset.status_code == 200 and reset.json()["progressReset"] is True
            assert (await http.get("/api/progress")).json()["level"] == 1
            await asyncio.sleep(0.3)  # committed with the next batch
    with running(server):
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            progress = (await http.get("/api/progress")).json()
            assert (progress["level"], progress["tokens"], progress["achievements"]) == (1, 0, [])


# -- self-check -------------------------------------------------------------------------------


def test_an_interior_damaged_log_is_found_at_start_and_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    with ServerProcess(env=persistent(db, WF_ENABLE_PUBLISH="1")) as server:
        for batch in range(4):
            server.publish([reward(batch * 1000 + i) for i in range(1000)])
        time.sleep(0.5)
    size = db.stat().st_size
    assert size > 256 * 1024
    header = db.read_bytes()[:100]
    with open(db, "r+b") as handle:  # 16 KiB of garbage in the middle; the header stays intact
        handle.seek(size // 2)
        handle.write(os.urandom(16 * 1024))
    assert db.read_bytes()[:100] == header
    with ServerProcess(env=persistent(db, WF_ENABLE_PUBLISH="1")) as server:
        persistence = server.health()["persistence"]
        assert persistence["status"] == "ok" and persistence["restored"] is False
        assert "integrity check failed" in server.log_text() and "moved it to" in server.log_text()
    aside = [p for p in tmp_path.glob("events.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].stat().st_size == size


def _without_file_permission_override() -> list[str]:
    """A command prefix under which root obeys file permissions (as any user does)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot make the file unreadable for the server")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


async def test_a_resume_whose_read_fails_is_incomplete_and_routes_answer_503(tmp_path: Path) -> None:
    """The file becomes unreadable for new readers (the writer keeps its open handle): reads fail."""
    db = tmp_path / "events.sqlite3"
    env = persistent(db, WF_ENABLE_PUBLISH="1", WF_HISTORY_MESSAGES="5")
    with ServerProcess(env=env, prefix=_without_file_permission_override()) as server:
        async with connect(server.ws_url, subprotocols=["wirthforge.1.1"], proxy=None) as ws:  # type: ignore[list-item]
            epoch = json.loads(await ws.recv())["payload"]["epoch"]
        seqs = server.publish([reward(i) for i in range(50)])["seqs"]  # more than memory keeps
        time.sleep(0.3)
        db.chmod(0)
        try:
            url = f"{server.ws_url}?channels=reward,system&epoch={epoch}&lastSeq={seqs[0]}"
            async with connect(url, subprotocols=["wirthforge.1.1"], proxy=None) as ws:  # type: ignore[list-item]
                first = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
                assert first["type"] == "startup_complete"
                assert first["payload"]["resume"]["status"] == "incomplete", first["payload"]["resume"]
                await next_of_type(ws, "heartbeat", 3.0)  # the connection stays open (no 1011)
            persistence = server.health()["persistence"]
            assert persistence["status"] == "degraded" and persistence["readFailures"] >= 1
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                for response in (
                    await http.get("/api/sessions"),
                    await http.get("/api/sessions/range/events", params={"from": 0, "to": 1e15}),
                    await http.post("/api/replay", json={"from": 0, "to": 1e15}),
                ):
                    assert response.status_code == 503, response.text
                    assert "could not be read" in response.json()["error"]
        finally:
            db.chmod(0o600)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (await http.get("/api/sessions")).status_code == 200
        assert server.health()["persistence"]["status"] == "ok", "reads work again"
        assert "Traceback" not in server.log_text()
