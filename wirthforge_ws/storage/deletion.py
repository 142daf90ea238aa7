"""Deleting recordings at the user's request, and handing the space back to the file system.

Runs on the writer's connection (the writer thread). A recording goes with
its rows, the energy, council and reward rows recorded meanwhile, and the
recordings of its replays (``replay-<sessionId>``). The space comes back by
incremental vacuum in steps of :data:`VACUUM_STEP_PAGES`; a file created
before incremental vacuum is converted by one ``VACUUM`` (it rewrites the
file once).
"""

from __future__ import annotations

import sqlite3

from .database import rollback

VACUUM_STEP_PAGES = 2048  # pages (8 MiB) handed back per incremental vacuum step
INCREMENTAL = 2  # PRAGMA auto_vacuum's value for incremental vacuum


def delete_recording(connection: sqlite3.Connection, recording_id: int) -> list[int]:
    """Delete the recording and its replays' recordings in one transaction; returns their ids ([] if none)."""
    doomed = connection.execute(
        "SELECT id, started_ms, ended_ms FROM recordings WHERE id = ? OR session_id = "
        "'replay-' || (SELECT session_id FROM recordings WHERE id = ?)",
        (recording_id, recording_id),
    ).fetchall()
    if not any(row[0] == recording_id for row in doomed):
        return []
    connection.execute("BEGIN IMMEDIATE")
    try:
        for doomed_id, started_ms, ended_ms in doomed:
            connection.execute(
                "DELETE FROM events WHERE recording = ? OR (recording IS NULL "
                "AND channel IN ('energy', 'council', 'reward') AND timestamp_ms >= ? AND timestamp_ms <= ?)",
                (doomed_id, started_ms, ended_ms),
            )
            connection.execute("DELETE FROM recordings WHERE id = ?", (doomed_id,))
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise
    return [row[0] for row in doomed]


def reclaim(connection: sqlite3.Connection, step_pages: int = VACUUM_STEP_PAGES) -> None:
    """Hand the file's free pages back to the file system and truncate the WAL."""
    if connection.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        for _ in range(pages // step_pages + 2):  # bounded: each step frees up to step_pages
            if not connection.execute("PRAGMA freelist_count").fetchone()[0]:
                break
            # executescript steps the pragma to its end (execute() frees only one page per call).
            connection.executescript(f"PRAGMA incremental_vacuum({step_pages});")
    else:
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        connection.execute("VACUUM")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
