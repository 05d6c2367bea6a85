"""Migration 0015, free referrals as a workflow (SPEC 11), in both dialects side by side:
``sqlite`` for ``migrations`` and ``POSTGRES`` for ``schema_postgres``.

Its own module rather than the end of ``schema_sqlite_later`` and ``schema_postgres_later``:
those are near the house's 350 lines, and migrations landing in parallel (0014) append
there.  0015 depends on nothing after 0013.  A migration that has landed is never edited.

- ``credit_requests``: a company asks its agency for the referral one credit is worth.
  ``round`` numbers the requests of one credit (1, 2, ...): a new one is made only after
  the one before it was cancelled, and ``UNIQUE (credit_id, round)`` refuses a second open
  request of one credit whoever races (two hosts both computing round 1).
- ``credit_request_states``: the one state change a request gets, ``fulfilled`` or
  ``cancelled`` (its primary key: settled once).  A fulfilled request also spends its
  credit as a redemption (``redemptions``, whose primary key is the credit): a credit is
  spent once, by ``credits redeem`` or by the agency, never both.
- ``agency_notices``: the agencies' outbox for what is not a forward (today the
  ``credit_request`` notice): kept until the agency took it, then marked ``delivered``.
  Operational, not a record: the request's entry is the record.

The first two are chained like ``credits`` and ``redemptions`` (an entry per row, the row
names it) and append-only (triggers refuse UPDATE and DELETE).  Notes are capped in the
code (``credit_requests.NOTE_MAX``) and are the company's or the agency's words, never a
candidate's data.
"""

from __future__ import annotations

from sqlite_utils import Database

_APPEND_ONLY = ("credit_requests", "credit_request_states")


def sqlite(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE credit_requests (
            id TEXT PRIMARY KEY,            -- rq_<random>: what the agency settles
            credit_id TEXT NOT NULL REFERENCES credits (id),
            company TEXT NOT NULL,
            agency TEXT NOT NULL,           -- companies.agency when it was asked
            round INTEGER NOT NULL,         -- 1, 2, ... per credit (after a cancel)
            created TEXT NOT NULL,          -- UTC: requested
            by TEXT NOT NULL,               -- who asked: operator, an admin's login
            note TEXT NOT NULL,             -- the company's words, capped; no personal data
            entry INTEGER NOT NULL REFERENCES entries (seq),
            UNIQUE (credit_id, round)       -- one open request per credit, whoever races
        )
        """
    )
    db.execute("CREATE INDEX credit_requests_company ON credit_requests (company, created)")
    db.execute("CREATE INDEX credit_requests_agency ON credit_requests (agency, entry)")
    db.execute(
        """
        CREATE TABLE credit_request_states (
            request_id TEXT PRIMARY KEY REFERENCES credit_requests (id),  -- settled once
            company TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('fulfilled', 'cancelled')),
            created TEXT NOT NULL,          -- UTC: when the agency settled it
            by TEXT NOT NULL,               -- the agency's id
            note TEXT NOT NULL,             -- the agency's words, capped; no personal data
            entry INTEGER NOT NULL REFERENCES entries (seq)
        )
        """
    )
    db.execute("CREATE INDEX credit_request_states_company"
               " ON credit_request_states (company, state, created)")
    for table in _APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {table} rows are"
                f" never changed'); END")
    db.execute(
        """
        CREATE TABLE agency_notices (
            id TEXT PRIMARY KEY,            -- stable across attempts (the request's id)
            agency TEXT NOT NULL,           -- where it goes, and nowhere else
            company TEXT NOT NULL,
            kind TEXT NOT NULL,             -- credit_request
            created TEXT NOT NULL,          -- UTC
            payload TEXT NOT NULL,          -- the JSON body sent; no personal data
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt TEXT NOT NULL,     -- UTC
            claimed_until TEXT,             -- a worker is sending it until then
            delivered TEXT,                 -- UTC; NULL until the agency took it
            detail TEXT NOT NULL DEFAULT '' -- the last attempt's outcome
        )
        """
    )
    db.execute("CREATE INDEX agency_notices_due ON agency_notices (next_attempt)"
               " WHERE delivered IS NULL")
    db.execute("CREATE INDEX agency_notices_agency ON agency_notices (agency, created)")


def _pg_append_only(table: str) -> str:
    message = f"the ledger is append-only: {table} rows are never changed"
    return "".join(
        f"CREATE TRIGGER {table}_no_{name} BEFORE {event} ON {table} FOR EACH {each}"
        f" EXECUTE FUNCTION career_relay_refuse('{message}');\n"
        for name, event, each in (("update", "UPDATE", "ROW"), ("delete", "DELETE", "ROW"),
                                  ("truncate", "TRUNCATE", "STATEMENT")))


#: 0015 in PostgreSQL's dialect, column for column (``career_relay_refuse`` is 0004's).
POSTGRES = """
CREATE TABLE credit_requests (
    id TEXT COLLATE "C" PRIMARY KEY,
    credit_id TEXT COLLATE "C" NOT NULL REFERENCES credits (id),
    company TEXT COLLATE "C" NOT NULL,
    agency TEXT COLLATE "C" NOT NULL,
    round INTEGER NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    by TEXT COLLATE "C" NOT NULL,
    note TEXT COLLATE "C" NOT NULL,
    entry INTEGER NOT NULL REFERENCES entries (seq),
    UNIQUE (credit_id, round)
);
CREATE INDEX credit_requests_company ON credit_requests (company, created);
CREATE INDEX credit_requests_agency ON credit_requests (agency, entry);
CREATE TABLE credit_request_states (
    request_id TEXT COLLATE "C" PRIMARY KEY REFERENCES credit_requests (id),
    company TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL CHECK (state IN ('fulfilled', 'cancelled')),
    created TEXT COLLATE "C" NOT NULL,
    by TEXT COLLATE "C" NOT NULL,
    note TEXT COLLATE "C" NOT NULL,
    entry INTEGER NOT NULL REFERENCES entries (seq)
);
CREATE INDEX credit_request_states_company ON credit_request_states (company, state, created);
""" + "".join(_pg_append_only(t) for t in _APPEND_ONLY) + """
CREATE TABLE agency_notices (
    id TEXT COLLATE "C" PRIMARY KEY,
    agency TEXT COLLATE "C" NOT NULL,
    company TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    created TEXT COLLATE "C" NOT NULL,
    payload TEXT COLLATE "C" NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT COLLATE "C" NOT NULL,
    claimed_until TEXT COLLATE "C",
    delivered TEXT COLLATE "C",
    detail TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX agency_notices_due ON agency_notices (next_attempt) WHERE delivered IS NULL;
CREATE INDEX agency_notices_agency ON agency_notices (agency, created);
"""
