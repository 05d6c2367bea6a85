"""The consent side of the ledger: views, notices, receipts, profiles, forwards, the outbox.

SQL only; the rules (what a decision creates, what erasure keeps) live in
``career_relay.consent``.  Every multi-row change here is one transaction,
so a receipt never exists without its forward, nor a forward without its
place in the outbox (SPEC 7: "accepting creates a forward in an outbox in
the same transaction").

Ordering: forwards of one offer reach the agency in the order they were
made (a withdrawal never overtakes the consent it withdraws): a forward is
due only when no older forward of the same offer is still in the outbox.

Claims: a worker claims a due forward for ``claim_seconds`` before sending
it.  A forward under claim is "in flight": withdrawal and erasure leave it
alone (it may already have reached the agency) and follow it with a notice
of their own; an unclaimed, undelivered consent forward is cancelled
instead, so the agency never receives what it would only be told to delete.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from career_relay import ledger_chain, ledger_rules
from career_relay.ledger import Ledger, parse_stamp, stamp
from career_relay.ledger_rules import Rules

Decision = Literal["accept", "decline", "withdraw", "erase"]
ForwardKind = Literal["consent", "withdrawal", "erasure"]


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


@dataclass(frozen=True)
class ForwardStatus:
    forward: Forward
    delivered: dt.datetime | None
    cancelled: bool
    pending: bool
    held: bool


_RECEIPT_COLUMNS = ("id, offer_id, company, agency, decision, created, notice_hash, "
                    "notice_version, locale, purposes, data_items, user_agent, network, review")
_FORWARD_COLUMNS = "f.id, f.offer_id, f.receipt_id, f.company, f.kind, f.created, f.payload"


class ConsentLedger:
    """The consent tables of one open ``Ledger`` (sharing its connection and lock)."""

    def __init__(self, ledger: Ledger, rules: Rules | None = None) -> None:
        self.ledger = ledger
        self.rules = rules or Rules()
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
            rows = conn.execute(f"SELECT {_RECEIPT_COLUMNS} FROM receipts WHERE offer_id = ?"
                                " ORDER BY rowid", (offer_id,)).fetchall()
        return [_receipt(r) for r in rows]

    def receipt(self, receipt_id: str) -> Receipt | None:
        with self.ledger.read() as conn:
            row = conn.execute(f"SELECT {_RECEIPT_COLUMNS} FROM receipts WHERE id = ?",
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
    ) -> list[str]:
        """One decision in one transaction: the receipt, its profile, its forward.

        ``cancel_pending_consent``: undelivered, unclaimed consent forwards of
        the offer are cancelled (withdrawal and erasure).  ``erase``: every
        profile and forward payload of the offer is erased.  ``forward`` is
        written only if ``forward_needed`` still holds inside the transaction
        (it is built beforehand, outside the lock).  Returns the ids of the
        forwards cancelled.  ``notice_text``: the text the receipt's notice hash stands for,
        kept with it if the page did not record it already.
        """
        now = self.ledger.now()
        with self.ledger.write() as conn:
            if notice_text is not None and receipt.notice_hash is not None:
                conn.execute(
                    "INSERT INTO notices (hash, version, locale, company, text, first_shown)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
                    (receipt.notice_hash, receipt.notice_version, receipt.locale,
                     receipt.company, notice_text, stamp(now)))
            conn.execute(
                f"INSERT INTO receipts ({_RECEIPT_COLUMNS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (receipt.id, receipt.offer_id, receipt.company, receipt.agency,
                 receipt.decision, stamp(receipt.created), receipt.notice_hash,
                 receipt.notice_version, receipt.locale, json.dumps(list(receipt.purposes)),
                 json.dumps(list(receipt.data_items)), receipt.user_agent, receipt.network,
                 receipt.review))
            ledger_rules.record_receipt(conn, receipt.id, now)
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
            "INSERT INTO forwards (id, offer_id, receipt_id, company, kind, created, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", (*fixed, forward.payload))
        payload = (None if forward.payload is None
                   else ledger_chain.keyed(self.ledger.hash_key, forward.payload))
        ledger_chain.append(conn, now, forward.company, "forward", forward.id,
                            {"digest": ledger_chain.row_digest(fixed), "payload": payload})
        conn.execute("INSERT INTO outbox (forward_id, next_attempt, held) VALUES (?, ?, ?)",
                     (forward.id, stamp(now), int(held)))

    def _cancel_pending_consent(self, conn: sqlite3.Connection, offer_id: str,
                                now: dt.datetime) -> list[str]:
        rows = conn.execute(
            "SELECT o.forward_id FROM outbox o JOIN forwards f ON f.id = o.forward_id"
            " WHERE f.offer_id = ? AND f.kind = 'consent'"
            " AND (o.claimed_until IS NULL OR o.claimed_until < ?)",
            (offer_id, stamp(now))).fetchall()
        ids = [str(r[0]) for r in rows]
        for fid in ids:
            _settle(conn, fid, "cancelled", "withdrawn before delivery", now)
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
            ledger_rules.record_review(conn, receipt_id, company, verdict, by, now)
            ids = [str(r[0]) for r in conn.execute(
                "SELECT o.forward_id FROM outbox o JOIN forwards f ON f.id = o.forward_id"
                " WHERE f.receipt_id = ?", (receipt_id,))]
            for fid in ids:
                if approve:
                    conn.execute("UPDATE outbox SET held = 0, next_attempt = ?"
                                 " WHERE forward_id = ?", (stamp(now), fid))
                else:
                    _settle(conn, fid, "cancelled", "rejected on review", now)

    def held(self) -> list[Receipt]:
        """Receipts held for review with no verdict yet, oldest first."""
        with self.ledger.read() as conn:
            rows = conn.execute(
                f"SELECT {_RECEIPT_COLUMNS} FROM receipts r WHERE r.review IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.receipt_id = r.id)"
                " ORDER BY r.rowid").fetchall()
        return [_receipt(r) for r in rows]

    def review_verdict(self, receipt_id: str) -> str | None:
        with self.ledger.read() as conn:
            row = conn.execute("SELECT decision FROM reviews WHERE receipt_id = ?",
                               (receipt_id,)).fetchone()
        return None if row is None else str(row[0])

    # -- the outbox -----------------------------------------------------------------------

    def claim_due(self, limit: int, claim_seconds: float) -> list[Forward]:
        """Claim up to ``limit`` forwards that are due, oldest first, for ``claim_seconds``.

        Due: not held, its time has come, not claimed by a live worker, and
        no older forward of its offer still waiting.
        """
        now = self.ledger.now()
        until = stamp(now + dt.timedelta(seconds=claim_seconds))
        with self.ledger.write() as conn:
            rows = conn.execute(
                f"SELECT {_FORWARD_COLUMNS}, o.attempts FROM outbox o"
                " JOIN forwards f ON f.id = o.forward_id"
                " WHERE o.held = 0 AND o.next_attempt <= ?"
                " AND (o.claimed_until IS NULL OR o.claimed_until < ?)"
                " AND NOT EXISTS (SELECT 1 FROM outbox o2 JOIN forwards f2 ON f2.id = o2.forward_id"
                "                 WHERE f2.offer_id = f.offer_id AND f2.rowid < f.rowid)"
                " ORDER BY o.next_attempt, f.rowid LIMIT ?",
                (stamp(now), stamp(now), limit)).fetchall()
            for row in rows:
                conn.execute("UPDATE outbox SET claimed_until = ? WHERE forward_id = ?",
                             (until, row[0]))
        return [_forward(r) for r in rows]

    def next_due(self) -> dt.datetime | None:
        """When the earliest unheld forward falls due (None: the outbox holds nothing to send)."""
        with self.ledger.read() as conn:
            row = conn.execute("SELECT MIN(MAX(next_attempt, COALESCE(claimed_until, '')))"
                               " FROM outbox WHERE held = 0").fetchone()
        return None if row is None or row[0] is None else parse_stamp(row[0])

    def delivered(self, forward_id: str, detail: str = "") -> None:
        """The agency took it: out of the outbox, into the ledger (provision record,
        qualification, perhaps a credit), in one transaction."""
        now = self.ledger.now()
        with self.ledger.write() as conn:
            gone = conn.execute("DELETE FROM outbox WHERE forward_id = ?", (forward_id,))
            if gone.rowcount == 0 and conn.execute(
                    "SELECT 1 FROM forward_events WHERE forward_id = ? AND event = 'delivered'",
                    (forward_id,)).fetchone():
                return  # recorded already (a claim that expired and was sent twice)
            _event(conn, forward_id, "delivered", detail, now)
            ledger_rules.record_delivery(conn, self.rules, forward_id, now,
                                         new_id=self.ledger.new_id)

    def cancelled(self, forward_id: str, detail: str) -> None:
        now = self.ledger.now()
        with self.ledger.write() as conn:
            _settle(conn, forward_id, "cancelled", detail, now)

    def failed(self, forward_id: str, detail: str, retry_in: float) -> None:
        """An attempt that did not reach the agency: retried after ``retry_in`` seconds,
        unless it is a consent the candidate withdrew (or erased) while it was being
        sent: then it is not sent again (the withdrawal queued behind it still goes)."""
        now = self.ledger.now()
        with self.ledger.write() as conn:
            _event(conn, forward_id, "failed", detail[:500], now)
            if _retracted(conn, forward_id):
                _settle(conn, forward_id, "cancelled", "withdrawn while it was sent", now)
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
        return [ForwardStatus(_forward(r[:8]), None if r[8] is None else parse_stamp(r[8]),
                              bool(r[9]), bool(r[10]), bool(r[11])) for r in rows]

    def forward(self, forward_id: str) -> Forward | None:
        with self.ledger.read() as conn:
            row = conn.execute(f"SELECT {_FORWARD_COLUMNS}, 0 FROM forwards f WHERE f.id = ?",
                               (forward_id,)).fetchone()
        return None if row is None else _forward(row)

    def outbox_size(self) -> tuple[int, int]:
        """(forwards waiting to be sent, of which held for review)."""
        with self.ledger.read() as conn:
            total, held = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(held), 0) FROM outbox").fetchone()
        return int(total), int(held)


def _event(conn: sqlite3.Connection, forward_id: str, event: str, detail: str,
           now: dt.datetime) -> None:
    conn.execute("INSERT INTO forward_events (forward_id, created, event, detail)"
                 " VALUES (?, ?, ?, ?)", (forward_id, stamp(now), event, detail))


def _settle(conn: sqlite3.Connection, forward_id: str, event: str, detail: str,
            now: dt.datetime) -> None:
    """Take a forward out of the outbox and record why."""
    conn.execute("DELETE FROM outbox WHERE forward_id = ?", (forward_id,))
    _event(conn, forward_id, event, detail, now)


def _retracted(conn: sqlite3.Connection, forward_id: str) -> bool:
    """Whether a consent forward's offer has a withdrawal or erasure after its receipt."""
    row = conn.execute(
        "SELECT 1 FROM forwards f JOIN receipts r ON r.id = f.receipt_id"
        " WHERE f.id = ? AND f.kind = 'consent' AND EXISTS (SELECT 1 FROM receipts later"
        "  WHERE later.offer_id = f.offer_id AND later.rowid > r.rowid"
        "  AND later.decision IN ('withdraw', 'erase'))", (forward_id,)).fetchone()
    return row is not None


def _receipt(row: Sequence[Any]) -> Receipt:
    (rid, offer_id, company, agency, decision, created, notice_hash, notice_version, locale,
     purposes, data_items, user_agent, network, review) = row
    return Receipt(rid, offer_id, company, agency, decision, parse_stamp(created), notice_hash,
                   notice_version, locale, tuple(json.loads(purposes)),
                   tuple(json.loads(data_items)), user_agent, network, review)


def _forward(row: Sequence[Any]) -> Forward:
    fid, offer_id, receipt_id, company, kind, created, payload, attempts = row
    return Forward(fid, offer_id, receipt_id, company, kind, parse_stamp(created), payload,
                   int(attempts))
