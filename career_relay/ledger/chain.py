"""The hash chain over the ledger's entries (SPEC 8: append-only, ``ledger verify``).

Entry ``n`` stores ``hash_n = sha256(canonical JSON of [n, created, company,
kind, ref, body, hash_{n-1}])``.  Changing any field of any entry changes its
hash, so the entry after it no longer points at it; deleting one leaves a gap
in ``seq``; swapping two changes the ``seq`` their hashes were made with.
``verify`` walks the chain and names the first entry that does not hold.

Appends happen inside the caller's ``BEGIN IMMEDIATE`` transaction, which
holds SQLite's write lock: no two writers can read the same last hash.

Entries never hold personal data: where one vouches for a row that does
(an offer's recipient, a forward's payload, a profile), it holds a keyed
hash of it (``keyed``, ``candidate_hash``), so retention can erase the row's
data and leave the entry, and the chain, as they were.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from career_relay.timestamps import stamp

GENESIS = "0" * 64
#: The agency of every forward made before there were several (``forwards.agency``).
DEFAULT_AGENCY = "default"
# What an erased offer keeps for its address (``career_relay.ledger.retention``): this and its id.
ERASED_PREFIX = "erased:"
#: The receipt's columns in their order: what its entry's digest covers.
RECEIPT_COLUMNS = ("id, offer_id, company, agency, decision, created, notice_hash, "
                    "notice_version, locale, purposes, data_items, user_agent, network, review")
#: The key of ``candidate_hash`` and ``keyed`` when none is configured (tests, tools).
DEFAULT_HASH_KEY = b"career-relay"


@dataclass(frozen=True)
class Entry:
    seq: int
    created: str
    company: str
    kind: str
    ref: str
    body: dict[str, Any]
    prev: str
    hash: str


def canonical(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept (RFC 8785 in spirit)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def entry_hash(seq: int, created: str, company: str, kind: str, ref: str, body: str,
               prev: str) -> str:
    material = canonical([seq, created, company, kind, ref, body, prev])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def candidate_hash(key: bytes, address: str) -> str:
    """The keyed hash that stands for a candidate (SPEC 9: it outlives the address)."""
    normal = address.strip().lower()
    return hmac.new(key, normal.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def keyed(key: bytes, text: str) -> str:
    """HMAC-SHA256 of personal data (a payload, a profile) for an entry to vouch for it: without
    the key, the digest of a short, guessable text (an address, a name) gives nothing away."""
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def last(conn: sqlite3.Connection) -> tuple[int, str] | None:
    """(seq, hash) of the last entry; None while there is none."""
    row = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


#: One entry to append: (created, company, kind, ref, body).
NewEntry = tuple[str, str, str, str, dict[str, Any]]


def append(conn: sqlite3.Connection, created: dt.datetime, company: str, kind: str,
           ref: str, body: dict[str, Any]) -> int:
    """Add one entry at the end of the chain; its ``seq``.  Call inside a write transaction."""
    return append_many(conn, [(stamp(created), company, kind, ref, body)])[0]


def append_many(conn: sqlite3.Connection, entries: list[NewEntry]) -> list[int]:
    """Add entries at the end of the chain, in order; their ``seq``s.  The last hash is read
    once and the rest chained in memory (the gateway's batches).  ``created`` is a stamp
    (``YYYY-MM-DDTHH:MM:SSZ``).  Call inside a write transaction."""
    if not entries:
        return []
    found = last(conn)
    seq, prev = (0, GENESIS) if found is None else found
    rows = []
    for created, company, kind, ref, body in entries:
        seq += 1
        text = canonical(body)
        digest = entry_hash(seq, created, company, kind, ref, text, prev)
        rows.append((seq, created, company, kind, ref, text, prev, digest))
        prev = digest
    conn.executemany("INSERT INTO entries (seq, created, company, kind, ref, body, prev, hash)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return [row[0] for row in rows]


def row_digest(row: Any) -> str:
    """A digest of a row of another table, for an entry to vouch for it."""
    return hashlib.sha256(canonical(list(row)).encode("utf-8")).hexdigest()


def offer_digest(fixed: Sequence[Any], source: str) -> str:
    """The digest an ``offer`` entry holds: the offer's fixed columns (id, company,
    Message-ID, created, job, channel, stage), and its ``source`` when it is not "relay"
    (migration 0010): a relayed offer's digest stays what it was before offers had a
    source, and moving an offer between sources shows in ``ledger verify``."""
    return row_digest([*fixed, source] if source != "relay" else list(fixed))


def forward_digest(fixed: Sequence[Any], agency: str) -> str:
    """The digest a ``forward`` entry holds: the forward's fixed columns (id, offer, receipt,
    company, kind, created), and the agency it goes to when it is not "default" (migration
    0012): the digests of the forwards already there stay true, and moving a forward to
    another agency shows in ``ledger verify``."""
    return row_digest([*fixed, agency] if agency != DEFAULT_AGENCY else list(fixed))


@dataclass(frozen=True)
class Problem:
    seq: int
    what: str

    def __str__(self) -> str:  # seq 0: no entry to name (a row without one, the head file)
        return f"entry {self.seq}: {self.what}" if self.seq else self.what


def verify_chain(conn: sqlite3.Connection) -> tuple[int, Problem | None]:
    """(entries checked, the first problem or None)."""
    prev = GENESIS
    expected = 1
    count = 0
    rows = conn.execute("SELECT seq, created, company, kind, ref, body, prev, hash"
                        " FROM entries ORDER BY seq")
    for seq, created, company, kind, ref, body, stored_prev, stored_hash in rows:
        count += 1
        if seq != expected:
            return count, Problem(expected, f"missing (the next entry is {seq})")
        if stored_prev != prev:
            return count, Problem(seq, "does not follow the entry before it "
                                       "(an entry was changed, removed or moved)")
        if entry_hash(seq, created, company, kind, ref, body, prev) != stored_hash:
            return count, Problem(seq, f"altered ({kind} {ref})")
        prev = stored_hash
        expected += 1
    return count, None
