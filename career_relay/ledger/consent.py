"""The consent side of the ledger: views, notices, receipts, profiles, reviews.

SQL only; the rules (what a decision creates, what erasure keeps) live in
``career_relay.consent``.  Every multi-row change here is one transaction,
so a receipt never exists without its forward, nor a forward without its
place in the outbox (SPEC 7: "accepting creates a forward in an outbox in
the same transaction").

The outbox the decisions fill is ``career_relay.ledger.forwards``.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from career_relay.errors import DecisionRaced
from career_relay.ledger import chain as ledger_chain
from career_relay.ledger import credits as ledger_credits
from career_relay.ledger.chain import RECEIPT_COLUMNS
from career_relay.ledger.forwards import Forward, Outbox, settle
from career_relay.ledger.offers import Ledger
from career_relay.ledger.rules import Rules
from career_relay.timestamps import parse_stamp, stamp

#: ``record_decision(after=...)`` not given: no check of the decision it was made on.
UNCHECKED = object()

Decision = Literal["accept", "decline", "withdraw", "erase"]


@dataclass(frozen=True)
class Receipt:
    id: str
    offer_id: str
    company: str
    agency: str
    decision: Decision
    created: dt.datetime
    notice_hash: str | None
    notice_version: str | None
    locale: str
    purposes: tuple[str, ...]
    data_items: tuple[str, ...]
    user_agent: str
    network: str
    review: str | None = None


class ConsentLedger(Outbox):
    """The consent tables of one open ``Ledger`` (sharing its connections), and its outbox."""

    def __init__(self, ledger: Ledger, rules: Rules | None = None) -> None:
        super().__init__(ledger, rules)
        self._viewed: set[str] = set()

    # -- views and notices ----------------------------------------------------------------

    def record_view(self, offer_id: str) -> None:
        """The first view of an offer's page (SPEC 8 ``views``); later views write nothing.

        The set in memory spares the disk a write per page view: mail
        scanners and reloads fetch the same page again and again.
        """
        if offer_id in self._viewed:
            return
        with self.ledger.write() as conn:
            conn.execute("INSERT INTO offer_views (offer_id, first_viewed) VALUES (?, ?)"
                         " ON CONFLICT (offer_id) DO NOTHING",
                         (offer_id, stamp(self.ledger.now())))
        self._viewed.add(offer_id)

    def first_viewed(self, offer_id: str) -> dt.datetime | None:
        with self.ledger.read() as conn:
            row = conn.execute("SELECT first_viewed FROM offer_views WHERE offer_id = ?",
                               (offer_id,)).fetchone()
        return None if row is None else parse_stamp(row[0])

    def record_notice(self, digest: str, version: str, locale: str, company: str,
                      text: str) -> None:
        """Keep the exact notice text a receipt cites (once per distinct text)."""
        with self.ledger.write() as conn:
            conn.execute(
                "INSERT INTO notices (hash, version, locale, company, text, first_shown)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
                (digest, version, locale, company, text, stamp(self.ledger.now())))

    def notice(self, digest: str) -> tuple[str, str] | None:
        """(text, locale) of a notice recorded earlier."""
        with self.ledger.read() as conn:
            row = conn.execute("SELECT text, locale FROM notices WHERE hash = ?",
                               (digest,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    # -- decisions ------------------------------------------------------------------------

    def receipts(self, offer_id: str) -> list[Receipt]:
        """Every receipt of an offer, oldest first."""
        with self.ledger.read() as conn:
            rows = conn.execute(f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE offer_id = ?"
                                " ORDER BY rowid", (offer_id,)).fetchall()
        return [_receipt(r) for r in rows]

    def receipt(self, receipt_id: str) -> Receipt | None:
        with self.ledger.read() as conn:
            row = conn.execute(f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE id = ?",
                               (receipt_id,)).fetchone()
        return None if row is None else _receipt(row)

    def profile(self, receipt_id: str) -> dict[str, Any] | None:
        """What the candidate typed with this receipt; None when there was none or it was erased."""
        with self.ledger.read() as conn:
            row = conn.execute("SELECT data FROM profiles WHERE receipt_id = ?",
                               (receipt_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        data: dict[str, Any] = json.loads(row[0])
        return data

    def record_decision(
        self,
        receipt: Receipt,
        *,
        profile: dict[str, Any] | None = None,
        forward: Forward | None = None,
        cancel_pending_consent: bool = False,
        erase: bool = False,
        notice_text: str | None = None,
        after: object = UNCHECKED,
    ) -> list[str]:
        """One decision in one transaction: the receipt, its profile, its forward.

        ``cancel_pending_consent``: undelivered, unclaimed consent forwards of
        the offer are cancelled (withdrawal and erasure); not one a pulling agency was given
        in a page (``outbox.served``), which the notice follows instead.  ``erase``: every
        profile and forward payload of the offer is erased.  ``forward`` is
        written only if ``forward_needed`` still holds inside the transaction
        (it is built beforehand, outside the lock).  Returns the ids of the
        forwards cancelled.  ``notice_text``: the text the receipt's notice hash stands for,
        kept with it if the page did not record it already.  ``after``: the id of the
        offer's newest receipt when the decision was made (None: it had none); if another
        has been recorded since (a second site took the same form at once), nothing is
        written and ``DecisionRaced`` is raised, for the caller to decide again.
        """
        now = self.ledger.now()
        with self.ledger.write() as conn:
            if after is not UNCHECKED:
                newest = conn.execute("SELECT id FROM receipts WHERE offer_id = ?"
                                      " ORDER BY rowid DESC LIMIT 1",
                                      (receipt.offer_id,)).fetchone()
                if (None if newest is None else str(newest[0])) != after:
                    raise DecisionRaced(f"offer {receipt.offer_id} was decided meanwhile")
            if notice_text is not None and receipt.notice_hash is not None:
                conn.execute(
                    "INSERT INTO notices (hash, version, locale, company, text, first_shown)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
                    (receipt.notice_hash, receipt.notice_version, receipt.locale,
                     receipt.company, notice_text, stamp(now)))
            conn.execute(
                f"INSERT INTO receipts ({RECEIPT_COLUMNS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (receipt.id, receipt.offer_id, receipt.company, receipt.agency,
                 receipt.decision, stamp(receipt.created), receipt.notice_hash,
                 receipt.notice_version, receipt.locale, json.dumps(list(receipt.purposes)),
                 json.dumps(list(receipt.data_items)), receipt.user_agent, receipt.network,
                 receipt.review))
            ledger_credits.record_receipt(conn, receipt.id, now)
            if profile is not None:
                data = json.dumps(profile, ensure_ascii=False)
                conn.execute("INSERT INTO profiles (receipt_id, data) VALUES (?, ?)",
                             (receipt.id, data))
                # Chained by keyed hash: erasure (data NULL) leaves the entry true.
                ledger_chain.append(conn, now, receipt.company, "profile", receipt.id,
                                    {"data": ledger_chain.keyed(self.ledger.hash_key, data)})
            cancelled = (self._cancel_pending_consent(conn, receipt.offer_id, now)
                         if cancel_pending_consent else [])
            if forward is not None and (forward.kind == "consent"
                                        or self._reached_agency(conn, receipt.offer_id)):
                self._add_forward(conn, forward, held=receipt.review is not None, now=now)
            if erase:
                self._erase(conn, receipt.offer_id, now)
        return cancelled

    def _add_forward(self, conn: sqlite3.Connection, forward: Forward, *, held: bool,
                     now: dt.datetime) -> None:
        fixed = (forward.id, forward.offer_id, forward.receipt_id, forward.company, forward.kind,
                 stamp(forward.created))
        conn.execute(
            "INSERT INTO forwards (id, offer_id, receipt_id, company, kind, created, payload,"
            " agency) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*fixed, forward.payload, forward.agency))
        payload = (None if forward.payload is None
                   else ledger_chain.keyed(self.ledger.hash_key, forward.payload))
        ledger_chain.append(conn, now, forward.company, "forward", forward.id,
                            {"digest": ledger_chain.forward_digest(fixed, forward.agency),
                             "payload": payload})
        conn.execute("INSERT INTO outbox (forward_id, next_attempt, held) VALUES (?, ?, ?)",
                     (forward.id, stamp(now), int(held)))

    def _cancel_pending_consent(self, conn: sqlite3.Connection, offer_id: str,
                                now: dt.datetime) -> list[str]:
        rows = conn.execute(
            "SELECT o.forward_id FROM outbox o JOIN forwards f ON f.id = o.forward_id"
            " WHERE f.offer_id = ? AND f.kind = 'consent'"
            " AND (o.claimed_until IS NULL OR o.claimed_until < ?)"
            # Given in a page to an agency that pulls: it may have it, as a webhook may
            # have a claimed one; it stays, acknowledged or not, and the notice follows it.
            " AND o.served IS NULL",
            (offer_id, stamp(now))).fetchall()
        ids = [str(r[0]) for r in rows]
        for fid in ids:
            settle(conn, fid, "cancelled", "withdrawn before delivery", now)
        return ids

    @staticmethod
    def _reached_agency(conn: sqlite3.Connection, offer_id: str) -> bool:
        """Whether the agency has, or may have, a consent of the offer: delivered, still
        on its way, or tried before (a timed-out attempt may have been stored there)."""
        row = conn.execute(
            "SELECT 1 FROM forwards f WHERE f.offer_id = ? AND f.kind = 'consent' AND ("
            " EXISTS (SELECT 1 FROM outbox o WHERE o.forward_id = f.id)"
            " OR EXISTS (SELECT 1 FROM forward_events e WHERE e.forward_id = f.id"
            "            AND e.event IN ('delivered', 'failed'))) LIMIT 1",
            (offer_id,)).fetchone()
        return row is not None

    @staticmethod
    def _erase(conn: sqlite3.Connection, offer_id: str, now: dt.datetime) -> None:
        conn.execute(
            "UPDATE profiles SET data = NULL, erased = ? WHERE data IS NOT NULL AND receipt_id IN"
            " (SELECT id FROM receipts WHERE offer_id = ?)", (stamp(now), offer_id))
        # A consent forward still in flight keeps nothing either: if its attempt
        # fails, the worker finds no payload and cancels it (``next_due``).
        conn.execute("UPDATE forwards SET payload = NULL WHERE offer_id = ? AND kind = 'consent'",
                     (offer_id,))

    # -- reviews --------------------------------------------------------------------------

    def review(self, receipt_id: str, approve: bool, by: str) -> None:
        """An admin's verdict on a receipt held under review (issue 5 builds the pages).

        Approving releases its forward; rejecting cancels it.  A receipt is
        reviewed once: a second verdict raises ``sqlite3.IntegrityError``.
        """
        now = self.ledger.now()
        with self.ledger.write() as conn:
            verdict = "approve" if approve else "reject"
            conn.execute("INSERT INTO reviews (receipt_id, decision, by, created)"
                         " VALUES (?, ?, ?, ?)", (receipt_id, verdict, by, stamp(now)))
            (company,) = conn.execute("SELECT company FROM receipts WHERE id = ?",
                                      (receipt_id,)).fetchone()
            ledger_credits.record_review(conn, receipt_id, company, verdict, by, now)
            ids = [str(r[0]) for r in conn.execute(
                "SELECT o.forward_id FROM outbox o JOIN forwards f ON f.id = o.forward_id"
                " WHERE f.receipt_id = ?", (receipt_id,))]
            for fid in ids:
                if approve:
                    conn.execute("UPDATE outbox SET held = 0, next_attempt = ?"
                                 " WHERE forward_id = ?", (stamp(now), fid))
                else:
                    settle(conn, fid, "cancelled", "rejected on review", now)

    def held(self) -> list[Receipt]:
        """Receipts held for review with no verdict yet, oldest first."""
        with self.ledger.read() as conn:
            rows = conn.execute(
                f"SELECT {RECEIPT_COLUMNS} FROM receipts r WHERE r.review IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.receipt_id = r.id)"
                " ORDER BY r.rowid").fetchall()
        return [_receipt(r) for r in rows]

    def review_verdict(self, receipt_id: str) -> str | None:
        with self.ledger.read() as conn:
            row = conn.execute("SELECT decision FROM reviews WHERE receipt_id = ?",
                               (receipt_id,)).fetchone()
        return None if row is None else str(row[0])

def _receipt(row: Sequence[Any]) -> Receipt:
    (rid, offer_id, company, agency, decision, created, notice_hash, notice_version, locale,
     purposes, data_items, user_agent, network, review) = row
    return Receipt(rid, offer_id, company, agency, decision, parse_stamp(created), notice_hash,
                   notice_version, locale, tuple(json.loads(purposes)),
                   tuple(json.loads(data_items)), user_agent, network, review)


