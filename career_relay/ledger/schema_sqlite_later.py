"""The ledger's migrations 0005 to 0007 and 0010 to 0014 in SQLite's dialect: tables, indexes,
triggers.

A migration that has landed is never edited; ``career_relay.ledger.migrations``
lists them in order and applies them.
"""

from __future__ import annotations

from sqlite_utils import Database


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


def offer_source(db: Database) -> None:
    """Where each offer came from (SPEC 10, ``offers_by_source`` in SPEC 8): ``relay`` (the
    gateway; every offer made before this migration), ``api`` (the company API) or ``link``
    (the company link).  Fixed like the other columns an entry vouches for: the offer's
    entry digests its source when it is not ``relay`` (``chain.offer_digest``), so the
    digests of the offers already there stay true.

    The report counts a company's ``api`` and ``link`` offers of a period from the partial
    index (which holds no relayed offer), and relay as offers less those: the report stays
    as fast with a million relayed offers.
    """
    db.execute("ALTER TABLE offers ADD COLUMN source TEXT NOT NULL DEFAULT 'relay'"
               " CHECK (source IN ('relay', 'api', 'link'))")
    db.execute("CREATE INDEX offers_source ON offers (company, source, created)"
               " WHERE source <> 'relay'")
    db.execute("CREATE TRIGGER offers_source_fixed BEFORE UPDATE OF source ON offers"
               " BEGIN SELECT RAISE(ABORT,"
               " 'the ledger is append-only: offers rows are never changed'); END")


def api_keys(db: Database) -> None:
    """The company API's keys (SPEC 10, ``career_relay.ledger.api_keys``): the SHA-256 of
    each key, never the key; revoked by setting ``revoked``, never deleted.  Operational
    rows like the admin logins: the offers a key makes are chained, the key is not."""
    db.execute(
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,            -- 16 hex digits, the key's public part
            company TEXT NOT NULL,          -- companies.id: what the key may see and do
            name TEXT NOT NULL DEFAULT '',  -- the operator's label
            hash TEXT NOT NULL UNIQUE,      -- sha256 hex of the whole key
            created TEXT NOT NULL,          -- UTC
            revoked TEXT                    -- UTC; NULL while the key works
        )
        """
    )
    db.execute("CREATE INDEX api_keys_company ON api_keys (company, created)")


def agencies(db: Database) -> None:
    """Several agencies (SPEC 11): which agency each forward goes to, and the agencies' keys.

    ``forwards.agency`` is the id of the agency (``[[agencies]]``; "default" for every forward
    made before, and for the single ``[agency]``) the forward was made for: the worker
    delivers it there and nowhere else, and a withdrawal follows its consent there.  Fixed
    like the other columns its entry vouches for (``chain.forward_digest``).

    ``agency_keys`` holds the agencies' API keys as ``api_keys`` holds the companies': the
    same shape in a table of its own, so that no query over one can ever find the other's
    key (``career_relay.ledger.api_keys``).
    """
    db.execute("ALTER TABLE forwards ADD COLUMN agency TEXT NOT NULL DEFAULT 'default'")
    db.execute("CREATE INDEX forwards_agency ON forwards (agency, created)")
    db.execute("CREATE TRIGGER forwards_agency_fixed BEFORE UPDATE OF agency ON forwards"
               " BEGIN SELECT RAISE(ABORT,"
               " 'the ledger is append-only: forwards rows are never changed'); END")
    db.execute(
        """
        CREATE TABLE agency_keys (
            id TEXT PRIMARY KEY,            -- 16 hex digits, the key's public part
            agency TEXT NOT NULL,           -- agencies.id: what the key may see and do
            name TEXT NOT NULL DEFAULT '',  -- the operator's label
            hash TEXT NOT NULL UNIQUE,      -- sha256 hex of the whole key
            created TEXT NOT NULL,          -- UTC
            revoked TEXT                    -- UTC; NULL while the key works
        )
        """
    )
    db.execute("CREATE INDEX agency_keys_agency ON agency_keys (agency, created)")


def api_offers(db: Database) -> None:
    """What the company API knows of the offers it made (``career_relay.ledger.api_offers``),
    beside the offer (which stays as the gateway writes it):

    - ``idempotency``: the Message-ID derived from the request's Idempotency-Key, if any.
      UNIQUE per company, and checked inside the write that makes the offer: the same key
      for another recipient is refused, however many such requests race (attack review).
    - ``network``: the network the request came from, in the receipts' form (/24, /48).
      An accept from it (or from the company's ``allow_ips``) is held for review: a
      company offering to addresses it controls must not mint credits alone.

    Operational rows, not entries.  The API's offers made before this migration get a row
    each (their network unknown: NULL); of one key used for several recipients (the race
    this closes), the first made keeps the key.
    """
    db.execute(
        """
        CREATE TABLE api_offers (
            offer_id TEXT PRIMARY KEY,      -- offers.id, source 'api'
            company TEXT NOT NULL,
            idempotency TEXT,               -- the Message-ID an Idempotency-Key derived
            network TEXT,                   -- the requester's /24 or /48; NULL: unknown
            UNIQUE (company, idempotency)
        )
        """
    )
    db.execute(
        "INSERT OR IGNORE INTO api_offers (offer_id, company, idempotency, network)"
        " SELECT id, company, CASE WHEN message_id LIKE '<idempotency.%'"
        " THEN message_id END, NULL FROM offers WHERE source = 'api' ORDER BY rowid")


def outcomes(db: Database) -> None:
    """What became of a forwarded candidate, as the agency reports it (SPEC 11, the agency
    API's ``POST /api/v1/agency/forwards/{forward_id}/outcome``): ``registered``,
    ``interviewing``, ``placed``, ``not_placed`` or ``unreachable`` on a day ``at``.

    Each row is a fact of the ledger like a credit: written with an ``outcome`` entry that
    vouches for its columns by digest (``career_relay.ledger.outcomes``), never changed
    nor deleted (triggers), checked by ``ledger verify``.  UNIQUE (forward_id, status, at)
    makes the report idempotent whoever races: the same status and day again is the same
    row.  No personal data: the forward id stands for the candidate, as in the entries.
    The index serves a company's counts by status over a period of days.
    """
    db.execute(
        """
        CREATE TABLE outcomes (
            id TEXT PRIMARY KEY,            -- oc_<random>
            forward_id TEXT NOT NULL REFERENCES forwards (id),
            company TEXT NOT NULL,          -- the forward's
            agency TEXT NOT NULL,           -- the forward's, whose key reported it
            status TEXT NOT NULL CHECK (status IN ('registered', 'interviewing', 'placed',
                                                   'not_placed', 'unreachable')),
            at TEXT NOT NULL,               -- YYYY-MM-DD (UTC day), as the agency gave it
            created TEXT NOT NULL,          -- UTC, when it was reported
            entry INTEGER NOT NULL REFERENCES entries (seq),
            UNIQUE (forward_id, status, at)
        )
        """
    )
    db.execute("CREATE INDEX outcomes_company ON outcomes (company, at, status)")
    for action in ("UPDATE", "DELETE"):
        db.execute(f"CREATE TRIGGER outcomes_no_{action.lower()} BEFORE {action} ON outcomes"
                   " BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: outcomes rows are"
                   " never changed'); END")
