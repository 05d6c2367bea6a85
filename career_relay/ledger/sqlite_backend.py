"""The SQLite backend of the ledger: one writer connection under a lock, a reading
connection per thread (``career_relay.ledger.store`` says how the ledger uses them).

Writes: one connection, serialised by a lock, each write one ``BEGIN
IMMEDIATE`` transaction (the write lock is taken up front, so two processes'
writers queue on the busy timeout instead of failing to upgrade a read
lock).  ``write_now`` is the same transaction for an event loop: begun only
if it can be without waiting.

Reads: a connection per reading thread, so the site's event loop never
waits behind a commit that waits for the disk (WAL readers never wait for
the writer).  Inside a write, a read uses the writer's connection and sees
the transaction's own rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlite_utils import Database

from career_relay.errors import LedgerConflict, LedgerUnavailable, WouldWait
from career_relay.ledger import chain

BUSY_TIMEOUT_SECONDS = 30.0
#: Frames in the WAL past which ``checkpoint`` makes sure it starts over (about 4 MB).
WAL_RESTART_FRAMES = 1000


class SqliteBackend:
    """One writer connection under a lock, a reading connection per thread."""

    def __init__(self, db: Database, path: Path | None) -> None:
        #: The writer's connection (sqlite-utils, for the migrations).
        self.db = db
        self.lock = threading.RLock()
        self._path = path  # None: ``:memory:``, where a second connection is another database
        self._local = threading.local()  # .reader, .writing: per thread
        self._readers: list[sqlite3.Connection] = []

    def close(self) -> None:
        with self.lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            self.db.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self._local.writing = True
            try:
                with translated(), immediate(self.db.conn) as conn:
                    yield conn
            finally:
                self._local.writing = False

    @contextlib.contextmanager
    def write_now(self) -> Iterator[sqlite3.Connection]:
        """``write``, for an event loop: ``WouldWait`` (nothing begun) when this process's
        writer is busy or another process holds SQLite's write lock.  Once ``BEGIN
        IMMEDIATE`` holds the lock nothing in the transaction waits: a WAL commit takes no
        other lock, and the gateway's connection does not checkpoint after it
        (``open_ledger(sync_wal_elsewhere=True)``)."""
        if not self.lock.acquire(blocking=False):
            raise WouldWait("another write of this process is under way")
        try:
            self._local.writing = True
            conn = self.db.conn
            with translated():
                try:
                    with never_busy_waiting(conn):
                        conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc) or "busy" in str(exc):
                        raise WouldWait("another process holds the ledger's lock") from None
                    raise
                with committed(conn):
                    yield conn
        finally:
            self._local.writing = False
            self.lock.release()

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, as far as readers allow, without
        waiting on anyone (``PASSIVE``), on this thread's reading connection: the writer's
        lock stays free for the commits meanwhile.

        SQLite starts the WAL over only when a write begins with all of it copied, and
        commits that never pause (a busy gateway, several workers) left none such: the WAL
        grew without bound.  Once it holds ``WAL_RESTART_FRAMES`` (SQLite's autocheckpoint
        threshold), the rest is copied holding the write lock (``FULL``), taken only if it
        is free (busy timeout 0: a commit in a loop says ``WouldWait`` meanwhile, never
        waits), so the next write starts the WAL over."""
        if self._path is None:
            return
        with translated():
            reader = self._reader()
            (_, frames, _), = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if frames < WAL_RESTART_FRAMES:
                return
            with never_busy_waiting(reader):
                reader.execute("PRAGMA wal_checkpoint(FULL)").fetchall()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        if self._path is None or getattr(self._local, "writing", False):
            with self.lock, translated():
                yield self.db.conn
            return
        with translated():
            yield self._reader()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Reads that all see one moment (a deferred transaction, rolled back); inside a
        write, the write's own."""
        with self.read() as conn:
            if conn.in_transaction:
                yield conn
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")

    def _reader(self) -> sqlite3.Connection:
        reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if reader is None:
            # Used by this thread only; ``close`` may run on another, hence no same-thread check.
            reader = sqlite3.connect(str(self._path), timeout=BUSY_TIMEOUT_SECONDS,
                                     check_same_thread=False)
            self._local.reader = reader
            with self.lock:
                self._readers.append(reader)
        return reader

    def data_version(self) -> int:
        with self.read() as conn:
            (version,) = conn.execute("PRAGMA data_version").fetchone()
        return int(version)

    def settled_head(self, *, just_written: bool = False) -> tuple[int, str] | None:
        """(seq, hash) of the last entry.  The site commits with ``synchronous = FULL``; the
        gateway's commits (``NORMAL``) reach the disk with its fsync of the WAL before its
        250, so a power cut in between can take entries the head file already names (one
        host, one disk: ``ledger verify`` then says the head file is ahead)."""
        with self.read() as conn:
            return chain.last(conn)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """The driver's errors as the project's (``career_relay.errors``): callers outside the
    ledger never see sqlite3 (or psycopg) errors.  Misuse (``ProgrammingError``) stays
    what it is: a bug, not a condition to answer."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise LedgerConflict(str(exc)) from exc
    except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
        if isinstance(exc, sqlite3.ProgrammingError):
            raise
        raise LedgerUnavailable(f"the ledger cannot be used now: {exc}") from exc


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error (if the error left a
    transaction to roll back: some, such as a full disk, end it themselves)."""
    conn.execute("BEGIN IMMEDIATE")
    with committed(conn):
        yield conn


@contextlib.contextmanager
def never_busy_waiting(conn: sqlite3.Connection) -> Iterator[None]:
    """Statements of ``conn`` that answer SQLITE_BUSY at once rather than sleep in the busy
    handler (busy timeout 0); the usual timeout again after them."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")


@contextlib.contextmanager
def committed(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """The transaction ``conn`` has begun: committed, or rolled back on any error."""
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
