"""What the event log keeps about the user: text by choice, deletion, private files, progress, self-check.

In process: a real SQLite file under ``tmp_path``, the real hub, no server.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.messages import Event
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.storage import deletion, event_log, migrations, queries
from wirthforge_ws.storage import recordings as recordings_module
from wirthforge_ws.storage.event_log import EventLog, StorageError
from wirthforge_ws.storage.privacy import without_text
from wirthforge_ws.storage.progress import LEVEL_THRESHOLDS, ProgressState, UserProgress, level_for
from wirthforge_ws.stream.hub import Hub, ResumeRequest

MIB = 1024 * 1024
SECRET = "Zanzibar-quokka"


def open_log(path: Path, **options: object) -> EventLog:
    log = EventLog(path, max_bytes=64 * MIB, max_age_seconds=3600.0, energy_rate=2.0, **options)  # type: ignore[arg-type]
    log.open()
    return log


def hub_on(log: EventLog, history_messages: int = 10_000) -> Hub:
    return Hub(SchemaSet(), history_messages=history_messages, history_seconds=120.0, durable=log)


def tokens(words: list[str], session: str = "s1", complete: bool = False) -> Event:
    return messages.token_stream(tokens=words, is_complete=complete, session_id=session, model_id="m")


def wait_written(log: EventLog, rows: int) -> None:
    deadline = time.monotonic() + 5
    while log.stats.written < rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.stats.written >= rows


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- numbers by default, text by choice ---------------------------------------


def test_without_text_keeps_counts_and_evidence_and_drops_words() -> None:
    payload = {
        "tokens": ["Hel", "lo"],
        "isComplete": False,
        "sessionId": "s",
        "modelId": "m",
        "firstIndex": 4,
        "tokenEvidence": [{"dtMs": 12.5, "topK": [0.7, 0.2]}, {"dtMs": 30.0, "topK": {"lo": 0.6, "la": 0.3}}],
    }
    stored = without_text("token_stream", payload)
    assert stored["tokens"] == ["", ""] and stored["textOmitted"] is True
    assert stored["firstIndex"] == 4
    assert stored["tokenEvidence"] == [{"dtMs": 12.5, "topK": [0.7, 0.2]}, {"dtMs": 30.0, "topK": [0.6, 0.3]}]
    assert payload["tokens"] == ["Hel", "lo"], "the live message is not changed"
    other = {"rewardType": "milestone", "title": "t", "points": 1}
    assert without_text("reward_event", other) is other


@pytest.mark.parametrize("record_text", [False, True])
def test_the_file_holds_the_text_only_with_record_text(tmp_path: Path, record_text: bool) -> None:
    db = tmp_path / "events.sqlite3"
    log = open_log(db, record_text=record_text)
    hub = hub_on(log)
    hub.publish(tokens([" " + SECRET, " flows"]))
    hub.publish(tokens([], complete=True))
    wait_written(log, 2)
    (recording,) = log.recordings()
    assert recording.tokens == 2 and recording.text_kept is record_text
    stored = [m.event.payload for m in log.session_events(recording)]
    log.close()
    found = any(
        SECRET.encode() in Path(f"{db}{suffix}").read_bytes()
        for suffix in ("", "-wal")
        if Path(f"{db}{suffix}").exists()
    )
    assert found is record_text
    if not record_text:
        assert stored[0]["tokens"] == ["", ""] and stored[0]["textOmitted"] is True
        SchemaSet().validate_outbound("1.1", messages.envelope("1.1", Event("token_stream", stored[0]), 1.0, 1))


# -- files only the user can read ------------------------------------------------


def test_a_fresh_data_directory_and_log_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "wirthforge"
    log = open_log(folder / "events.sqlite3", private_dir=True)
    hub_on(log).publish(tokens(["a"]))
    wait_written(log, 1)
    assert mode(folder) == 0o700
    for suffix in ("", "-wal", "-shm", ".lock"):
        assert mode(Path(f"{folder / 'events.sqlite3'}{suffix}")) == 0o600, suffix
    log.close()


def test_a_loose_data_directory_and_log_are_tightened_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "wirthforge"
    open_log(folder / "events.sqlite3").close()
    folder.chmod(0o755)
    (folder / "events.sqlite3").chmod(0o644)
    log = open_log(folder / "events.sqlite3", private_dir=True)
    assert mode(folder) == 0o700 and mode(folder / "events.sqlite3") == 0o600
    log.close()


def test_a_named_paths_existing_folder_is_left_alone_but_the_file_is_private(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    log = open_log(tmp_path / "events.sqlite3")
    assert mode(tmp_path) == 0o755 and mode(tmp_path / "events.sqlite3") == 0o600
    log.close()


# -- delete and purge ---------------------------------------------------------------


def test_delete_removes_one_recording_and_its_replays_and_purge_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deletion.reclaim, "__defaults__", (64,))  # several steps for this small file
    db = tmp_path / "events.sqlite3"
    log = open_log(db, record_text=True)
    hub = hub_on(log)
    for session in ("a", "b", "replay-a"):
        for _ in range(50):
            hub.publish(tokens(["x" * 2000], session=session))
        hub.publish(tokens([], session=session, complete=True))
    wait_written(log, 153)
    ids = {r.session_id: r.id for r in log.recordings()}
    assert log.delete_recording(ids["a"]) is True
    assert log.delete_recording(ids["a"]) is False, "a second delete finds nothing"
    assert [r.session_id for r in log.recordings()] == ["b"]
    assert log.recording(ids["a"]) is None
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM events WHERE recording = ?", (ids["a"],)).fetchone()[0] == 0
    before = db.stat().st_size
    assert log.purge() > 0
    assert log.recordings() == []
    assert db.stat().st_size < before / 2
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        assert connection.execute("PRAGMA freelist_count").fetchone()[0] == 0, "every free page handed back"
    hub.publish(tokens(["after"], session="c"))  # the log goes on after a purge
    wait_written(log, 154)
    assert [r.session_id for r in log.recordings()] == ["c"]
    log.close()


def test_a_resume_from_before_a_purge_is_incomplete(tmp_path: Path) -> None:
    log = open_log(tmp_path / "events.sqlite3")
    hub = hub_on(log, history_messages=2)
    for points in range(5):
        hub.publish(messages.reward_event(reward_type="milestone", title="r", points=points))
    wait_written(log, 5)
    log.purge()
    request = ResumeRequest(hub.epoch, log.first_seq)
    import asyncio

    plan = hub.plan_resume({"reward"}, request, asyncio.run(hub.recall({"reward"}, request)))
    assert plan.result.status == "incomplete"
    log.close()


def test_a_command_on_an_unavailable_log_is_a_storage_error(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "x.sqlite3", max_bytes=64 * MIB, max_age_seconds=3600.0, energy_rate=2.0)
    with pytest.raises(StorageError):
        log.purge()


# -- progress -----------------------------------------------------------------------


def test_levels_follow_the_documented_thresholds() -> None:
    assert LEVEL_THRESHOLDS == (0, 500, 2_000, 8_000, 32_000)
    assert [level_for(n) for n in (0, 499, 500, 1999, 2000, 8000, 32000, 10**9)] == [1, 1, 2, 2, 3, 4, 5, 5]


def test_crossing_a_threshold_gives_one_level_up_and_first_use_achievements_once() -> None:
    saved: list[ProgressState] = []
    progress = UserProgress(ProgressState(tokens=490), persist=saved.append)
    events = progress.tokens("p1", 5) + progress.tokens("p1", 5) + progress.tokens("p1", 5)
    assert [(e.payload["rewardType"], e.payload.get("level")) for e in events] == [("level_up", 2)]
    assert [e.payload["title"] for e in progress.complete("p1")] == ["First answer"]
    progress.tokens("p2", 3, council=True)
    assert [e.payload["title"] for e in progress.complete("p2")] == ["First council"]
    progress.tokens("p3", 3)
    assert progress.complete("p3") == [], "first-use achievements come once"
    assert progress.state.sessions == 3 and progress.state.tokens == 511 and saved[-1].tokens == 511
    progress.reset()
    assert progress.state.level == 1 and saved[-1].tokens == 0


def test_progress_survives_a_restart_of_the_log(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    log = open_log(db)
    progress = UserProgress(log.progress, persist=log.save_progress)
    progress.tokens("p1", 600)
    progress.complete("p1")
    hub_on(log).publish(tokens(["a"]))  # progress goes out with the next commit
    wait_written(log, 1)
    log.close()
    log = open_log(db)
    assert (log.progress.level, log.progress.tokens, log.progress.achievements) == (
        2,
        600,
        ["first_answer", "first_long_answer"],
    )
    log.close()


# -- self-check -----------------------------------------------------------------------


def fill(db: Path, rows: int = 3000) -> None:
    log = open_log(db)
    hub = hub_on(log)
    for i in range(rows):
        hub.publish(messages.reward_event(reward_type="milestone", title=f"r{i}", points=i, description="d" * 200))
    wait_written(log, rows)
    log.close()


def damage_inside(db: Path) -> None:
    size = db.stat().st_size
    assert size > 64 * 1024, "a file large enough to damage inside"
    with open(db, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(os.urandom(16 * 1024))


def test_an_interior_damaged_file_is_found_at_open_and_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    fill(db)
    damage_inside(db)
    log = open_log(db)
    assert log.available and not log.restored, "a fresh file"
    assert len([p for p in tmp_path.glob("events.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]) == 1
    log.close()


async def test_a_failing_read_makes_resume_incomplete_degrades_then_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path / "events.sqlite3")
    hub = hub_on(log, history_messages=2)
    for points in range(5):
        hub.publish(messages.reward_event(reward_type="milestone", title="r", points=points))
    wait_written(log, 5)

    def broken(*args: object, **kwargs: object) -> object:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(queries.EventQueries, "read_reliable", broken)
    monkeypatch.setattr(queries.EventQueries, "recordings", broken)
    request = ResumeRequest(hub.epoch, log.first_seq)
    plan = hub.plan_resume({"reward"}, request, await hub.recall({"reward"}, request))
    assert plan.result.status == "incomplete"
    assert log.status()["status"] == "degraded" and log.status()["readFailures"] == 1
    with pytest.raises(StorageError):
        log.recordings()
    deadline = time.monotonic() + 5
    while log.stats.checks < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.stats.checks == 1 and log.stats.replaced == 0, "the check found the file sound"
    monkeypatch.undo()
    assert log.recordings() == [] and log.status()["status"] == "ok"
    log.close()


def test_a_file_from_before_incremental_vacuum_is_converted_by_its_first_purge(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    open_log(db).close()
    with sqlite3.connect(db, isolation_level=None) as connection:  # as files written before incremental vacuum
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("PRAGMA auto_vacuum=NONE")
        connection.execute("VACUUM")
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    log = open_log(db, record_text=True)
    hub = hub_on(log)
    for _ in range(2000):
        hub.publish(tokens(["y" * 500]))
    wait_written(log, 2000)
    before = log.disk_bytes()
    log.purge()
    assert log.disk_bytes() < before / 4
    log.close()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_a_file_damaged_while_running_is_replaced_and_the_run_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    fill(db)
    log = open_log(db)
    hub = hub_on(log, history_messages=2)
    epoch, before = hub.epoch, log.committed_through
    with open(db, "r+b") as handle:  # every page but the first: any read of the rows fails
        handle.seek(4096)
        handle.write(os.urandom(db.stat().st_size - 4096))
    with pytest.raises(StorageError):
        log.events_between(0, 1e15)
    assert log.status()["status"] == "degraded"
    deadline = time.monotonic() + 5
    while log.stats.replaced < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.stats.replaced == 1 and log.status()["status"] == "ok"
    assert len([p for p in tmp_path.glob("events.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]) == 1
    outbound = hub.publish(messages.reward_event(reward_type="milestone", title="after", points=1))
    assert outbound is not None and outbound.seq > before
    wait_written(log, 1)
    assert [m.seq for m in log.events_between(0, 1e15)] == [outbound.seq]
    assert log.pruned_through >= before, "a resume from before the damage is incomplete"
    log.close()
    log = open_log(db)
    assert log.epoch == epoch and log.first_seq > outbound.seq, "the epoch and seqs go on"
    log.close()


def test_a_delete_after_close_is_answered_not_left_waiting(tmp_path: Path) -> None:
    log = open_log(tmp_path / "events.sqlite3")
    log.close()
    started = time.monotonic()
    with pytest.raises(StorageError):
        log.delete_recording(1)
    assert time.monotonic() - started < 2


def test_a_log_written_with_text_by_an_older_server_stays_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "events.sqlite3"
    current = migrations.MIGRATIONS
    monkeypatch.setattr(migrations, "MIGRATIONS", current[:1])  # the schema before text_kept and progress
    with monkeypatch.context() as patched:
        patched.setattr(recordings_module.RecordingTracker, "assign", _old_assign)
        patched.setattr(event_log, "load_progress", lambda connection: ProgressState())  # no progress table yet
        log = open_log(db, record_text=True)
        hub_on(log).publish(tokens([" old", " words"], complete=True))
        wait_written(log, 1)
        log.close()
    monkeypatch.setattr(migrations, "MIGRATIONS", current)
    log = open_log(db)  # migrated in place
    (recording,) = log.recordings()
    assert recording.text_kept is True and recording.tokens == 2
    assert [m.event.payload["tokens"] for m in log.session_events(recording)] == [[" old", " words"]]
    assert log.progress.level == 1
    log.close()


def _old_assign(
    self: recordings_module.RecordingTracker,
    connection: sqlite3.Connection,
    seq: int,
    kind: str,
    timestamp_ms: float,
    payload: dict[str, object],
) -> int | None:
    """RecordingTracker.assign as the schema before text_kept needs it (eight columns)."""
    if kind != "token_stream":
        return None
    words = payload.get("tokens") or []
    connection.execute(
        "INSERT OR REPLACE INTO recordings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, payload["sessionId"], payload["modelId"], timestamp_ms, timestamp_ms, len(words), 1, 1),  # type: ignore[arg-type]
    )
    return seq


def test_a_deleted_recording_is_not_replayed_by_a_resume_from_memory(tmp_path: Path) -> None:
    log = open_log(tmp_path / "events.sqlite3")
    hub = hub_on(log)
    last = hub.publish(messages.reward_event(reward_type="milestone", title="r", points=0))
    assert last is not None
    hub.publish(tokens(["gone"], session="a"))
    hub.publish(tokens(["kept"], session="b"))
    assert hub.forget(lambda event: event.type == "token_stream" and event.payload["sessionId"] == "a") == 1
    plan = hub.plan_resume({"experience"}, ResumeRequest(hub.epoch, last.seq))
    assert [m.event.payload["tokens"] for m in plan.replay] == [["kept"]]
    log.close()
