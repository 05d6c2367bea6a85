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
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
import psycopg_pool

from career_relay.errors import ConfigError, LedgerConflict, LedgerUnavailable

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
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def to_psycopg(sql: str) -> str:
    """``?`` -> ``%s``, ``:name`` -> ``%(name)s``, a literal ``%`` doubled.  The ledger's SQL
    holds no ``?`` or ``:word`` inside string literals (its literals are short words)."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    return _NAMED.sub(r"%(\1)s", sql)


class _Connection:
    """A psycopg connection that takes the ledger's SQL (``execute``, ``executemany``)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
                ) -> psycopg.Cursor[Any]:
        # The parameters as given, even none: psycopg reads placeholders (and turns the
        # doubled ``%%`` back into ``%``) only when it is given parameters.
        return self.raw.execute(to_psycopg(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        if rows:
            cursor.executemany(to_psycopg(sql), rows)
        return cursor


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """psycopg's errors as the project's (``career_relay.ledger.store.translated``)."""
    try:
        yield
    except psycopg.IntegrityError as exc:
        raise LedgerConflict(str(exc).strip()) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        # A role without the grant a statement needs (deploy/postgres/grants.sql not applied
        # after a migration): unavailable until the owner grants it, so the gateway holds
        # the rejection and the site answers 503, never a bug's "relay it unchanged".
        raise LedgerUnavailable(f"the ledger cannot be used now: {_first_line(exc)} (the "
                                "role of ledger.url lacks a grant: apply "
                                "deploy/postgres/grants.sql as the owner)") from exc
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        # A server that takes no writes (a standby, during a failover): away for writing,
        # so the gateway holds the rejection and the site answers 503, never a bug's 451.
        raise LedgerUnavailable(f"the ledger cannot be used now: {_first_line(exc)} (the "
                                "server of ledger.url is read-only: a standby?)") from exc
    except psycopg_pool.PoolTimeout as exc:
        raise LedgerUnavailable("the ledger cannot be used now: no connection to "
                                "PostgreSQL") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise LedgerUnavailable(f"the ledger cannot be used now: {exc}".strip()) from exc
    except psycopg.errors.RaiseException as exc:  # an append-only trigger refused
        raise LedgerConflict(str(exc).strip()) from exc
    except psycopg.DataError as exc:
        # A value PostgreSQL cannot store (a NUL in a text, which SQLite takes): refused
        # like a constraint, never the driver's error, which the gateway would take for a
        # bug and relay the rejection with its marker bare (attack review).
        raise LedgerConflict(f"the ledger refused a value: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


#: Seconds a write waits for the ledger's write lock before the ledger counts as
#: unavailable (the gateway holds, the site answers 503): a host cut off while it held the
#: lock must not stall every writer of every host until the server notices it is gone.
LOCK_TIMEOUT = 10.0
#: libpq's settings unless ``ledger.url`` sets them: a server that stops answering (a
#: partition, a failover) is given up after seconds, not TCP's minutes or hours.
_LIBPQ_DEFAULTS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "30",
                   "keepalives_interval": "10", "keepalives_count": "3",
                   "tcp_user_timeout": "30000"}
#: The server's side of the same: a client that vanished in a transaction (holding the
#: write lock) is ended within about a minute by keepalives, and within five by the idle
#: timeout whatever the network does (the ledger's transactions last milliseconds; the
#: longest, ``ledger migrate``, never idles).
_SESSION = ("SET max_parallel_workers_per_gather = 0",
            "SET idle_in_transaction_session_timeout = '300s'",
            "SET tcp_keepalives_idle = 30", "SET tcp_keepalives_interval = 10",
            "SET tcp_keepalives_count = 3", "SET tcp_user_timeout = 30000")


def conninfo(url: str) -> str:
    """``url`` with the ``_LIBPQ_DEFAULTS`` it does not set itself."""
    given = psycopg.conninfo.conninfo_to_dict(url)
    return psycopg.conninfo.make_conninfo(
        url, **{k: v for k, v in _LIBPQ_DEFAULTS.items() if k not in given})


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Each new connection of the pool: no parallel plans (the module's docstring), and the
    server's timeouts of ``_SESSION``."""
    for statement in _SESSION:
        conn.execute(statement)


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
            configure=_configure, name="career-relay-ledger")
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
                        f"them ({_first_line(exc)}): apply them as the database's owner, "
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
        self.ready()
        with self._connection() as conn, conn.transaction():
            # LockNotAvailable past it: an OperationalError, so LedgerUnavailable.
            conn.execute(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT * 1000)}ms'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            self._local.writing = wrapped = _Connection(conn)
            try:
                yield wrapped
            finally:
                self._local.writing = None
            conn.execute(f"NOTIFY {CHANNEL}")  # delivered at the commit, to every host
        # Committed: this process's own change counts now, not when its notification comes
        # back through the listener (a site's page right after a decision was the old one).
        self._changed()

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
                    _configure(conn)
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._changed()
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._changed()
            except psycopg.Error as exc:
                log.warning("ledger notifications interrupted: %s", exc)
                self._changed()
                self._closed.wait(1.0)


def check_url(url: str) -> None:
    """``ConfigError`` for a URL libpq cannot parse, without libpq's words: they quote the
    part they choke on, often the password (a space, a stray ``%``), and the pool's and
    the listener's threads would log them at every try (attack review)."""
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        raise ConfigError(
            "ledger.url cannot be read as a PostgreSQL URL (postgresql://user:password@host"
            "/db): percent-encode the password's special characters (a space is %20, a % "
            "is %25) or leave it out of the URL (PGPASSWORD, ~/.pgpass)") from None


def open_backend(url: str, on_migrate: Callable[[list[str]], None] | None = None
                 ) -> PostgresBackend:
    """A backend for ``url``; it connects, and migrates, at its first use (``ready``)."""
    check_url(url)
    try:
        return PostgresBackend(url, on_migrate=on_migrate)
    except psycopg.Error as exc:  # a URL psycopg cannot parse: the setting, not the server
        raise ConfigError(f"ledger.url cannot be used: {type(exc).__name__}") from None
