"""The ledger's schema in PostgreSQL's dialect (14+): the same named migrations as SQLite.

``MIGRATIONS`` lists ``(name, sql)`` in order, with SQLite's names (``migrations``); a
new PostgreSQL database that has them all has SQLite's end state: the same tables with
the same columns in the same order (but offers.source, after rowid), keys, checks,
foreign keys, indexes (partial ones too) and triggers.  This module has 0001 to 0004,
0008 and 0009 (as ``migrations`` has 0008 and 0009 for SQLite); ``schema_postgres_later``
has 0005 to 0007, 0010 and 0011.  A migration that has landed is never edited: changes
are new migrations, on both backends.

The dialect, chosen so that the ledger's SQL reads the same on both:

- every TEXT column is ``COLLATE "C"``: byte order, as SQLite's BINARY, whatever the
  database's locale (ids and stamps are compared and sorted as bytes);
- INTEGER for integers and counters (``SUM`` gives bigint, not numeric), DOUBLE
  PRECISION for REAL; stamps stay TEXT (``YYYY-MM-DDTHH:MM:SSZ``);
- offers, receipts, forwards and profiles end with ``rowid BIGINT GENERATED ALWAYS AS
  IDENTITY``: SQLite's implicit rowid made explicit, so ``ORDER BY rowid`` and
  ``r2.rowid < r.rowid`` run unchanged; ``admin_users.id`` is an identity column;
- a refused change raises SQLSTATE 23001 (``restrict_violation``, which psycopg raises
  as ``errors.RestrictViolation``, an ``IntegrityError``, as sqlite3 raises
  ``IntegrityError`` for ``RAISE(ABORT)``) with SQLite's message; the trigger's name
  is the error's constraint name.

``apply(conn)`` applies what is pending in one transaction under an advisory lock, and
records each name in ``career_relay_migrations``; ``applied(conn)`` lists them.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from career_relay.ledger import schema_outcome_candidates, schema_pulls, schema_referrals
from career_relay.ledger import schema_postgres_later as later
from career_relay.timestamps import stamp, utcnow

#: The key of the transaction-level advisory lock ``apply`` holds ("crmigrat").
LOCK_KEY = 0x6372_6D69_6772_6174
REFUSED_SQLSTATE = "23001"  # restrict_violation

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS career_relay_migrations (
    name TEXT COLLATE "C" PRIMARY KEY,
    applied TEXT COLLATE "C" NOT NULL               -- UTC, when it was applied
)
"""

OFFERS = """
CREATE TABLE offers (
    id TEXT COLLATE "C" PRIMARY KEY,                -- opaque random id
    company TEXT COLLATE "C" NOT NULL,
    message_id TEXT COLLATE "C" NOT NULL,
    recipient TEXT COLLATE "C" NOT NULL,            -- personal data (SPEC 9)
    created TEXT COLLATE "C" NOT NULL,              -- UTC, YYYY-MM-DDTHH:MM:SSZ
    job TEXT COLLATE "C",
    channel TEXT COLLATE "C",
    stage TEXT COLLATE "C",
    UNIQUE (company, message_id, recipient)
);
CREATE INDEX offers_company_created ON offers (company, created);
"""

DAILY_COUNTS = """
CREATE TABLE daily_counts (
    company TEXT COLLATE "C" NOT NULL,
    day TEXT COLLATE "C" NOT NULL,                  -- UTC date, YYYY-MM-DD
    rejections INTEGER NOT NULL DEFAULT 0,
    not_injected INTEGER NOT NULL DEFAULT 0,
    unmarked_rejections INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (company, day)
);
"""

CONSENT = """
CREATE TABLE offer_views (
    offer_id TEXT COLLATE "C" PRIMARY KEY REFERENCES offers (id),
    first_viewed TEXT COLLATE "C" NOT NULL
);
CREATE TABLE notices (
    hash TEXT COLLATE "C" PRIMARY KEY,              -- sha256 of the exact text shown, hex
    version TEXT COLLATE "C" NOT NULL,
    locale TEXT COLLATE "C" NOT NULL,
    company TEXT COLLATE "C" NOT NULL,
    text TEXT COLLATE "C" NOT NULL,
    first_shown TEXT COLLATE "C" NOT NULL
);
CREATE TABLE receipts (
    id TEXT COLLATE "C" PRIMARY KEY,
    offer_id TEXT COLLATE "C" NOT NULL REFERENCES offers (id),
    company TEXT COLLATE "C" NOT NULL,
    agency TEXT COLLATE "C" NOT NULL,
    decision TEXT COLLATE "C" NOT NULL
        CHECK (decision IN ('accept', 'decline', 'withdraw', 'erase')),
    created TEXT COLLATE "C" NOT NULL,
    notice_hash TEXT COLLATE "C" REFERENCES notices (hash),
    notice_version TEXT COLLATE "C",
    locale TEXT COLLATE "C" NOT NULL,
    purposes TEXT COLLATE "C" NOT NULL,             -- JSON list
    data_items TEXT COLLATE "C" NOT NULL,           -- JSON list of field names
    user_agent TEXT COLLATE "C" NOT NULL,
    network TEXT COLLATE "C" NOT NULL,
    review TEXT COLLATE "C",
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX receipts_offer ON receipts (offer_id, created);
CREATE INDEX receipts_company ON receipts (company, created);
CREATE TABLE profiles (
    receipt_id TEXT COLLATE "C" PRIMARY KEY REFERENCES receipts (id),
    data TEXT COLLATE "C",                          -- NULL once erased
    erased TEXT COLLATE "C",
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE TABLE reviews (
    receipt_id TEXT COLLATE "C" PRIMARY KEY REFERENCES receipts (id),
    decision TEXT COLLATE "C" NOT NULL CHECK (decision IN ('approve', 'reject')),
    by TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL
);
CREATE TABLE forwards (
    id TEXT COLLATE "C" PRIMARY KEY,
    offer_id TEXT COLLATE "C" NOT NULL REFERENCES offers (id),
    receipt_id TEXT COLLATE "C" NOT NULL REFERENCES receipts (id),
    company TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('consent', 'withdrawal', 'erasure')),
    created TEXT COLLATE "C" NOT NULL,
    payload TEXT COLLATE "C",                       -- NULL once erased
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX forwards_offer ON forwards (offer_id, created);
CREATE INDEX forwards_company ON forwards (company, created);
CREATE TABLE forward_events (
    forward_id TEXT COLLATE "C" NOT NULL REFERENCES forwards (id),
    created TEXT COLLATE "C" NOT NULL,
    event TEXT COLLATE "C" NOT NULL CHECK (event IN ('failed', 'delivered', 'cancelled')),
    detail TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX forward_events_forward ON forward_events (forward_id, event);
CREATE TABLE outbox (
    forward_id TEXT COLLATE "C" PRIMARY KEY REFERENCES forwards (id),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT COLLATE "C" NOT NULL,
    claimed_until TEXT COLLATE "C",
    held INTEGER NOT NULL DEFAULT 0                 -- 1 while its consent is under review
);
CREATE INDEX outbox_due ON outbox (held, next_attempt);
"""

_ENTRIES_TABLES = """
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,                        -- from 1, no gaps (chain.append_many)
    created TEXT COLLATE "C" NOT NULL,
    company TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    ref TEXT COLLATE "C" NOT NULL,
    body TEXT COLLATE "C" NOT NULL,                 -- canonical JSON, no personal data
    prev TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL UNIQUE
);
CREATE INDEX entries_company ON entries (company, kind, created);
CREATE TABLE qualified (
    forward_id TEXT COLLATE "C" PRIMARY KEY REFERENCES forwards (id),
    company TEXT COLLATE "C" NOT NULL,
    candidate TEXT COLLATE "C" NOT NULL,            -- keyed hash of the candidate's address
    n INTEGER NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    entry INTEGER NOT NULL REFERENCES entries (seq),
    UNIQUE (company, candidate),
    UNIQUE (company, n)
);
CREATE INDEX qualified_company ON qualified (company, created);
CREATE TABLE credits (
    id TEXT COLLATE "C" PRIMARY KEY,
    company TEXT COLLATE "C" NOT NULL,
    n INTEGER NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    forwards TEXT COLLATE "C" NOT NULL,             -- JSON list of forward ids
    entry INTEGER NOT NULL REFERENCES entries (seq),
    UNIQUE (company, n)
);
CREATE INDEX credits_company ON credits (company, created);
CREATE TABLE redemptions (
    credit_id TEXT COLLATE "C" PRIMARY KEY REFERENCES credits (id),
    company TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    by TEXT COLLATE "C" NOT NULL,
    note TEXT COLLATE "C" NOT NULL,
    entry INTEGER NOT NULL REFERENCES entries (seq)
);
CREATE INDEX redemptions_company ON redemptions (company, created);
"""

# One function raises every refusal: the message is the trigger's argument.
_REFUSE_FUNCTION = """
CREATE FUNCTION career_relay_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = TG_ARGV[0], ERRCODE = 'restrict_violation',
        SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, CONSTRAINT = TG_NAME;
END
$$;
"""


def _message(table: str) -> str:
    return f"the ledger is append-only: {table} rows are never changed"


def _refusal(name: str, event: str, table: str, message: str, when: str = "") -> str:
    each = "STATEMENT" if event == "TRUNCATE" else "ROW"
    condition = f" WHEN ({when})" if when else ""
    return (f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH {each}{condition}"
            f" EXECUTE FUNCTION career_relay_refuse('{message}');\n")


def _no_delete(table: str) -> str:
    """DELETE refused, and TRUNCATE, which skips DELETE triggers (SQLite has none)."""
    return (_refusal(f"{table}_no_delete", "DELETE", table, _message(table))
            + _refusal(f"{table}_no_truncate", "TRUNCATE", table, _message(table)))


def _append_only(table: str) -> str:
    """0004: no UPDATE and no DELETE, ever."""
    return _refusal(f"{table}_no_update", "UPDATE", table, _message(table)) + _no_delete(table)


def _erased_only(table: str, fixed: str, personal: str, personal_change: str) -> str:
    """0008 (``migrations._refuse``): no DELETE, no UPDATE OF the ``fixed`` columns (named
    in the SET list, changed or not, as in SQLite), and the ``personal`` column changed
    only when ``personal_change`` is false (its erasure)."""
    return (_no_delete(table)
            + _refusal(f"{table}_no_update", f"UPDATE OF {fixed}", table, _message(table))
            + _refusal(f"{table}_{personal}_erased_only", f"UPDATE OF {personal}", table,
                       f"{_message(table)}: {personal} is only erased", personal_change))


ENTRIES = (_ENTRIES_TABLES + _REFUSE_FUNCTION
           + "".join(_append_only(table) for table in (
               "entries", "qualified", "credits", "redemptions", "receipts", "reviews"))
           + "CREATE INDEX forward_events_event ON forward_events (event, created);\n"
           + "CREATE INDEX offer_views_first ON offer_views (first_viewed);\n")

# SQLite's 0008 also writes an entry for each offer, forward and profile already there (in
# Python: it hashes the rows).  No PostgreSQL ledger predates 0008 (all nine migrations
# land together on an empty database), so here 0008 is its triggers only.  rowid is a
# fixed column too: UPDATE ... SET rowid = DEFAULT would move a row in ORDER BY rowid.
CHAIN = (
    _erased_only("offers", "id, company, message_id, created, job, channel, stage, rowid",
                 "recipient", "NEW.recipient IS DISTINCT FROM OLD.recipient"
                 " AND NEW.recipient IS DISTINCT FROM ('erased:' || OLD.id)")
    + _erased_only("forwards", "id, offer_id, receipt_id, company, kind, created, rowid",
                   "payload", "NEW.payload IS NOT NULL"
                   " AND NEW.payload IS DISTINCT FROM OLD.payload")
    + _erased_only("profiles", "receipt_id, rowid",
                   "data", "NEW.data IS NOT NULL AND NEW.data IS DISTINCT FROM OLD.data"))

META = """
CREATE TABLE meta (
    name TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);
"""

#: ``(name, sql)`` in the order they apply: SQLite's names (``migrations.MIGRATIONS``).
MIGRATIONS: list[tuple[str, str]] = [
    ("0001_offers", OFFERS),
    ("0002_daily_counts", DAILY_COUNTS),
    ("0003_consent", CONSENT),
    ("0004_entries", ENTRIES),
    ("0005_admin", later.ADMIN),
    ("0006_retention", later.RETENTION),
    ("0007_report_indexes", later.REPORT_INDEXES),
    ("0008_chain_offers_forwards_profiles", CHAIN),
    ("0009_meta", META),
    ("0010_offer_source", later.OFFER_SOURCE),
    ("0011_api_keys", later.API_KEYS),
    ("0012_agencies", later.AGENCIES),
    ("0013_api_offers", later.API_OFFERS),
    ("0014_outcomes", later.OUTCOMES),
    ("0015_credit_requests", schema_referrals.POSTGRES),
    ("0016_pulls", schema_pulls.POSTGRES),
    ("0017_outcome_candidates", schema_outcome_candidates.POSTGRES),
]


def apply(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply the pending migrations in one transaction of its own; the names applied.

    It takes a transaction-level advisory lock (``LOCK_KEY``) before it reads what is
    applied, so processes starting together on an empty database wait for each other:
    the first applies, the others find nothing pending.  The transaction is READ
    COMMITTED, so that a read after the lock sees what the lock's holder committed.
    ``conn`` must not be in a transaction (it is committed before this returns).
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("apply() runs in a transaction of its own: call it outside one")
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        cur.execute(_MIGRATIONS_TABLE)
        done = {str(name) for (name,) in cur.execute(
            "SELECT name FROM career_relay_migrations").fetchall()}
        pending = [(name, sql) for name, sql in MIGRATIONS if name not in done]
        for name, sql in pending:
            cur.execute(sql)
            cur.execute("INSERT INTO career_relay_migrations (name, applied) VALUES (%s, %s)",
                        (name, stamp(utcnow())))
    return [name for name, _ in pending]


def applied(conn: psycopg.Connection[Any]) -> list[str]:
    """The names of the migrations applied, in order (none on a database without any).
    Unless ``conn`` is autocommit, the read begins a transaction the caller ends."""
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute("SELECT to_regclass('career_relay_migrations')").fetchone()
        if found is None or found[0] is None:
            return []
        return [str(name) for (name,) in cur.execute(
            "SELECT name FROM career_relay_migrations ORDER BY name").fetchall()]
