"""The ledger's schema as named migrations (sqlite-utils ``Migrations``).

A migration that has landed is never edited: changes are new migrations
appended here.  ``career_relay.ledger`` applies them when it opens a file.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("career_relay.ledger")


@MIGRATIONS(name="0001_offers")
def _offers(db: Database) -> None:
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


@MIGRATIONS(name="0002_daily_counts")
def _daily_counts(db: Database) -> None:
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
