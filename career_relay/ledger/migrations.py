"""The ledger's schema as named migrations (sqlite-utils ``Migrations``).

A migration that has landed is never edited: changes are new migrations
appended here.  ``career_relay.ledger.connect`` applies them when it opens a file.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from career_relay.ledger import chain as ledger_chain
from career_relay.ledger import (
    schema_outcome_candidates,
    schema_pulls,
    schema_referrals,
    schema_sqlite,
    schema_sqlite_later,
)

MIGRATIONS = Migrations("career_relay.ledger")
#: The migration that chains offers, forwards and profiles (``open_ledger`` writes the
#: head file after it: an upgraded ledger has one from the start).
CHAIN_MIGRATION = "0008_chain_offers_forwards_profiles"


# The tables, in the order they landed (``schema_sqlite``, ``schema_sqlite_later``: each one's
# docstring says why).
MIGRATIONS(name="0001_offers")(schema_sqlite.offers)
MIGRATIONS(name="0002_daily_counts")(schema_sqlite.daily_counts)
MIGRATIONS(name="0003_consent")(schema_sqlite.consent)
MIGRATIONS(name="0004_entries")(schema_sqlite.entries)
MIGRATIONS(name="0005_admin")(schema_sqlite_later.admin)
MIGRATIONS(name="0006_retention")(schema_sqlite_later.retention)
MIGRATIONS(name="0007_report_indexes")(schema_sqlite_later.report_indexes)


@MIGRATIONS(name=CHAIN_MIGRATION)
def _chain_offers_forwards_profiles(db: Database) -> None:
    """Offers, forwards and profiles in the chain (SPEC 8: "a chain that shows removal too").

    From now on each is written with an entry (``offer``, ``forward``, ``profile``)
    that vouches for it by digest: the row's fixed columns by ``row_digest``, its
    personal data (the recipient, the payload, the profile) by a keyed hash,
    so retention may still erase that data (verify accepts NULL, never a change).
    This migration gives the rows already there their entries; it does not know
    the hash key, so those carry null for the personal data (verify skips that
    one check for them), except an erased offer's candidate, a keyed hash already.

    Triggers refuse what no code does: deleting these rows, changing their fixed
    columns, and any change of the personal data other than erasing it.
    """
    conn = db.conn
    entries: list[ledger_chain.NewEntry] = []
    for oid, company, message_id, created, job, channel, stage, candidate, erased in conn.execute(
            "SELECT id, company, message_id, created, job, channel, stage, candidate, erased"
            " FROM offers ORDER BY rowid"):
        digest = ledger_chain.row_digest([oid, company, message_id, created, job, channel, stage])
        entries.append((created, company, "offer", oid, {
            "digest": digest, "candidate": candidate if erased is not None else None}))
    for row in conn.execute("SELECT id, offer_id, receipt_id, company, kind, created"
                            " FROM forwards ORDER BY rowid"):
        entries.append((row[5], row[3], "forward", row[0],
                        {"digest": ledger_chain.row_digest(row), "payload": None}))
    for receipt_id, company, created in conn.execute(
            "SELECT p.receipt_id, r.company, r.created FROM profiles p"
            " JOIN receipts r ON r.id = p.receipt_id ORDER BY p.rowid"):
        entries.append((created, company, "profile", receipt_id, {"data": None}))
    ledger_chain.append_many(conn, entries)
    # Retention's placeholder for an erased address (career_relay.ledger.retention.ERASED_PREFIX).
    _refuse(db, "offers", "id, company, message_id, created, job, channel, stage",
            "recipient", "NEW.recipient IS NOT OLD.recipient"
            " AND NEW.recipient IS NOT 'erased:' || OLD.id")
    _refuse(db, "forwards", "id, offer_id, receipt_id, company, kind, created",
            "payload", "NEW.payload IS NOT NULL AND NEW.payload IS NOT OLD.payload")
    _refuse(db, "profiles", "receipt_id",
            "data", "NEW.data IS NOT NULL AND NEW.data IS NOT OLD.data")


def _refuse(db: Database, table: str, fixed: str, personal: str, personal_change: str) -> None:
    """Triggers: no DELETE, no UPDATE of the ``fixed`` columns, and the ``personal`` column
    changed only when ``personal_change`` is false (its erasure)."""
    message = f"the ledger is append-only: {table} rows are never changed"
    db.execute(f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}"
               f" BEGIN SELECT RAISE(ABORT, '{message}'); END")
    db.execute(f"CREATE TRIGGER {table}_no_update BEFORE UPDATE OF {fixed} ON {table}"
               f" BEGIN SELECT RAISE(ABORT, '{message}'); END")
    db.execute(f"CREATE TRIGGER {table}_{personal}_erased_only BEFORE UPDATE OF {personal}"
               f" ON {table} WHEN {personal_change}"
               f" BEGIN SELECT RAISE(ABORT, '{message}: {personal} is only erased'); END")


@MIGRATIONS(name="0009_meta")
def _meta(db: Database) -> None:
    """Facts about the ledger itself.  ``hash_key``: a fingerprint of the key its keyed
    hashes were made with (``career_relay.ledger.open_configured`` checks it): a ledger
    opened with another key would hash the same candidate differently, so qualification
    would count a person twice and verify would take every address for changed."""
    db.execute(
        """
        CREATE TABLE meta (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )
        """
    )


MIGRATIONS(name="0010_offer_source")(schema_sqlite_later.offer_source)
MIGRATIONS(name="0011_api_keys")(schema_sqlite_later.api_keys)
MIGRATIONS(name="0012_agencies")(schema_sqlite_later.agencies)
MIGRATIONS(name="0013_api_offers")(schema_sqlite_later.api_offers)
MIGRATIONS(name="0014_outcomes")(schema_sqlite_later.outcomes)
# 0015 lives in a module of its own, both dialects side by side (its docstring says why).
MIGRATIONS(name="0015_credit_requests")(schema_referrals.sqlite)
MIGRATIONS(name="0016_pulls")(schema_pulls.sqlite)
MIGRATIONS(name="0017_outcome_candidates")(schema_outcome_candidates.sqlite)
