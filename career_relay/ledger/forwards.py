"""The outbox: forwards waiting for the agency, claimed, sent, retried, settled.

Ordering: forwards of one offer reach the agency in the order they were
made (a withdrawal never overtakes the consent it withdraws): a forward is
due only when no older forward of the same offer is still in the outbox.

Claims: a worker claims a due forward for ``claim_seconds`` before sending
it.  A forward under claim is "in flight": withdrawal and erasure leave it
alone (it may already have reached the agency) and follow it with a notice
of their own; an unclaimed, undelivered consent forward is cancelled
instead, so the agency never receives what it would only be told to delete.
Delivery is recorded once (``delivered``): a claim that expired and was sent
twice records nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from career_relay.ledger import credits as ledger_credits
from career_relay.ledger.chain import DEFAULT_AGENCY
from career_relay.ledger.offers import View
from career_relay.ledger.rules import Rules
from career_relay.timestamps import parse_stamp, stamp

ForwardKind = Literal["consent", "withdrawal", "erasure"]


@dataclass(frozen=True)
class Forward:
    id: str
    offer_id: str
    receipt_id: str
    company: str
    kind: ForwardKind
    created: dt.datetime
    payload: str | None
    attempts: int = 0
    #: The id of the agency it goes to (``[[agencies]]``; SPEC 11), and only there.
    agency: str = DEFAULT_AGENCY


@dataclass(frozen=True)
class ForwardStatus:
    forward: Forward
    delivered: dt.datetime | None
    cancelled: bool
    pending: bool
    held: bool


_FORWARD_COLUMNS = ("f.id, f.offer_id, f.receipt_id, f.company, f.kind, f.created, f.payload,"
                    " f.agency")



class Outbox(View):
    """The outbox of one open ``Ledger`` (sharing its connections)."""

    def claim_due(self, limit: int, claim_seconds: float,
                  agencies: Sequence[str] | None = None) -> list[Forward]:
        """Claim up to ``limit`` forwards that are due, oldest first, for ``claim_seconds``.

        Due: not held, its time has come, not claimed by a live worker, and
        no older forward of its offer still waiting.  ``agencies``: only forwards to these
        agencies (the ones this worker can reach; None: every agency's).
        """
        now = self.ledger.now()
        until = stamp(now + dt.timedelta(seconds=claim_seconds))
        only, params = "", [stamp(now), stamp(now)]
        if agencies is not None:
            if not agencies:
                return []
            only = f" AND f.agency IN ({', '.join('?' for _ in agencies)})"
            params += list(agencies)
        with self.ledger.write() as conn:
            rows = conn.execute(
                f"SELECT {_FORWARD_COLUMNS}, o.attempts FROM outbox o"
                " JOIN forwards f ON f.id = o.forward_id"
                " WHERE o.held = 0 AND o.next_attempt <= ?"
                " AND (o.claimed_until IS NULL OR o.claimed_until < ?)" + only +
                " AND NOT EXISTS (SELECT 1 FROM outbox o2 JOIN forwards f2 ON f2.id = o2.forward_id"
                "                 WHERE f2.offer_id = f.offer_id AND f2.rowid < f.rowid)"
                " ORDER BY o.next_attempt, f.rowid LIMIT ?",
                (*params, limit)).fetchall()
            for row in rows:
                conn.execute("UPDATE outbox SET claimed_until = ? WHERE forward_id = ?",
                             (until, row[0]))
        return [forward_of(r) for r in rows]

    def next_due(self, agencies: Sequence[str] | None = None) -> dt.datetime | None:
        """When the earliest unheld forward falls due (None: the outbox holds nothing to
        send); ``agencies``: of these agencies' forwards only (None: every agency's)."""
        only, params = "", list(agencies or ())
        if agencies is not None:
            if not agencies:
                return None
            only = (" AND forward_id IN (SELECT f.id FROM forwards f WHERE f.agency IN"
                    f" ({', '.join('?' for _ in agencies)}))")
        with self.ledger.read() as conn:
            # The later of its next attempt and its claim's end (a CASE, where SQLite would
            # take MAX(a, b) and PostgreSQL GREATEST: one spelling for both).
            row = conn.execute("SELECT MIN(CASE WHEN claimed_until > next_attempt"
                               " THEN claimed_until ELSE next_attempt END)"
                               " FROM outbox WHERE held = 0" + only, params).fetchone()
        return None if row is None or row[0] is None else parse_stamp(row[0])

    def delivered(self, forward_id: str, detail: str = "") -> None:
        """The agency took it: out of the outbox, into the ledger (provision record,
        qualification, perhaps a credit), in one transaction."""
        now = self.ledger.now()
        with self.ledger.write() as conn:
            record_delivered(conn, self.rules, forward_id, detail, now, self.ledger.new_id)

    def cancelled(self, forward_id: str, detail: str) -> None:
        now = self.ledger.now()
        with self.ledger.write() as conn:
            settle(conn, forward_id, "cancelled", detail, now)

    def failed(self, forward_id: str, detail: str, retry_in: float) -> None:
        """An attempt that did not reach the agency: retried after ``retry_in`` seconds,
        unless it is a consent the candidate withdrew (or erased) while it was being
        sent: then it is not sent again (the withdrawal queued behind it still goes)."""
        now = self.ledger.now()
        with self.ledger.write() as conn:
            add_event(conn, forward_id, "failed", detail[:500], now)
            if retracted(conn, forward_id):
                settle(conn, forward_id, "cancelled", "withdrawn while it was sent", now)
                return
            conn.execute("UPDATE outbox SET attempts = attempts + 1, next_attempt = ?,"
                         " claimed_until = NULL WHERE forward_id = ?",
                         (stamp(now + dt.timedelta(seconds=retry_in)), forward_id))

    def forwards(self, offer_id: str) -> list[ForwardStatus]:
        """Every forward of an offer with where it stands, oldest first."""
        with self.ledger.read() as conn:
            rows = conn.execute(
                f"SELECT {_FORWARD_COLUMNS}, COALESCE(o.attempts, 0),"
                " (SELECT MIN(e.created) FROM forward_events e WHERE e.forward_id = f.id"
                "  AND e.event = 'delivered'),"
                " EXISTS (SELECT 1 FROM forward_events e WHERE e.forward_id = f.id"
                "  AND e.event = 'cancelled'),"
                " o.forward_id IS NOT NULL, COALESCE(o.held, 0)"
                " FROM forwards f LEFT JOIN outbox o ON o.forward_id = f.id"
                " WHERE f.offer_id = ? ORDER BY f.rowid", (offer_id,)).fetchall()
        return [ForwardStatus(forward_of(r[:9]), None if r[9] is None else parse_stamp(r[9]),
                              bool(r[10]), bool(r[11]), bool(r[12])) for r in rows]

    def forward(self, forward_id: str) -> Forward | None:
        with self.ledger.read() as conn:
            row = conn.execute(f"SELECT {_FORWARD_COLUMNS}, 0 FROM forwards f WHERE f.id = ?",
                               (forward_id,)).fetchone()
        return None if row is None else forward_of(row)


def record_delivered(conn: sqlite3.Connection, rules: Rules, forward_id: str, detail: str,
                     now: dt.datetime, new_id: Callable[[], str]) -> bool:
    """Record that the agency took a forward, in the caller's transaction: out of the
    outbox, the ``delivered`` event, and ``credits.record_delivery`` (the provision record,
    the qualification, perhaps a credit).  The webhook's 2xx and a pulling agency's
    acknowledgement (``pulls``) both come here.  False, recording nothing, when it was
    recorded already (a claim that expired and was sent twice)."""
    gone = conn.execute("DELETE FROM outbox WHERE forward_id = ?", (forward_id,))
    if gone.rowcount == 0 and conn.execute(
            "SELECT 1 FROM forward_events WHERE forward_id = ? AND event = 'delivered'",
            (forward_id,)).fetchone():
        return False
    add_event(conn, forward_id, "delivered", detail, now)
    ledger_credits.record_delivery(conn, rules, forward_id, now, new_id=new_id)
    return True


def add_event(conn: sqlite3.Connection, forward_id: str, event: str, detail: str,
           now: dt.datetime) -> None:
    conn.execute("INSERT INTO forward_events (forward_id, created, event, detail)"
                 " VALUES (?, ?, ?, ?)", (forward_id, stamp(now), event, detail))


def settle(conn: sqlite3.Connection, forward_id: str, event: str, detail: str,
           now: dt.datetime) -> None:
    """Take a forward out of the outbox and record why."""
    conn.execute("DELETE FROM outbox WHERE forward_id = ?", (forward_id,))
    add_event(conn, forward_id, event, detail, now)


def retracted(conn: sqlite3.Connection, forward_id: str) -> bool:
    """Whether a consent forward's offer has a withdrawal or erasure after its receipt."""
    row = conn.execute(
        "SELECT 1 FROM forwards f JOIN receipts r ON r.id = f.receipt_id"
        " WHERE f.id = ? AND f.kind = 'consent' AND EXISTS (SELECT 1 FROM receipts later"
        "  WHERE later.offer_id = f.offer_id AND later.rowid > r.rowid"
        "  AND later.decision IN ('withdraw', 'erase'))", (forward_id,)).fetchone()
    return row is not None


def forward_of(row: Sequence[Any]) -> Forward:
    fid, offer_id, receipt_id, company, kind, created, payload, agency, attempts = row
    return Forward(fid, offer_id, receipt_id, company, kind, parse_stamp(created), payload,
                   int(attempts), agency)
