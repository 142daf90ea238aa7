"""The event log's schema and how a database file is brought up to it.

``MIGRATIONS[i]`` brings the schema from version ``i`` to ``i + 1``; a file
records its version in ``schema_version``. Steps are appended, never edited,
so every file written by an older server can be read by a newer one. A file
from a newer server is refused (as corruption: the caller moves it aside).
"""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger("wirthforge.persistence")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # seq is the message's seq: rowid order is publish order.
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            channel TEXT NOT NULL,
            reliable INTEGER NOT NULL,
            frame_number INTEGER,
            timestamp_ms REAL NOT NULL,
            recording INTEGER,
            payload BLOB NOT NULL
        )""",
        "CREATE INDEX events_time ON events (timestamp_ms)",
        "CREATE INDEX events_recording ON events (recording) WHERE recording IS NOT NULL",
        # One row per recorded generation (token_stream sessionId within one run);
        # id is the seq of its first message, unique across restarts.
        """CREATE TABLE recordings (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            model_id TEXT NOT NULL,
            started_ms REAL NOT NULL,
            ended_ms REAL NOT NULL,
            tokens INTEGER NOT NULL,
            messages INTEGER NOT NULL,
            complete INTEGER NOT NULL
        )""",
        "CREATE INDEX recordings_started ON recordings (started_ms)",
    ),
    (
        # Whether a recording's rows keep the answer's text (--record-text). Rows written
        # before this column existed kept it, hence the default.
        "ALTER TABLE recordings ADD COLUMN text_kept INTEGER NOT NULL DEFAULT 1",
        # The user's progress: one row (see progress.py).
        """CREATE TABLE progress (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            tokens INTEGER NOT NULL,
            energy_units REAL NOT NULL,
            sessions INTEGER NOT NULL,
            achievements TEXT NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(connection: sqlite3.Connection) -> None:
    """Create or upgrade the schema in one transaction; raise DatabaseError for a newer file."""
    steps = MIGRATIONS
    target = len(steps)
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else 0
        if version > target:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this server ({target})")
        for step in steps[version:]:
            for statement in step:
                connection.execute(statement)
        if row is None:
            connection.execute("INSERT INTO schema_version VALUES (?)", (target,))
        elif version != target:
            log.info("event log migrated from schema %d to %d", version, target)
            connection.execute("UPDATE schema_version SET version = ?", (target,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
