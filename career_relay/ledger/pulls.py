"""Agencies that pull (SPEC 11, ``deliver = "pull"``): the feed is their delivery, and asking
for the page after a cursor acknowledges every forward up to it.

The forwarding worker never claims a pulling agency's forwards: they wait in the outbox
until the agency takes them.  One request of the feed with ``after`` is one write, under the
ledger's write lock, on either backend (``Outcomes.pull``):

1. **Acknowledge.**  Each of the agency's forwards still in the outbox, given to it in a
   page before (``outbox.served``), visible to it (not held for review), at or before the
   cursor's place, and, if it was held, approved by an entry the cursor accounts for
   (``outcomes.Place.approved``), is recorded delivered exactly as a webhook's 2xx is
   (``forwards.record_delivered``: the provision record, the qualification, a credit every
   ``credit_every``).  Kafka's committed offset: at least once, and the ``forward_id`` makes
   it once at the agency.  The same cursor again finds nothing left to record.
2. **The page** (``outcomes._pull_page``): first the forwards approved since the feed
   skipped them (late: behind the place, so only the approval's entry tells whether the
   cursor came from an answer that had them), then the read-only feed's (``outcomes.page``).
3. **Served.**  The page's forwards still in the outbox are marked given.  Only those can be
   acknowledged later, so a cursor, even a forged one, acknowledges nothing the agency was
   not sent; and a consent the agency may have read is, like one in flight to a webhook,
   not cancelled by a withdrawal but followed by its notice (``ConsentLedger``).

A rejected forward leaves the outbox at once (cancelled): it is never given, so never
acknowledged.  A consent withdrawn or erased after it was served is still recorded
delivered when acknowledged (the agency has it; the provision happened), never qualifies
(``credits._qualify``), and the notice behind it in the feed tells the agency to delete it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable

from career_relay.ledger.forwards import record_delivered
from career_relay.ledger.rules import Rules
from career_relay.timestamps import stamp

#: The ``delivered`` event's detail for an acknowledgement (the webhook's is its HTTP status).
ACKNOWLEDGED = "acknowledged by the agency's feed cursor"
# The agency's forwards waiting for it, given in a page already, not held, visible, and if
# held once, approved at or before the cursor's ``approved`` (the review's chain entry).
_WAITING = ("SELECT f.id FROM outbox o JOIN forwards f ON f.id = o.forward_id"
            " JOIN receipts r ON r.id = f.receipt_id"
            " WHERE o.served IS NOT NULL AND o.held = 0 AND f.agency = ? AND f.rowid <= ?"
            " AND (r.review IS NULL OR EXISTS (SELECT 1 FROM reviews v JOIN entries e"
            "  ON e.company = r.company AND e.kind = 'review' AND e.ref = v.receipt_id"
            "  WHERE v.receipt_id = r.id AND v.decision = 'approve' AND e.seq <= ?))"
            " ORDER BY f.rowid")


def acknowledge(conn: sqlite3.Connection, rules: Rules, agency: str, upto: int,
                approved: int, now: dt.datetime, new_id: Callable[[], str]) -> list[str]:
    """Record as delivered ``agency``'s served forwards up to place ``upto`` (those approved
    on review: by an entry up to ``approved``), in the caller's transaction; the ids
    recorded now (none the second time)."""
    if upto <= 0:
        return []
    ids = [str(fid) for (fid,) in conn.execute(_WAITING, (agency, upto, approved)).fetchall()]
    return [fid for fid in ids
            if record_delivered(conn, rules, fid, ACKNOWLEDGED, now, new_id)]


def mark_served(conn: sqlite3.Connection, forward_ids: list[str], now: dt.datetime) -> None:
    """The forwards were given to the agency in a page: those still in the outbox may now be
    acknowledged (the first time is kept)."""
    conn.executemany("UPDATE outbox SET served = ? WHERE served IS NULL AND held = 0"
                     " AND forward_id = ?", [(stamp(now), fid) for fid in forward_ids])
