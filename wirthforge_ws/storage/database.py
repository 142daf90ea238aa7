"""The event log's file: one server per file, opening, and moving an unusable file aside.

A ``.lock`` sidecar holds an ``flock`` for as long as a server uses the
file, so a second server on the same file is refused instead of writing
over the first. A file SQLite reports as not a database, malformed or from
a newer server is renamed to ``<name>.corrupt-<time>`` (with its WAL and
SHM) and a fresh one created; an unreadable or read-only file is left
alone (moving it would not help) and the error goes to the caller.

A file that opens but fails ``PRAGMA quick_check`` (damaged pages inside a
file whose header is intact) is moved aside the same way.

Privacy: the data directory is made ``0700`` and the database and its
sidecars ``0600`` (created so, and tightened at start when they are
looser), so only the user can read what the log keeps.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

from .migrations import migrate

if sys.platform != "win32":  # POSIX only; on Windows two servers on one file are not detected
    import fcntl

log = logging.getLogger("wirthforge.persistence")

PAGE_SIZE = 4096
SIDE_FILES = ("", "-wal", "-shm")
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class PersistenceLocked(RuntimeError):
    """Another server holds the database: refuse to start rather than corrupt it."""


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``<path>.lock``, held until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; raise :class:`PersistenceLocked` if another process holds it."""
        if sys.platform == "win32":
            return
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        os.fchmod(fd, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PersistenceLocked(
                f"another server is using {self.path}; stop it, or give this one its own "
                "--persist-path (or --no-persist)"
            ) from None
        self._fd = fd

    @property
    def fd(self) -> int | None:
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class DamagedFile(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage: the file opens, but some of its pages cannot be trusted."""


def private_directory(directory: Path, *, tighten: bool) -> None:
    """Create *directory* ``0700``; with *tighten*, also take group and other access from an existing one.

    Only the user's own data directory is tightened: a directory named with
    ``--persist-path`` may be shared (``/tmp``) and is left as it is.
    """
    directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if tighten and directory.stat().st_mode & 0o077:
        directory.chmod(PRIVATE_DIR)
        log.info("data directory %s was readable by others; made it 0700", directory)


def private_files(path: Path) -> None:
    """Create the database file ``0600`` if missing; make it and its WAL and SHM ``0600`` if looser.

    SQLite gives a new WAL and SHM the database file's permissions, so
    creating the file first keeps them private too.
    """
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    for suffix in SIDE_FILES:
        side = Path(f"{path}{suffix}")
        try:
            if side.stat().st_mode & 0o077:
                side.chmod(PRIVATE_FILE)
        except FileNotFoundError:
            pass


def connect_checked(path: Path, max_bytes: int) -> sqlite3.Connection:
    """Open, check and migrate; a file that is not a usable database, or is damaged, is moved aside once."""
    try:
        return connect_and_migrate(path, max_bytes, check=True)
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.OperationalError) and not is_corruption(error):
            raise  # unreadable or read-only: moving it would not help
        move_aside(path, str(error))
        return connect_and_migrate(path, max_bytes)


def quick_check(connection: sqlite3.Connection) -> None:
    """Raise :class:`DamagedFile` unless ``PRAGMA quick_check`` says ``ok`` (it reads every page once)."""
    rows = connection.execute("PRAGMA quick_check(5)").fetchall()
    if [tuple(row) for row in rows] != [("ok",)]:
        raise DamagedFile("integrity check failed: " + "; ".join(str(row[0]) for row in rows)[:300])


def connect_and_migrate(path: Path, max_bytes: int, *, check: bool = False) -> sqlite3.Connection:
    """The writer's connection: WAL, a hard page cap a little above the retention target, current schema.

    With *check*, ``PRAGMA quick_check`` runs first. A new file uses
    incremental auto-vacuum, so deleting recordings can hand the space back
    in small steps.
    """
    private_files(path)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        if connection.execute("PRAGMA page_count").fetchone()[0] == 0:
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect before the first table
        if check:
            quick_check(connection)
        connection.execute("PRAGMA journal_mode=WAL").fetchone()
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, consistent always
        connection.execute("PRAGMA journal_size_limit=4194304")
        connection.execute(f"PRAGMA max_page_count={max(max_bytes // PAGE_SIZE, 1)}")
        migrate(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def move_aside(path: Path, reason: str) -> Path:
    """Rename the file (and its WAL and SHM) to ``<name>.corrupt-<time>``; return the new name."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    log.error("event log %s is unusable (%s); moved it to %s and starting a fresh one", path, reason, aside)
    for suffix in SIDE_FILES:
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(Path(f"{aside}{suffix}"))
    return aside


def is_corruption(error: sqlite3.Error) -> bool:
    if isinstance(error, DamagedFile):
        return True
    text = str(error).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text or "newer than" in text


def rollback(connection: sqlite3.Connection) -> None:
    """Roll back an open transaction, ignoring a connection that cannot."""
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    except sqlite3.Error:
        pass
