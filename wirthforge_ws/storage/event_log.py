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

Robustness. One server per file (an ``flock`` on a ``.lock`` sidecar); a
file SQLite cannot read is moved aside and a fresh one created; a file or
directory we cannot write leaves the server running on its in-memory
history with the fault reported.
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
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..protocol.codes import CHANNEL_OF, LATEST_WINS_CHANNEL
from ..protocol.messages import Event

try:  # POSIX only; elsewhere two servers on one file are not detected
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("wirthforge.persistence")

COMMIT_INTERVAL = 0.1  # seconds between commits while rows arrive
BATCH_ROWS = 500  # commit earlier when this many rows are waiting
SEQ_BLOCK = 100_000  # seqs reserved ahead of the hub
RETENTION_INTERVAL = 5.0  # seconds between retention passes
RETENTION_TARGET = 0.9  # prune down to this share of the size cap
RETENTION_TARGET_WHEN_FULL = 0.5  # ... or to this share when a write found the cap reached
PAGE_SIZE = 4096

# Migrations: index i brings the schema from version i to i + 1. Append, never edit.
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
)
SCHEMA_VERSION = len(MIGRATIONS)


class PersistenceLocked(RuntimeError):
    """Another server holds the database: refuse to start rather than corrupt it."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One row of the log, as the hub and the sessions API read it back."""

    seq: int
    event: Event
    timestamp_ms: float


@dataclass(frozen=True, slots=True)
class Recording:
    id: int
    session_id: str
    model_id: str
    started_ms: float
    ended_ms: float
    tokens: int
    messages: int
    complete: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "sessionId": self.session_id,
            "modelId": self.model_id,
            "startedAt": round(self.started_ms, 3),
            "endedAt": round(self.ended_ms, 3),
            "durationSeconds": round((self.ended_ms - self.started_ms) / 1000.0, 3),
            "tokens": self.tokens,
            "messages": self.messages,
            "complete": self.complete,
        }


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
        self.pruned_through = 0  # every reliable seq <= this may have been deleted by retention
        self.committed_through = 0  # every row with seq <= this is committed (or was dropped)
        self.lost_through = 0  # highest reliable seq that was not written
        self._queue: queue.Queue[_Row | None] = queue.Queue(queue_limit)
        self._reserved = 0
        self._reserve_requested = 0
        self._last_energy_ms: dict[str, float] = {}
        self._lock_file: int | None = None
        self._thread: threading.Thread | None = None
        self._writer: sqlite3.Connection | None = None
        self._open_recordings: dict[
            str, list[Any]
        ] = {}  # session_id -> [id, model, start, end, tokens, msgs, complete]

    # -- opening ------------------------------------------------------------

    def open(self) -> None:
        """Lock, open (or create, or replace a corrupt) database, migrate, read identity.

        Raises :class:`PersistenceLocked` if another server holds the file.
        Any other failure leaves the log unavailable, with the reason in
        ``stats.error``: the server runs on, without durability.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        except PersistenceLocked:
            raise
        except OSError as error:
            self._unavailable(f"cannot use {self.path.parent}: {error.strerror or error}")
            return
        try:
            connection = self._connect_checked()
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

    def _lock(self) -> None:
        if fcntl is None:
            return
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PersistenceLocked(
                f"another server is using {self.path}; stop it, or give this one its own "
                "--persist-path (or --no-persist)"
            ) from None
        self._lock_file = fd

    def _connect_checked(self) -> sqlite3.Connection:
        """Open and migrate; a file that is not a usable database is moved aside once."""
        try:
            return self._connect_and_migrate()
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and not _is_corruption(error):
                raise  # unreadable or read-only: moving it would not help
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            log.error("event log %s is unusable (%s); moved it to %s and starting a fresh one", self.path, error, aside)
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.rename(Path(f"{aside}{suffix}"))
            return self._connect_and_migrate()

    def _connect_and_migrate(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL").fetchone()
            connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, consistent always
            connection.execute("PRAGMA journal_size_limit=4194304")
            # A hard cap a little above the retention target: the file can never outgrow it.
            connection.execute(f"PRAGMA max_page_count={max(self.max_bytes // PAGE_SIZE, 1)}")
            self._migrate(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _migrate(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = connection.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version} is newer than this server ({SCHEMA_VERSION})")
            for step in MIGRATIONS[version:]:
                for statement in step:
                    connection.execute(statement)
            if row is None:
                connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                log.info("event log migrated from schema %d to %d", version, SCHEMA_VERSION)
                connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

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
        self.pruned_through = int(meta.get("pruned_through", 0))
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
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

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
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None
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
            if stopping or time.monotonic() >= next_retention or self._over_target(connection):
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
            _rollback(connection)
            self._open_recordings.clear()  # their rows may be gone; new rows start new recordings
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
        recordings = dict((k, list(v)) for k, v in self._open_recordings.items())
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT OR IGNORE INTO events (seq, type, channel, reliable, frame_number, timestamp_ms, recording, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.seq,
                        r.type,
                        CHANNEL_OF[r.type],
                        int(r.reliable),
                        r.frame_number,
                        r.timestamp_ms,
                        self._recording_of(connection, r),
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
            _rollback(connection)
            self._open_recordings = recordings  # as before the batch, for the retry
            raise

    def _recording_of(self, connection: sqlite3.Connection, row: _Row) -> int | None:
        """Group token_stream messages into recordings (one per sessionId run), inside the batch's transaction."""
        if row.type != "token_stream":
            return None
        payload = row.payload
        session_id = str(payload.get("sessionId", ""))
        tokens = len(payload.get("tokens") or ())
        complete = bool(payload.get("isComplete"))
        current = self._open_recordings.get(session_id)
        if current is None:
            current = [row.seq, str(payload.get("modelId", "")), row.timestamp_ms, row.timestamp_ms, 0, 0, 0]
            self._open_recordings[session_id] = current
        current[3] = row.timestamp_ms
        current[4] += tokens
        current[5] += 1
        current[6] = int(complete)
        connection.execute(
            "INSERT OR REPLACE INTO recordings VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (current[0], session_id, *current[1:])
        )
        if complete:
            del self._open_recordings[session_id]
        return int(current[0])

    def _retain(self, connection: sqlite3.Connection, target_share: float = RETENTION_TARGET) -> None:
        """Delete what is older than the age limit, then the oldest rows until under the size target."""
        try:
            cutoff = time.time() * 1000.0 - self.max_age_seconds * 1000.0
            deleted = self._delete_where(connection, "timestamp_ms < ?", (cutoff,))
            target = self.max_bytes * target_share
            for _ in range(50):  # bounded: each pass deletes a tenth of the rows
                if self._bytes_used(connection) <= target:
                    break
                count = connection.execute("SELECT count(*) FROM events").fetchone()[0]
                if not count:
                    break
                boundary = connection.execute(
                    "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (max(count // 10, 1) - 1,)
                ).fetchone()[0]
                deleted += self._delete_where(connection, "seq <= ?", (boundary,))
            if deleted:
                self.stats.pruned += deleted
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as error:
            _rollback(connection)
            self._fault(f"retention failed: {error}")

    def _delete_where(self, connection: sqlite3.Connection, condition: str, args: tuple[Any, ...]) -> int:
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
                self._write_meta(connection, {"pruned_through": self.pruned_through})
            connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise
        return max(deleted, 0)

    def _over_target(self, connection: sqlite3.Connection) -> bool:
        try:
            return self._bytes_used(connection) > self.max_bytes * RETENTION_TARGET
        except sqlite3.Error:
            return False

    @staticmethod
    def _bytes_used(connection: sqlite3.Connection) -> int:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * PAGE_SIZE

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
            _rollback(connection)
            log.error("event log could not record a clean shutdown: %s", error)

    def _fault(self, reason: str) -> None:
        self.stats.error = reason
        self.stats.error_at = time.time() * 1000.0

    # -- reading (from worker threads) --------------------------------------

    def _reader(self) -> sqlite3.Connection:
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
        if not self.available:
            return [], False
        wanted = sorted(set(channels))
        marks = ",".join("?" * len(wanted))
        with closing(self._reader()) as connection:
            rows = connection.execute(
                f"SELECT seq, type, frame_number, timestamp_ms, payload FROM events WHERE seq > ? AND seq <= ? "
                f"AND reliable = 1 AND channel IN ({marks}) ORDER BY seq DESC LIMIT ?",
                (after_seq, through_seq, *wanted, limit + 1),
            ).fetchall()
        cut = len(rows) > limit
        return [_stored(row) for row in reversed(rows[:limit])], cut

    def recordings(self, limit: int = 100, before_ms: float | None = None) -> list[Recording]:
        if not self.available:
            return []
        with closing(self._reader()) as connection:
            rows = connection.execute(
                "SELECT id, session_id, model_id, started_ms, ended_ms, tokens, messages, complete FROM recordings "
                "WHERE started_ms < ? ORDER BY started_ms DESC LIMIT ?",
                (before_ms if before_ms is not None else float("inf"), limit),
            ).fetchall()
        return [Recording(*row[:7], bool(row[7])) for row in rows]

    def recording(self, recording_id: int) -> Recording | None:
        if not self.available:
            return None
        with closing(self._reader()) as connection:
            row = connection.execute(
                "SELECT id, session_id, model_id, started_ms, ended_ms, tokens, messages, complete FROM recordings "
                "WHERE id = ?",
                (recording_id,),
            ).fetchone()
        return None if row is None else Recording(*row[:7], bool(row[7]))

    def session_events(self, recording: Recording, *, after_seq: int = 0, limit: int = 1000) -> list[StoredMessage]:
        """A recording's messages in seq order: its token_streams, and what else happened meanwhile.

        "Meanwhile" is the energy, council and reward channels between its
        first and last message; system messages and other generations'
        tokens are left out.
        """
        if not self.available:
            return []
        with closing(self._reader()) as connection:
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
        if not self.available:
            return []
        with closing(self._reader()) as connection:
            rows = connection.execute(
                "SELECT seq, type, frame_number, timestamp_ms, payload FROM events WHERE seq > ? "
                "AND timestamp_ms >= ? AND timestamp_ms <= ? AND channel != 'system' ORDER BY seq LIMIT ?",
                (after_seq, start_ms, end_ms, limit),
            ).fetchall()
        return [_stored(row) for row in rows]

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


def _stored(row: tuple[Any, ...]) -> StoredMessage:
    seq, kind, frame_number, timestamp_ms, payload = row
    return StoredMessage(seq, Event(kind, orjson.loads(payload), frame_number), timestamp_ms)


def _rollback(connection: sqlite3.Connection) -> None:
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _is_corruption(error: sqlite3.Error) -> bool:
    text = str(error).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text or "newer than" in text
