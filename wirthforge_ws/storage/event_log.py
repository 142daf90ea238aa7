"""The durable event log: every reliable message, and energy frames at a lower rate, in SQLite.

Why SQLite: it is in the standard library, it is one file the user can copy
or delete, and in WAL mode a writer never blocks readers (resume, the
sessions API) nor readers the writer.

Flow control. The hub calls :meth:`EventLog.append` synchronously from the
frame loop; it only puts a row on a bounded queue (a few microseconds). A
writer thread drains the queue and commits every ``COMMIT_INTERVAL`` or
``BATCH_ROWS`` rows, whichever comes first, so a crash loses at most one
batch. If the disk is slow the queue fills and rows are *dropped*, never
waited for: the live stream matters more than the record. A drop or a
failed write makes the log *degraded*; :meth:`EventLog.status` (``/health``)
shows the backlog and the error, and the server, which watches
``stats.dropped``, tells clients (``PERSISTENCE_DEGRADED``).

Identity across restarts. The database keeps the epoch and a *reserved* seq
ceiling: the hub may hand out seqs up to the ceiling, and the writer moves
the ceiling ahead long before the hub reaches it. A new run starts above
both the ceiling and the last committed seq, so a seq is never issued twice,
even after SIGKILL. A run marks itself ``clean_shutdown = 0`` while it runs;
finding that mark at start means the previous run crashed, and the first
seq of this run is kept as ``crash_seq``: a client that last saw an older
seq may have missed messages the crash lost (resume reason
``server_crashed``).

This class is the log's lifecycle, its identity and its write path; the
file (lock, open, corrupt-file recovery) is :mod:`.database`, the schema
:mod:`.migrations`, the grouping into recordings :mod:`.recordings`, the
limits :mod:`.retention` and the reads :mod:`.queries`.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..protocol.codes import CHANNEL_OF, LATEST_WINS_CHANNEL
from ..protocol.messages import Event
from .database import FileLock, PersistenceLocked, connect_checked, rollback
from .queries import EventQueries, StoredMessage
from .recordings import Recording, RecordingTracker
from .retention import RETENTION_INTERVAL, RETENTION_TARGET, RETENTION_TARGET_WHEN_FULL, Retention

__all__ = ["EventLog", "LogStats", "PersistenceLocked", "Recording", "StoredMessage", "default_path"]

log = logging.getLogger("wirthforge.persistence")

COMMIT_INTERVAL = 0.1  # seconds between commits while rows arrive
BATCH_ROWS = 500  # commit earlier when this many rows are waiting
SEQ_BLOCK = 100_000  # seqs reserved ahead of the hub


@dataclass(slots=True)
class _Row:
    seq: int
    type: str
    reliable: bool
    frame_number: int | None
    timestamp_ms: float
    payload: dict[str, Any]


@dataclass
class LogStats:
    written: int = 0
    dropped: int = 0  # rows given up: queue full or write failed
    commits: int = 0
    pruned: int = 0
    last_commit: float | None = None  # monotonic
    error: str | None = None  # the latest fault, until a commit succeeds again
    error_at: float | None = None  # wall-clock ms


def default_path() -> Path:
    """``events.sqlite3`` in the user's data directory (XDG on Linux: ``$XDG_DATA_HOME/wirthforge``)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("wirthforge", appauthor=False)) / "events.sqlite3"


class EventLog:
    """SQLite-backed log of published messages, written by one background thread.

    Lifecycle: ``open()`` (synchronous, before the event loop serves
    anything), ``append()`` from the loop, ``close()`` to flush and mark a
    clean shutdown. Reads (:meth:`read_reliable`, :meth:`recordings`,
    :meth:`events_between`) open their own connection: call them through
    ``asyncio.to_thread``.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_seconds: float,
        energy_rate: float,
        queue_limit: int = 20_000,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self.energy_interval_ms = 1000.0 / energy_rate if energy_rate > 0 else float("inf")
        self.stats = LogStats()
        self.available = False  # False: appends are counted as dropped, reads return nothing
        self.epoch = secrets.token_hex(8)
        self.first_seq = 1  # the first seq this run may issue
        self.crash_seq = 0  # a client whose lastSeq is below this may have lost messages to a crash
        self.previous_run_crashed = False
        self.restored = False  # epoch and seqs continue a previous run
        self.committed_through = 0  # every row with seq <= this is committed (or was dropped)
        self.lost_through = 0  # highest reliable seq that was not written
        self.queries = EventQueries(path)
        self._retention = Retention(max_bytes=max_bytes, max_age_seconds=max_age_seconds)
        self._recordings = RecordingTracker()
        self._queue: queue.Queue[_Row | None] = queue.Queue(queue_limit)
        self._reserved = 0
        self._reserve_requested = 0
        self._last_energy_ms: dict[str, float] = {}
        self._file_lock = FileLock(path)
        self._thread: threading.Thread | None = None
        self._writer: sqlite3.Connection | None = None

    @property
    def pruned_through(self) -> int:
        """Every reliable seq <= this may have been deleted (retention, deletion or a lost file)."""
        return self._retention.pruned_through

    @property
    def _lock_file(self) -> int | None:
        return self._file_lock.fd

    # -- opening ------------------------------------------------------------

    def open(self) -> None:
        """Lock, open (or create, or replace a corrupt) database, migrate, read identity.

        Raises :class:`PersistenceLocked` if another server holds the file.
        Any other failure leaves the log unavailable, with the reason in
        ``stats.error``: the server runs on, without durability.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file_lock.acquire()
        except PersistenceLocked:
            raise
        except OSError as error:
            self._unavailable(f"cannot use {self.path.parent}: {error.strerror or error}")
            return
        try:
            connection = connect_checked(self.path, self.max_bytes)
        except (sqlite3.Error, OSError) as error:
            self._unavailable(f"cannot open {self.path}: {error}")
            return
        try:
            self._load_identity(connection)
        except (sqlite3.Error, OSError) as error:
            connection.close()
            self._unavailable(f"cannot write {self.path}: {error}")
            return
        self._writer = connection
        self.available = True
        self._thread = threading.Thread(target=self._write_loop, name="event-log-writer", daemon=True)
        self._thread.start()

    def _load_identity(self, connection: sqlite3.Connection) -> None:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        newest = connection.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
        if "epoch" in meta:
            self.restored = True
            self.epoch = meta["epoch"]
            self.previous_run_crashed = meta.get("clean_shutdown") == "0"
        base = max(int(meta.get("seq_reserved", 0)), newest)
        if self.previous_run_crashed:
            base += SEQ_BLOCK  # in case the hub outran a reservation the writer could not commit
        self.first_seq = base + 1
        self.crash_seq = self.first_seq if self.previous_run_crashed else int(meta.get("crash_seq", 0))
        self._retention.pruned_through = int(meta.get("pruned_through", 0))
        self.lost_through = int(meta.get("lost_through", 0))
        self.committed_through = base
        self._reserved = self._reserve_requested = base + SEQ_BLOCK
        self._write_meta(
            connection,
            {
                "epoch": self.epoch,
                "seq_reserved": self._reserved,
                "clean_shutdown": 0,
                "crash_seq": self.crash_seq,
            },
        )
        if self.previous_run_crashed:
            log.warning("the previous run did not shut down cleanly; messages after seq %d may be lost", newest)

    @staticmethod
    def _write_meta(connection: sqlite3.Connection, values: dict[str, object]) -> None:
        connection.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(key, str(value)) for key, value in values.items()],
        )

    def _unavailable(self, reason: str) -> None:
        log.error("event log unavailable, running without persistence: %s", reason)
        self.stats.error = reason
        self.stats.error_at = time.time() * 1000.0
        self._file_lock.release()

    # -- the loop side ------------------------------------------------------

    def reserve_after(self, seq: int) -> int:
        """Called by the hub as *seq* approaches the reservation; returns the next seq to call back at."""
        if self.available and seq + SEQ_BLOCK // 2 > self._reserve_requested:
            self._reserve_requested = seq + SEQ_BLOCK
        return seq + SEQ_BLOCK // 4

    def append(self, seq: int, event: Event, timestamp_ms: float) -> None:
        """Queue one published message for writing. Never blocks; drops when the queue is full.

        Energy frames are thinned to the recording rate per type.
        """
        reliable = event.channel != LATEST_WINS_CHANNEL
        if not reliable:
            last = self._last_energy_ms.get(event.type, -1e18)
            if timestamp_ms - last < self.energy_interval_ms:
                return
            self._last_energy_ms[event.type] = timestamp_ms
        if not self.available:
            return
        try:
            self._queue.put_nowait(_Row(seq, event.type, reliable, event.frame_number, timestamp_ms, event.payload))
        except queue.Full:
            self.stats.dropped += 1
            if reliable:
                self.lost_through = max(self.lost_through, seq)
            self._fault("write queue full: the disk is not keeping up; messages are not being recorded")

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """Flush what is queued, mark a clean shutdown and release the lock (blocking: run in a thread)."""
        if self._thread is not None:
            self._queue.put(None)  # the writer flushes, marks the shutdown clean and exits
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():  # a disk that hangs: leave the connection to the daemon thread
                log.error("event log writer did not finish within 10 s; %d rows may be lost", self.backlog)
                self._writer = None
            self._thread = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._file_lock.release()
        self.available = False

    # -- the writer thread --------------------------------------------------

    def _write_loop(self) -> None:
        connection = self._writer
        assert connection is not None
        batch: list[_Row] = []
        next_retention = time.monotonic()
        stopping = False
        while not stopping:
            deadline = time.monotonic() + COMMIT_INTERVAL
            while len(batch) < BATCH_ROWS:
                try:
                    row = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if row is None:
                    stopping = True
                    break
                batch.append(row)
            if batch or self._reserve_requested > self._reserved:
                self._commit(connection, batch)
                batch = []
            if stopping or time.monotonic() >= next_retention or self._retention.over_target(connection):
                next_retention = time.monotonic() + RETENTION_INTERVAL
                self._retain(connection)
        self._finish(connection)

    def _commit(self, connection: sqlite3.Connection, batch: list[_Row]) -> None:
        reserve = self._reserve_requested
        try:
            try:
                self._insert(connection, batch, reserve)
            except sqlite3.OperationalError as error:
                if "full" not in str(error):
                    raise
                # The cap was reached between passes (a burst): make room for a batch, try once more.
                self._retain(connection, target_share=RETENTION_TARGET_WHEN_FULL)
                self._insert(connection, batch, reserve)
        except sqlite3.Error as error:
            rollback(connection)
            self._recordings.clear()  # their rows may be gone; new rows start new recordings
            self.stats.dropped += len(batch)
            lost = [r.seq for r in batch if r.reliable]
            if lost:
                self.lost_through = max(self.lost_through, max(lost))
            self._fault(f"write failed: {error}")
        else:
            self._reserved = reserve
            self.stats.written += len(batch)
            self.stats.commits += 1
            self.stats.last_commit = time.monotonic()
            self.stats.error = None
        if batch:
            self.committed_through = max(self.committed_through, batch[-1].seq)

    def _insert(self, connection: sqlite3.Connection, batch: list[_Row], reserve: int) -> None:
        recordings = self._recordings.snapshot()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT OR IGNORE INTO events "
                "(seq, type, channel, reliable, frame_number, timestamp_ms, recording, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.seq,
                        r.type,
                        CHANNEL_OF[r.type],
                        int(r.reliable),
                        r.frame_number,
                        r.timestamp_ms,
                        self._recordings.assign(connection, r.seq, r.type, r.timestamp_ms, r.payload),
                        orjson.dumps(r.payload),
                    )
                    for r in batch
                ],
            )
            meta: dict[str, object] = {"seq_reserved": reserve}
            if self.lost_through:
                meta["lost_through"] = self.lost_through
            self._write_meta(connection, meta)
            connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            self._recordings.restore(recordings)  # as before the batch, for the retry
            raise

    def _retain(self, connection: sqlite3.Connection, target_share: float = RETENTION_TARGET) -> None:
        """One retention pass (age, then size); a failure is a fault, not an exception."""
        try:
            deleted = self._retention.prune(connection, target_share)
        except sqlite3.Error as error:
            rollback(connection)
            self._fault(f"retention failed: {error}")
            return
        self.stats.pruned += deleted

    def _finish(self, connection: sqlite3.Connection) -> None:
        try:
            connection.execute("BEGIN IMMEDIATE")
            self._write_meta(
                connection, {"clean_shutdown": 1, "seq_reserved": self._reserved, "lost_through": self.lost_through}
            )
            connection.execute("COMMIT")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            log.info("event log closed cleanly (%d rows written this run)", self.stats.written)
        except sqlite3.Error as error:
            rollback(connection)
            log.error("event log could not record a clean shutdown: %s", error)

    def _fault(self, reason: str) -> None:
        self.stats.error = reason
        self.stats.error_at = time.time() * 1000.0

    # -- reading (from worker threads) --------------------------------------

    def read_reliable(
        self, after_seq: int, through_seq: int, channels: Iterable[str], limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """Reliable messages with after_seq < seq <= through_seq on *channels*: the newest *limit*, oldest first.

        The flag says whether older ones were left out by the limit.
        """
        if not self.available:
            return [], False
        return self.queries.read_reliable(after_seq, through_seq, channels, limit)

    def recordings(self, limit: int = 100, before_ms: float | None = None) -> list[Recording]:
        if not self.available:
            return []
        return self.queries.recordings(limit, before_ms)

    def recording(self, recording_id: int) -> Recording | None:
        if not self.available:
            return None
        return self.queries.recording(recording_id)

    def session_events(self, recording: Recording, *, after_seq: int = 0, limit: int = 1000) -> list[StoredMessage]:
        """A recording's messages in seq order (see :meth:`EventQueries.session_events`)."""
        if not self.available:
            return []
        return self.queries.session_events(recording, after_seq=after_seq, limit=limit)

    def events_between(
        self, start_ms: float, end_ms: float, *, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Every recorded message of a time range except system messages, in seq order."""
        if not self.available:
            return []
        return self.queries.events_between(start_ms, end_ms, after_seq=after_seq, limit=limit)

    def span(self, recording: Recording | None, start_ms: float = 0.0, end_ms: float = 0.0) -> tuple[int, float, float]:
        """(messages, first, last timestamp) of a recording's or a time range's messages (see EventQueries.span)."""
        if not self.available:
            return 0, 0.0, 0.0
        return self.queries.span(recording, start_ms, end_ms)

    # -- reporting ----------------------------------------------------------

    def disk_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except OSError:
                pass
        return total

    def status(self) -> dict[str, Any]:
        stats = self.stats
        if not self.available:
            state = "unavailable"
        elif stats.error is not None:
            state = "degraded"
        else:
            state = "ok"
        return {
            "status": state,
            "path": str(self.path),
            "backlog": self.backlog,
            "written": stats.written,
            "dropped": stats.dropped,
            "pruned": stats.pruned,
            "commits": stats.commits,
            "lastCommitAgoMs": None
            if stats.last_commit is None
            else round((time.monotonic() - stats.last_commit) * 1000.0, 1),
            "error": stats.error,
            "diskBytes": self.disk_bytes() if self.available else 0,
            "maxBytes": self.max_bytes,
            "maxAgeSeconds": self.max_age_seconds,
            "restored": self.restored,
            "previousRunCrashed": self.previous_run_crashed,
        }
