"""The ledger's connections and transactions (SQLite, the embedded backend).

One ``Store`` per process and ledger: every part of the ledger (offers,
consent, forwards, credits, admin users, reports) runs its SQL through
``write()`` and ``read()`` here, never through a connection of its own.

Two backends take the same SQL: SQLite (``SqliteBackend`` in
``career_relay.ledger.sqlite_backend``, the embedded default) and PostgreSQL
(``career_relay.ledger.postgres``).  Every write holds the ledger's one
write lock; after each commit that moved the chain's head, the head file is
written (``career_relay.ledger.head``).

The gateway's event loop writes through ``write_now``: the same
transaction, begun only if it can be without waiting (``WouldWait``
otherwise), on a connection that never checkpoints by itself (a checkpoint
writes the database file and fsyncs it): ``checkpoint()`` runs in a thread,
and so does the head file's write after those commits (``publish_head``).
``data_version()`` says whether any other connection committed since (the
site's page cache).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, Self

from sqlite_utils import Database

from career_relay.errors import LedgerError, WouldWait
from career_relay.ledger import chain, head
from career_relay.ledger.chain import DEFAULT_HASH_KEY
from career_relay.ledger.rules import Rules
from career_relay.ledger.sqlite_backend import SqliteBackend
from career_relay.timestamps import utcnow

log = logging.getLogger("career_relay.ledger")

Clock = Callable[[], dt.datetime]


def new_offer_id() -> str:
    """96 random bits, URL-safe (16 characters): unguessable, and short enough for a link."""
    return secrets.token_urlsafe(12)


class Backend(Protocol):
    """Where the rows live: SQLite (``SqliteBackend``) or PostgreSQL
    (``career_relay.ledger.postgres.PostgresBackend``).  Connections it yields take the
    same SQL: ``?`` and ``:name`` parameters, the statements both dialects share."""

    def write(self) -> contextlib.AbstractContextManager[Any]: ...
    def read(self) -> contextlib.AbstractContextManager[Any]: ...
    def snapshot(self) -> contextlib.AbstractContextManager[Any]: ...
    def data_version(self) -> int: ...
    def settled_head(self, *, just_written: bool = False) -> tuple[int, str] | None: ...
    def close(self) -> None: ...


class Store:
    """One open ledger over its backend.  Safe to share between threads."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock = utcnow,
        new_id: Callable[[], str] = new_offer_id,
        hash_key: bytes = DEFAULT_HASH_KEY,
        head_file: Path | None = None,
        rules: Rules | None = None,
    ) -> None:
        self.backend = backend
        self._clock = clock
        self._new_id = new_id
        #: The key of the hashes that stand for personal data in entries (``secrets.hash_key``).
        self.hash_key = hash_key
        #: Where the chain's head is kept outside the database (None: nowhere).
        self.head_file = head_file
        #: The rules of credits and candidates (``open_configured``: from the settings).
        self.rules = rules or Rules(hash_key=hash_key)
        self._head_lock = threading.Lock()
        self._published: tuple[int, str] | None = None
        self._head_alarm: str | None = None  # the trouble last logged about the head file
        #: Called by ``close`` before the connections close (``LedgerWriter.close``: its
        #: flusher uses them), whichever of the two the caller closes first.
        self.on_close: list[Callable[[], None]] = []

    def close(self) -> None:
        for stop in self.on_close:
            stop()
        self.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> Database:
        """The SQLite writer's connection (sqlite-utils): tools and tests of that backend."""
        if not isinstance(self.backend, SqliteBackend):
            raise TypeError("the ledger is not in SQLite")
        return self.backend.db

    @property
    def wal_path(self) -> Path | None:
        """SQLite's write-ahead log beside the ledger, which the gateway fsyncs in its group
        commit (None: a backend whose commits are durable by themselves)."""
        if not isinstance(self.backend, SqliteBackend):
            return None
        filename = self.backend.db.conn.execute("PRAGMA database_list").fetchone()[2]
        return Path(f"{filename}-wal")

    @contextlib.contextmanager
    def write(self) -> Iterator[Any]:
        """One transaction that holds the ledger's write lock (every writer of every process
        queues on it, so the chain never forks): committed on success, rolled back on
        error; after the commit, the head file if the chain's head moved."""
        with self.backend.write() as conn:
            yield conn
        self.publish_head()

    @property
    def writes_now(self) -> bool:
        """Whether ``write_now`` can ever commit (SQLite), not only say ``WouldWait``."""
        return isinstance(self.backend, SqliteBackend)

    @contextlib.contextmanager
    def write_now(self) -> Iterator[Any]:
        """``write`` that never waits, for an event loop (``SqliteBackend.write_now``);
        ``WouldWait`` on PostgreSQL, where every statement waits for the server.

        It leaves the head file to the caller's next ``publish_head``: the gateway's
        writer calls it from its flusher thread, at most ``FLUSH_INTERVAL`` later, once
        for all the commits of that time.  Written after each of them, the lock file, the
        read, the check and the write cost a rejection's commit a third more CPU
        (docs/performance.md, "Every path"), in the loop every session waits on.  Until
        this process has written it once, it is written here: a ledger's first entries
        are never left without a head file (``ledger verify`` would call it removed)."""
        if not isinstance(self.backend, SqliteBackend):  # self.writes_now, for the type checker
            raise WouldWait("every statement of this backend is a round trip to its server")
        with self.backend.write_now() as conn:
            yield conn
        if self._published is None:
            self.publish_head(wait=False)

    def checkpoint(self) -> None:
        """SQLite: the WAL copied into the database file (``SqliteBackend.checkpoint``), for a
        ledger opened with ``sync_wal_elsewhere``.  PostgreSQL checkpoints by itself."""
        if isinstance(self.backend, SqliteBackend):
            self.backend.checkpoint()

    def read(self) -> contextlib.AbstractContextManager[Any]:
        """A connection for reads: this thread's own, or the writer's inside a write."""
        return self.backend.read()

    def snapshot(self) -> contextlib.AbstractContextManager[Any]:
        """A connection whose reads all see one moment, whatever commits meanwhile (the
        report, the metrics' totals, ``ledger verify``, a dry-run purge); what it writes,
        a temporary table, is rolled back."""
        return self.backend.snapshot()

    def data_version(self) -> int:
        """A number that changes whenever another connection (another process, or this
        process's writer) has committed since this thread last asked."""
        return self.backend.data_version()

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last entry known durable (``Backend.settled_head``); None while
        the chain is empty."""
        return self.backend.settled_head()

    def head_text(self) -> str:
        """``<n>:<hash>`` of the last entry (``0:`` and 64 zeros while there is none): what the
        head file holds and the agency receives."""
        return head.format_head(*(self.head() or (0, chain.GENESIS)))

    def publish_head(self, *, wait: bool = True) -> bool:
        """Write the head file if the head moved since this process last wrote it (one
        indexed read when it did not).  A failure is logged, not raised: the transaction
        is committed, and a head file left behind only weakens the check, never fails it.
        ``wait=False``: nothing when another thread or process holds the file's lock now
        (a ``ledger verify`` stopped with ^Z holds it for as long as it likes); False then,
        and the caller calls again later.  False too when the ledger or the file could not
        be read or written (a moment's trouble, as often as not): the gateway's commits in
        its loop leave the head file to the flusher, whose next round is the only other
        try (``LedgerWriter._tidy``).  True when the file is left for an operator
        (``Diverged``, ``BadHead``)."""
        if self.head_file is None:
            return True
        if not self._head_lock.acquire(blocking=wait):
            return False
        try:
            return self._publish_head(wait)
        except LedgerError as exc:  # reading the new head: the commit stands all the same
            self._alarm(exc)
            return False
        finally:
            self._head_lock.release()

    def _publish_head(self, wait: bool) -> bool:
        assert self.head_file is not None
        with self.read() as conn:
            found = self.backend.settled_head(just_written=True)
            if found is None or found == self._published:
                return True

            def holds(seq: int, digest: str) -> bool:
                row = conn.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchone()
                return row is not None and str(row[0]) == digest

            try:
                head.write(self.head_file, *found, holds=holds, wait=wait)
            except head.Busy:
                return False
            except OSError as exc:  # the lock file or the head file: perhaps the next try
                self._alarm(exc)
                return False
            except (head.Diverged, head.BadHead) as exc:
                self._alarm(exc)
                return True
            self._published, self._head_alarm = found, None
            return True

    def _alarm(self, exc: Exception) -> None:
        """Once per kind of trouble, not once per commit: the gateway commits often."""
        alarm = f"{type(exc).__name__}: {exc}"
        if alarm != self._head_alarm:
            self._head_alarm = alarm
            level = logging.ERROR if isinstance(exc, head.Diverged | head.BadHead) \
                else logging.WARNING
            log.log(level, "the chain head is not written to %s: %s (run "
                    "`career-relay ledger verify`)", self.head_file, exc)

    def now(self) -> dt.datetime:
        return self._clock()

    def new_id(self) -> str:
        """A fresh random id from the ledger's generator (offers, receipts, forwards, credits):
        one place to seed them all, as ``career_relay.example_ledger`` does."""
        return self._new_id()

    def save_copy(self, out: str | Path) -> None:
        """Write a compact, self-contained copy to ``out`` (which must not exist): one file in
        rollback-journal mode, with no ``-wal`` beside it, fit to commit or send."""
        with self.backend.read() as conn:
            conn.execute("VACUUM INTO ?", (str(out),))
        with contextlib.closing(sqlite3.connect(str(out))) as copy:
            copy.execute("PRAGMA journal_mode = DELETE")
