"""The company API's keys (SPEC 10): created, listed, revoked, checked.

A key is ``crk_<id>_<secret>``: ``id`` (16 hex digits) names the key in lists and in
``api-key revoke``; ``secret`` is 256 random bits.  Only the SHA-256 of the whole key is
stored: a secret that random needs no slow hash (argon2 is for passwords people choose),
and a copy of the database opens nothing.  ``check`` finds the row by the id and compares
the digests in constant time (``hmac.compare_digest``), and compares against a dummy digest
when the id is unknown, so neither the answer nor its time tells which ids exist.

Operational rows, not ledger entries: what a key does (the offers it makes) is chained,
the key itself is not.  A key is never deleted, only revoked (``revoked`` set once).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from career_relay.ledger.offers import View
from career_relay.timestamps import stamp

PREFIX = "crk_"
#: The shape of a key; anything else is refused before the database is asked.
KEY_SHAPE = re.compile(r"crk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
NAME_MAX = 100
_DUMMY = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    company: str
    name: str
    created: str  # UTC stamp
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def shown_name(self) -> str:
        """The name as printed: cleaned again (a row written before names were cleaned)."""
        return clean_name(self.name)


#: C0, DEL, C1, U+2028/2029, and the bidirectional and zero-width formatting characters:
#: a name carrying them could move the cursor of the terminal ``api-key list`` prints to,
#: or reorder what it shows (attack review).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e"
                          r"\u2066-\u2069]")


def clean_name(name: str) -> str:
    """``name`` as one line, bounded, without control or bidirectional characters."""
    return " ".join(_UNPRINTABLE.sub(" ", name).split())[:NAME_MAX]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys(View):
    """The API keys over one open ``Ledger``."""

    def create(self, company: str, name: str = "") -> tuple[ApiKey, str]:
        """A new key of ``company``: its row, and the key itself (shown once, never stored)."""
        if not company:
            raise ValueError("an API key needs a company")
        name = clean_name(name)  # one line, bounded, nothing a terminal would obey
        key_id = secrets.token_hex(8)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        found = ApiKey(key_id, company, name, stamp(self.ledger.now()))
        with self.ledger.write() as conn:
            conn.execute("INSERT INTO api_keys (id, company, name, hash, created)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (key_id, company, name, digest(key), found.created))
        return found, key

    def list(self, company: str | None = None) -> list[ApiKey]:
        """The keys of ``company`` (every company's when None), the newest first."""
        where, params = ("WHERE company = ?", (company,)) if company is not None else ("", ())
        with self.ledger.read() as conn:
            rows = conn.execute(f"SELECT id, company, name, created, revoked FROM api_keys"
                                f" {where} ORDER BY created DESC, id", params).fetchall()
        return [ApiKey(*row) for row in rows]

    def get(self, key_id: str) -> ApiKey | None:
        with self.ledger.read() as conn:
            row = conn.execute("SELECT id, company, name, created, revoked FROM api_keys"
                               " WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else ApiKey(*row)

    def revoke(self, key_id: str, company: str | None = None) -> ApiKey | None:
        """Revoke the key (of ``company`` when given); the key as it is now, None when there
        is no such key (of that company).  Revoking a revoked key changes nothing."""
        with self.ledger.write() as conn:
            conn.execute("UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL"
                         + (" AND company = ?" if company is not None else ""),
                         (stamp(self.ledger.now()), key_id,
                          *((company,) if company is not None else ())))
        found = self.get(key_id)
        return found if found is not None and company in (None, found.company) else None

    def check(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or None (unknown, revoked, or not a key at all)."""
        shape = KEY_SHAPE.fullmatch(key)
        if shape is None:
            return None
        with self.ledger.read() as conn:
            row = conn.execute("SELECT id, company, name, created, revoked, hash FROM api_keys"
                               " WHERE id = ?", (shape.group(1),)).fetchone()
        right = hmac.compare_digest(digest(key), row[5] if row is not None else _DUMMY)
        if row is None or not right or row[4] is not None:
            return None
        return ApiKey(*row[:5])
