"""The agency's side of the ledger (SPEC 11): the forwards an agency may pull, in order, and
the outcomes it reports (migration 0014).

**The feed.**  An agency sees its own forwards (``forwards.agency``), consents and the
notices that follow them (withdrawal, erasure), in the order they were made: the
forwards' ``rowid``, which every backend assigns under the ledger's write lock (SQLite's
one writer; PostgreSQL's advisory lock, let go only once the row is visible), so a later
row never becomes visible before an earlier one and a cursor past a row never skips
another.  A forward whose accept is held for review (SPEC 8) is not the agency's to see
until an admin approves it, and never if rejected: the feed skips it.  It used to stop
before it, so that an approval never put a forward behind the agency's cursor, but then
one held consent (anyone can make one through a company's public link) stopped every
company's forwards to that agency until an admin got to it.  A consent's payload reads null
once erased, and when it was withdrawn before it was delivered (the webhook never sends
those).  For an agency that pulls (``deliver = "pull"``) the feed is its delivery: ``pull``
also acknowledges what ``after`` covers, and gives first the forwards approved since the
feed passed them (``ledger.pulls``); for any other, ``feed`` only reads and an approved
forward the feed skipped reaches the agency by webhook or mail, as every forward does.

**Outcomes.**  ``registered``, ``interviewing``, ``placed``, ``not_placed``,
``unreachable`` on a day, for one of the agency's consent forwards: a row of ``outcomes``
and an ``outcome`` entry vouching for it by digest (``ledger verify``).  The same status
and day again is the same row (idempotent: UNIQUE (forward_id, status, at), checked
under the write lock first).  With ``ledger.qualify_on = "registered"`` a registered (or
later) outcome is what qualifies a delivered consent (``credits.qualify_registered``), in
the same transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, get_args

from career_relay.ledger import chain as ledger_chain
from career_relay.ledger import credits as ledger_credits
from career_relay.ledger import pulls
from career_relay.ledger.offers import View
from career_relay.timestamps import stamp

Status = Literal["registered", "interviewing", "placed", "not_placed", "unreachable"]
STATUSES: tuple[str, ...] = get_args(Status)
#: How far into the future an outcome's day may be: the agency's day may be ahead of UTC.
FUTURE_DAYS = 1

# Visible to the agency: not held for review, or approved by an admin.
_VISIBLE = ("(r.review IS NULL OR EXISTS (SELECT 1 FROM reviews v WHERE v.receipt_id = r.id"
            " AND v.decision = 'approve'))")
# The payload, null for a consent withdrawn before it was delivered (and, by the column,
# once erased).
_PAYLOAD = ("CASE WHEN f.kind = 'consent' AND EXISTS (SELECT 1 FROM forward_events e"
            " WHERE e.forward_id = f.id AND e.event = 'cancelled') AND NOT EXISTS (SELECT 1"
            " FROM forward_events e WHERE e.forward_id = f.id AND e.event = 'delivered')"
            " THEN NULL ELSE f.payload END")


@dataclass(frozen=True)
class FeedItem:
    n: int              # its place in the agency's feed (the cursor's value)
    forward_id: str
    kind: str           # consent | withdrawal | erasure
    created: str        # UTC stamp
    payload: str | None  # the webhook's body, byte for byte; None: withdrawn or erased
    approved: int = 0   # the chain entry of its approval on review (0: never held)


@dataclass(frozen=True)
class Place:
    """Where an agency's cursor stands.  ``n``: the last forward given in feed order
    (``forwards.rowid``).  ``approved``: for an agency that pulls, the chain's ``seq`` up
    to which every approval on review is accounted for (0 for the others, and for
    cursors made before there was one): a forward approved after the feed passed it is
    given late, and its approval's entry orders it and tells when it was given."""
    n: int
    approved: int = 0


@dataclass(frozen=True)
class Outcome:
    id: str
    forward_id: str
    status: str
    at: str             # YYYY-MM-DD
    created: str        # UTC stamp, when it was reported


class OutcomeRefused(ValueError):
    """An outcome whose field fails a rule of the ledger (the API answers 422, naming it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message


class Outcomes(View):
    """The feed and the outcomes of one open ``Ledger``."""

    def feed(self, agency: str, after: int, limit: int) -> list[FeedItem]:
        """Up to ``limit`` of ``agency``'s forwards after place ``after`` (0: from the first).
        Read-only: how a webhook agency reconciles."""
        with self.ledger.snapshot() as conn:
            return page(conn, agency, after, limit)

    def pull(self, agency: str, after: Place, limit: int
             ) -> tuple[list[FeedItem], bool, list[str], Place]:
        """The feed of an agency that pulls (``deliver = "pull"``): what ``after``
        acknowledges, recorded delivered, and the page after it, marked served, in one
        write (``ledger.pulls``).  The page (at most ``limit``: first the forwards
        approved since the feed passed them, then those after ``after.n``), whether more
        is there already (read, not given: not served), the ids delivered now, and the
        place the page ends at (the next cursor)."""
        now = self.ledger.now()
        with self.ledger.write() as conn:
            done = pulls.acknowledge(conn, self.rules, agency, after.n, after.approved, now,
                                     self.ledger.new_id)
            given, more, place = _pull_page(conn, agency, after, limit)
            pulls.mark_served(conn, [item.forward_id for item in given], now)
        return given, more, done, place

    def record(self, agency: str, forward_id: str, status: str, at: dt.date
               ) -> tuple[Outcome, bool] | None:
        """The outcome, and whether it is new; None when ``forward_id`` is no consent
        forward ``agency`` may see.  ``OutcomeRefused`` for a day before the forward or
        more than ``FUTURE_DAYS`` ahead of today (UTC)."""
        if status not in STATUSES:
            raise OutcomeRefused("status", f"must be one of {', '.join(STATUSES)}")
        now = self.ledger.now()
        day = at.isoformat()
        with self.ledger.write() as conn:
            found = conn.execute(
                f"SELECT f.company, f.created FROM forwards f JOIN receipts r"
                f" ON r.id = f.receipt_id WHERE f.id = ? AND f.agency = ? AND f.kind = 'consent'"
                f" AND {_VISIBLE} AND NOT EXISTS (SELECT 1 FROM outbox o"
                f" WHERE o.forward_id = f.id AND o.held = 1)", (forward_id, agency)).fetchone()
            if found is None:
                return None
            same = conn.execute("SELECT id, forward_id, status, at, created FROM outcomes"
                                " WHERE forward_id = ? AND status = ? AND at = ?",
                                (forward_id, status, day)).fetchone()
            if same is not None:
                return Outcome(*same), False
            company, made = str(found[0]), str(found[1])
            if day < made[:10]:
                raise OutcomeRefused("at", "is before the forward was made")
            if at > now.date() + dt.timedelta(days=FUTURE_DAYS):
                raise OutcomeRefused("at", "is in the future")
            outcome = Outcome(f"oc_{self.ledger.new_id()}", forward_id, status, day, stamp(now))
            fixed = outcome_row(outcome, company, agency)
            seq = ledger_chain.append(conn, now, company, "outcome", outcome.id, {
                "digest": ledger_chain.row_digest(fixed), "forward": forward_id,
                "status": status})
            conn.execute("INSERT INTO outcomes (id, forward_id, company, agency, status, at,"
                         " created, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*fixed, seq))
            if status in ledger_credits.REGISTERED:
                ledger_credits.qualify_registered(conn, self.rules, forward_id, now,
                                                  self.ledger.new_id)
        return outcome, True

    def of_forward(self, forward_id: str) -> list[Outcome]:
        """Every outcome of a forward, in the order reported."""
        with self.ledger.read() as conn:
            rows = conn.execute("SELECT id, forward_id, status, at, created FROM outcomes"
                                " WHERE forward_id = ? ORDER BY entry", (forward_id,)).fetchall()
        return [Outcome(*row) for row in rows]

    def counts(self, company: str, since: dt.date, until: dt.date) -> dict[str, int]:
        """Per status, the company's forwards the agency reported so with a day in
        ``since`` .. ``until`` (inclusive): each forward once per status."""
        with self.ledger.read() as conn:
            rows = conn.execute(
                "SELECT status, COUNT(DISTINCT forward_id) FROM outcomes WHERE company = ?"
                " AND at >= ? AND at <= ? GROUP BY status",
                (company, since.isoformat(), until.isoformat())).fetchall()
        found = {str(status): int(n) for status, n in rows}
        return {status: found.get(status, 0) for status in STATUSES}


# The chain entry (seq) of the forward's approval on review; 0 for one never held.
_APPROVAL = ("CASE WHEN r.review IS NULL THEN 0 ELSE (SELECT e.seq FROM entries e"
             " WHERE e.company = r.company AND e.kind = 'review' AND e.ref = r.id) END")
#: A page: agency, after, limit.  Held forwards are not _VISIBLE: the page skips them.
FEED_PAGE = (f"SELECT f.rowid, f.id, f.kind, f.created, {_PAYLOAD}, {_APPROVAL}"
             f" FROM forwards f JOIN receipts r ON r.id = f.receipt_id WHERE f.agency = ?"
             f" AND f.rowid > ? AND {_VISIBLE} ORDER BY f.rowid LIMIT ?")
#: The late forwards of an agency that pulls: agency, place, approved, limit.  At or before
#: the place, approved by an entry after ``approved``, not yet acknowledged (still in the
#: outbox, which a rejection leaves at once), in the order of their approvals.  Served or
#: not: one served in an answer the agency never got comes again for the same cursor.
#: Read from the outbox (what waits, not every forward the agency ever had): rows leave
#: it when delivered, so it holds the backlog the agency is about to pull anyway.
FEED_LATE = (f"SELECT f.rowid, f.id, f.kind, f.created, {_PAYLOAD}, e.seq FROM outbox o"
             f" JOIN forwards f ON f.id = o.forward_id JOIN receipts r ON r.id = f.receipt_id"
             f" JOIN reviews v ON v.receipt_id = r.id AND v.decision = 'approve'"
             f" JOIN entries e ON e.company = r.company AND e.kind = 'review'"
             f" AND e.ref = r.id WHERE o.held = 0 AND f.agency = ? AND f.rowid <= ?"
             f" AND e.seq > ? ORDER BY e.seq, f.rowid LIMIT ?")


def page(conn: Any, agency: str, after: int, limit: int) -> list[FeedItem]:
    """Up to ``limit`` of ``agency``'s forwards after place ``after``, skipping those held
    for review.  A page reads a range of ``forwards_agency_feed`` (0016)."""
    return _items(conn.execute(FEED_PAGE, (agency, after, limit)).fetchall())


def _items(rows: list[Any]) -> list[FeedItem]:
    return [FeedItem(int(n), str(fid), str(kind), str(created), payload, int(approved or 0))
            for n, fid, kind, created, payload, approved in rows]


def _pull_page(conn: Any, agency: str, after: Place, limit: int
               ) -> tuple[list[FeedItem], bool, Place]:
    """A pulling agency's page: its late forwards first, then those after the place.

    The next place's ``approved`` changes whenever a late forward is given, or the same
    cursor would come back both from an agency that got this answer and from one retrying
    after losing it: the first must acknowledge the late forwards, the second must get them
    again (they sit behind ``n``, so nothing else gives them).  It changes only then, or
    when an approved forward is given in order (its acknowledgement needs it): with
    nothing new, the cursor given comes back (SPEC 11)."""
    late = _items(conn.execute(FEED_LATE, (agency, after.n, after.approved,
                                           limit + 1)).fetchall())
    if len(late) > limit:
        # Accounted for: the approvals before the first left out.  One approval releases one
        # forward (a receipt has one), so none is left out with an approval counted.
        return late[:limit], True, Place(after.n, late[limit].approved - 1)
    room = limit - len(late)
    rest = page(conn, agency, after.n, room + 1)
    # Every approval so far of a forward up to the new place is in this page or an earlier
    # one: late (behind ``after.n``) or visible when the page reached it (after it).
    now = rest[:room]
    given = late + now
    place = Place(now[-1].n if now else after.n,
                  max([after.approved, *(item.approved for item in given)]))
    return given, len(rest) > room, place


def outcome_row(outcome: Outcome, company: str, agency: str) -> tuple[Any, ...]:
    """The row's columns an ``outcome`` entry's digest covers, in the table's order."""
    return (outcome.id, outcome.forward_id, company, agency, outcome.status, outcome.at,
            outcome.created)
