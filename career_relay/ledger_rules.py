"""The ledger's rules (SPEC 8): qualified forwards, credits, redemptions, verification.

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
import hashlib
import hmac
import json
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from career_relay import ledger_chain
from career_relay.errors import UserError
from career_relay.ledger import Ledger
from career_relay.ledger_chain import Problem
from career_relay.settings_table import Settings


class NoCreditAvailable(UserError):
    """A redemption with no credit left to redeem."""


@dataclass(frozen=True)
class Rules:
    credit_every: int = 10
    domains: Mapping[str, frozenset[str]] = field(default_factory=dict)
    hash_key: bytes = b"career-relay"

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        keys = settings.secrets.signing_keys
        key = settings.secrets.hash_key or (keys[-1] if keys else "")
        return cls(settings.ledger.credit_every,
                   {c.id: frozenset(c.domains) for c in settings.companies},
                   key.encode("utf-8"))

    def candidate(self, address: str) -> str:
        """The keyed hash that stands for a candidate (SPEC 9: it outlives the address)."""
        normal = address.strip().lower()
        return hmac.new(self.hash_key, normal.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def own(self, company: str, address: str) -> bool:
        domain = address.rpartition("@")[2].strip().lower()
        return domain in self.domains.get(company, frozenset())


def _random_id() -> str:
    return secrets.token_urlsafe(9)


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- entries written with the consent tables ------------------------------------------------


def record_receipt(conn: sqlite3.Connection, receipt_id: str, now: dt.datetime) -> None:
    cursor = conn.execute("SELECT * FROM receipts WHERE id = ?", (receipt_id,))
    row = cursor.fetchone()
    r = dict(zip([d[0] for d in cursor.description], row, strict=True))
    ledger_chain.append(conn, now, r["company"], "receipt", receipt_id, {
        "offer": r["offer_id"], "decision": r["decision"], "review": r["review"],
        "digest": ledger_chain.row_digest(row)})


def record_review(conn: sqlite3.Connection, receipt_id: str, company: str, verdict: str,
                  by: str, now: dt.datetime) -> None:
    ledger_chain.append(conn, now, company, "review", receipt_id,
                        {"verdict": verdict, "by": by})


def record_delivery(conn: sqlite3.Connection, rules: Rules, forward_id: str,
                    now: dt.datetime, new_id: Callable[[], str] = _random_id) -> None:
    """The agency took a forward: the provision record, and for a consent its qualification."""
    found = conn.execute(
        "SELECT f.kind, f.company, f.receipt_id, f.offer_id, r.decision, r.review, r.data_items,"
        " r.agency, (SELECT decision FROM reviews v WHERE v.receipt_id = r.id),"
        " (SELECT data FROM profiles p WHERE p.receipt_id = r.id), o.recipient, o.candidate"
        " FROM forwards f JOIN receipts r ON r.id = f.receipt_id"
        " JOIN offers o ON o.id = f.offer_id WHERE f.id = ?", (forward_id,)).fetchone()
    if found is None:
        return
    (kind, company, receipt_id, offer_id, decision, review, items, agency, verdict, profile,
     recipient, erased_as) = found
    typed = json.loads(profile).get("email", recipient) if profile else recipient
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
    _qualify(conn, rules, company, forward_id, candidate, now, new_id)


def _qualify(conn: sqlite3.Connection, rules: Rules, company: str, forward_id: str,
             candidate: str, now: dt.datetime, new_id: Callable[[], str]) -> None:
    (n,) = conn.execute("SELECT COUNT(*) + 1 FROM qualified WHERE company = ?",
                        (company,)).fetchone()
    seq = ledger_chain.append(conn, now, company, "qualified", forward_id,
                              {"n": n, "candidate": candidate})
    conn.execute("INSERT INTO qualified (forward_id, company, candidate, n, created, entry)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 (forward_id, company, candidate, n, _stamp(now), seq))
    if n % rules.credit_every:
        return
    counted = [str(r[0]) for r in conn.execute(
        "SELECT forward_id FROM qualified WHERE company = ? AND n > ? ORDER BY n",
        (company, n - rules.credit_every))]
    credit_n = n // rules.credit_every
    credit_id = f"cr_{new_id()}"
    seq = ledger_chain.append(conn, now, company, "credit", credit_id,
                              {"n": credit_n, "forwards": counted})
    conn.execute("INSERT INTO credits (id, company, n, created, forwards, entry)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 (credit_id, company, credit_n, _stamp(now), json.dumps(counted), seq))


def redeem(conn: sqlite3.Connection, company: str, by: str, note: str,
           now: dt.datetime) -> str:
    """Use the company's oldest unused credit; its id.  ``NoCreditAvailable`` if none."""
    found = conn.execute(
        "SELECT id FROM credits c WHERE company = ? AND NOT EXISTS"
        " (SELECT 1 FROM redemptions r WHERE r.credit_id = c.id) ORDER BY n LIMIT 1",
        (company,)).fetchone()
    if found is None:
        raise NoCreditAvailable(f"{company} has no free referral credit available")
    credit_id = str(found[0])
    seq = ledger_chain.append(conn, now, company, "redemption", credit_id,
                              {"by": by, "note": note})
    conn.execute("INSERT INTO redemptions (credit_id, company, created, by, note, entry)"
                 " VALUES (?, ?, ?, ?, ?, ?)", (credit_id, company, _stamp(now), by, note, seq))
    return credit_id


# -- verification ---------------------------------------------------------------------------


def verify(conn: sqlite3.Connection) -> tuple[int, Problem | None]:
    """The chain, then every table row an entry vouches for (SPEC 8 ``ledger verify``)."""
    count, problem = ledger_chain.verify_chain(conn)
    if problem is not None:
        return count, problem
    checks = (_receipts_agree, _reviews_agree, _qualified_agree, _credits_agree,
              _redemptions_agree)
    for check in checks:
        problem = check(conn)
        if problem is not None:
            return count, problem
    return count, None


def _entries(conn: sqlite3.Connection, kind: str
             ) -> dict[str, tuple[int, str, str, dict[str, Any]]]:
    """ref -> (seq, company, created, body) of every entry of ``kind``."""
    return {str(ref): (int(seq), company, created, json.loads(body))
            for seq, ref, company, created, body in conn.execute(
                "SELECT seq, ref, company, created, body FROM entries WHERE kind = ?", (kind,))}


def _receipts_agree(conn: sqlite3.Connection) -> Problem | None:
    entries = _entries(conn, "receipt")
    for row in conn.execute("SELECT * FROM receipts ORDER BY rowid"):
        rid = str(row[0])
        if rid not in entries:
            return Problem(0, f"receipt {rid} has no ledger entry (added outside the ledger)")
        seq, _, _, body = entries.pop(rid)
        if body["digest"] != ledger_chain.row_digest(row):
            return Problem(seq, f"receipt {rid} was altered after it was recorded")
    for rid, (seq, _, _, _) in entries.items():
        return Problem(seq, f"receipt {rid} was deleted")
    return None


def _agree(conn: sqlite3.Connection, kind: str, what: str, sql: str) -> Problem | None:
    """Each row of ``sql`` -- (ref, company, created, entry seq, body as its entry has it) --
    against its entry: same seq, company, time and body; and no entry without its row."""
    entries = _entries(conn, kind)
    for ref, company, created, entry, body in _rows(conn, sql):
        found = entries.pop(ref, None)
        if found is None:
            return Problem(entry, f"{what} {ref} has no ledger entry")
        if found != (entry, company, created, body):
            return Problem(found[0], f"{what} {ref} does not match its entry")
    for ref, (seq, _, _, _) in entries.items():
        return Problem(seq, f"{what} {ref} was deleted")
    return None


def _rows(conn: sqlite3.Connection, sql: str
          ) -> list[tuple[str, str, str, int, dict[str, Any]]]:
    return [(str(ref), company, created, int(entry), json.loads(body))
            for ref, company, created, entry, body in conn.execute(sql)]


def _qualified_agree(conn: sqlite3.Connection) -> Problem | None:
    return _agree(conn, "qualified", "qualified forward",
                  "SELECT forward_id, company, created, entry,"
                  " json_object('candidate', candidate, 'n', n) FROM qualified")


def _credits_agree(conn: sqlite3.Connection) -> Problem | None:
    return _agree(conn, "credit", "credit",
                  "SELECT id, company, created, entry,"
                  " json_object('forwards', json(forwards), 'n', n) FROM credits")


def _redemptions_agree(conn: sqlite3.Connection) -> Problem | None:
    return _agree(conn, "redemption", "redemption of credit",
                  "SELECT credit_id, company, created, entry,"
                  " json_object('by', by, 'note', note) FROM redemptions")


def _reviews_agree(conn: sqlite3.Connection) -> Problem | None:
    # Reviews name no entry; the entry's seq is taken as it is.
    entries = _entries(conn, "review")
    for receipt_id, company, created, verdict, by in conn.execute(
            "SELECT v.receipt_id, r.company, v.created, v.decision, v.by FROM reviews v"
            " JOIN receipts r ON r.id = v.receipt_id"):
        found = entries.pop(receipt_id, None)
        if found is None:
            return Problem(0, f"review of {receipt_id} has no ledger entry")
        seq, e_company, e_created, e_body = found
        if (e_company, e_created, e_body) != (company, created, {"verdict": verdict, "by": by}):
            return Problem(seq, f"review of {receipt_id} does not match its entry")
    for ref, (seq, _, _, _) in entries.items():
        return Problem(seq, f"review of {ref} was deleted")
    return None


class Book:
    """Credits and verification over one open ledger (the CLI's and admin pages' way in)."""

    def __init__(self, ledger: Ledger, rules: Rules) -> None:
        self.ledger = ledger
        self.rules = rules

    def redeem(self, company: str, by: str, note: str = "") -> str:
        with self.ledger.write() as conn:
            return redeem(conn, company, by, note, self.ledger.now())

    def verify(self) -> tuple[int, Problem | None]:
        with self.ledger.read() as conn:
            conn.execute("BEGIN")  # one snapshot: a writer may append meanwhile
            try:
                return verify(conn)
            finally:
                conn.execute("COMMIT")

    def head(self) -> str:
        """The last entry's hash: record it elsewhere to anchor the chain."""
        with self.ledger.read() as conn:
            row = conn.execute("SELECT hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return ledger_chain.GENESIS if row is None else str(row[0])

    def credits(self, company: str) -> list[dict[str, Any]]:
        with self.ledger.read() as conn:
            rows = conn.execute(
                "SELECT c.id, c.n, c.created, c.forwards, r.created, r.by, r.note"
                " FROM credits c LEFT JOIN redemptions r ON r.credit_id = c.id"
                " WHERE c.company = ? ORDER BY c.n", (company,)).fetchall()
        return [{"id": cid, "n": n, "created": created, "forwards": json.loads(forwards),
                 "redeemed": redeemed, "redeemed_by": by, "note": note}
                for cid, n, created, forwards, redeemed, by, note in rows]
