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
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from career_relay import ledger_chain, ledger_head
from career_relay.errors import UserError
from career_relay.ledger import Ledger, settings_hash_key
from career_relay.ledger_chain import DEFAULT_HASH_KEY, Problem
from career_relay.settings_table import Settings


class NoCreditAvailable(UserError):
    """A redemption with no credit left to redeem."""


@dataclass(frozen=True)
class Rules:
    credit_every: int = 10
    domains: Mapping[str, frozenset[str]] = field(default_factory=dict)
    hash_key: bytes = DEFAULT_HASH_KEY

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(settings.ledger.credit_every,
                   {c.id: frozenset(c.domains) for c in settings.companies},
                   settings_hash_key(settings))

    def candidate(self, address: str) -> str:
        """The keyed hash that stands for a candidate (SPEC 9: it outlives the address)."""
        return ledger_chain.candidate_hash(self.hash_key, address)

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


def verify(conn: sqlite3.Connection, hash_key: bytes = DEFAULT_HASH_KEY
           ) -> tuple[int, Problem | None]:
    """The chain, then every table row an entry vouches for (SPEC 8 ``ledger verify``);
    ``hash_key`` checks the personal data the entries vouch for by keyed hash."""
    count, problem = ledger_chain.verify_chain(conn)
    if problem is not None:
        return count, problem
    checks = (_receipts_agree, _reviews_agree, _qualified_agree, _credits_agree,
              _redemptions_agree)
    for check in checks:
        problem = check(conn)
        if problem is not None:
            return count, problem
    for keyed_check in (_offers_agree, _forwards_agree, _profiles_agree):
        problem = keyed_check(conn, hash_key)
        if problem is not None:
            return count, problem
    return count, _credits_follow_the_rules(conn)


def _credits_follow_the_rules(conn: sqlite3.Connection) -> Problem | None:
    """Each row agrees with its entry; this checks the rows agree with the rules that made
    them.  The chain is a hash chain, not a keyed one: whoever can write the file can append
    well-formed entries, and a credit that re-counts forwards another credit counted, or
    counts forwards that never qualified, would pass every check above (the attack review
    forged one).  A qualified forward is a consent of an accepted receipt that was
    delivered, numbered 1, 2, 3 ... per company; a credit counts qualified forwards of its
    company that no other credit counts, and credits are numbered the same way.  (A forger
    who also invents the forwards, receipts and deliveries is caught by the agency, which
    never received those forwards: docs/agency-webhook.md.)"""
    expected: dict[str, int] = {}
    for forward_id, company, n, entry, kind, decision, delivered in conn.execute(
            "SELECT q.forward_id, q.company, q.n, q.entry, f.kind, r.decision,"
            " EXISTS (SELECT 1 FROM forward_events e WHERE e.forward_id = q.forward_id"
            "         AND e.event = 'delivered')"
            " FROM qualified q LEFT JOIN forwards f ON f.id = q.forward_id"
            " LEFT JOIN receipts r ON r.id = f.receipt_id ORDER BY q.company, q.n"):
        expected[company] = expected.get(company, 0) + 1
        if n != expected[company]:
            return Problem(entry, f"qualified forward {forward_id} is number {n} of {company}, "
                                  f"where {expected[company]} comes next")
        if kind != "consent" or decision != "accept" or not delivered:
            return Problem(entry, f"qualified forward {forward_id} is not an accepted consent "
                                  "the agency received")
    qualified = {str(fid): company for fid, company in conn.execute(
        "SELECT forward_id, company FROM qualified")}
    counted: dict[str, str] = {}
    numbers: dict[str, int] = {}
    for credit_id, company, n, entry, forwards in conn.execute(
            "SELECT id, company, n, entry, forwards FROM credits ORDER BY company, n"):
        numbers[company] = numbers.get(company, 0) + 1
        if n != numbers[company]:
            return Problem(entry, f"credit {credit_id} is number {n} of {company}, where "
                                  f"{numbers[company]} comes next")
        listed = [str(f) for f in json.loads(forwards)]
        if not listed:
            return Problem(entry, f"credit {credit_id} counts no forward")
        for forward_id in listed:
            if qualified.get(forward_id) != company:
                return Problem(entry, f"credit {credit_id} counts forward {forward_id}, which "
                                      f"is no qualified forward of {company}")
            if forward_id in counted:
                return Problem(entry, f"credit {credit_id} counts forward {forward_id} again "
                                      f"(credit {counted[forward_id]} counted it)")
            counted[forward_id] = credit_id
    return None


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


def _beside(conn: sqlite3.Connection, kind: str, sql: str
            ) -> Iterator[tuple[str, Any, tuple[int, str, dict[str, Any]] | None]]:
    """(id, row or None, its entry (seq, company, body) or None) for every row of ``sql``
    (ordered by the id, its first column) and every entry of ``kind``: a merge of two
    sorted reads, so memory stays flat however many offers the ledger holds."""
    # Both orders are SQLite's BINARY collation: UTF-8 bytes, the order of Python's str.
    rows = conn.execute(sql)
    entries = conn.execute("SELECT ref, seq, company, body FROM entries WHERE kind = ?"
                           " ORDER BY ref", (kind,))
    row, entry = rows.fetchone(), entries.fetchone()
    while row is not None or entry is not None:
        if entry is None or (row is not None and str(row[0]) < entry[0]):
            yield str(row[0]), row, None
            row = rows.fetchone()
        elif row is None or entry[0] < str(row[0]):
            yield entry[0], None, (int(entry[1]), entry[2], json.loads(entry[3]))
            entry = entries.fetchone()
        else:
            yield entry[0], row, (int(entry[1]), entry[2], json.loads(entry[3]))
            row, entry = rows.fetchone(), entries.fetchone()


def _unmatched(what: str, ref: str, row: Any, found: tuple[int, str, dict[str, Any]] | None,
               company_at: int, fixed: int) -> Problem | None:
    """The checks every chained row shares: it was not deleted, it has its entry, of its
    company (column ``company_at``) and of the digest of its first ``fixed`` columns."""
    if row is None:
        assert found is not None
        return Problem(found[0], f"{what} {ref} was deleted")
    if found is None:
        return Problem(0, f"{what} {ref} has no ledger entry (added outside the ledger)")
    seq, e_company, body = found
    if e_company != row[company_at]:
        return Problem(seq, f"{what} {ref} was moved from company {e_company} to "
                            f"{row[company_at]}")
    if body.get("digest") != ledger_chain.row_digest(row[:fixed]):
        return Problem(seq, f"{what} {ref} was altered after it was recorded")
    return None


def _offers_agree(conn: sqlite3.Connection, key: bytes) -> Problem | None:
    """Each offer against its entry; the recipient by its keyed hash while it is there, the
    ``candidate`` retention left once erased (an entry of the migration that chained offers
    has none: the key was unknown to it)."""
    for ref, row, found in _beside(
            conn, "offer", "SELECT id, company, message_id, created, job, channel, stage,"
                           " recipient, candidate, erased FROM offers ORDER BY id"):
        problem = _unmatched("offer", ref, row, found, company_at=1, fixed=7)
        if problem is not None:
            return problem
        assert found is not None
        seq, _, body = found
        candidate, (recipient, erased_as, erased) = body.get("candidate"), row[7:]
        if erased is not None and recipient != f"{ledger_chain.ERASED_PREFIX}{ref}":
            # Erasure leaves the placeholder, nothing else: an address put back under an
            # erased mark would be a provision record that no hash can check.
            return Problem(seq, f"offer {ref}: marked erased, yet it holds an address")
        if candidate is None:
            continue
        if erased is None and ledger_chain.candidate_hash(key, recipient) != candidate:
            return Problem(seq, f"offer {ref}: its recipient was changed after it was recorded "
                                "(or secrets.hash_key is not the key the ledger was written with)")
        if erased is not None and erased_as != candidate:
            return Problem(seq, f"offer {ref}: the candidate kept at its erasure is not the "
                                "one recorded")
    return None


def _forwards_agree(conn: sqlite3.Connection, key: bytes) -> Problem | None:
    """Each forward against its entry; its payload by keyed hash, unless erased (NULL)."""
    for ref, row, found in _beside(
            conn, "forward", "SELECT id, offer_id, receipt_id, company, kind, created, payload"
                             " FROM forwards ORDER BY id"):
        problem = _unmatched("forward", ref, row, found, company_at=3, fixed=6)
        if problem is not None:
            return problem
        assert found is not None
        seq, _, body = found
        payload, recorded = row[6], body.get("payload")
        if payload is not None and recorded is not None and \
                ledger_chain.keyed(key, payload) != recorded:
            return Problem(seq, f"forward {ref}: its payload was changed after it was recorded")
    return None


def _profiles_agree(conn: sqlite3.Connection, key: bytes) -> Problem | None:
    """Each profile (by receipt id) against its entry; its data by keyed hash, unless erased."""
    for ref, row, found in _beside(
            conn, "profile", "SELECT p.receipt_id, r.company, p.data FROM profiles p"
                             " LEFT JOIN receipts r ON r.id = p.receipt_id ORDER BY p.receipt_id"):
        if row is None:
            assert found is not None
            return Problem(found[0], f"the profile of receipt {ref} was deleted")
        if found is None:
            return Problem(0, f"the profile of receipt {ref} has no ledger entry "
                              "(added outside the ledger)")
        seq, company, body = found
        if company != row[1]:
            return Problem(seq, f"the profile of receipt {ref} was moved to another receipt")
        data, recorded = row[2], body.get("data")
        if data is not None and recorded is not None and ledger_chain.keyed(key, data) != recorded:
            return Problem(seq, f"the profile of receipt {ref} was changed after it was recorded")
    return None


class Book:
    """Credits and verification over one open ledger (the CLI's and admin pages' way in)."""

    def __init__(self, ledger: Ledger, rules: Rules) -> None:
        self.ledger = ledger
        self.rules = rules

    def redeem(self, company: str, by: str, note: str = "") -> str:
        with self.ledger.write() as conn:
            return redeem(conn, company, by, note, self.ledger.now())

    def verify(self, head: tuple[int, str] | None = None) -> tuple[int, Problem | None]:
        """The chain and the rows it vouches for; then that it still reaches the head file's
        entry and ``head`` (one the agency received: ``ledger verify --head``)."""
        with self.ledger.read() as conn:
            # The file before the snapshot: it is written after each commit, so it never
            # names an entry the snapshot cannot see (read after, it could).
            filed = ledger_head.snapshot_file(self.ledger.head_file)
            conn.execute("BEGIN")  # one snapshot: a writer may append meanwhile
            try:
                count, problem = verify(conn, self.rules.hash_key)
                if problem is None:
                    problem = ledger_head.check_file(conn, self.ledger.head_file, filed)
                if problem is None and head is not None:
                    problem = ledger_head.check(conn, head, "the head given")
                return count, problem
            finally:
                conn.execute("COMMIT")

    def head(self) -> str:
        """``<n>:<hash>`` of the last entry (``0:`` and 64 zeros while there is none): what the
        head file holds and the agency receives."""
        found = self.ledger.head()
        return ledger_head.format_head(*(found or (0, ledger_chain.GENESIS)))

    def credits(self, company: str) -> list[dict[str, Any]]:
        with self.ledger.read() as conn:
            rows = conn.execute(
                "SELECT c.id, c.n, c.created, c.forwards, r.created, r.by, r.note"
                " FROM credits c LEFT JOIN redemptions r ON r.credit_id = c.id"
                " WHERE c.company = ? ORDER BY c.n", (company,)).fetchall()
        return [{"id": cid, "n": n, "created": created, "forwards": json.loads(forwards),
                 "redeemed": redeemed, "redeemed_by": by, "note": note}
                for cid, n, created, forwards, redeemed, by, note in rows]
