"""The ledger's migrations 0001 to 0004 in SQLite's dialect: tables, indexes, triggers.

A migration that has landed is never edited; ``career_relay.ledger.migrations``
lists them in order and applies them.
"""

from __future__ import annotations

from sqlite_utils import Database


def offers(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE offers (
            id TEXT PRIMARY KEY,           -- opaque random id, the only thing in a link's token
            company TEXT NOT NULL,         -- companies.id from the configuration
            message_id TEXT NOT NULL,      -- the rejection's Message-ID header
            recipient TEXT NOT NULL,       -- envelope recipient: personal data (SPEC 9)
            created TEXT NOT NULL,         -- UTC, YYYY-MM-DDTHH:MM:SSZ
            job TEXT,                      -- X-Career-Relay-Job
            channel TEXT,                  -- X-Career-Relay-Channel
            stage TEXT,                    -- X-Career-Relay-Stage
            -- per company: two companies (or an ATS reusing ids) never share an offer
            UNIQUE (company, message_id, recipient)
        )
        """
    )
    db.execute("CREATE INDEX offers_company_created ON offers (company, created)")


def daily_counts(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE daily_counts (
            company TEXT NOT NULL,
            day TEXT NOT NULL,                               -- UTC date, YYYY-MM-DD
            rejections INTEGER NOT NULL DEFAULT 0,           -- rejection emails that passed
            not_injected INTEGER NOT NULL DEFAULT 0,         -- relayed without a link
            unmarked_rejections INTEGER NOT NULL DEFAULT 0,  -- classifier hits, no marker
            PRIMARY KEY (company, day)
        )
        """
    )


def consent(db: Database) -> None:
    """What the consent site records (SPEC 6, 7): views, notices, receipts, forwards.

    Receipts, notices and forwards are written once and never changed; the
    personal data a candidate typed lives apart (``profiles`` and
    ``forwards.payload``) so that erasure can remove it and leave the record
    of each decision and provision (who, when, which items, which notice)
    intact.  ``outbox`` is the forwarding worker's to-do list, not a record:
    a row leaves it when its forward is delivered or cancelled, and
    ``forward_events`` keeps what happened.
    """
    db.execute(
        """
        CREATE TABLE offer_views (
            offer_id TEXT PRIMARY KEY REFERENCES offers (id),
            first_viewed TEXT NOT NULL      -- UTC; a GET records this once, nothing else
        )
        """
    )
    db.execute(
        """
        CREATE TABLE notices (
            hash TEXT PRIMARY KEY,          -- sha256 of the exact text shown, hex
            version TEXT NOT NULL,          -- locale-shorthash: what a receipt cites
            locale TEXT NOT NULL,
            company TEXT NOT NULL,
            text TEXT NOT NULL,             -- the notice as rendered, kept as proof
            first_shown TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE receipts (
            id TEXT PRIMARY KEY,            -- the consent receipt id shown to the candidate
            offer_id TEXT NOT NULL REFERENCES offers (id),
            company TEXT NOT NULL,
            agency TEXT NOT NULL,           -- the agency's legal name at the time
            decision TEXT NOT NULL CHECK (decision IN ('accept', 'decline', 'withdraw', 'erase')),
            created TEXT NOT NULL,          -- UTC
            notice_hash TEXT REFERENCES notices (hash),  -- NULL for withdraw and erase
            notice_version TEXT,
            locale TEXT NOT NULL,
            purposes TEXT NOT NULL,         -- JSON list
            data_items TEXT NOT NULL,       -- JSON list of field names (never their values)
            user_agent TEXT NOT NULL,
            network TEXT NOT NULL,          -- the client's network (/24 or /48), not its address
            review TEXT                     -- NULL, or why it is held: review_window | scanner
        )
        """
    )
    db.execute("CREATE INDEX receipts_offer ON receipts (offer_id, created)")
    db.execute("CREATE INDEX receipts_company ON receipts (company, created)")
    db.execute(
        """
        CREATE TABLE profiles (
            receipt_id TEXT PRIMARY KEY REFERENCES receipts (id),
            data TEXT,                      -- JSON of what the candidate gave; NULL once erased
            erased TEXT                     -- when it was erased
        )
        """
    )
    db.execute(
        """
        CREATE TABLE reviews (
            receipt_id TEXT PRIMARY KEY REFERENCES receipts (id),
            decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
            by TEXT NOT NULL,
            created TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE forwards (
            id TEXT PRIMARY KEY,            -- forward_id: stable across every attempt
            offer_id TEXT NOT NULL REFERENCES offers (id),
            receipt_id TEXT NOT NULL REFERENCES receipts (id),
            company TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('consent', 'withdrawal', 'erasure')),
            created TEXT NOT NULL,
            payload TEXT                    -- the JSON body sent; NULL once erased
        )
        """
    )
    db.execute("CREATE INDEX forwards_offer ON forwards (offer_id, created)")
    db.execute("CREATE INDEX forwards_company ON forwards (company, created)")
    db.execute(
        """
        CREATE TABLE forward_events (
            forward_id TEXT NOT NULL REFERENCES forwards (id),
            created TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('failed', 'delivered', 'cancelled')),
            detail TEXT NOT NULL DEFAULT ''
        )
        """
    )
    db.execute("CREATE INDEX forward_events_forward ON forward_events (forward_id, event)")
    db.execute(
        """
        CREATE TABLE outbox (
            forward_id TEXT PRIMARY KEY REFERENCES forwards (id),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt TEXT NOT NULL,     -- UTC
            claimed_until TEXT,             -- a worker is sending it until then
            held INTEGER NOT NULL DEFAULT 0 -- 1 while its consent is under review
        )
        """
    )
    db.execute("CREATE INDEX outbox_due ON outbox (held, next_attempt)")
    # Forwards of one offer go out in the order they were made (forwards.rowid).


def entries(db: Database) -> None:
    """The ledger proper (SPEC 8): an append-only, hash-chained list of entries.

    Every event that counts (a decision, a review, a provision to the agency,
    a qualified forward, a credit, a redemption) is an entry whose hash
    covers its position, its content and the hash before it, so editing,
    deleting or reordering any entry shows in ``career-relay ledger verify``.
    Entries hold no personal data (a candidate is a keyed hash), so they
    never need erasing.  ``qualified``, ``credits`` and ``redemptions`` are
    the same facts shaped for queries; each row names its entry, and verify
    checks that they agree.  Triggers refuse UPDATE and DELETE on all of
    them, and on receipts and reviews (a mistake is corrected by a new entry).
    """
    db.execute(
        """
        CREATE TABLE entries (
            seq INTEGER PRIMARY KEY,        -- position in the chain, from 1, no gaps
            created TEXT NOT NULL,          -- UTC
            company TEXT NOT NULL,
            kind TEXT NOT NULL,             -- receipt | review | provision | notice_sent |
                                            -- qualified | credit | redemption
            ref TEXT NOT NULL,              -- the id of what it records
            body TEXT NOT NULL,             -- canonical JSON, no personal data
            prev TEXT NOT NULL,             -- hash of entry seq - 1 (64 zeros for the first)
            hash TEXT NOT NULL UNIQUE       -- sha256 of [seq, created, company, kind, ref,
                                            --   body, prev] as canonical JSON
        )
        """
    )
    db.execute("CREATE INDEX entries_company ON entries (company, kind, created)")
    db.execute(
        """
        CREATE TABLE qualified (
            forward_id TEXT PRIMARY KEY REFERENCES forwards (id),
            company TEXT NOT NULL,
            candidate TEXT NOT NULL,        -- keyed hash of the candidate's address
            n INTEGER NOT NULL,             -- 1, 2, 3, ... per company
            created TEXT NOT NULL,
            entry INTEGER NOT NULL REFERENCES entries (seq),
            UNIQUE (company, candidate),    -- the first per company and candidate only
            UNIQUE (company, n)
        )
        """
    )
    db.execute("CREATE INDEX qualified_company ON qualified (company, created)")
    db.execute(
        """
        CREATE TABLE credits (
            id TEXT PRIMARY KEY,
            company TEXT NOT NULL,
            n INTEGER NOT NULL,             -- the company's 1st, 2nd, ... credit
            created TEXT NOT NULL,
            forwards TEXT NOT NULL,         -- JSON list of the forward ids it counts
            entry INTEGER NOT NULL REFERENCES entries (seq),
            UNIQUE (company, n)             -- minted once, whoever races
        )
        """
    )
    db.execute("CREATE INDEX credits_company ON credits (company, created)")
    db.execute(
        """
        CREATE TABLE redemptions (
            credit_id TEXT PRIMARY KEY REFERENCES credits (id),
            company TEXT NOT NULL,
            created TEXT NOT NULL,
            by TEXT NOT NULL,
            note TEXT NOT NULL,
            entry INTEGER NOT NULL REFERENCES entries (seq)
        )
        """
    )
    db.execute("CREATE INDEX redemptions_company ON redemptions (company, created)")
    for table in ("entries", "qualified", "credits", "redemptions", "receipts", "reviews"):
        for action in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {table} rows are"
                f" never changed'); END")
    # The report counts decisions and deliveries per company and period.
    db.execute("CREATE INDEX forward_events_event ON forward_events (event, created)")
    db.execute("CREATE INDEX offer_views_first ON offer_views (first_viewed)")
