"""The PostgreSQL backend (SPEC 12): several gateways and sites on one ledger.

The ledger's modules write one SQL for both backends, with SQLite's
parameter styles (``?`` and ``:name``); ``_Connection`` turns them into
psycopg's (``%s``, ``%(name)s``) once per statement text.

Writes: every write transaction first takes one transaction-level advisory
lock, so writers queue as they do on SQLite's write lock and two hosts never
read the same last entry of the chain (a fork is impossible, not merely
detected).  ``UNIQUE`` constraints carry idempotency across hosts (offers per
Message-ID and recipient, credits per company and number), and the claims of
the outbox run under the same lock, so each forward goes to one worker.

The lock is let go before the commit's WAL flush, and the writer waits for the flush
after it (early lock release, as in DeWitt et al. 1984 and Johnson et al., "Aether",
VLDB 2010).  Every host's writers queue on the one lock, so what it covers sets the
ledger's ceiling (docs/performance.md, "Both backends"); holding it through each
commit's flush, one flush per transaction, serialised, was most of that.  Safe because
the WAL is one sequence: a transaction that saw this one's rows commits after it in the
WAL, so a crash that loses this commit loses every commit that depended on it, and no
writer answers its caller before ``SETTLE`` has seen its commit on disk.  Meanwhile the
flushes of concurrent writers are shared (PostgreSQL's group commit).  Only what is
settled is published: the head file and the head the agency receives
(``settled_head``), never an entry a crash could still take.

Reads: a connection from the pool per read, in autocommit (each statement
sees the last commit).  ``data_version`` counts ``NOTIFY career_relay_ledger``,
sent by every write transaction at its commit, so a site's page cache hears
of a change made on any host.

Plans: every connection runs without parallel workers (``max_parallel_workers_per_gather
= 0``).  The ledger reads one company's range of an index; when one company holds a large
share of a table, the planner may prefer a parallel scan of every company's rows, which
cost three to five times the index on a shared server (the report's ``views`` for a
company with 30% of 1,000,000 offers: 33 to 64 ms against 11 to 17 ms, docs/performance.md
"Both backends").
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg_pool

from career_relay.errors import ConfigError, LedgerUnavailable
from career_relay.ledger.pg_session import (
    _Connection,
    check_url,
    configure,
    conninfo,
    first_line,
    translated,
)

__all__ = ["AWAY_TIMEOUT", "CHANNEL", "LOCK_TIMEOUT", "POOL_TIMEOUT", "SETTLE", "WRITE_LOCK",
           "PostgresBackend", "_Connection", "check_url", "conninfo", "open_backend"]

log = logging.getLogger("career_relay.ledger")

#: The advisory lock every write holds (an arbitrary 64-bit key: "career-relay ledger").
WRITE_LOCK = 0x6C6564676572
CHANNEL = "career_relay_ledger"
#: Seconds a caller waits for a pooled connection before the ledger counts as unavailable.
POOL_TIMEOUT = 5.0
#: The same wait once a caller found the server away, until one gets a connection again:
#: a site's pages, read on its event loop, answer 503 at once instead of each waiting
#: POOL_TIMEOUT in turn, and queued rejections are held at once (the pool keeps
#: reconnecting meanwhile).
AWAY_TIMEOUT = 0.2


#: Seconds a write waits for the ledger's write lock before the ledger counts as
#: unavailable (the gateway holds, the site answers 503): a host cut off while it held the
#: lock must not stall every writer of every host until the server notices it is gone.
LOCK_TIMEOUT = 10.0


class PostgresBackend:
    """A pool of connections to one PostgreSQL database.

    Ready once its migrations are applied and ``on_ready`` (the hash key's check) has
    passed: at the first read or write that reaches the server, so a gateway or a site
    may start while the database is away and work as soon as it is back."""

    def __init__(self, url: str, *, max_size: int = 8,
                 on_migrate: Callable[[list[str]], None] | None = None) -> None:
        self.url = url
        self._on_migrate = on_migrate
        #: Run once when the database is first reached, after the migrations.
        self.on_ready: Callable[[], None] = lambda: None
        self._ready = False
        self._readying = threading.Lock()
        # reconnect_timeout: a lost server is looked for again with a backoff that doubles
        # (1, 2, 4, 8 ... s) for as long as this; psycopg_pool's 5 minutes meant a server
        # away for a minute was used again only up to a minute after it was back (every
        # page a 503, every rejection held meanwhile).  Given up after POOL_TIMEOUT, when
        # no caller still waits for it, the next caller's attempt is made at once.
        self.pool = psycopg_pool.ConnectionPool(
            conninfo(url), min_size=1, max_size=max_size, timeout=POOL_TIMEOUT, open=True,
            reconnect_timeout=POOL_TIMEOUT,
            kwargs={"autocommit": True},
            check=psycopg_pool.ConnectionPool.check_connection,
            configure=configure, name="career-relay-ledger")
        self._version = 0
        self._counting = threading.Lock()
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()
        self._listening = threading.Lock()
        self._local = threading.local()  # .writing: this thread's write transaction
        self._away = False  # the last caller found the server away

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, translated errors; ``AWAY_TIMEOUT`` while the server is
        known to be away."""
        with translated():
            try:
                with self.pool.connection(AWAY_TIMEOUT if self._away else POOL_TIMEOUT
                                          ) as conn:
                    self._away = False
                    yield conn
            except (psycopg_pool.PoolTimeout, psycopg.OperationalError):
                self._away = True
                raise

    def close(self) -> None:
        self._closed.set()
        self.pool.close()

    def ready(self) -> list[str]:
        """Apply the pending migrations and run ``on_ready``, once; the names applied.
        ``LedgerUnavailable`` while the server cannot be reached, or while migrations are
        pending that the role may not apply (the application's: the owner migrates)."""
        if self._ready or getattr(self._local, "readying", False):
            return []  # ready; or ``on_ready``'s own reads and writes, in this thread
        with self._readying:
            if self._ready:
                return []
            from career_relay.ledger import schema_postgres

            with self._connection() as conn:
                _may_settle(conn)
                done = set(schema_postgres.applied(conn))
                pending = [name for name, _ in schema_postgres.MIGRATIONS if name not in done]
                if pending and self._on_migrate is not None:
                    self._on_migrate(pending)
                try:
                    applied = schema_postgres.apply(conn) if pending else []
                except psycopg.errors.InsufficientPrivilege as exc:
                    # The application's role (deploy/postgres/roles.sql) may not create
                    # tables: unavailable, as a database that is away, until the owner
                    # has migrated (and granted); then the next use finds nothing pending.
                    raise LedgerUnavailable(
                        f"the ledger's database has {len(pending)} migration(s) to apply "
                        f"({', '.join(pending)}) and the role of ledger.url may not apply "
                        f"them ({first_line(exc)}): apply them as the database's owner, "
                        "then deploy/postgres/grants.sql (docs/deploy.md)") from exc
            # Ready only once ``on_ready`` (the hash key's check) has passed: other threads
            # wait on the lock meanwhile.  Set before it, a write of another thread could
            # slip in under the wrong key, and the append-only chain keeps it for ever.
            self._local.readying = True
            try:
                self.on_ready()
            finally:
                self._local.readying = False
            self._ready = True
            return applied

    @contextlib.contextmanager
    def write(self) -> Iterator[_Connection]:
        """One transaction under the write lock; returned from once it is durable.

        The lock is let go before the commit reaches the disk (the module's docstring,
        "Writes"): the transaction commits without waiting for its WAL flush
        (``synchronous_commit = off``), which lets the lock go at once; then ``SETTLE``, a
        transaction of its own that commits as the server is configured to (the flush, and
        the synchronous standbys if any), waits for the WAL up to its own commit record,
        hence for this one's too.  Only then does the caller hear it committed."""
        self.ready()
        with self._connection() as conn:
            with self._locked(conn) as wrapped:
                yield wrapped
            self._settle(conn)
        # Committed: this process's own change counts now, not when its notification comes
        # back through the listener (a site's page right after a decision was the old one).
        self._changed()

    @contextlib.contextmanager
    def _locked(self, conn: psycopg.Connection[Any]) -> Iterator[_Connection]:
        """The transaction that holds the write lock, committed without waiting for the disk."""
        with conn.transaction():
            # LockNotAvailable past the timeout: an OperationalError, so LedgerUnavailable.
            conn.execute(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT * 1000)}ms';"
                         " SET LOCAL synchronous_commit = off")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            self._local.writing = wrapped = _Connection(conn)
            try:
                yield wrapped
            finally:
                self._local.writing = None
            conn.execute(f"NOTIFY {CHANNEL}")  # delivered at the commit, to every host

    def _settle(self, conn: psycopg.Connection[Any]) -> None:
        """Wait until the commit just made is durable (``SETTLE``).  If this fails, the
        caller hears the ledger was unavailable, and that the write may have been kept:
        the gateway's and the site's writes are idempotent, and an operator's command
        says to look before doing it again."""
        try:
            self._local.settled = _settled(conn.execute(SETTLE).fetchone())
        except psycopg.Error as exc:
            raise LedgerUnavailable(
                "the ledger took the write but could not confirm it is on disk "
                f"({first_line(exc)}): it may have been recorded; look before doing it "
                "again") from exc

    def settled_head(self, *, just_written: bool = False) -> tuple[int, str] | None:
        """(seq, hash) of the chain's last entry, of those known durable: what the head file
        and the agency are given, never an entry a crash could still take.  As ``SETTLE``
        finds it now (a transaction that commits only once every commit it sees is on
        disk); ``just_written``: as this thread's last write found it when it settled
        (``Store.write`` publishing the head right after it), if there was one."""
        found: tuple[int, str] | bool | None = getattr(self._local, "settled", False)
        self._local.settled = False
        if just_written and found is not False:
            return found  # type: ignore[return-value]
        self.ready()
        with self._connection() as conn:
            return _settled(conn.execute(SETTLE).fetchone())

    @contextlib.contextmanager
    def read(self) -> Iterator[_Connection]:
        """A pooled connection; inside a write, the write's own (it sees its rows)."""
        writing: _Connection | None = getattr(self._local, "writing", None)
        if writing is not None:
            yield writing
            return
        self.ready()
        with self._connection() as conn:
            yield _Connection(conn)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[_Connection]:
        """One snapshot for every statement: REPEATABLE READ (a plain BEGIN is READ
        COMMITTED in PostgreSQL, a new snapshot for each statement), rolled back."""
        with self.read() as conn:
            if conn is getattr(self._local, "writing", None):
                yield conn  # the write's own transaction
                return
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")

    def data_version(self) -> int:
        """How many changes this process has heard of (any host's commits)."""
        with self._listening:
            if self._listener is None:
                self._listener = threading.Thread(target=self._listen, daemon=True,
                                                  name="ledger-listen")
                self._listener.start()
        return self._version

    def _changed(self) -> None:
        with self._counting:
            self._version += 1

    def _listen(self) -> None:
        """Count the notifications; after a lost connection, count one more (changes may
        have been missed) and listen again."""
        while not self._closed.is_set():
            try:
                with psycopg.connect(conninfo(self.url), autocommit=True) as conn:
                    configure(conn)
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._changed()
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._changed()
            except psycopg.Error as exc:
                log.warning("ledger notifications interrupted: %s", exc)
                self._changed()
                self._closed.wait(1.0)


#: Waits for the WAL flush of every commit it sees, and names the chain's head as it was.
#: A transactional logical message is the cheapest WAL record any role may write; it gives
#: the statement's transaction an id and a commit record after those of every transaction
#: it sees as committed, and a transaction that wrote WAL commits as ``synchronous_commit``
#: says (the server's setting: the flush, and the synchronous standbys if any).  An id
#: alone (``pg_current_xact_id()``) is not enough: a transaction that wrote no WAL record
#: commits without waiting for the flush whatever the setting.
SETTLE = ("SELECT pg_logical_emit_message(true, 'career-relay', 'settle'), e.seq, e.hash"
          " FROM (SELECT 1) AS one LEFT JOIN LATERAL"
          " (SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1) AS e ON true")


def _may_settle(conn: psycopg.Connection[Any]) -> None:
    """``LedgerUnavailable`` unless the role may run ``SETTLE``: without it every write
    would commit and then fail, which its caller would take for not done."""
    row = conn.execute("SELECT has_function_privilege("
                       "'pg_catalog.pg_logical_emit_message(boolean, text, text)',"
                       " 'EXECUTE')").fetchone()
    if not (row and row[0]):
        raise LedgerUnavailable(
            "the role of ledger.url may not execute pg_logical_emit_message, which each "
            "write needs to know it is on disk: as a superuser, GRANT EXECUTE ON FUNCTION "
            "pg_catalog.pg_logical_emit_message(boolean, text, text) TO that role "
            "(deploy/postgres/roles.sql)")


def _settled(row: Any) -> tuple[int, str] | None:
    return None if row is None or row[1] is None else (int(row[1]), str(row[2]))


def open_backend(url: str, on_migrate: Callable[[list[str]], None] | None = None
                 ) -> PostgresBackend:
    """A backend for ``url``; it connects, and migrates, at its first use (``ready``)."""
    check_url(url)
    try:
        return PostgresBackend(url, on_migrate=on_migrate)
    except psycopg.Error as exc:  # a URL psycopg cannot parse: the setting, not the server
        raise ConfigError(f"ledger.url cannot be used: {type(exc).__name__}") from None
