"""Free referrals as a workflow (SPEC 11): a company asks its agency for the referral one
credit is worth; the agency fulfils or cancels the request.

A request is for one unspent credit of the company (no redemption, no open request),
addressed to the company's agency.  Its states: ``requested`` (the row of
``credit_requests``), then once ``fulfilled`` or ``cancelled`` (the row of
``credit_request_states``), each with its time and an optional note.  Cancelled frees
the credit for another request (or ``credits redeem``); fulfilled spends it, as a
redemption by the agency in the same transaction, so ``UNIQUE`` on ``redemptions`` keeps
the agency and ``credits redeem`` from ever spending one credit twice.  Every row is a
chained entry (``credit_request``, ``credit_request_state``; ``redemption``), checked by
``ledger verify`` (``verify_requests``).

The agency is told by a ``credit_request`` notice (``agency_notices``), written in the
transaction that makes the request: it stays in the ledger until the agency took it.

Every function runs inside the ledger's write transaction (its write lock: SQLite's, or
PostgreSQL's advisory lock), so each check sees every request made before it.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from career_relay.errors import (
    CreditRequestOpen,
    CreditRequestSettled,
    NotTheAgencysRequest,
    UnknownCreditRequest,
)
from career_relay.ledger import chain as ledger_chain
from career_relay.ledger.credits import NoCreditAvailable
from career_relay.ledger.offers import View
from career_relay.ledger.verify_requests import AGENCY_BY
from career_relay.timestamps import stamp

#: The longest note kept (characters): a line for a person, never a document.
NOTE_MAX = 500
#: A notice's ``X-Career-Relay-Type`` (docs/agency-webhook.md).
CREDIT_REQUEST = "credit_request"
State = Literal["requested", "fulfilled", "cancelled"]
SETTLED_STATES = ("fulfilled", "cancelled")


@dataclass(frozen=True)
class CreditRequest:
    """A request with where it stands: its state, and when it was asked and settled."""

    id: str
    credit_id: str
    company: str
    agency: str
    round: int
    requested: str                 # UTC stamp
    by: str
    note: str
    state: State
    settled: str | None            # UTC stamp of fulfilled or cancelled
    settled_note: str

    def as_json(self) -> dict[str, Any]:
        return {"request_id": self.id, "credit_id": self.credit_id, "company": self.company,
                "agency": self.agency, "state": self.state, "requested": self.requested,
                "note": self.note, "settled": self.settled, "settled_note": self.settled_note}


_COLUMNS = ("r.id, r.credit_id, r.company, r.agency, r.round, r.created, r.by, r.note,"
            " s.state, s.created, s.note")
_SELECT = (f"SELECT {_COLUMNS} FROM credit_requests r"
           " LEFT JOIN credit_request_states s ON s.request_id = r.id")


def _of(row: Any) -> CreditRequest:
    rid, credit, company, agency, rnd, created, by, note, state, settled, settled_note = row
    return CreditRequest(str(rid), str(credit), str(company), str(agency), int(rnd),
                         str(created), str(by), str(note), state or "requested", settled,
                         settled_note or "")


def clean_note(note: str) -> str:
    """One line of at most ``NOTE_MAX`` characters: control characters become spaces."""
    flat = "".join(" " if ord(c) < 32 or 0x7F <= ord(c) < 0xA0 else c for c in note)
    return " ".join(flat.split())[:NOTE_MAX]


def _free_credit(conn: sqlite3.Connection, company: str, credit: str | None) -> tuple[str, int]:
    """(credit id, next round) of the credit to request: ``credit``, else the company's
    oldest unspent credit with no open request."""
    rows = conn.execute(
        "SELECT c.id, (SELECT COUNT(*) FROM credit_requests r WHERE r.credit_id = c.id),"
        " EXISTS (SELECT 1 FROM credit_requests r WHERE r.credit_id = c.id AND NOT EXISTS"
        "  (SELECT 1 FROM credit_request_states s WHERE s.request_id = r.id))"
        " FROM credits c WHERE c.company = ? AND NOT EXISTS"
        " (SELECT 1 FROM redemptions d WHERE d.credit_id = c.id) ORDER BY c.n",
        (company,)).fetchall()
    if credit is not None:
        rows = [r for r in rows if r[0] == credit]
        if not rows:
            raise NoCreditAvailable(f"{company} has no unspent credit {credit}")
    free = [r for r in rows if not r[2]]
    if not free:
        if rows:
            raise CreditRequestOpen(
                f"a request is already open for {'credit ' + credit if credit else 'every'}"
                f" unspent credit of {company} (see `career-relay credits requests`)")
        raise NoCreditAvailable(f"{company} has no free referral credit available")
    return str(free[0][0]), int(free[0][1]) + 1


def request(conn: sqlite3.Connection, company: str, company_name: str, agency: str, by: str,
            note: str, now: dt.datetime, new_id: Callable[[], str],
            credit: str | None = None) -> CreditRequest:
    """Ask ``agency`` for the referral a credit of ``company`` is worth; the request, and its
    notice to the agency queued in the same transaction."""
    credit_id, round_ = _free_credit(conn, company, credit)
    request_id, note, created = f"rq_{new_id()}", clean_note(note), stamp(now)
    seq = ledger_chain.append(conn, now, company, "credit_request", request_id, {
        "credit": credit_id, "agency": agency, "round": round_, "by": by, "note": note})
    conn.execute("INSERT INTO credit_requests (id, credit_id, company, agency, round, created,"
                 " by, note, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (request_id, credit_id, company, agency, round_, created, by, note, seq))
    # What the agency is told: the request, the company, the note; no candidate's data
    # (a credit counts forwards, but the agency knows those already, and needs none here).
    payload = {"type": CREDIT_REQUEST, "request_id": request_id, "credit_id": credit_id,
               "company": {"id": company, "name": company_name}, "agency": agency,
               "note": note, "requested": created}
    conn.execute("INSERT INTO agency_notices (id, agency, company, kind, created, payload,"
                 " next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (request_id, agency, company, CREDIT_REQUEST, created,
                  json.dumps(payload, ensure_ascii=False, sort_keys=True), created))
    return CreditRequest(request_id, credit_id, company, agency, round_, created, by, note,
                         "requested", None, "")


def settle(conn: sqlite3.Connection, request_id: str, agency: str, state: str, note: str,
           now: dt.datetime) -> CreditRequest:
    """The agency's answer: ``fulfilled`` (the credit is spent) or ``cancelled`` (freed)."""
    if state not in SETTLED_STATES:
        raise ValueError(f"a request is settled as fulfilled or cancelled, not {state!r}")
    row = conn.execute(f"{_SELECT} WHERE r.id = ?", (request_id,)).fetchone()
    if row is None:
        raise UnknownCreditRequest(f"no credit request {request_id}")
    found = _of(row)
    if found.agency != agency:
        raise NotTheAgencysRequest(f"no credit request {request_id} for agency {agency}")
    if found.state != "requested":
        raise CreditRequestSettled(f"credit request {request_id} is {found.state} already "
                                   f"({found.settled})")
    note, created = clean_note(note), stamp(now)
    seq = ledger_chain.append(conn, now, found.company, "credit_request_state", request_id,
                              {"state": state, "by": agency, "note": note})
    conn.execute("INSERT INTO credit_request_states (request_id, company, state, created, by,"
                 " note, entry) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (request_id, found.company, state, created, agency, note, seq))
    if state == "fulfilled":  # the referral was received: the credit is spent
        by = f"{AGENCY_BY}{agency}"
        spent = ledger_chain.append(conn, now, found.company, "redemption", found.credit_id,
                                    {"by": by, "note": request_id})
        conn.execute("INSERT INTO redemptions (credit_id, company, created, by, note, entry)"
                     " VALUES (?, ?, ?, ?, ?, ?)",
                     (found.credit_id, found.company, created, by, request_id, spent))
    return CreditRequest(found.id, found.credit_id, found.company, found.agency, found.round,
                         found.requested, found.by, found.note, state,  # type: ignore[arg-type]
                         created, note)


class Referrals(View):
    """The free referral requests over one open ledger (the CLI's, the admin pages' and the
    agency API's way in)."""

    def request(self, company: str, agency: str, by: str, note: str = "", *,
                company_name: str = "", credit: str | None = None) -> CreditRequest:
        with self.ledger.write() as conn:
            return request(conn, company, company_name or company, agency, by, note,
                           self.ledger.now(), self.ledger.new_id, credit)

    def requests(self, company: str | None = None) -> list[CreditRequest]:
        """Every request (of ``company``), in the order they were made (their entries')."""
        where, params = ("WHERE r.company = ?", (company,)) if company else ("", ())
        with self.ledger.read() as conn:
            rows = conn.execute(f"{_SELECT} {where} ORDER BY r.entry", params)
            return [_of(r) for r in rows.fetchall()]

    def request_of(self, request_id: str) -> CreditRequest | None:
        with self.ledger.read() as conn:
            row = conn.execute(f"{_SELECT} WHERE r.id = ?", (request_id,)).fetchone()
        return None if row is None else _of(row)

    def requests_for_agency(self, agency: str, *, state: State | None = None,
                            after: str | None = None, limit: int = 100) -> list[CreditRequest]:
        """The requests addressed to ``agency`` in the order they were made (its API's list),
        through ``credit_requests_agency``: only those in ``state`` if given, only those after the
        request ``after`` (a cursor: a request id of this agency's, else
        ``UnknownCreditRequest``)."""
        sql, params = f"{_SELECT} WHERE r.agency = ?", [agency]
        with self.ledger.read() as conn:
            if after is not None:
                mark = conn.execute("SELECT entry FROM credit_requests WHERE id = ?"
                                    " AND agency = ?", (after, agency)).fetchone()
                if mark is None:
                    raise UnknownCreditRequest(f"no credit request {after} for agency {agency}")
                sql += " AND r.entry > ?"
                params.append(mark[0])
            if state == "requested":
                sql += " AND s.state IS NULL"
            elif state is not None:
                sql += " AND s.state = ?"
                params.append(state)
            rows = conn.execute(f"{sql} ORDER BY r.entry LIMIT ?", (*params, limit))
            return [_of(r) for r in rows.fetchall()]

    def settle_request(self, request_id: str, agency: str, state: str,
                       note: str = "") -> CreditRequest:
        """``settle`` in a transaction of its own: ``UnknownCreditRequest`` (none, or
        ``NotTheAgencysRequest``: another agency's), ``CreditRequestSettled``."""
        with self.ledger.write() as conn:
            return settle(conn, request_id, agency, state, note, self.ledger.now())

