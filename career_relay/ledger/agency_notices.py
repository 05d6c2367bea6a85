"""The agencies' notices that are not forwards (today ``credit_request``, SPEC 11): claimed,
sent, retried, marked delivered; kept in the ledger until the agency took them.

The same life as the outbox's forwards (``career_relay.ledger.forwards``): a worker claims
a due notice for ``claim_seconds``, makes one attempt, and records the outcome; a failure
is retried after ``retry_in`` seconds, for as long as it takes; a delivery is recorded
once.  The row stays after delivery (``delivered`` says when): it is what the agency was
told, and what a pull API can list again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from career_relay.ledger.offers import View
from career_relay.timestamps import parse_stamp, stamp


@dataclass(frozen=True)
class Notice:
    id: str                        # stable across attempts: X-Career-Relay-Forward-Id
    agency: str
    company: str
    kind: str                      # X-Career-Relay-Type: credit_request
    created: dt.datetime
    payload: str
    attempts: int = 0
    delivered: dt.datetime | None = None


_COLUMNS = "id, agency, company, kind, created, payload, attempts, delivered"


def _notice(row: Sequence[object]) -> Notice:
    nid, agency, company, kind, created, payload, attempts, delivered = row
    return Notice(str(nid), str(agency), str(company), str(kind), parse_stamp(str(created)),
                  str(payload), int(attempts),  # type: ignore[call-overload]
                  None if delivered is None else parse_stamp(str(delivered)))


class Notices(View):
    """The notices of one open ``Ledger`` (sharing its connections)."""

    def claim_due(self, limit: int, claim_seconds: float,
                  agencies: Sequence[str]) -> list[Notice]:
        """Claim up to ``limit`` undelivered notices to ``agencies`` that are due, oldest
        first, for ``claim_seconds`` (through ``agency_notices_due``)."""
        if not agencies:
            return []
        now = self.ledger.now()
        marks = ", ".join("?" for _ in agencies)
        with self.ledger.write() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM agency_notices WHERE delivered IS NULL"
                " AND next_attempt <= ? AND (claimed_until IS NULL OR claimed_until < ?)"
                f" AND agency IN ({marks}) ORDER BY next_attempt, created, id LIMIT ?",
                (stamp(now), stamp(now), *agencies, limit)).fetchall()
            until = stamp(now + dt.timedelta(seconds=claim_seconds))
            for row in rows:
                conn.execute("UPDATE agency_notices SET claimed_until = ? WHERE id = ?",
                             (until, row[0]))
        return [_notice(r) for r in rows]

    def delivered(self, notice_id: str, detail: str = "") -> None:
        """The agency took it (once: a second success of an expired claim changes nothing)."""
        with self.ledger.write() as conn:
            conn.execute("UPDATE agency_notices SET delivered = ?, claimed_until = NULL,"
                         " detail = ? WHERE id = ? AND delivered IS NULL",
                         (stamp(self.ledger.now()), detail[:500], notice_id))

    def failed(self, notice_id: str, detail: str, retry_in: float) -> None:
        now = self.ledger.now()
        with self.ledger.write() as conn:
            conn.execute("UPDATE agency_notices SET attempts = attempts + 1, next_attempt = ?,"
                         " claimed_until = NULL, detail = ? WHERE id = ? AND delivered IS NULL",
                         (stamp(now + dt.timedelta(seconds=retry_in)), detail[:500],
                          notice_id))

    def next_due(self, agencies: Sequence[str] | None = None) -> dt.datetime | None:
        """When the earliest undelivered notice (to one of ``agencies``, if given) falls
        due (None: none waits)."""
        if agencies is not None and not agencies:
            return None
        where, params = "", tuple(agencies or ())
        if agencies is not None:
            where = f" AND agency IN ({', '.join('?' for _ in agencies)})"
        with self.ledger.read() as conn:
            row = conn.execute("SELECT MIN(CASE WHEN claimed_until > next_attempt"
                               " THEN claimed_until ELSE next_attempt END)"
                               f" FROM agency_notices WHERE delivered IS NULL{where}",
                               params).fetchone()
        return None if row is None or row[0] is None else parse_stamp(row[0])

    def notice(self, notice_id: str) -> Notice | None:
        with self.ledger.read() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM agency_notices WHERE id = ?",
                               (notice_id,)).fetchone()
        return None if row is None else _notice(row)
