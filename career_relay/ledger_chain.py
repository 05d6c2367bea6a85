"""The hash chain over the ledger's entries (SPEC 8: append-only, ``ledger verify``).

Entry ``n`` stores ``hash_n = sha256(canonical JSON of [n, created, company,
kind, ref, body, hash_{n-1}])``.  Changing any field of any entry changes its
hash, so the entry after it no longer points at it; deleting one leaves a gap
in ``seq``; swapping two changes the ``seq`` their hashes were made with.
``verify`` walks the chain and names the first entry that does not hold.

Appends happen inside the caller's ``BEGIN IMMEDIATE`` transaction, which
holds SQLite's write lock: no two writers can read the same last hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


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


def append(conn: sqlite3.Connection, created: dt.datetime, company: str, kind: str,
           ref: str, body: dict[str, Any]) -> int:
    """Add one entry at the end of the chain; its ``seq``.  Call inside a write transaction."""
    last = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
    stamp = created.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = canonical(body)
    digest = entry_hash(seq, stamp, company, kind, ref, text, prev)
    conn.execute("INSERT INTO entries (seq, created, company, kind, ref, body, prev, hash)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (seq, stamp, company, kind, ref, text, prev, digest))
    return seq


def row_digest(row: Any) -> str:
    """A digest of a row of another table, for an entry to vouch for it."""
    return hashlib.sha256(canonical(list(row)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Problem:
    seq: int
    what: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.what}"


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
