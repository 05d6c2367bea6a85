"""``ledger verify`` for free referral requests (0015, ``credit_requests``): each row
against its entry, then the rules the rows were made by.

The rows against the entries catch a request or a state changed, deleted, or added
outside the ledger.  The rules catch what a well-formed forged entry would carry past
those checks: a second open request of one credit, a request of another company's
credit, a state set by an agency other than the request's, a credit spent twice (by a
fulfilled request and ``credits redeem``), a redemption in an agency's name that no
fulfilled request made.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from career_relay.ledger.chain import Problem

#: Who spent a credit a request fulfilled (``redemptions.by``): ``agency:<id>``.
AGENCY_BY = "agency:"


def problem(conn: sqlite3.Connection) -> Problem | None:
    """The first problem of the requests, their states and the redemptions they made."""
    return (_agree(conn, "credit_request", "credit request",
                   "SELECT id, company, created, entry, credit_id, agency, round, by, note"
                   " FROM credit_requests",
                   lambda r: {"credit": r[0], "agency": r[1], "round": r[2], "by": r[3],
                              "note": r[4]})
            or _agree(conn, "credit_request_state", "state of credit request",
                      "SELECT request_id, company, created, entry, state, by, note"
                      " FROM credit_request_states",
                      lambda r: {"state": r[0], "by": r[1], "note": r[2]})
            or _rules(conn))


def _agree(conn: sqlite3.Connection, kind: str, what: str, sql: str,
           body_of: Any) -> Problem | None:
    entries = {str(ref): (int(seq), company, created, json.loads(body))
               for seq, ref, company, created, body in conn.execute(
                   "SELECT seq, ref, company, created, body FROM entries WHERE kind = ?",
                   (kind,))}
    for ref, company, created, entry, *rest in conn.execute(sql).fetchall():
        found = entries.pop(str(ref), None)
        if found is None:
            return Problem(int(entry), f"{what} {ref} has no ledger entry")
        if found != (int(entry), company, created, body_of(rest)):
            return Problem(found[0], f"{what} {ref} does not match its entry")
    for ref, (seq, _, _, _) in entries.items():
        return Problem(seq, f"{what} {ref} was deleted")
    return None


def _rules(conn: sqlite3.Connection) -> Problem | None:
    rows = conn.execute(
        "SELECT r.id, r.credit_id, r.company, r.agency, r.round, r.created, r.entry,"
        " c.company, s.state, s.created, s.by, d.created, d.by, d.note"
        " FROM credit_requests r LEFT JOIN credits c ON c.id = r.credit_id"
        " LEFT JOIN credit_request_states s ON s.request_id = r.id"
        " LEFT JOIN redemptions d ON d.credit_id = r.credit_id"
        " ORDER BY r.credit_id, r.round").fetchall()
    last: dict[str, tuple[int, str | None, str | None]] = {}  # credit -> round, state, settled
    fulfilled: set[str] = set()
    for (rid, credit, company, agency, rnd, created, entry, owner, state, settled, by,
         spent, spent_by, spent_note) in rows:
        seq = int(entry)
        if owner != company:
            return Problem(seq, f"credit request {rid} asks for credit {credit}, which is no "
                                f"credit of {company}")
        before = last.get(credit, (0, "cancelled", None))
        if rnd != before[0] + 1:
            return Problem(seq, f"credit request {rid} is round {rnd} of credit {credit}, "
                                f"where {before[0] + 1} comes next")
        if before[1] != "cancelled" or (before[2] is not None and before[2] > created):
            return Problem(seq, f"credit request {rid} was made while credit {credit} was "
                                f"{before[1] or 'requested'} by an earlier request")
        last[credit] = (rnd, state, settled)
        if state is not None and by != agency:
            return Problem(seq, f"credit request {rid} was settled by {by}, not by its "
                                f"agency {agency}")
        if state == "fulfilled":
            fulfilled.add(credit)
            if (spent, spent_by, spent_note) != (settled, f"{AGENCY_BY}{agency}", rid):
                return Problem(seq, f"credit request {rid} was fulfilled, and its credit "
                                    f"{credit} was not spent by it")
        elif spent is not None and not str(spent_by).startswith(AGENCY_BY) and (
                state is None or settled > spent):  # redeemed while the agency had it
            return Problem(seq, f"credit {credit} was spent by {spent_by} while credit "
                                f"request {rid} was open")
    for credit, spent_by, entry in conn.execute(
            "SELECT credit_id, by, entry FROM redemptions WHERE by LIKE 'agency:%'"):
        if credit not in fulfilled:
            return Problem(int(entry), f"credit {credit} was spent by {spent_by} with no "
                                       "fulfilled request")
    return None
