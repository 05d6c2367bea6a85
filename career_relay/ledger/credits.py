"""Credits (SPEC 8): the entries written with the consent tables, qualified forwards,
credits minted (``mint_credit``), redemptions.

A consent forward **qualifies** when, at the moment the agency took it:
the decision was an accept; it is the company's first qualified forward for
that candidate (by a keyed hash of the address the offer was made to, never
the one typed on the form, so erasure leaves the count intact and typed
addresses cannot multiply one person); neither address is in the company's
own domains; and the
decision was not held as automated, or an admin approved it.  Every
``credit_every``-th qualified forward of a company mints a credit that
names the forwards it counts.  A later withdrawal takes nothing back.

Everything happens in the transaction that records the delivery, under
SQLite's write lock, and ``UNIQUE (company, n)`` on ``qualified`` and
``credits`` makes a second mint of the same credit impossible even if two
processes raced past every check.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import Callable
from typing import Any

from career_relay.errors import UserError
from career_relay.ledger import chain as ledger_chain
from career_relay.ledger.chain import RECEIPT_COLUMNS, Problem
from career_relay.ledger.offers import View
from career_relay.ledger.rules import Rules
from career_relay.ledger.verify import verify_ledger
from career_relay.timestamps import stamp


class NoCreditAvailable(UserError):
    """A redemption with no credit left to redeem."""


def _random_id() -> str:
    return secrets.token_urlsafe(9)


# -- entries written with the consent tables ------------------------------------------------


def record_receipt(conn: sqlite3.Connection, receipt_id: str, now: dt.datetime) -> None:
    row = conn.execute(f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE id = ?",
                       (receipt_id,)).fetchone()
    r = dict(zip(RECEIPT_COLUMNS.split(", "), row, strict=True))
    ledger_chain.append(conn, now, r["company"], "receipt", receipt_id, {
        "offer": r["offer_id"], "decision": r["decision"], "review": r["review"],
        "digest": ledger_chain.row_digest(row)})


def record_review(conn: sqlite3.Connection, receipt_id: str, company: str, verdict: str,
                  by: str, now: dt.datetime) -> None:
    ledger_chain.append(conn, now, company, "review", receipt_id,
                        {"verdict": verdict, "by": by})


#: What ``record_delivery`` and ``qualify_registered`` read of a forward, its receipt, its offer.
_FACTS = ("SELECT f.kind, f.company, f.receipt_id, f.offer_id, r.decision, r.review, r.data_items,"
          " r.agency, (SELECT decision FROM reviews v WHERE v.receipt_id = r.id),"
          " (SELECT data FROM profiles p WHERE p.receipt_id = r.id), o.recipient, o.candidate"
          " FROM forwards f JOIN receipts r ON r.id = f.receipt_id"
          " JOIN offers o ON o.id = f.offer_id WHERE f.id = ?")
#: The outcomes that say the agency registered the candidate (``ledger.qualify_on``).
REGISTERED = ("registered", "interviewing", "placed", "not_placed")


def record_delivery(conn: sqlite3.Connection, rules: Rules, forward_id: str,
                    now: dt.datetime, new_id: Callable[[], str] = _random_id) -> None:
    """The agency took a forward: the provision record, and for a consent its qualification
    (with ``qualify_on = "registered"``, only if the agency reported it registered already:
    an agency that pulls may report before the webhook's delivery is recorded)."""
    found = conn.execute(_FACTS, (forward_id,)).fetchone()
    if found is None:
        return
    (kind, company, receipt_id, offer_id, _, _, items, agency, _, _, recipient,
     erased_as) = found
    # The candidate is the address the offer was made to (SPEC 8), never the one typed on
    # the form: ten rejections to one mailbox, accepted with ten typed addresses, are one
    # candidate and qualify once.  Retention keeps its keyed hash once the address goes.
    candidate = erased_as or rules.candidate(recipient)
    if kind != "consent":
        ledger_chain.append(conn, now, company, "notice_sent", forward_id,
                            {"kind": kind, "receipt": receipt_id, "candidate": candidate})
        return
    # The provision record (APPI art. 29): date, recipient, the person, the items, the consent.
    ledger_chain.append(conn, now, company, "provision", forward_id, {
        "receipt": receipt_id, "offer": offer_id, "agency": agency, "candidate": candidate,
        "items": json.loads(items)})
    if rules.qualify_on == "registered" and not _registered(conn, forward_id):
        return  # it qualifies when the agency reports it (``qualify_registered``)
    _qualify(conn, rules, forward_id, found, now, new_id)


def qualify_registered(conn: sqlite3.Connection, rules: Rules, forward_id: str,
                       now: dt.datetime, new_id: Callable[[], str] = _random_id) -> None:
    """The agency reported a forward registered (or later: ``REGISTERED``): with
    ``qualify_on = "registered"``, a delivered consent qualifies now.  Called in the
    transaction that records the outcome; a second outcome finds it qualified already."""
    if rules.qualify_on != "registered" or not conn.execute(
            "SELECT 1 FROM forward_events WHERE forward_id = ? AND event = 'delivered'",
            (forward_id,)).fetchone():
        return  # not received by the agency yet: its delivery will qualify it
    found = conn.execute(_FACTS, (forward_id,)).fetchone()
    if found is not None and found[0] == "consent":
        _qualify(conn, rules, forward_id, found, now, new_id)


def _registered(conn: sqlite3.Connection, forward_id: str) -> bool:
    return conn.execute(
        f"SELECT 1 FROM outcomes WHERE forward_id = ? AND status IN"
        f" ({', '.join('?' for _ in REGISTERED)})", (forward_id, *REGISTERED)
    ).fetchone() is not None


def _qualify(conn: sqlite3.Connection, rules: Rules, forward_id: str, found: Any,
             now: dt.datetime, new_id: Callable[[], str]) -> None:
    """The qualification of a consent the agency received (SPEC 8), if it qualifies."""
    (_, company, receipt_id, _, decision, review, _, _, verdict, profile, recipient,
     erased_as) = found
    typed = json.loads(profile).get("email", recipient) if profile else recipient
    candidate = erased_as or rules.candidate(recipient)
    automated = review is not None and verdict != "approve"
    if decision != "accept" or automated or rules.own(company, recipient) or \
            rules.own(company, typed):  # a company address on either side earns nothing
        return
    if conn.execute(  # withdrawn while it was being sent: delivered, but never a credit
            "SELECT 1 FROM receipts later, receipts r WHERE r.id = ?"
            " AND later.offer_id = r.offer_id AND later.rowid > r.rowid"
            " AND later.decision IN ('withdraw', 'erase')", (receipt_id,)).fetchone():
        return
    if conn.execute("SELECT 1 FROM qualified WHERE company = ? AND candidate = ?",
                    (company, candidate)).fetchone():
        return
    mint_qualified(conn, rules, company, forward_id, candidate, now, new_id)


def mint_qualified(conn: sqlite3.Connection, rules: Rules, company: str, forward_id: str,
                   candidate: str, now: dt.datetime, new_id: Callable[[], str]) -> None:
    """The company's next qualified forward, and when it completes ``credit_every`` of
    them, its credit (``mint_credit``).  ``UNIQUE (company, n)`` on both tables makes a
    second one of either impossible, whoever races."""
    (n,) = conn.execute("SELECT COUNT(*) + 1 FROM qualified WHERE company = ?",
                        (company,)).fetchone()
    seq = ledger_chain.append(conn, now, company, "qualified", forward_id,
                              {"n": n, "candidate": candidate})
    conn.execute("INSERT INTO qualified (forward_id, company, candidate, n, created, entry)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 (forward_id, company, candidate, n, stamp(now), seq))
    if n % rules.credit_every == 0:
        mint_credit(conn, rules, company, n // rules.credit_every, now, new_id)


def mint_credit(conn: sqlite3.Connection, rules: Rules, company: str, credit_n: int,
                now: dt.datetime, new_id: Callable[[], str]) -> str:
    """Credit ``credit_n`` of ``company``: it counts the ``credit_every`` qualified forwards
    that completed it, names them, and is chained; its id."""
    last = credit_n * rules.credit_every
    counted = [str(r[0]) for r in conn.execute(
        "SELECT forward_id FROM qualified WHERE company = ? AND n > ? AND n <= ? ORDER BY n",
        (company, last - rules.credit_every, last))]
    credit_id = f"cr_{new_id()}"
    seq = ledger_chain.append(conn, now, company, "credit", credit_id,
                              {"n": credit_n, "forwards": counted})
    conn.execute("INSERT INTO credits (id, company, n, created, forwards, entry)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 (credit_id, company, credit_n, stamp(now), json.dumps(counted), seq))
    return credit_id


def redeem(conn: sqlite3.Connection, company: str, by: str, note: str,
           now: dt.datetime) -> str:
    """Use the company's oldest unused credit; its id.  ``NoCreditAvailable`` if none.

    A credit asked of the agency (an open request, ``credit_requests``) is not used: the
    agency may still fulfil it, and a credit is spent once."""
    if by.startswith("agency:"):  # the name a fulfilled request spends a credit in
        raise UserError(f"a redemption is not recorded in an agency's name ({by})")
    found = conn.execute(
        "SELECT id FROM credits c WHERE company = ? AND NOT EXISTS"
        " (SELECT 1 FROM redemptions r WHERE r.credit_id = c.id) AND NOT EXISTS"
        " (SELECT 1 FROM credit_requests q WHERE q.credit_id = c.id AND NOT EXISTS"
        "  (SELECT 1 FROM credit_request_states s WHERE s.request_id = q.id))"
        " ORDER BY n LIMIT 1", (company,)).fetchone()
    if found is None:
        (held,) = conn.execute(
            "SELECT COUNT(*) FROM credit_requests q WHERE q.company = ? AND NOT EXISTS"
            " (SELECT 1 FROM credit_request_states s WHERE s.request_id = q.id)",
            (company,)).fetchone()
        why = f" ({held} asked of the agency: `credits requests`)" if held else ""
        raise NoCreditAvailable(f"{company} has no free referral credit available{why}")
    credit_id = str(found[0])
    seq = ledger_chain.append(conn, now, company, "redemption", credit_id,
                              {"by": by, "note": note})
    conn.execute("INSERT INTO redemptions (credit_id, company, created, by, note, entry)"
                 " VALUES (?, ?, ?, ?, ?, ?)", (credit_id, company, stamp(now), by, note, seq))
    return credit_id


class Book(View):
    """Credits and verification over one open ledger (the CLI's and admin pages' way in)."""

    def redeem(self, company: str, by: str, note: str = "") -> str:
        with self.ledger.write() as conn:
            return redeem(conn, company, by, note, self.ledger.now())

    def verify(self, head: tuple[int, str] | None = None) -> tuple[int, Problem | None]:
        """``career_relay.ledger.verify.verify_ledger``."""
        return verify_ledger(self.ledger, head, self.rules.hash_key)

    def head(self) -> str:
        """``<n>:<hash>`` of the last entry: what the head file holds and the agency receives."""
        return self.ledger.head_text()

    def credits(self, company: str) -> list[dict[str, Any]]:
        with self.ledger.read() as conn:
            rows = conn.execute(
                "SELECT c.id, c.n, c.created, c.forwards, r.created, r.by, r.note"
                " FROM credits c LEFT JOIN redemptions r ON r.credit_id = c.id"
                " WHERE c.company = ? ORDER BY c.n", (company,)).fetchall()
        return [{"id": cid, "n": n, "created": created, "forwards": json.loads(forwards),
                 "redeemed": redeemed, "redeemed_by": by, "note": note}
                for cid, n, created, forwards, redeemed, by, note in rows]
