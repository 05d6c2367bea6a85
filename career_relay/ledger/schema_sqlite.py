"""The ledger's first seven migrations in SQLite's dialect: tables, indexes, triggers.

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


def admin(db: Database) -> None:
    """The admin pages' logins (issue 5): users, sessions, failed logins, lock-outs.

    Operational tables, not ledger entries: nothing here is hash-chained, and
    sessions, failures and lock-outs are deleted when they expire.  A session
    row holds the SHA-256 of the cookie's random value, never the value itself,
    so a copy of the file opens no session.  Emails are stored lower-cased;
    failures and lock-outs are keyed by the email typed, whether or not a user
    has it, so a lock-out reveals nothing about which addresses exist.
    """
    db.execute(
        """
        CREATE TABLE admin_users (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,     -- lower-cased
            role TEXT NOT NULL CHECK (role IN ('operator', 'company')),
            company TEXT,                   -- companies.id for role 'company'; NULL: operator
            password_hash TEXT NOT NULL,    -- argon2id (career_relay.passwords)
            created TEXT NOT NULL,          -- UTC
            CHECK ((role = 'operator') = (company IS NULL))
        )
        """
    )
    db.execute(
        """
        CREATE TABLE admin_sessions (
            id TEXT PRIMARY KEY,            -- sha256 hex of the session cookie's value
            user_id INTEGER NOT NULL REFERENCES admin_users (id),
            created TEXT NOT NULL,          -- UTC
            expires TEXT NOT NULL           -- UTC; logout deletes the row sooner
        )
        """
    )
    db.execute("CREATE INDEX admin_sessions_expires ON admin_sessions (expires)")
    db.execute(
        """
        CREATE TABLE admin_login_failures (
            email TEXT NOT NULL,            -- as typed, lower-cased (known or not)
            created TEXT NOT NULL           -- UTC
        )
        """
    )
    db.execute("CREATE INDEX admin_login_failures_email ON admin_login_failures (email, created)")
    db.execute(
        """
        CREATE TABLE admin_lockouts (
            email TEXT PRIMARY KEY,         -- lower-cased (known or not)
            until TEXT NOT NULL             -- UTC: no login for this email before then
        )
        """
    )


def retention(db: Database) -> None:
    """Retention (SPEC 9, ``career_relay.ledger.retention``): an offer's address can be erased.

    ``candidate`` keeps the keyed hash of the erased address (de-duplication
    outlives the address); ``erased`` says when.  The partial index lets a
    purge visit only the offers it has not erased yet.
    """
    db.execute("ALTER TABLE offers ADD COLUMN candidate TEXT")  # keyed hash, once erased
    db.execute("ALTER TABLE offers ADD COLUMN erased TEXT")     # UTC, when it was erased
    db.execute("CREATE INDEX offers_unerased ON offers (created) WHERE erased IS NULL")



def report_indexes(db: Database) -> None:
    """The report at a million offers (docs/performance.md, "Ledger report").

    A company's report must cost what that company has, and at 300,000 offers
    a year even reading each of its offers once is too slow.  So:

    - ``offer_views`` gains the offer's company, so a company's views are one
      range of ``offer_views_company``, not every view of the period;
    - ``offer_stats`` counts offers, and offers accepted at least once, per
      company, day, job and channel: the offers, opt-in and monthly figures
      read a few hundred rows instead of every offer;
    - ``first_decisions`` keeps, per offer, the hours from the rejection to
      its first accept or decline (the median time to decide).

    Triggers keep the three right whoever writes (the gateway, the site, a
    bulk load); this migration fills them for the rows already there.  They
    are derived data: rebuilt from offers and receipts, never a record.
    """
    db.execute("ALTER TABLE offer_views ADD COLUMN company TEXT")
    db.execute("UPDATE offer_views SET company ="
               " (SELECT company FROM offers o WHERE o.id = offer_views.offer_id)")
    db.execute("CREATE TRIGGER offer_views_company AFTER INSERT ON offer_views"
               " WHEN NEW.company IS NULL BEGIN"
               " UPDATE offer_views SET company = (SELECT company FROM offers o"
               "  WHERE o.id = NEW.offer_id) WHERE offer_id = NEW.offer_id; END")
    db.execute("CREATE INDEX offer_views_company ON offer_views (company, first_viewed)")
    db.execute(
        """
        CREATE TABLE offer_stats (
            company TEXT NOT NULL,
            day TEXT NOT NULL,                      -- UTC date the offers were made
            job TEXT NOT NULL,                      -- '' when the mail named none
            channel TEXT NOT NULL,
            offers INTEGER NOT NULL DEFAULT 0,
            accepted INTEGER NOT NULL DEFAULT 0,    -- of those, accepted at least once
            PRIMARY KEY (company, day, job, channel)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        """
        CREATE TABLE first_decisions (
            offer_id TEXT PRIMARY KEY REFERENCES offers (id),
            company TEXT NOT NULL,
            offer_created TEXT NOT NULL,            -- UTC, the offer's
            hours REAL NOT NULL                     -- to its first accept or decline
        )
        """
    )
    db.execute("CREATE INDEX first_decisions_company"
               " ON first_decisions (company, offer_created, hours)")
    db.execute(
        "CREATE TRIGGER offer_stats_offer AFTER INSERT ON offers BEGIN"
        " INSERT INTO offer_stats (company, day, job, channel, offers) VALUES (NEW.company,"
        "  substr(NEW.created, 1, 10), COALESCE(NEW.job, ''), COALESCE(NEW.channel, ''), 1)"
        "  ON CONFLICT DO UPDATE SET offers = offers + 1; END")
    db.execute(
        "CREATE TRIGGER offer_stats_accept AFTER INSERT ON receipts"
        " WHEN NEW.decision = 'accept' AND NOT EXISTS (SELECT 1 FROM receipts r"
        "  WHERE r.offer_id = NEW.offer_id AND r.decision = 'accept' AND r.rowid <> NEW.rowid)"
        " BEGIN UPDATE offer_stats SET accepted = accepted + 1 WHERE (company, day, job, channel)"
        "  = (SELECT company, substr(created, 1, 10), COALESCE(job, ''), COALESCE(channel, '')"
        "     FROM offers WHERE id = NEW.offer_id); END")
    db.execute(
        "CREATE TRIGGER first_decision AFTER INSERT ON receipts"
        " WHEN NEW.decision IN ('accept', 'decline') BEGIN"
        " INSERT INTO first_decisions (offer_id, company, offer_created, hours)"
        "  SELECT o.id, NEW.company, o.created,"
        "   (julianday(NEW.created) - julianday(o.created)) * 24 FROM offers o"
        "  WHERE o.id = NEW.offer_id"
        "  ON CONFLICT (offer_id) DO UPDATE SET hours = excluded.hours"
        "   WHERE excluded.hours < hours; END")
    db.execute(
        "INSERT INTO offer_stats (company, day, job, channel, offers, accepted)"
        " SELECT o.company, substr(o.created, 1, 10), COALESCE(o.job, ''),"
        "  COALESCE(o.channel, ''), COUNT(*), COUNT(a.offer_id) FROM offers o"
        " LEFT JOIN (SELECT DISTINCT offer_id FROM receipts WHERE decision = 'accept') a"
        "  ON a.offer_id = o.id GROUP BY 1, 2, 3, 4")
    db.execute(
        "INSERT INTO first_decisions (offer_id, company, offer_created, hours)"
        " SELECT o.id, r.company, o.created,"
        "  (julianday(MIN(r.created)) - julianday(o.created)) * 24"
        " FROM receipts r JOIN offers o ON o.id = r.offer_id"
        " WHERE r.decision IN ('accept', 'decline') GROUP BY r.offer_id")
    # A company's decisions by kind, and its accepts held for review, from the index alone.
    db.execute("CREATE INDEX receipts_company_decision ON receipts (company, decision, created)")
    db.execute("CREATE INDEX receipts_review ON receipts (company, decision, created)"
               " WHERE review IS NOT NULL")
