"""Migration 0016, agencies that pull (SPEC 11), in both dialects side by side: ``sqlite`` for
``migrations`` and ``POSTGRES`` for ``schema_postgres``.

Its own module, as 0015's is: migrations landing in parallel append to the same lists, and
0016 depends on nothing after 0014 (0015, landing on another branch, touches neither table).
A migration that has landed is never edited.

- ``outbox.served``: when a forward first went out in a page of the feed to an agency that
  pulls (``ledger.pulls``); NULL while it has not.  The outbox's analogue of a claim: a
  consent an agency may have read is not cancelled by a withdrawal but followed by its notice
  (``ConsentLedger._cancel_pending_consent``), as one in flight to a webhook is.  The outbox
  is operational (rows leave it), so the column is too; the ledger's record of the delivery
  is the ``delivered`` event and its entries.
- ``forwards_agency_feed``: one agency's forwards in feed order (``forwards.rowid``), so a
  page, the first held forward after a cursor and an acknowledgement each read a range of
  one index instead of every forward the agency ever had.  SQLite's index on ``(agency)``
  is that already (every SQLite index ends with the rowid, and it cannot name it); PostgreSQL's
  rowid is a column of its own and is named (tests/test_schema_postgres.py reads the two as
  the same).
"""

from __future__ import annotations

from sqlite_utils import Database


def sqlite(db: Database) -> None:
    db.execute("ALTER TABLE outbox ADD COLUMN served TEXT")
    db.execute("CREATE INDEX forwards_agency_feed ON forwards (agency)")


#: 0016 in PostgreSQL's dialect.
POSTGRES = """
ALTER TABLE outbox ADD COLUMN served TEXT COLLATE "C";
CREATE INDEX forwards_agency_feed ON forwards (agency, rowid);
"""
