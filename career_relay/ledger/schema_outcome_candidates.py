"""Migration 0017, the candidates the outcome figures count, one row each (issue 15's goal:
the report with outcomes over a million offers under 200 ms), in both dialects side by side:
``sqlite`` for ``migrations`` and ``POSTGRES`` for ``schema_postgres``.  A migration that
has landed is never edited.

``outcome_candidates`` holds, for every consent forward that was not cancelled, the month and
day of its offer, the offer's job, channel and stage ('' when the mail named none), and the latest
status the agency reported on it (NULL: none yet), with that status's day ``at``, its
``rank`` (``outcome_groups.RANK``) and, when it is ``placed``, the days from the offer.
"Latest" is ``outcome_groups``' rule: the latest day wins, and on one day the furthest
along.  So a company's figures read one range of ``outcome_candidates_company``, in the
index's order, counted by cell and status in SQL without a sort (the index's columns are the
GROUP BY's, in order), where they read every outcome, its forward and its offer (three B-tree
searches a row: 485 ms for 26,551 outcomes).

Derived data, like ``offer_stats``: triggers keep it right whoever writes (a forward made,
a forward cancelled, an outcome reported; the last as an UPDATE whose WHERE keeps the
latest, so outcomes applied in any order, or racing on PostgreSQL, where the second UPDATE
re-reads the row the first committed, give the same row), this migration fills it for the
rows already there, and ``ledger migrate`` rebuilds it in PostgreSQL and compares it
(``copy.DERIVED``).  Never a record: ``ledger verify`` checks the outcomes themselves.
"""

from __future__ import annotations

from sqlite_utils import Database

#: ``outcome_groups.RANK`` as SQL over ``{status}``.
_RANK = ("CASE {status} WHEN 'unreachable' THEN 0 WHEN 'registered' THEN 1"
         " WHEN 'interviewing' THEN 2 WHEN 'not_placed' THEN 3 WHEN 'placed' THEN 4 END")
#: Whole days from ``{offered}`` to ``{at}`` (two YYYY-MM-DD), in each dialect.
_SQLITE_DAYS = "CAST(julianday({at}) - julianday({offered}) AS INTEGER)"
_POSTGRES_DAYS = "{at}::date - {offered}::date"

# What the three triggers do, the same SQL in both dialects but for the days.
# A consent forward: its row, with its offer's month, day, job, channel and stage.
_FORWARD_ROW = (
    "INSERT INTO outcome_candidates (forward_id, company, month, offered, job, channel, stage)"
    " SELECT NEW.id, NEW.company, substr(o.created, 1, 7), substr(o.created, 1, 10),"
    " COALESCE(o.job, ''), COALESCE(o.channel, ''), COALESCE(o.stage, '') FROM offers o"
    " WHERE o.id = NEW.offer_id")
# A forward cancelled: no candidate.
_CANCELLED = "DELETE FROM outcome_candidates WHERE forward_id = NEW.forward_id"


def _outcome(days: str) -> str:
    """An outcome: the row's status when it is later, or as late and further along."""
    rank = _RANK.format(status="NEW.status")
    return (
        f"UPDATE outcome_candidates SET status = NEW.status, at = NEW.at, rank = {rank},"
        " days = CASE WHEN NEW.status = 'placed' THEN "
        + days.format(at="NEW.at", offered="offered") + " END"
        " WHERE forward_id = NEW.forward_id AND (status IS NULL OR NEW.at > at"
        f" OR (NEW.at = at AND {rank} > rank))")


# The consent forwards not cancelled, from the rows already there.
_BACKFILL_FORWARDS = (
    "INSERT INTO outcome_candidates (forward_id, company, month, offered, job, channel, stage)"
    " SELECT f.id, f.company, substr(x.created, 1, 7), substr(x.created, 1, 10),"
    " COALESCE(x.job, ''),"
    " COALESCE(x.channel, ''), COALESCE(x.stage, '') FROM forwards f"
    " JOIN offers x ON x.id = f.offer_id WHERE f.kind = 'consent' AND NOT EXISTS"
    " (SELECT 1 FROM forward_events e WHERE e.forward_id = f.id AND e.event = 'cancelled')")


def _backfill_outcomes(days: str) -> str:
    """Each candidate's latest outcome already reported (``days``: ``_SQLITE_DAYS`` or
    ``_POSTGRES_DAYS``)."""
    rank = _RANK.format(status="o.status")
    return (
        "UPDATE outcome_candidates AS c SET (status, at, rank, days) ="
        f" (SELECT o.status, o.at, {rank},"
        " CASE WHEN o.status = 'placed' THEN " + days.format(at="o.at", offered="c.offered")
        + " END FROM outcomes o"
        f" WHERE o.forward_id = c.forward_id ORDER BY o.at DESC, {rank} DESC LIMIT 1)"
        " WHERE EXISTS (SELECT 1 FROM outcomes o WHERE o.forward_id = c.forward_id)")


def sqlite(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE outcome_candidates (
            forward_id TEXT PRIMARY KEY REFERENCES forwards (id),
            company TEXT NOT NULL,
            month TEXT NOT NULL,            -- YYYY-MM (UTC) of the offer
            offered TEXT NOT NULL,          -- YYYY-MM-DD (UTC) of the offer
            job TEXT NOT NULL,              -- the offer's; '' when the mail named none
            channel TEXT NOT NULL,
            stage TEXT NOT NULL,
            status TEXT,                    -- the latest reported; NULL: none yet
            at TEXT,                        -- its day
            rank INTEGER,                   -- its outcome_groups.RANK
            days INTEGER                    -- offer day to ``at`` when status is 'placed'
        )
        """
    )
    # Covering, in the GROUP BY's order: a company's cohort is one range, counted from the
    # index alone without a sort.
    db.execute("CREATE INDEX outcome_candidates_company ON outcome_candidates"
               " (company, month, job, channel, stage, status, days)")
    db.execute("CREATE TRIGGER outcome_candidates_forward AFTER INSERT ON forwards"
               f" WHEN NEW.kind = 'consent' BEGIN {_FORWARD_ROW}; END")
    db.execute("CREATE TRIGGER outcome_candidates_cancelled AFTER INSERT ON forward_events"
               f" WHEN NEW.event = 'cancelled' BEGIN {_CANCELLED}; END")
    db.execute("CREATE TRIGGER outcome_candidates_outcome AFTER INSERT ON outcomes"
               f" BEGIN {_outcome(_SQLITE_DAYS)}; END")
    db.execute(_BACKFILL_FORWARDS)
    db.execute(_backfill_outcomes(_SQLITE_DAYS))


def _pg_trigger(name: str, table: str, when: str, body: str) -> str:
    """A PostgreSQL row trigger running ``body`` after an insert on ``table``."""
    return (f"CREATE FUNCTION career_relay_{name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n    {body};\n    RETURN NULL;\nEND\n$$;\n"
            f"CREATE TRIGGER {name} AFTER INSERT ON {table} FOR EACH ROW{when}\n"
            f"    EXECUTE FUNCTION career_relay_{name}();\n")


#: The triggers in PostgreSQL's dialect (tests/test_postgres_roles.py reads the statements
#: they run as the inserting role, for the grants).
TRIGGERS = (
    _pg_trigger("outcome_candidates_forward", "forwards", " WHEN (NEW.kind = 'consent')",
                _FORWARD_ROW)
    + _pg_trigger("outcome_candidates_cancelled", "forward_events",
                  " WHEN (NEW.event = 'cancelled')", _CANCELLED)
    + _pg_trigger("outcome_candidates_outcome", "outcomes", "", _outcome(_POSTGRES_DAYS)))

#: 0017 in PostgreSQL's dialect, column for column.
POSTGRES = """
CREATE TABLE outcome_candidates (
    forward_id TEXT COLLATE "C" PRIMARY KEY REFERENCES forwards (id),
    company TEXT COLLATE "C" NOT NULL,
    month TEXT COLLATE "C" NOT NULL,
    offered TEXT COLLATE "C" NOT NULL,
    job TEXT COLLATE "C" NOT NULL,
    channel TEXT COLLATE "C" NOT NULL,
    stage TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C",
    at TEXT COLLATE "C",
    rank INTEGER,
    days INTEGER
);
CREATE INDEX outcome_candidates_company ON outcome_candidates
    (company, month, job, channel, stage, status, days);
""" + TRIGGERS + _BACKFILL_FORWARDS + ";\n" + _backfill_outcomes(_POSTGRES_DAYS) + ";\n"
