"""The event log, the hub's use of it and the replay source, in process (no server, no sockets)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.messages import Event
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.sources.replay import ReplaySource
from wirthforge_ws.storage import migrations
from wirthforge_ws.storage.event_log import EventLog, PersistenceLocked, StoredMessage
from wirthforge_ws.stream.hub import Hub, ResumeRequest

MIB = 1024 * 1024


def open_log(path: Path, **overrides: float) -> EventLog:
    options = {"max_bytes": 64 * MIB, "max_age_seconds": 3600.0, "energy_rate": 2.0, **overrides}
    log = EventLog(path, **options)  # type: ignore[arg-type]
    log.open()
    return log


def reward(points: int) -> Event:
    return messages.reward_event(reward_type="milestone", title=f"r{points}", points=points)


def hub_on(log: EventLog, history_seconds: float = 120.0) -> Hub:
    return Hub(SchemaSet(), history_messages=10_000, history_seconds=history_seconds, durable=log)


async def resume(hub: Hub, last_seq: int) -> tuple[dict[str, object], list[int]]:
    request = ResumeRequest(hub.epoch, last_seq)
    plan = hub.plan_resume({"reward", "system"}, request, await hub.recall({"reward", "system"}, request))
    return plan.result.as_payload(), [m.event.payload["points"] for m in plan.replay]


def wait_written(log: EventLog, rows: int) -> None:
    deadline = time.monotonic() + 5
    while log.stats.written < rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.stats.written >= rows


async def test_epoch_and_seqs_continue_and_resume_reads_the_disk(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    log = open_log(db)
    hub = hub_on(log)
    seqs = [hub.publish(reward(i)).seq for i in range(10)]  # type: ignore[union-attr]
    epoch = hub.epoch
    log.close()

    log = open_log(db)
    hub = hub_on(log)
    assert hub.epoch == epoch and log.restored and not log.previous_run_crashed
    assert hub.publish(reward(10)).seq > max(seqs)  # type: ignore[union-attr]
    result, points = await resume(hub, seqs[3])
    assert result == {"status": "complete", "replayed": 7}
    assert points == [4, 5, 6, 7, 8, 9, 10]  # six from disk, one from memory, each once
    log.close()


async def test_a_crash_is_reported_and_seqs_are_never_reused(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    log = open_log(db)
    hub = hub_on(log)
    for i in range(5):
        hub.publish(reward(i))
    wait_written(log, 5)
    last_issued = hub.publish(reward(5)).seq  # type: ignore[union-attr]
    # A crash: the writer never gets to flush or mark a clean shutdown.
    log._queue.put(None)  # noqa: SLF001 - stop the writer without its final bookkeeping
    log._finish = lambda connection: None  # type: ignore[method-assign]
    log._thread.join()  # type: ignore[union-attr]
    log._writer.close()  # type: ignore[union-attr]
    import os

    os.close(log._lock_file)  # type: ignore[arg-type]

    log = open_log(db)
    hub = hub_on(log)
    assert log.previous_run_crashed
    assert hub.publish(reward(6)).seq > last_issued  # type: ignore[union-attr]
    result, points = await resume(hub, 2)
    assert result["status"] == "incomplete" and result["reason"] == "server_crashed"
    assert points == sorted(points) and points[-1] == 6
    log.close()
    # The crash stays on record: a client from before it is told so after a clean restart too.
    log = open_log(db)
    hub = hub_on(log)
    assert (await resume(hub, 2))[0]["reason"] == "server_crashed"
    log.close()


async def test_retention_by_age_makes_an_old_resume_incomplete(tmp_path: Path) -> None:
    log = open_log(tmp_path / "events.sqlite3", max_age_seconds=1.0)
    hub = hub_on(log, history_seconds=0.1)  # memory forgets fast: the rest must come from disk
    seqs = [hub.publish(reward(i)).seq for i in range(10)]  # type: ignore[union-attr]
    wait_written(log, 10)
    time.sleep(0.2)
    hub.publish(reward(10))
    assert await resume(hub, seqs[0]) == ({"status": "complete", "replayed": 10}, list(range(1, 11)))
    time.sleep(1.0)
    log._retain(sqlite3.connect(log.path, isolation_level=None))  # noqa: SLF001 - one pass now, not in 5 s
    result, points = await resume(hub, seqs[0])
    assert result["status"] == "incomplete" and result["reason"] == "history_exceeded"
    assert points == []  # gone from memory (age) and from disk (retention)
    log.close()


def test_retention_by_size_keeps_the_file_under_the_cap(tmp_path: Path) -> None:
    cap = 1 * MIB
    log = open_log(tmp_path / "events.sqlite3", max_bytes=cap)
    hub = hub_on(log)
    big = "x" * 400
    for i in range(6000):  # ~3 MB of rewards through a 1 MiB log, at a pace the writer keeps up with
        hub.publish(messages.reward_event(reward_type="milestone", title="r", points=i, description=big))
        if i % 50 == 0:
            time.sleep(0.02)
    wait_written(log, 6000)
    assert log.stats.pruned > 0 and log.stats.dropped == 0
    assert (tmp_path / "events.sqlite3").stat().st_size <= cap
    assert log.pruned_through > 0
    log.close()


def test_forward_migration_keeps_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "events.sqlite3"
    log = open_log(db)
    hub_on(log).publish(reward(1))
    log.close()
    step = ("ALTER TABLE recordings ADD COLUMN note TEXT",)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, step))
    log = open_log(db)
    assert log.available
    log.close()
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchone()[0] == len(migrations.MIGRATIONS)
        assert "note" in [row[1] for row in connection.execute("PRAGMA table_info(recordings)")]
        assert connection.execute("SELECT count(*) FROM events WHERE type = 'reward_event'").fetchone()[0] == 1


def test_a_database_from_a_newer_server_is_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    open_log(db).close()
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    log = open_log(db)
    assert log.available and not log.restored
    log.close()
    assert len([p for p in tmp_path.glob("events.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]) == 1


def test_a_second_log_on_the_same_file_is_refused(tmp_path: Path) -> None:
    log = open_log(tmp_path / "events.sqlite3")
    with pytest.raises(PersistenceLocked, match="another server"):
        open_log(tmp_path / "events.sqlite3")
    log.close()
    open_log(tmp_path / "events.sqlite3").close()  # free again once the first is closed


def test_a_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    log = EventLog(
        tmp_path / "events.sqlite3", max_bytes=64 * MIB, max_age_seconds=3600.0, energy_rate=2.0, queue_limit=10
    )
    log.open()
    log._queue.put(None)  # noqa: SLF001 - stop the writer so nothing drains the queue
    log._thread.join()  # type: ignore[union-attr]
    started = time.perf_counter()
    for i in range(100):
        log.append(i + 1, reward(i), 0.0)
    assert time.perf_counter() - started < 0.5
    assert log.stats.dropped == 90 and log.lost_through == 100
    assert log.status()["status"] == "degraded" and "queue full" in log.status()["error"]
    log._thread = None
    log.close()


def test_energy_frames_are_thinned_to_the_recording_rate(tmp_path: Path) -> None:
    log = open_log(tmp_path / "events.sqlite3", energy_rate=2.0)
    frame = messages.energy_update(
        frame_number=1, total_energy=0.5, delta_energy=0.0, tokens_generated=0, processing_time_ms=1.0, model_id="m"
    )
    now_ms = time.time() * 1000.0
    for i in range(120):  # two seconds of 60 Hz frames
        log.append(i + 1, frame, now_ms + i * 1000.0 / 60)
    log.close()
    with sqlite3.connect(tmp_path / "events.sqlite3") as connection:
        assert connection.execute("SELECT count(*) FROM events").fetchone()[0] == 4


def stored(seq: int, ms: float, event: Event) -> StoredMessage:
    return StoredMessage(seq, event, ms)


def test_replay_source_keeps_order_timing_and_uses_the_loops_frame_numbers() -> None:
    def tokens(words: list[str], complete: bool = False) -> Event:
        evidence = [messages.token_evidence(dt_ms=50.0, top_k=[0.6, 0.4]) for _ in words]
        return messages.token_stream(
            tokens=words, is_complete=complete, session_id="s1", model_id="m", first_index=0, token_evidence=evidence
        )

    recorded = [
        stored(
            1,
            1000.0,
            messages.energy_update(
                frame_number=500,
                total_energy=0.2,
                delta_energy=0,
                tokens_generated=0,
                processing_time_ms=1,
                model_id="m",
                distribution={"generation": 0.1, "attention": 0.06, "reasoning": 0.04},
            ),
        ),
        stored(2, 1100.0, tokens(["a", "b"])),
        stored(
            3,
            1150.0,
            messages.interference_event(
                frame_number=509, pattern_type="neutral", models=["m", "p"], intensity=0.5, coherence=0.9
            ),
        ),
        stored(4, 1500.0, tokens(["c"], complete=True)),
    ]
    for speed in (1.0, 2.0):
        source = ReplaySource(recorded, speed=speed, model_id="m", label="replay-s1")
        emitted: list[tuple[int, list[str], bool]] = []
        events: list[Event] = []
        first = source.step(7, 50.0)
        assert first.total_energy == pytest.approx(0.2)
        assert first.distribution == pytest.approx({"generation": 0.1, "attention": 0.06, "reasoning": 0.04})
        frame = 7
        while not source.finished and frame < 1000:
            frame += 1
            activity = source.step(frame, 50.0 + (frame - 7) / 60)
            if activity.tokens:
                emitted.append((frame, activity.tokens, activity.response_complete))
                assert all(b.session_id == "replay-s1" and b.recorded_evidence for b in activity.streams)
            events += activity.events
        assert [t for _, words, _ in emitted for t in words] == ["a", "b", "c"]
        # 100 ms and 500 ms after the start at 60 Hz: 6 and 30 frames after it (halved at 2x), within a frame.
        late = [f - 7 - expected for (f, _, _), expected in zip(emitted, (6 / speed, 30 / speed), strict=True)]
        assert all(0 <= frames <= 1 for frames in late), late
        assert emitted[-1][2] is True
        assert len(events) == 1 and 0 <= events[0].frame_number - 7 - 9 / speed <= 1  # the loop's number, not 509


def test_a_councils_recording_ends_when_every_member_has_ended(tmp_path: Path) -> None:
    log = open_log(tmp_path / "events.sqlite3")
    now_ms = time.time() * 1000.0
    streams = [("a", ["x"], False), ("b", ["y", "z"], False), ("a", [], True), ("b", ["w"], False), ("b", [], True)]
    for seq, (model, tokens, complete) in enumerate(streams, start=1):
        event = messages.token_stream(tokens=tokens, is_complete=complete, session_id="s1", model_id=model)
        log.append(seq, event, now_ms + seq)
    log.close()
    log = open_log(tmp_path / "events.sqlite3")
    try:
        (recording,) = log.recordings()
        assert (recording.session_id, recording.model_id, recording.tokens, recording.messages) == ("s1", "a", 4, 5)
        assert recording.complete
    finally:
        log.close()
