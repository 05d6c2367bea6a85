"""The ledger's rows as the admin pages list and export them (issue 5): SQL only.

- ``forwards``: each forward of a company with where it stands, and the
  candidate's name and email only while the site still holds them (erasure
  leaves them out: the profile is NULL).
- ``provisions``: the company's record of each provision of personal data to
  the agency (APPI art. 29): the ledger's ``provision`` entries (date,
  recipient, the keyed candidate, the data items, the receipt) joined to the
  receipt (notice version), the offer (the address the link was sent to) and
  the profile (the name, where not erased).
- ``held``: decisions held for review with no verdict yet.
- ``offer_state``: one offer's state for the company API (SPEC 10).

Every function reads one company's rows through an index that starts with
the company (``forwards_company``, ``entries_company``, ``receipts_company``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from career_relay.ledger.offers import Ledger
from career_relay.ledger.reports import Period
from career_relay.timestamps import parse_stamp


def _profile(data: str | None) -> dict[str, Any]:
    parsed = json.loads(data) if data else {}
    return parsed if isinstance(parsed, dict) else {}


@dataclass(frozen=True)
class ForwardRow:
    id: str
    created: dt.datetime
    kind: str                      # consent | withdrawal | erasure
    status: str                    # delivered | cancelled | held | served | pending
    delivered: dt.datetime | None
    attempts: int
    name: str | None               # None once erased (or never given)
    email: str | None
    items: tuple[str, ...]
    receipt_id: str
    notice_version: str | None
    #: The agency it goes to (``forwards.agency``): the admin pages say "to be pulled" for
    #: a pending forward of an agency that pulls, not "to be sent".
    agency: str = "default"


_FORWARDS = (
    "SELECT f.id, f.created, f.kind, f.receipt_id, r.data_items, r.notice_version,"
    " (SELECT MIN(e.created) FROM forward_events e WHERE e.forward_id = f.id"
    "  AND e.event = 'delivered'),"
    " EXISTS (SELECT 1 FROM forward_events e WHERE e.forward_id = f.id"
    "  AND e.event = 'cancelled'),"
    " o.forward_id IS NOT NULL, COALESCE(o.held, 0), COALESCE(o.attempts, 0), f.agency,"
    " o.served,"
    # The candidate as this forward carried them: its own receipt's profile (a consent),
    # else the accept before it (a withdrawal or erasure names no one); if still held.
    " COALESCE((SELECT p.data FROM profiles p WHERE p.receipt_id = f.receipt_id),"
    "  (SELECT p.data FROM receipts r2 JOIN profiles p ON p.receipt_id = r2.id"
    "   WHERE r2.offer_id = f.offer_id AND r2.rowid < r.rowid AND p.data IS NOT NULL"
    "   ORDER BY r2.rowid DESC LIMIT 1))"
    " FROM forwards f JOIN receipts r ON r.id = f.receipt_id"
    " LEFT JOIN outbox o ON o.forward_id = f.id"
    " WHERE f.company = :company AND f.created >= :start AND f.created < :end"
    " ORDER BY f.created DESC, f.rowid DESC")


def forwards(ledger: Ledger, company: str, when: Period, limit: int = -1) -> list[ForwardRow]:
    """The company's forwards of the period, newest first (``limit`` -1: all)."""
    with ledger.read() as conn:
        cursor = conn.execute(_FORWARDS, {"company": company, **when.params})
        rows = cursor.fetchall() if limit < 0 else cursor.fetchmany(limit)
    out = []
    for (fid, created, kind, receipt_id, items, version, delivered, cancelled, queued, held,
         attempts, agency, served, data) in rows:
        # served: given in a page to an agency that pulls, waiting for its acknowledgement.
        status = ("delivered" if delivered else "cancelled" if cancelled
                  else "held" if queued and held else "served" if queued and served
                  else "pending")
        profile = _profile(data)
        out.append(ForwardRow(
            fid, parse_stamp(created), kind, status,
            None if delivered is None else parse_stamp(delivered), int(attempts),
            profile.get("name"), profile.get("email"), tuple(json.loads(items)), receipt_id,
            version, str(agency)))
    return out


@dataclass(frozen=True)
class ProvisionRow:
    delivered: dt.datetime         # the date of the provision
    forward_id: str
    recipient: str                 # the agency's legal name
    sent_to: str                   # the address the offer was sent to (as the ledger holds it)
    name: str | None               # the name the candidate gave; None once erased
    email: str | None              # the address the candidate gave; None once erased
    items: tuple[str, ...]
    receipt_id: str
    notice_version: str | None
    consented: dt.datetime


# The entry's body is read here, in Python: json_extract is SQLite's, and PostgreSQL's
# JSON operators need a json column (entries.body is text).  Its receipt is reached
# through its forward (the entry's ref), whose receipt_id it was written from in the same
# transaction and which no UPDATE may change (0008's triggers): the same receipt.
_PROVISIONS = (
    "SELECT e.created, e.ref, e.body, r.id, r.notice_version, r.created, o.recipient, p.data"
    " FROM entries e JOIN forwards f ON f.id = e.ref JOIN receipts r ON r.id = f.receipt_id"
    " JOIN offers o ON o.id = r.offer_id LEFT JOIN profiles p ON p.receipt_id = r.id"
    " WHERE e.company = :company AND e.kind = 'provision'"
    " AND e.created >= :start AND e.created < :end ORDER BY e.seq")


def provisions(ledger: Ledger, company: str, when: Period) -> list[ProvisionRow]:
    """The company's provision record for the period, oldest first."""
    with ledger.read() as conn:
        rows = conn.execute(_PROVISIONS, {"company": company, **when.params}).fetchall()
    out = []
    for created, ref, body, rid, version, consented, recipient, data in rows:
        profile, entry = _profile(data), json.loads(body)
        out.append(ProvisionRow(parse_stamp(created), ref, entry.get("agency"), recipient,
                                profile.get("name"), profile.get("email"),
                                tuple(entry.get("items") or ()), rid, version,
                                parse_stamp(consented)))
    return out


@dataclass(frozen=True)
class HeldRow:
    receipt_id: str
    company: str
    created: dt.datetime
    reason: str                    # review_window | scanner | link | api-network
    offer_sent: dt.datetime
    user_agent: str
    network: str
    name: str | None
    email: str | None


def held(ledger: Ledger, company: str) -> list[HeldRow]:
    """The company's decisions held for review with no verdict yet, oldest first."""
    with ledger.read() as conn:
        rows = conn.execute(
            "SELECT r.id, r.company, r.created, r.review, o.created, r.user_agent, r.network,"
            " p.data FROM receipts r JOIN offers o ON o.id = r.offer_id"
            " LEFT JOIN profiles p ON p.receipt_id = r.id"
            " WHERE r.company = ? AND r.review IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.receipt_id = r.id)"
            " ORDER BY r.created, r.rowid", (company,)).fetchall()
    out = []
    for rid, comp, created, reason, sent, ua, network, data in rows:
        profile = _profile(data)
        out.append(HeldRow(rid, comp, parse_stamp(created), reason, parse_stamp(sent), ua,
                           network, profile.get("name"), profile.get("email")))
    return out


def receipt_company(ledger: Ledger, receipt_id: str) -> str | None:
    with ledger.read() as conn:
        row = conn.execute("SELECT company FROM receipts WHERE id = ?",
                           (receipt_id,)).fetchone()
    return None if row is None else str(row[0])


@dataclass(frozen=True)
class OfferState:
    """An offer as the company API shows it (SPEC 10): state only, no personal data."""

    id: str
    company: str
    source: str
    created: dt.datetime
    viewed: bool
    decision: str | None           # the latest: accept | decline | withdraw | erase
    qualified: bool


def offer_state(ledger: Ledger, offer_id: str) -> OfferState | None:
    """The offer's state, through the indexes that start with the offer's id."""
    with ledger.read() as conn:
        row = conn.execute(
            "SELECT o.id, o.company, o.source, o.created,"
            " EXISTS (SELECT 1 FROM offer_views v WHERE v.offer_id = o.id),"
            " (SELECT r.decision FROM receipts r WHERE r.offer_id = o.id"
            "  ORDER BY r.rowid DESC LIMIT 1),"
            " EXISTS (SELECT 1 FROM forwards f JOIN qualified q ON q.forward_id = f.id"
            "  WHERE f.offer_id = o.id)"
            " FROM offers o WHERE o.id = ?", (offer_id,)).fetchone()
    if row is None:
        return None
    oid, company, source, created, viewed, decision, qualified = row
    return OfferState(str(oid), str(company), str(source), parse_stamp(created), bool(viewed),
                      decision, bool(qualified))
