"""Opening the ledger: the file, its mode, its migrations, the configured key and head.

``open_configured(settings)`` is how the gateway, the site and the CLI open
it, so none of them hashes with another key or keeps the head elsewhere;
``open_ledger(path)`` is the lower step tests and tools use.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from career_relay.errors import ConfigError
from career_relay.ledger import head as ledger_head
from career_relay.ledger.chain import DEFAULT_HASH_KEY
from career_relay.ledger.migrations import CHAIN_MIGRATION, MIGRATIONS
from career_relay.ledger.offers import Ledger
from career_relay.ledger.rules import Rules, settings_hash_key
from career_relay.ledger.sqlite_backend import BUSY_TIMEOUT_SECONDS, SqliteBackend, immediate
from career_relay.ledger.store import Clock, new_offer_id
from career_relay.settings_table import Settings
from career_relay.timestamps import utcnow


def _private_files(path: Path) -> None:
    """The ledger (and its WAL and shared memory) readable by its owner only (SPEC 8).

    SQLite creates files 0644 and gives -wal and -shm the database file's mode, so
    the database is created 0600 first; files an older version left open are narrowed.
    """
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            mode = name.stat().st_mode & 0o777
            if mode & 0o077:
                name.chmod(mode & 0o700)


def open_configured(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    new_id: Callable[[], str] = new_offer_id,
    sync_wal_elsewhere: bool = False,
    on_migrate: Callable[[list[str]], None] | None = None,
    wait: bool = True,
) -> Ledger:
    """``open_ledger`` on ``ledger.path`` (or ``open_shared`` on ``ledger.url``) with the
    configured hash key and head file: how the gateway, the site and the CLI open it, so
    none of them hashes with another key or keeps the head elsewhere.

    ``wait=False`` (the gateway and the site): a shared ledger whose server is away opens
    all the same, and reads and writes say ``LedgerUnavailable`` until it is back."""
    if settings.ledger.url:  # the key is checked at its first use (``open_shared``)
        ledger = open_shared(settings.ledger.url, clock=clock, new_id=new_id,
                             on_migrate=on_migrate, hash_key=settings_hash_key(settings),
                             head_file=settings.ledger.head_file or None, wait=wait)
    else:
        ledger = open_ledger(settings.ledger.path, clock=clock, new_id=new_id,
                             sync_wal_elsewhere=sync_wal_elsewhere, on_migrate=on_migrate,
                             hash_key=settings_hash_key(settings),
                             head_file=settings.ledger.head_file or None)
        try:
            _check_hash_key(ledger)
        except BaseException:
            ledger.close()
            raise
    ledger.rules = Rules.from_settings(settings)
    return ledger


def _check_hash_key(ledger: Ledger) -> None:
    """Refuse a key other than the one the ledger's keyed hashes were made with (the first
    open with a key records its fingerprint).  With ``secrets.hash_key`` empty the key is
    the oldest signing key, so dropping that key in a rotation would change it silently."""
    mark = hmac.new(ledger.hash_key, b"career-relay ledger hash key", hashlib.sha256
                    ).hexdigest()[:16]
    with ledger.read() as conn:
        found = conn.execute("SELECT value FROM meta WHERE name = 'hash_key'").fetchone()
    if found is None:
        with ledger.write() as conn:
            conn.execute("INSERT INTO meta (name, value) VALUES ('hash_key', ?)"
                         " ON CONFLICT (name) DO NOTHING", (mark,))
            found = conn.execute("SELECT value FROM meta WHERE name = 'hash_key'").fetchone()
    if str(found[0]) != mark:
        raise ConfigError(
            "secrets.hash_key is not the key this ledger was written with (when it is empty, "
            "the oldest of secrets.signing_keys is used: was it removed?); set "
            "secrets.hash_key to the key the ledger was written with")


def check_url(url: str) -> None:
    """``ConfigError`` (never quoting it: it holds a password) for a ``ledger.url`` that
    libpq cannot parse (``check-config``; ``open_shared`` checks it too)."""
    from career_relay.ledger import postgres  # psycopg is loaded only when it is used

    postgres.check_url(url)


def open_shared(
    url: str,
    *,
    clock: Clock = utcnow,
    new_id: Callable[[], str] = new_offer_id,
    on_migrate: Callable[[list[str]], None] | None = None,
    hash_key: bytes = DEFAULT_HASH_KEY,
    head_file: str | Path | None = None,
    wait: bool = True,
    check_key: bool = True,
) -> Ledger:
    """The ledger in the PostgreSQL database at ``url`` (SPEC 12), migrated and its hash
    key checked at the first use; with ``wait``, now (``LedgerUnavailable`` if the server
    cannot be reached).  The head file is kept only when ``head_file`` names one: on
    several hosts, each keeps its own.  ``check_key=False``: ``ledger migrate``, which
    compares the fingerprint itself and names the table that holds it."""
    from career_relay.ledger import postgres  # psycopg is loaded only when it is used

    backend = postgres.open_backend(url, on_migrate)
    ledger = Ledger(backend, clock=clock, new_id=new_id, hash_key=hash_key,
                    head_file=Path(head_file) if head_file else None)
    if check_key:
        backend.on_ready = lambda: _check_hash_key(ledger)
    if wait:
        try:
            backend.ready()
        except BaseException:
            ledger.close()
            raise
    return ledger


def open_ledger(
    path: str | Path,
    *,
    clock: Clock = utcnow,
    new_id: Callable[[], str] = new_offer_id,
    sync_wal_elsewhere: bool = False,
    on_migrate: Callable[[list[str]], None] | None = None,
    hash_key: bytes = DEFAULT_HASH_KEY,
    head_file: str | Path | None = None,
) -> Ledger:
    """Open (creating if needed) the ledger at ``path`` and apply pending migrations.

    ``sync_wal_elsewhere``: commits do not wait for the disk themselves
    (``synchronous = NORMAL``); the caller fsyncs the WAL file (``wal_path``)
    before it relies on them.  The gateway does so in the same group commit
    that makes the mail durable, before its 250.  Such a ledger does not
    checkpoint after its commits either (a checkpoint writes the database file
    and fsyncs it, and the gateway commits in its event loop): the caller runs
    ``Ledger.checkpoint`` from a thread (the gateway's ``LedgerWriter`` does).

    ``on_migrate`` is told the names of the pending migrations before they run
    (``serve`` prints a progress line: a migration may rewrite large tables).

    ``hash_key``: the key of the keyed hashes in entries (``secrets.hash_key``; see
    ``open_configured``).  ``head_file``: where the chain head is kept (default
    ``<path>.head``); the migration that chains offers writes it, as every later commit.
    """
    _private_files(Path(path))
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
    try:
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        # Both PRAGMAs are per connection and do nothing inside a transaction: set them first.
        conn.execute("PRAGMA foreign_keys = ON")
        _enable_wal(conn)
        if sync_wal_elsewhere:
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        applied = _migrate(db, on_migrate)
    except BaseException:
        conn.close()
        raise
    head = Path(head_file) if head_file else ledger_head.default_path(path)
    memory = str(path) == ":memory:" or str(path).startswith("file:")
    backend = SqliteBackend(db, None if memory else Path(path))
    ledger = Ledger(backend, clock=clock, new_id=new_id, hash_key=hash_key, head_file=head)
    if CHAIN_MIGRATION in applied:  # an upgraded ledger starts with a head file
        ledger.publish_head()
    return ledger


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a ledger to WAL (a lasting property of the file; a no-op when already so).

    SQLite answers "database is locked" at once, without waiting on the busy
    timeout, when another connection holds the file while the mode changes:
    this happens when several processes open a new ledger together, so retry.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    delay = 0.005
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        else:
            if str(mode).lower() == "wal":
                return
            raise sqlite3.OperationalError(f"the ledger cannot use WAL (journal mode {mode})")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _migrate(db: Database, on_migrate: Callable[[list[str]], None] | None = None
             ) -> list[str]:
    """Apply pending migrations under the write lock, so two processes starting together
    on a new file do not both try to create the same tables; the names of those applied."""
    pending = MIGRATIONS.pending(db)
    if not pending:
        return []
    if on_migrate is not None:
        on_migrate([m.name for m in pending])
    with immediate(db.conn):
        # Inside our transaction sqlite-utils nests each migration in a savepoint
        # and re-reads what is pending, now that no other writer can interleave.
        applied = [m.name for m in MIGRATIONS.pending(db)]
        MIGRATIONS.apply(db)
    return applied
