"""``ledger migrate --to URL`` (SPEC 12): a SQLite ledger copied into an empty PostgreSQL
database with its chain and head intact.

``copy_to(source, url)`` applies the PostgreSQL migrations (``open_shared``), then copies
every table in one PostgreSQL transaction under the ledger's write lock, in the order
the foreign keys need, streamed (``fetchmany`` from one SQLite read snapshot into
``COPY ... FROM STDIN``): memory stays flat whatever the ledger holds.  Any failure rolls
the whole copy back; the SQLite file is only read.

- **Empty target only.**  A target that holds a row in any ledger table is refused,
  naming the table: two ledgers are never merged (their chains cannot be).  The one
  exception is ``meta`` holding the very fingerprint of the source's key (a process
  opened the empty database with the same ``secrets.hash_key``).
- **Exact values.**  Every row keeps its values, so every digest in the chain holds.
  ``offers``, ``receipts``, ``forwards`` and ``profiles`` keep SQLite's implicit rowid in
  their ``rowid`` identity column (``COPY`` writes the values given, as ``OVERRIDING
  SYSTEM VALUE`` does), and ``admin_users`` its ids; each identity then restarts past
  the highest value, so new rows sort after the copied ones.
- **Derived tables are rebuilt, then compared.**  ``offer_stats`` and
  ``first_decisions`` are not copied: the target's own triggers build them as the offers
  and receipts go in (as they will for every later row), and they are then compared,
  row by row in key order, with the SQLite ledger's; any difference aborts the copy.
  Nothing is disabled, so nothing can count twice, and no privilege beyond owning the
  tables is needed (``session_replication_role`` would need a superuser and would also
  switch off the foreign keys' checks).  ``offer_views.company`` is copied as it is (its
  trigger fills only a NULL).  The append-only triggers are never touched: they refuse
  UPDATE, DELETE and TRUNCATE, not INSERT, and stay in force.
- **Checked.**  Each table's columns must be the same on both sides, the source may hold
  no table the copy does not know, and each table's count in the target must be what
  the snapshot held.  ``ledger migrate`` then runs ``ledger verify`` on the target
  against the source's head and compares the reports.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from career_relay.errors import LedgerError, LedgerUnavailable, UserError
from career_relay.ledger import chain as ledger_chain
from career_relay.ledger import head as ledger_head
from career_relay.ledger.connect import open_shared
from career_relay.ledger.offers import Ledger
from career_relay.ledger.sqlite_backend import SqliteBackend

#: Every table of the ledger, in an order the foreign keys accept.
TABLES = ("offers", "daily_counts", "offer_views", "notices", "receipts", "profiles", "reviews",
          "forwards", "forward_events", "outbox", "entries", "qualified", "credits",
          "redemptions", "admin_users", "admin_sessions", "admin_login_failures",
          "admin_lockouts", "offer_stats", "first_decisions", "meta", "api_keys",
          "agency_keys", "api_offers", "outcomes", "credit_requests",
          "credit_request_states", "agency_notices", "outcome_candidates")
#: Tables whose SQLite rowid is a column of its own in PostgreSQL (``ORDER BY rowid``).
ROWID_TABLES = frozenset({"offers", "receipts", "forwards", "profiles"})
#: Built by the target's triggers from the copied rows, then compared: table -> its key.
DERIVED = {"offer_stats": "company, day, job, channel", "first_decisions": "offer_id",
           "outcome_candidates": "forward_id"}
#: Identity columns restarted past the highest value copied.
IDENTITIES = (("offers", "rowid"), ("receipts", "rowid"), ("forwards", "rowid"),
              ("profiles", "rowid"), ("admin_users", "id"))
BATCH = 5000
_NAME = re.compile(r"[a-z_][a-z0-9_]*")

#: ``progress(table, rows so far, done)``: after each batch, and once when a table is done.
Progress = Callable[[str, int, bool], None]


class CopyRefused(UserError):
    """The target cannot take the copy (it holds a ledger already, or another key's)."""


@dataclass(frozen=True)
class CopyResult:
    rows: dict[str, int]            # table -> rows in the target, in ``TABLES`` order
    head: tuple[int, str] | None    # the source's head in the snapshot copied (None: no entry)
    seconds: float

    @property
    def head_text(self) -> str:
        return ledger_head.format_head(*(self.head or (0, ledger_chain.GENESIS)))


def copy_to(source: Ledger, url: str, progress: Progress | None = None) -> CopyResult:
    """Copy the SQLite ledger ``source`` into the empty PostgreSQL database at ``url``
    (migrated first); what was copied.  ``CopyRefused`` when the target is not empty,
    ``LedgerError`` when the copy fails or does not match (nothing is then committed)."""
    import psycopg  # loaded only when it is used

    if not isinstance(source.backend, SqliteBackend):
        raise TypeError("ledger migrate copies a SQLite ledger")
    began = time.monotonic()
    try:  # first a connection of its own, for the server's reason if it refuses one
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.Error as exc:
        raise LedgerUnavailable(f"the target PostgreSQL cannot be reached: {_first(exc)}"
                                ) from exc
    target = open_shared(url, hash_key=source.hash_key, check_key=False)
    try:
        with target.write() as wrapped, source.read() as src:
            src.execute("BEGIN")  # one snapshot of every table
            try:
                rows, head = _copy(src, wrapped.raw, progress or _quiet)
            finally:
                src.execute("COMMIT")
    except psycopg.Error as exc:  # those the backend does not translate (bad data, say)
        raise LedgerError(f"the copy into PostgreSQL failed: {_first(exc)}") from exc
    finally:
        target.close()
    return CopyResult(rows, head, time.monotonic() - began)


def _first(exc: Exception) -> str:
    """The first line of a driver's message: the row's data in its CONTEXT stays out."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _quiet(table: str, rows: int, done: bool) -> None:
    pass


def _copy(src: sqlite3.Connection, dst: Any, progress: Progress
          ) -> tuple[dict[str, int], tuple[int, str] | None]:
    _tables_known(src)
    present_meta = _refuse_unless_empty(src, dst)
    head = ledger_chain.last(src)
    rows: dict[str, int] = {}
    for table in TABLES:
        if table in DERIVED:
            rows[table] = _compare(src, dst, table)
            progress(table, rows[table], True)
            continue
        skip = present_meta if table == "meta" else []
        # The rows the target holds as the source's: for meta, those it had already too
        # (opening the database records the key's fingerprint, the same as the source's).
        rows[table] = _copy_table(src, dst, table, progress, skip) + len(skip)
    for table, column in IDENTITIES:
        dst.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                    f" COALESCE(MAX({column}), 0) + 1, false) FROM {table}")
    for table in TABLES:
        (found,) = dst.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        if found != rows[table]:
            raise LedgerError(f"the copy of {table} holds {found} rows, not {rows[table]}")
        dst.execute(f"ANALYZE {table}")  # the planner's statistics, as after any bulk load
    return rows, head


def _tables_known(src: sqlite3.Connection) -> None:
    """Every table of the source is one the copy knows: a table added by a later
    migration and not listed here must stop the copy, not be left behind."""
    found = {str(name) for (name,) in src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")
        if not str(name).startswith(("sqlite_", "_sqlite_"))}
    unknown = sorted(found - set(TABLES))
    if unknown:
        raise LedgerError(f"the SQLite ledger has a table the copy does not know: {unknown[0]}")


def _refuse_unless_empty(src: sqlite3.Connection, dst: Any) -> list[str]:
    """Refuse a target holding any ledger row; the names of ``meta`` rows it already holds
    with the source's values (the same key's fingerprint), which are not copied again."""
    for table in TABLES:
        if table != "meta" and dst.execute(
                f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]:
            raise CopyRefused(
                f"the target database already holds a ledger (table {table} has rows): "
                "ledger migrate copies into an empty database only, it never merges two "
                "ledgers")
    ours = {str(k): str(v) for k, v in src.execute("SELECT name, value FROM meta")}
    theirs = {str(k): str(v) for k, v in dst.execute("SELECT name, value FROM meta")}
    for name, value in theirs.items():
        if ours.get(name) != value:
            raise CopyRefused(f"the target database already holds a ledger (table meta: its "
                              f"{name} is not this ledger's; for hash_key, it was opened with "
                              "another secrets.hash_key)")
    return sorted(theirs)


def _columns(src: sqlite3.Connection, dst: Any, table: str) -> list[str]:
    """The table's columns (with ``rowid`` where it is one in PostgreSQL): the same on both
    sides, or the copy stops before a column is left behind."""
    ours = [str(d[0]) for d in src.execute(f"SELECT * FROM {table} LIMIT 0").description]
    if table in ROWID_TABLES:
        ours.append("rowid")
    theirs = [str(name) for (name,) in dst.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema ="
        " current_schema() AND table_name = %s ORDER BY ordinal_position", (table,))]
    if sorted(ours) != sorted(theirs) or not all(_NAME.fullmatch(c) for c in ours):
        raise LedgerError(f"the table {table} has other columns in PostgreSQL: "
                          f"{', '.join(theirs)} (SQLite: {', '.join(ours)})")
    return ours


def _copy_table(src: sqlite3.Connection, dst: Any, table: str, progress: Progress,
                skip: list[str]) -> int:
    columns = _columns(src, dst, table)
    where = f" WHERE name NOT IN ({', '.join('?' * len(skip))})" if skip else ""
    rows = src.execute(f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY rowid",
                       skip)
    quoted = ", ".join(f'"{c}"' for c in columns)
    copied = 0
    with dst.cursor() as cursor, cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
        while batch := rows.fetchmany(BATCH):
            for row in batch:
                copy.write_row(row)
            copied += len(batch)
            progress(table, copied, False)
    progress(table, copied, True)
    return copied


def _compare(src: sqlite3.Connection, dst: Any, table: str) -> int:
    """The derived table the target's triggers built, against the source's, row by row in
    key order (both sort text as bytes); how many rows."""
    columns = ", ".join(_columns(src, dst, table))
    key = DERIVED[table]
    ours = src.execute(f"SELECT {columns} FROM {table} ORDER BY {key}")
    count = 0
    with dst.cursor(name=f"career_relay_copy_{table}") as theirs:  # server-side: streamed
        theirs.itersize = BATCH
        theirs.execute(f"SELECT {columns} FROM {table} ORDER BY {key}")
        for mine, built in itertools.zip_longest(_each(ours), theirs):
            if mine is None or built is None or tuple(mine) != tuple(built):
                where = tuple((mine or built)[: key.count(",") + 1])
                raise LedgerError(f"{table} as PostgreSQL's triggers built it from the copied "
                                  f"rows differs from the SQLite ledger's at {where}")
            count += 1
    return count


def _each(cursor: sqlite3.Cursor) -> Iterator[Any]:
    while batch := cursor.fetchmany(BATCH):
        yield from batch
