"""Retention: delete what is older than the age limit, then the oldest rows until under the size target.

Runs on the writer's connection (the writer thread), in short transactions,
and keeps ``pruned_through``: every reliable seq at or below it may have
been deleted, so a resume from before it is ``incomplete``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from .database import PAGE_SIZE, rollback

RETENTION_INTERVAL = 5.0  # seconds between retention passes
RETENTION_TARGET = 0.9  # prune down to this share of the size cap
RETENTION_TARGET_WHEN_FULL = 0.5  # ... or to this share when a write found the cap reached


class Retention:
    """The age and size limits of one log, and the deletes that keep it within them."""

    def __init__(self, *, max_bytes: int, max_age_seconds: float, pruned_through: int = 0) -> None:
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self.pruned_through = pruned_through

    def prune(self, connection: sqlite3.Connection, target_share: float = RETENTION_TARGET) -> int:
        """One pass; returns the rows deleted. Raises sqlite3.Error (the transaction is rolled back)."""
        cutoff = time.time() * 1000.0 - self.max_age_seconds * 1000.0
        deleted = self.delete_where(connection, "timestamp_ms < ?", (cutoff,))
        target = self.max_bytes * target_share
        for _ in range(50):  # bounded: each pass deletes a tenth of the rows
            if bytes_used(connection) <= target:
                break
            count = connection.execute("SELECT count(*) FROM events").fetchone()[0]
            if not count:
                break
            boundary = connection.execute(
                "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (max(count // 10, 1) - 1,)
            ).fetchone()[0]
            deleted += self.delete_where(connection, "seq <= ?", (boundary,))
        if deleted:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def delete_where(self, connection: sqlite3.Connection, condition: str, args: tuple[Any, ...]) -> int:
        """Delete the events matching *condition* and the recordings left without events, in one transaction."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            newest_gone = connection.execute(
                f"SELECT max(seq) FROM events WHERE reliable = 1 AND {condition}", args
            ).fetchone()[0]
            deleted = connection.execute(f"DELETE FROM events WHERE {condition}", args).rowcount
            connection.execute(
                "DELETE FROM recordings WHERE id NOT IN (SELECT DISTINCT recording FROM events "
                "WHERE recording IS NOT NULL)"
            )
            if newest_gone:
                self.pruned_through = max(self.pruned_through, newest_gone)
                connection.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('pruned_through', ?)", (str(self.pruned_through),)
                )
            connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise
        return max(deleted, 0)

    def over_target(self, connection: sqlite3.Connection) -> bool:
        try:
            return bytes_used(connection) > self.max_bytes * RETENTION_TARGET
        except sqlite3.Error:
            return False


def bytes_used(connection: sqlite3.Connection) -> int:
    """Bytes in pages that hold data (the file's size less its free pages)."""
    pages: int = connection.execute("PRAGMA page_count").fetchone()[0]
    free: int = connection.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * PAGE_SIZE
