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

What it keeps. Without ``record_text`` (the default) a token_stream is
stored without its words (:mod:`.privacy`); prompts never reach the log.
The user's progress (:mod:`.progress`) lives in the same file.

Deleting. :meth:`EventLog.delete_recording` and :meth:`EventLog.purge` run
on the writer thread, in order with the rows before them, and hand the
space back (incremental vacuum, or one ``VACUUM`` for a file created
without it); the frame loop never waits for them.

Self-check. ``PRAGMA quick_check`` runs at open (a damaged file is moved
aside, :mod:`.database`) and again, on the writer thread, after the first
failed read; a file that fails it then is moved aside too and a fresh one
continues this run's epoch and seqs (everything before counts as pruned,
so a resume from there is ``incomplete``). While reads fail the log is
``degraded``; a failed read for a resume counts as a cut history (the
client is told ``incomplete``), and the other reads raise
:class:`StorageError`, which the HTTP routes answer with 503.

This class is the log's lifecycle, its identity and its write path; the
file (lock, open, corrupt-file recovery, permissions) is :mod:`.database`,
the schema :mod:`.migrations`, the grouping into recordings
:mod:`.recordings`, the limits :mod:`.retention`, deleting
:mod:`.deletion` and the reads :mod:`.queries`.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..protocol.codes import CHANNEL_OF, LATEST_WINS_CHANNEL
from ..protocol.messages import Event
from .database import (
    FileLock,
    PersistenceLocked,
    connect_and_migrate,
    connect_checked,
    is_corruption,
    move_aside,
    private_directory,
    quick_check,
    rollback,
)
from .deletion import delete_recording, reclaim
from .privacy import without_text
from .progress import ProgressState, load_progress, save_progress
from .queries import EventQueries, StoredMessage
from .recordings import Recording, RecordingTracker
from .retention import RETENTION_INTERVAL, RETENTION_TARGET, RETENTION_TARGET_WHEN_FULL, Retention

__all__ = [
    "EventLog",
    "LogStats",
    "PersistenceLocked",
    "Recording",
    "StorageError",
    "StoredMessage",
    "default_path",
]

log = logging.getLogger("wirthforge.persistence")

COMMIT_INTERVAL = 0.1  # seconds between commits while rows arrive
BATCH_ROWS = 500  # commit earlier when this many rows are waiting
SEQ_BLOCK = 100_000  # seqs reserved ahead of the hub
COMMAND_TIMEOUT = 300.0  # seconds a delete or purge may take (a first VACUUM of a large file)


class StorageError(RuntimeError):
    """The event log could not do what was asked (a failed read, a busy or stopped writer)."""


@dataclass(slots=True)
class _Command:
    """Work for the writer thread, done in order with the rows queued before it."""

    run: Callable[[sqlite3.Connection], Any]
    done: Future[Any] = field(default_factory=Future)


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
    read_error: str | None = None  # the latest failed read, until a read succeeds again
    read_failures: int = 0
    checks: int = 0  # integrity checks run after a failed read
    replaced: int = 0  # damaged files moved aside while running


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
        record_text: bool = False,
        private_dir: bool = False,
    ) -> None:
        self.path = path
        self.record_text = record_text  # off: token_streams are stored without their words
        self.private_dir = private_dir  # the user's own data directory: tighten it to 0700 at start
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
        self._recordings = RecordingTracker(text_kept=record_text)
        self._queue: queue.Queue[_Row | _Command | None] = queue.Queue(queue_limit)
        self.progress = ProgressState()  # as stored at open; UserProgress keeps it up to date
        self._progress_pending: ProgressState | None = None
        self._check_requested = False
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
            private_directory(self.path.parent, tighten=self.private_dir)
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
        self.progress = load_progress(connection)
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
        self.available = False
        self._fail_waiting_commands()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._file_lock.release()

    def _fail_waiting_commands(self) -> None:
        """A delete that arrived after the writer's last turn is answered, not left waiting."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Command) and item.done.set_running_or_notify_cancel():
                item.done.set_exception(StorageError("the event log is closed"))

    # -- the writer thread --------------------------------------------------

    def _write_loop(self) -> None:
        assert self._writer is not None
        batch: list[_Row] = []
        next_retention = time.monotonic()
        stopping = False
        while not stopping:
            deadline = time.monotonic() + COMMIT_INTERVAL
            command: _Command | None = None
            while len(batch) < BATCH_ROWS:
                try:
                    row = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if row is None:
                    stopping = True
                    break
                if isinstance(row, _Command):
                    command = row
                    break
                batch.append(row)
            connection = self._writer
            if batch or self._reserve_requested > self._reserved or self._progress_pending is not None:
                self._commit(connection, batch)
                batch = []
            if command is not None:
                self._run_command(connection, command)
                connection = self._writer
            if stopping or time.monotonic() >= next_retention or self._retention.over_target(connection):
                next_retention = time.monotonic() + RETENTION_INTERVAL
                self._retain(connection)
        self._finish(self._writer)

    def _run_command(self, connection: sqlite3.Connection, command: _Command) -> None:
        if not command.done.set_running_or_notify_cancel():
            return
        try:
            result = command.run(connection)
        except sqlite3.Error as error:
            rollback(connection)
            self._fault(f"{type(error).__name__}: {error}")
            command.done.set_exception(StorageError(f"the event log could not do it: {error}"))
        except BaseException as error:  # noqa: BLE001 - handed to the caller, the writer goes on
            rollback(connection)
            command.done.set_exception(error)
        else:
            command.done.set_result(result)

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
            if is_corruption(error):
                self._request_check()
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
                        orjson.dumps(r.payload if self.record_text else without_text(r.type, r.payload)),
                    )
                    for r in batch
                ],
            )
            meta: dict[str, object] = {"seq_reserved": reserve}
            if self.lost_through:
                meta["lost_through"] = self.lost_through
            self._write_meta(connection, meta)
            progress = self._progress_pending
            if progress is not None:
                save_progress(connection, progress)
            connection.execute("COMMIT")
            if self._progress_pending is progress:  # unless the loop handed over a newer one meanwhile
                self._progress_pending = None
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

    # -- progress, deleting, checking (the loop or worker threads) ---------

    def save_progress(self, state: ProgressState) -> None:
        """Keep *state* with the next commit (from the loop: a reference handed over, no I/O)."""
        self.progress = state
        if self.available:
            self._progress_pending = state

    def delete_recording(self, recording_id: int) -> bool:
        """Delete one recording's rows (and the energy, council and reward rows meanwhile); reclaim the space.

        Blocking (call it in a thread): it runs on the writer thread, after
        the rows queued before it. False if there is no such recording.
        """
        return bool(self._command(lambda connection: self._delete(connection, recording_id)))

    def purge(self) -> int:
        """Delete every row and recording, reclaim the space; returns the rows deleted (blocking)."""
        return int(self._command(self._purge))

    def _command(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        if not self.available or self._thread is None:
            raise StorageError("event persistence is unavailable")
        command = _Command(run)
        try:
            self._queue.put(command, timeout=5.0)
        except queue.Full:
            raise StorageError("the event log's writer is busy; try again") from None
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            try:
                return command.done.result(timeout=0.5)
            except FutureTimeout:
                if not self._writing() and command.done.cancel():  # closed before the writer took it
                    raise StorageError("the event log is closed") from None
                if time.monotonic() > deadline:
                    raise StorageError("the event log's writer did not finish in time") from None

    def _writing(self) -> bool:
        """Whether the writer thread is there (close() may clear it from another thread while a command waits)."""
        return self._thread is not None

    def _delete(self, connection: sqlite3.Connection, recording_id: int) -> bool:
        deleted = delete_recording(connection, recording_id)
        for doomed in deleted:
            self._recordings.forget(doomed)  # its later rows, if it still runs, start a new recording
        if deleted:
            reclaim(connection)
        return bool(deleted)

    def _purge(self, connection: sqlite3.Connection) -> int:
        deleted = self._retention.delete_where(connection, "seq > ?", (0,))  # resumes from before: incomplete
        self._recordings.clear()
        reclaim(connection)
        return deleted

    def _check_after_read_error(self, connection: sqlite3.Connection) -> None:
        """Writer side of a failed read: quick_check; a damaged file is moved aside and replaced."""
        self.stats.checks += 1
        try:
            # A connection of its own: the writer's page cache may still hold the pages as they were.
            with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as checker:
                quick_check(checker)
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and not is_corruption(error):
                log.warning("event log integrity check could not read the file: %s", error)
                return  # unreadable, not damaged: the failed reads already show it; moving it would not help
            self._replace_damaged(connection, str(error))
        finally:
            self._check_requested = False

    def _replace_damaged(self, connection: sqlite3.Connection, reason: str) -> None:
        """Move the damaged file aside and continue this run (same epoch, higher seqs) in a fresh one."""
        rollback(connection)
        connection.close()
        move_aside(self.path, reason)
        try:
            fresh = connect_and_migrate(self.path, self.max_bytes)
        except (sqlite3.Error, OSError) as error:  # no fresh file either: run on without durability
            self.available = False
            self._fault(f"cannot create a fresh {self.path}: {error}")
            log.error("event log unavailable, running without persistence: %s", self.stats.error)
            return
        self._retention.pruned_through = max(self._retention.pruned_through, self.committed_through)
        self._write_meta(
            fresh,
            {
                "epoch": self.epoch,
                "seq_reserved": self._reserved,
                "clean_shutdown": 0,
                "crash_seq": self.crash_seq,
                "pruned_through": self._retention.pruned_through,
                "lost_through": self.lost_through,
            },
        )
        save_progress(fresh, self.progress)
        self._recordings.clear()
        self._writer = fresh
        self.stats.replaced += 1
        self.stats.read_error = None

    def _request_check(self) -> None:
        """Queue one integrity check for the writer (at most one waits at a time)."""
        if self._check_requested or self._thread is None:
            return
        self._check_requested = True
        try:
            self._queue.put_nowait(_Command(self._check_after_read_error))
        except queue.Full:
            self._check_requested = False

    # -- reading (from worker threads) --------------------------------------

    def _read(self, query: Callable[[], Any]) -> Any:
        """Run one read; a failure is counted, makes the log degraded and asks the writer for a check."""
        try:
            result = query()
        except sqlite3.Error as error:
            self.stats.read_failures += 1
            self.stats.read_error = f"read failed: {error}"
            self.stats.error_at = time.time() * 1000.0
            log.error("event log read failed: %s", error)
            self._request_check()
            raise StorageError(f"the event log could not be read ({error})") from error
        self.stats.read_error = None
        return result

    def read_reliable(
        self, after_seq: int, through_seq: int, channels: Iterable[str], limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """Reliable messages with after_seq < seq <= through_seq on *channels*: the newest *limit*, oldest first.

        The flag says whether older ones were left out by the limit. A read
        that fails returns nothing and the flag set: the resume is then
        ``incomplete`` instead of failing the connection.
        """
        if not self.available:
            return [], False
        try:
            return self._read(lambda: self.queries.read_reliable(after_seq, through_seq, channels, limit))  # type: ignore[no-any-return]
        except StorageError:
            return [], True

    def recordings(self, limit: int = 100, before_ms: float | None = None) -> list[Recording]:
        """Raises :class:`StorageError` when the file cannot be read."""
        if not self.available:
            return []
        return self._read(lambda: self.queries.recordings(limit, before_ms))  # type: ignore[no-any-return]

    def recording(self, recording_id: int) -> Recording | None:
        if not self.available:
            return None
        return self._read(lambda: self.queries.recording(recording_id))  # type: ignore[no-any-return]

    def session_events(self, recording: Recording, *, after_seq: int = 0, limit: int = 1000) -> list[StoredMessage]:
        """A recording's messages in seq order (see :meth:`EventQueries.session_events`)."""
        if not self.available:
            return []
        return self._read(lambda: self.queries.session_events(recording, after_seq=after_seq, limit=limit))  # type: ignore[no-any-return]

    def events_between(
        self, start_ms: float, end_ms: float, *, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Every recorded message of a time range except system messages, in seq order."""
        if not self.available:
            return []
        return self._read(lambda: self.queries.events_between(start_ms, end_ms, after_seq=after_seq, limit=limit))  # type: ignore[no-any-return]

    def span(self, recording: Recording | None, start_ms: float = 0.0, end_ms: float = 0.0) -> tuple[int, float, float]:
        """(messages, first, last timestamp) of a recording's or a time range's messages (see EventQueries.span)."""
        if not self.available:
            return 0, 0.0, 0.0
        return self._read(lambda: self.queries.span(recording, start_ms, end_ms))  # type: ignore[no-any-return]

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
        elif stats.error is not None or stats.read_error is not None:
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
            "error": stats.error or stats.read_error,
            "readFailures": stats.read_failures,
            "integrityChecks": stats.checks,
            "filesReplaced": stats.replaced,
            "recordText": self.record_text,
            "diskBytes": self.disk_bytes() if self.available else 0,
            "maxBytes": self.max_bytes,
            "maxAgeSeconds": self.max_age_seconds,
            "restored": self.restored,
            "previousRunCrashed": self.previous_run_crashed,
        }
