"""Reading the event log: resume, the recordings list, exports and replays.

Each query opens its own read-only connection (WAL: it never blocks the
writer, nor the writer it), so call these from a worker thread
(``asyncio.to_thread``), never on the event loop. They raise
``sqlite3.Error``; :class:`~.event_log.EventLog` turns that into a fault.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..protocol.messages import Event
from .recordings import Recording

_RECORDING_COLUMNS = "id, session_id, model_id, started_ms, ended_ms, tokens, messages, complete, text_kept"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One row of the log, as the hub and the sessions API read it back."""

    seq: int
    event: Event
    timestamp_ms: float


class EventQueries:
    """The read side of one database file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA query_only=1")
        return connection

    def read_reliable(
        self, after_seq: int, through_seq: int, channels: Iterable[str], limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """Reliable messages with after_seq < seq <= through_seq on *channels*: the newest *limit*, oldest first.

        The flag says whether older ones were left out by the limit.
        """
        wanted = sorted(set(channels))
        marks = ",".join("?" * len(wanted))
        with closing(self._connect()) as connection:
            rows = connection.execute(
                f"SELECT seq, type, frame_number, timestamp_ms, payload FROM events WHERE seq > ? AND seq <= ? "
                f"AND reliable = 1 AND channel IN ({marks}) ORDER BY seq DESC LIMIT ?",
                (after_seq, through_seq, *wanted, limit + 1),
            ).fetchall()
        cut = len(rows) > limit
        return [_stored(row) for row in reversed(rows[:limit])], cut

    def recordings(self, limit: int = 100, before_ms: float | None = None) -> list[Recording]:
        """The newest *limit* recordings that started before *before_ms*, newest first."""
        with closing(self._connect()) as connection:
            rows = connection.execute(
                f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE started_ms < ? ORDER BY started_ms DESC LIMIT ?",
                (before_ms if before_ms is not None else float("inf"), limit),
            ).fetchall()
        return [_recording(row) for row in rows]

    def recording(self, recording_id: int) -> Recording | None:
        with closing(self._connect()) as connection:
            row = connection.execute(
                f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE id = ?", (recording_id,)
            ).fetchone()
        return None if row is None else _recording(row)

    def session_events(self, recording: Recording, *, after_seq: int = 0, limit: int = 1000) -> list[StoredMessage]:
        """A recording's messages in seq order: its token_streams, and what else happened meanwhile.

        "Meanwhile" is the energy, council and reward channels between its
        first and last message; system messages and other generations'
        tokens are left out.
        """
        with closing(self._connect()) as connection:
            rows = connection.execute(
                "SELECT seq, type, frame_number, timestamp_ms, payload FROM events "
                "WHERE seq > ? AND timestamp_ms >= ? AND timestamp_ms <= ? "
                "AND (recording = ? OR channel IN ('energy', 'council', 'reward')) ORDER BY seq LIMIT ?",
                (after_seq, recording.started_ms, recording.ended_ms, recording.id, limit),
            ).fetchall()
        return [_stored(row) for row in rows]

    def events_between(
        self, start_ms: float, end_ms: float, *, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Every recorded message of a time range except system messages, in seq order."""
        with closing(self._connect()) as connection:
            rows = connection.execute(
                "SELECT seq, type, frame_number, timestamp_ms, payload FROM events WHERE seq > ? "
                "AND timestamp_ms >= ? AND timestamp_ms <= ? AND channel != 'system' ORDER BY seq LIMIT ?",
                (after_seq, start_ms, end_ms, limit),
            ).fetchall()
        return [_stored(row) for row in rows]

    def span(self, recording: Recording | None, start_ms: float, end_ms: float) -> tuple[int, float, float]:
        """(messages, first timestamp, last timestamp) of what :meth:`session_events` (with a
        *recording*) or :meth:`events_between` (without) would read; (0, 0, 0) when nothing."""
        with closing(self._connect()) as connection:
            if recording is not None:
                row = connection.execute(
                    "SELECT COUNT(*), MIN(timestamp_ms), MAX(timestamp_ms) FROM events "
                    "WHERE timestamp_ms >= ? AND timestamp_ms <= ? "
                    "AND (recording = ? OR channel IN ('energy', 'council', 'reward'))",
                    (recording.started_ms, recording.ended_ms, recording.id),
                ).fetchone()
            else:
                row = connection.execute(
                    "SELECT COUNT(*), MIN(timestamp_ms), MAX(timestamp_ms) FROM events "
                    "WHERE timestamp_ms >= ? AND timestamp_ms <= ? AND channel != 'system'",
                    (start_ms, end_ms),
                ).fetchone()
        count, first, last = row
        return (int(count), float(first), float(last)) if count else (0, 0.0, 0.0)


def _stored(row: tuple[Any, ...]) -> StoredMessage:
    seq, kind, frame_number, timestamp_ms, payload = row
    return StoredMessage(seq, Event(kind, orjson.loads(payload), frame_number), timestamp_ms)


def _recording(row: tuple[Any, ...]) -> Recording:
    """A row of ``SELECT {_RECORDING_COLUMNS}`` as a Recording (SQLite stores the booleans as 0 or 1)."""
    recording_id, session_id, model_id, started_ms, ended_ms, tokens, count, complete, text_kept = row
    return Recording(
        recording_id, session_id, model_id, started_ms, ended_ms, tokens, count, bool(complete), bool(text_kept)
    )
