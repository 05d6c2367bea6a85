"""The ledger: SQLite, its schema as named migrations, and the only SQL in the core.

This is its first shape (issue 3): ``offers``, one per outside recipient of a
rejection, and ``daily_counts``, the per-company daily counters the report
needs (SPEC 8).  The rules, the hash chain and the credits come later
(issue 5) as further migrations appended to ``MIGRATIONS``; a migration that
has shipped is never edited.

Append-only in spirit: an offer row is written once and never updated;
what happens to it later (views, decisions, forwards) will be rows of their
own that reference it.  The counters are aggregates (how many, never who) and
are incremented in place.

Personal data: ``offers.recipient`` is the candidate's address, stored as
given because the consent page pre-fills it.  Retention (SPEC 9) will erase it
from offers whose link expired undecided, keeping a keyed hash; nothing here
may depend on it staying.

Chained (SPEC 8): every offer inserted appends an ``offer`` entry in the same
transaction, with a digest of the row and a keyed hash of the recipient
(``hash_key``), so moving an offer to another company, changing its recipient
or deleting it shows in ``ledger verify``.  After each commit that moved the
chain's head, the head is written to the head file (``career_relay.ledger_head``).

Concurrency: the gateway may run several processes on one ledger.  WAL lets
readers run beside the writer; every write is one ``BEGIN IMMEDIATE``
transaction (the write lock is taken up front, so two writers queue on the
busy timeout instead of failing to upgrade a read lock).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from sqlite_utils import Database

from career_relay import ledger_chain, ledger_head
from career_relay.errors import ConfigError
from career_relay.ledger_chain import DEFAULT_HASH_KEY
from career_relay.ledger_schema import CHAIN_MIGRATION
from career_relay.ledger_schema import MIGRATIONS as MIGRATIONS
from career_relay.settings_table import Settings

log = logging.getLogger("career_relay.ledger")

CounterKind = Literal["rejections", "not_injected", "unmarked_rejections"]
COUNTER_KINDS: tuple[str, ...] = get_args(CounterKind)

Clock = Callable[[], dt.datetime]
_BUSY_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Offer:
    id: str
    company: str
    message_id: str
    recipient: str
    created: dt.datetime
    job: str | None = None
    channel: str | None = None
    stage: str | None = None


def new_offer_id() -> str:
    """96 random bits, URL-safe (16 characters): unguessable, and short enough for a link."""
    return secrets.token_urlsafe(12)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Rejection:
    """What the ledger records for one accepted rejection."""

    company: str
    message_id: str
    offers: tuple[tuple[str, str], ...]  # (recipient, fresh offer id)
    job: str | None = None
    channel: str | None = None
    stage: str | None = None
    created: dt.datetime | None = None  # when its links were signed (default: now)
    # Counted once per message; a retried submission (its offers exist) counts nothing.
    counters: tuple[CounterKind, ...] = ("rejections",)


class Ledger:
    """One connection to the ledger.  Safe to share between threads (calls are serialised)."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock = _utcnow,
        new_id: Callable[[], str] = new_offer_id,
        hash_key: bytes = DEFAULT_HASH_KEY,
        head_file: Path | None = None,
    ) -> None:
        self.db = db
        self._clock = clock
        self._new_id = new_id
        self._lock = threading.RLock()
        #: The key of the hashes that stand for personal data in entries (``secrets.hash_key``).
        self.hash_key = hash_key
        #: Where the chain's head is kept outside the database (None: nowhere, ``:memory:``).
        self.head_file = head_file
        self._published: tuple[int, str] | None = None
        self._head_alarm: str | None = None  # the trouble last logged about the head file

    def close(self) -> None:
        self.db.close()

    @property
    def wal_path(self) -> Path:
        """SQLite's write-ahead log beside the ledger (it exists while connections are open)."""
        filename = self.db.conn.execute("PRAGMA database_list").fetchone()[2]
        return Path(f"{filename}-wal")

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error;
        after the commit, the head file if the chain's head moved."""
        with self._lock:
            with _immediate(self.db.conn) as conn:
                yield conn
            self.publish_head()

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last entry; None while the chain is empty."""
        with self._lock:
            return ledger_chain.last(self.db.conn)

    def publish_head(self) -> None:
        """Write the head file if the head moved since this connection last wrote it (one
        indexed read when it did not).  A failure is logged, not raised: the transaction
        is committed, and a head file left behind only weakens the check, never fails it."""
        if self.head_file is None:
            return
        with self._lock:
            head = ledger_chain.last(self.db.conn)
            if head is None or head == self._published:
                return
            conn = self.db.conn

            def holds(seq: int, digest: str) -> bool:
                row = conn.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchone()
                return row is not None and str(row[0]) == digest

            try:
                ledger_head.write(self.head_file, *head, holds=holds)
            except (OSError, ledger_head.Diverged, ledger_head.BadHead) as exc:
                # Once per kind of trouble, not once per commit: the gateway commits often.
                alarm = f"{type(exc).__name__}: {exc}"
                if alarm != self._head_alarm:
                    self._head_alarm = alarm
                    level = logging.WARNING if isinstance(exc, OSError) else logging.ERROR
                    log.log(level, "the chain head is not written to %s: %s (run "
                            "`career-relay ledger verify`)", self.head_file, exc)
                return
            self._published, self._head_alarm = head, None

    # The ledger's other modules (``ledger_consent``) share the connection through these.
    write = _write

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads, serialised with every other caller."""
        with self._lock:
            yield self.db.conn

    def now(self) -> dt.datetime:
        return self._clock()

    def new_id(self) -> str:
        """A fresh random id from the ledger's generator (offers, receipts, forwards, credits):
        one place to seed them all, as ``career_relay.example_ledger`` does."""
        return self._new_id()

    def record_offer(
        self,
        company: str,
        message_id: str,
        recipient: str,
        job: str | None = None,
        channel: str | None = None,
        stage: str | None = None,
    ) -> Offer:
        """The offer for (``message_id``, ``recipient``), created on the first call only.

        A retried submission (same Message-ID, same recipient) gets the offer
        made the first time, with its id, so its link is the same and no second
        offer exists, even when two processes race.
        """
        if not (company and message_id and recipient):
            raise ValueError("an offer needs a company, a Message-ID and a recipient")
        created = stamp(self._clock())
        row = (self._new_id(), company, message_id, recipient, created, job, channel, stage)
        with self._write() as conn:
            added = conn.execute(
                "INSERT INTO offers (id, company, message_id, recipient, created, job, channel,"
                " stage) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (company, message_id, recipient) DO NOTHING",
                row,
            ).rowcount
            if added:  # a retried submission finds its offer, and its entry, made already
                ledger_chain.append_many(conn, [self._offer_entry(*row)])
            found = conn.execute(
                f"SELECT {_OFFER_COLUMNS} FROM offers"
                " WHERE company = ? AND message_id = ? AND recipient = ?",
                (company, message_id, recipient),
            ).fetchone()
        return _offer(found)

    def record_rejection(
        self,
        company: str,
        message_id: str,
        offers: Sequence[tuple[str, str]],
        job: str | None = None,
        channel: str | None = None,
        stage: str | None = None,
    ) -> dict[str, str]:
        """One accepted rejection: its counter and an offer per outside recipient.

        ``offers`` pairs each recipient with a fresh id; a recipient that already
        has an offer for this Message-ID (a retried submission) keeps the one it
        had.  Returns recipient -> offer id.
        """
        rejection = Rejection(company, message_id, tuple(offers), job, channel, stage)
        return self.record_rejections([rejection])[0]

    def record_rejections(self, rejections: Sequence[Rejection],
                          counts: Mapping[tuple[str, CounterKind], int] | None = None,
                          ) -> list[dict[str, str]]:
        """Several rejections in one transaction: the gateway calls this before its 250,
        and every commit waits for the disk, so concurrent messages share one commit
        (``career_relay.ledger_writer``).  ``counts`` adds (company, counter) totals
        in the same transaction (the classifier's tallies of ordinary mail)."""
        now = self._clock()
        day = now.astimezone(dt.UTC).date().isoformat()
        results: list[dict[str, str]] = []
        tallies: collections.Counter[tuple[str, str]] = collections.Counter(counts or {})
        entries: list[ledger_chain.NewEntry] = []  # the inserted offers', appended at the end
        with self._write() as conn:
            for r in rejections:
                created = stamp(r.created or now)
                cursor = conn.executemany(
                    "INSERT INTO offers (id, company, message_id, recipient, created, job,"
                    " channel, stage) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (company, message_id, recipient) DO NOTHING",
                    [(oid, r.company, r.message_id, rcpt, created, r.job, r.channel, r.stage)
                     for rcpt, oid in r.offers],
                )
                # Offers this statement inserted (sqlite3_changes: a trigger's rows, such
                # as the per-day statistics, are not counted; total_changes would be).
                added = cursor.rowcount
                # A retried submission adds no offer and is not a second rejection.
                if added or not r.offers:
                    tallies.update((r.company, kind) for kind in r.counters)
                if added == len(r.offers):  # every offer is new: its id is the one given
                    results.append(dict(r.offers))
                    entries.extend(self._offer_entry(oid, r.company, r.message_id, rcpt,
                                                     created, r.job, r.channel, r.stage)
                                   for rcpt, oid in r.offers)
                    continue
                found = {rcpt: str(conn.execute(
                    "SELECT id FROM offers WHERE company = ? AND message_id = ? AND recipient = ?",
                    (r.company, r.message_id, rcpt)).fetchone()[0]) for rcpt, _ in r.offers}
                results.append(found)
                # Inserted now: the offers that kept the fresh id given (ids are random).
                entries.extend(self._offer_entry(oid, r.company, r.message_id, rcpt, created,
                                                 r.job, r.channel, r.stage)
                               for rcpt, oid in r.offers if added and found[rcpt] == oid)
            ledger_chain.append_many(conn, entries)
            # One upsert per company and counter for the whole batch.
            for (company, kind), n in tallies.items():
                if kind not in COUNTER_KINDS:  # column names from COUNTER_KINDS only
                    raise ValueError(f"unknown counter {kind!r}")
                conn.execute(
                    f"INSERT INTO daily_counts (company, day, {kind}) VALUES (?, ?, ?)"
                    f" ON CONFLICT (company, day) DO UPDATE SET {kind} = {kind} + excluded.{kind}",
                    (company, day, n))
        return results

    def _offer_entry(self, oid: str, company: str, message_id: str, recipient: str,
                     created: str, job: str | None, channel: str | None, stage: str | None,
                     ) -> ledger_chain.NewEntry:
        """The ``offer`` entry of a row just inserted: the row by digest, the recipient by
        keyed hash (``ledger_rules._offers_agree`` checks both)."""
        digest = ledger_chain.row_digest([oid, company, message_id, created, job, channel, stage])
        return (created, company, "offer", oid,
                {"digest": digest,
                 "candidate": ledger_chain.candidate_hash(self.hash_key, recipient)})

    def offer(self, offer_id: str) -> Offer | None:
        with self._lock:
            found = self.db.conn.execute(
                f"SELECT {_OFFER_COLUMNS} FROM offers WHERE id = ?", (offer_id,)
            ).fetchone()
        return None if found is None else _offer(found)

    def count(self, company: str, kind: CounterKind, day: dt.date | None = None) -> int:
        """Add one to ``kind`` for ``company`` on ``day`` (UTC today by default); the new total."""
        if kind not in COUNTER_KINDS:
            raise ValueError(f"unknown counter {kind!r}; one of {', '.join(COUNTER_KINDS)}")
        if isinstance(day, dt.datetime):  # a moment, not a day: take its UTC date
            day = day.astimezone(dt.UTC).date()
        when = (day or self._clock().astimezone(dt.UTC).date()).isoformat()
        # ``kind`` is one of the column names above, never caller text.
        with self._write() as conn:
            (total,) = conn.execute(
                f"INSERT INTO daily_counts (company, day, {kind}) VALUES (?, ?, 1)"
                f" ON CONFLICT (company, day) DO UPDATE SET {kind} = {kind} + 1"
                f" RETURNING {kind}",
                (company, when),
            ).fetchone()
        return int(total)

    def counts(self, company: str, day: dt.date) -> dict[str, int]:
        """Every counter of ``company`` on ``day`` (zeros when nothing was counted)."""
        with self._lock:
            found = self.db.conn.execute(
                f"SELECT {', '.join(COUNTER_KINDS)} FROM daily_counts"
                " WHERE company = ? AND day = ?",
                (company, day.isoformat()),
            ).fetchone()
        return dict(zip(COUNTER_KINDS, found or (0,) * len(COUNTER_KINDS), strict=True))

    def save_copy(self, out: str | Path) -> None:
        """Write a compact, self-contained copy to ``out`` (which must not exist): one file in
        rollback-journal mode, with no ``-wal`` beside it, fit to commit or send."""
        with self._lock:
            self.db.conn.execute("VACUUM INTO ?", (str(out),))
        with contextlib.closing(sqlite3.connect(str(out))) as copy:
            copy.execute("PRAGMA journal_mode = DELETE")


_OFFER_COLUMNS = "id, company, message_id, recipient, created, job, channel, stage"


def _offer(row: Any) -> Offer:
    oid, company, message_id, recipient, created, job, channel, stage = row
    return Offer(oid, company, message_id, recipient, parse_stamp(created), job, channel, stage)


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


def settings_hash_key(settings: Settings) -> bytes:
    """``secrets.hash_key``, or when it is empty the oldest signing key (the last listed), as
    ``Rules`` always did."""
    keys = settings.secrets.signing_keys
    key = settings.secrets.hash_key or (keys[-1] if keys else "")
    return key.encode("utf-8")


def open_configured(
    settings: Settings,
    *,
    clock: Clock = _utcnow,
    new_id: Callable[[], str] = new_offer_id,
    sync_wal_elsewhere: bool = False,
    on_migrate: Callable[[list[str]], None] | None = None,
) -> Ledger:
    """``open_ledger`` on ``ledger.path`` with the configured hash key and head file: how
    the gateway, the site and the CLI open it, so none of them hashes with another key or
    keeps the head elsewhere."""
    ledger = open_ledger(settings.ledger.path, clock=clock, new_id=new_id,
                         sync_wal_elsewhere=sync_wal_elsewhere, on_migrate=on_migrate,
                         hash_key=settings_hash_key(settings),
                         head_file=settings.ledger.head_file or None)
    try:
        _check_hash_key(ledger)
    except BaseException:
        ledger.close()
        raise
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


def open_ledger(
    path: str | Path,
    *,
    clock: Clock = _utcnow,
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
    that makes the mail durable, before its 250.

    ``on_migrate`` is told the names of the pending migrations before they run
    (``serve`` prints a progress line: a migration may rewrite large tables).

    ``hash_key``: the key of the keyed hashes in entries (``secrets.hash_key``; see
    ``open_configured``).  ``head_file``: where the chain head is kept (default
    ``<path>.head``); the migration that chains offers writes it, as every later commit.
    """
    _private_files(Path(path))
    conn = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_SECONDS, check_same_thread=False)
    try:
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        # Both PRAGMAs are per connection and do nothing inside a transaction: set them first.
        conn.execute("PRAGMA foreign_keys = ON")
        _enable_wal(conn)
        if sync_wal_elsewhere:
            conn.execute("PRAGMA synchronous = NORMAL")
        applied = _migrate(db, on_migrate)
    except BaseException:
        conn.close()
        raise
    head = Path(head_file) if head_file else ledger_head.default_path(path)
    ledger = Ledger(db, clock=clock, new_id=new_id, hash_key=hash_key, head_file=head)
    if CHAIN_MIGRATION in applied:  # an upgraded ledger starts with a head file
        ledger.publish_head()
    return ledger


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a ledger to WAL (a lasting property of the file; a no-op when already so).

    SQLite answers "database is locked" at once, without waiting on the busy
    timeout, when another connection holds the file while the mode changes:
    this happens when several processes open a new ledger together, so retry.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_SECONDS
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
    with _immediate(db.conn):
        # Inside our transaction sqlite-utils nests each migration in a savepoint
        # and re-reads what is pending, now that no other writer can interleave.
        applied = [m.name for m in MIGRATIONS.pending(db)]
        MIGRATIONS.apply(db)
    return applied


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error (if the error left a
    transaction to roll back: some, such as a full disk, end it themselves)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
