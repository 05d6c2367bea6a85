"""``ledger verify`` (SPEC 8): the chain, then every row an entry vouches for, then the
rules the credits were minted by.

The chain is a hash chain: editing, deleting or reordering an entry shows.
Each table row an entry vouches for is checked against it (by digest, and
personal data by keyed hash while it is there), and the credits against the
rules that made them, so a forged credit appended as a well-formed entry
shows too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from career_relay.ledger import chain as ledger_chain
from career_relay.ledger import head as ledger_head
from career_relay.ledger import verify_requests
from career_relay.ledger.chain import DEFAULT_HASH_KEY, RECEIPT_COLUMNS, Problem
from career_relay.ledger.offers import Ledger


def verify(conn: sqlite3.Connection, hash_key: bytes = DEFAULT_HASH_KEY
           ) -> tuple[int, Problem | None]:
    """The chain, then every table row an entry vouches for (SPEC 8 ``ledger verify``);
    ``hash_key`` checks the personal data the entries vouch for by keyed hash."""
    count, problem = ledger_chain.verify_chain(conn)
    if problem is not None:
        return count, problem
    checks = (_receipts_agree, _reviews_agree, _qualified_agree, _credits_agree,
              _redemptions_agree, _outcomes_agree)
    for check in checks:
        problem = check(conn)
        if problem is not None:
            return count, problem
    problem = verify_requests.problem(conn)  # free referral requests (0015)
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
    rows = conn.execute(
        "SELECT q.forward_id, q.company, q.n, q.entry, q.candidate, f.kind, r.decision,"
        " EXISTS (SELECT 1 FROM forward_events e WHERE e.forward_id = q.forward_id"
        "         AND e.event = 'delivered'),"
        " r.review, (SELECT decision FROM reviews v WHERE v.receipt_id = r.id), f.offer_id"
        " FROM qualified q LEFT JOIN forwards f ON f.id = q.forward_id"
        " LEFT JOIN receipts r ON r.id = f.receipt_id ORDER BY q.company, q.n").fetchall()
    made_to = _offer_candidates(conn, {str(row[10]) for row in rows})
    expected: dict[str, int] = {}
    for (forward_id, company, n, entry, candidate, kind, decision, delivered, review,
         verdict, offer_id) in rows:
        expected[company] = expected.get(company, 0) + 1
        if n != expected[company]:
            return Problem(entry, f"qualified forward {forward_id} is number {n} of {company}, "
                                  f"where {expected[company]} comes next")
        if kind != "consent" or decision != "accept" or not delivered:
            return Problem(entry, f"qualified forward {forward_id} is not an accepted consent "
                                  "the agency received")
        if review is not None and verdict != "approve":  # held for review: an admin's call
            return Problem(entry, f"qualified forward {forward_id} was held for review "
                                  f"({review}) and no admin approved it")
        # The candidate is the offer's, as its chained entry names it (which outlives the
        # address): a forged entry naming another hash, to count one person twice, is
        # caught here (the same hash twice: UNIQUE (company, candidate) refuses it).
        if candidate != made_to.get(str(offer_id)):
            return Problem(entry, f"qualified forward {forward_id} names a candidate other "
                                  "than its offer's")
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


def _offer_candidates(conn: sqlite3.Connection, offers: set[str]) -> dict[str, str]:
    """offer id -> the candidate its chained entry names, for ``offers`` (one pass over the
    offers' entries: there is no index by ref, and verify reads them all anyway)."""
    found: dict[str, str] = {}
    if not offers:
        return found
    for ref, body in conn.execute("SELECT ref, body FROM entries WHERE kind = 'offer'"):
        if str(ref) in offers:
            found[str(ref)] = str(json.loads(body).get("candidate"))
    return found


def _entries(conn: sqlite3.Connection, kind: str
             ) -> dict[str, tuple[int, str, str, dict[str, Any]]]:
    """ref -> (seq, company, created, body) of every entry of ``kind``."""
    return {str(ref): (int(seq), company, created, json.loads(body))
            for seq, ref, company, created, body in conn.execute(
                "SELECT seq, ref, company, created, body FROM entries WHERE kind = ?", (kind,))}


def _receipts_agree(conn: sqlite3.Connection) -> Problem | None:
    entries = _entries(conn, "receipt")
    for row in conn.execute(f"SELECT {RECEIPT_COLUMNS} FROM receipts ORDER BY rowid"):
        rid = str(row[0])
        if rid not in entries:
            return Problem(0, f"receipt {rid} has no ledger entry (added outside the ledger)")
        seq, _, _, body = entries.pop(rid)
        if body["digest"] != ledger_chain.row_digest(row):
            return Problem(seq, f"receipt {rid} was altered after it was recorded")
    for rid, (seq, _, _, _) in entries.items():
        return Problem(seq, f"receipt {rid} was deleted")
    return None


def _agree(conn: sqlite3.Connection, kind: str, what: str, sql: str,
           body_of: Callable[[Any, Any], dict[str, Any]]) -> Problem | None:
    """Each row of ``sql`` -- (ref, company, created, entry seq, a, b) -- against its entry:
    same seq, company, time and body (``body_of(a, b)``: the body as its entry has it); and
    no entry without its row.  The body is built here, not in SQL, so that the query reads
    the same in every backend's dialect."""
    entries = _entries(conn, kind)
    for ref, company, created, entry, body in _rows(conn, sql, body_of):
        found = entries.pop(ref, None)
        if found is None:
            return Problem(entry, f"{what} {ref} has no ledger entry")
        if found != (entry, company, created, body):
            return Problem(found[0], f"{what} {ref} does not match its entry")
    for ref, (seq, _, _, _) in entries.items():
        return Problem(seq, f"{what} {ref} was deleted")
    return None


def _rows(conn: sqlite3.Connection, sql: str, body_of: Callable[[Any, Any], dict[str, Any]]
          ) -> list[tuple[str, str, str, int, dict[str, Any]]]:
    return [(str(ref), company, created, int(entry), body_of(a, b))
            for ref, company, created, entry, a, b in conn.execute(sql)]


def _qualified_agree(conn: sqlite3.Connection) -> Problem | None:
    return _agree(conn, "qualified", "qualified forward",
                  "SELECT forward_id, company, created, entry, candidate, n FROM qualified",
                  lambda candidate, n: {"candidate": candidate, "n": n})


def _credits_agree(conn: sqlite3.Connection) -> Problem | None:
    return _agree(conn, "credit", "credit",
                  "SELECT id, company, created, entry, forwards, n FROM credits",
                  lambda forwards, n: {"forwards": json.loads(forwards), "n": n})


def _redemptions_agree(conn: sqlite3.Connection) -> Problem | None:
    return _agree(conn, "redemption", "redemption of credit",
                  "SELECT credit_id, company, created, entry, by, note FROM redemptions",
                  lambda by, note: {"by": by, "note": note})


def _outcomes_agree(conn: sqlite3.Connection) -> Problem | None:
    """Each outcome (0014) against its entry, and of its forward's company and agency."""
    for ref, row, found in _beside(
            conn, "outcome", "SELECT o.id, o.forward_id, o.company, o.agency, o.status, o.at,"
            " o.created, f.company, f.agency FROM outcomes o LEFT JOIN forwards f"
            " ON f.id = o.forward_id ORDER BY o.id"):
        problem = _unmatched("outcome", ref, row, found, company_at=2, fixed=7)
        if problem is None and tuple(row[7:9]) != tuple(row[2:4]):
            problem = Problem(found[0] if found else 0, f"outcome {ref} is not of its forward's "
                              "company and agency")
        if problem is not None:
            return problem
    return None


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
                           " recipient, candidate, erased, source FROM offers ORDER BY id"):
        if row is not None and row[10] != "relay":  # its source is digested too (0010)
            row = (*row[:7], row[10], *row[7:10])
            fixed = 8
        else:
            fixed = 7
        problem = _unmatched("offer", ref, row, found, company_at=1, fixed=fixed)
        if problem is not None:
            return problem
        assert found is not None
        seq, _, body = found
        candidate, (recipient, erased_as, erased) = body.get("candidate"), row[fixed:fixed + 3]
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
            conn, "forward", "SELECT id, offer_id, receipt_id, company, kind, created, payload,"
                             " agency FROM forwards ORDER BY id"):
        fixed = 6
        if row is not None and row[7] != ledger_chain.DEFAULT_AGENCY:
            row, fixed = (*row[:6], row[7], row[6]), 7  # its agency is digested too (0012)
        problem = _unmatched("forward", ref, row, found, company_at=3, fixed=fixed)
        if problem is not None:
            return problem
        assert found is not None
        seq, _, body = found
        payload, recorded = row[fixed], body.get("payload")
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


def verify_ledger(ledger: Ledger, head: tuple[int, str] | None = None,
                  hash_key: bytes | None = None) -> tuple[int, Problem | None]:
    """The chain and the rows it vouches for; then that it still reaches the head file's
    entry and ``head`` (one the agency received: ``ledger verify --head``).  ``hash_key``:
    the key to check keyed hashes with (default: the ledger's)."""
    # The file before the snapshot: it is written after each commit, so it never names an
    # entry the snapshot cannot see (read after, it could).
    filed = ledger_head.snapshot_file(ledger.head_file)
    with ledger.snapshot() as conn:  # one snapshot: a writer may append meanwhile
        count, problem = verify(conn, ledger.hash_key if hash_key is None else hash_key)
        if problem is None:
            problem = ledger_head.check_file(conn, ledger.head_file, filed)
        if problem is None and head is not None:
            problem = ledger_head.check(conn, head, "the head given")
        return count, problem
