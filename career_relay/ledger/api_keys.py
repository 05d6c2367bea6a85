"""API keys (SPEC 10, 11): the company API's and the agencies', created, listed, revoked,
checked.

A key is ``<prefix><id>_<secret>``: ``crk_`` for a company's key (table ``api_keys``),
``cra_`` for an agency's (table ``agency_keys``, migration 0012).  ``id`` (16 hex digits)
names the key in lists and in ``api-key revoke`` / ``agency-key revoke``; ``secret`` is 256
random bits.  Only the SHA-256 of the whole key is stored: a secret that random needs no
slow hash (argon2 is for passwords people choose), and a copy of the database opens
nothing.  ``check`` finds the row by the id and compares the digests in constant time
(``hmac.compare_digest``), and compares against a dummy digest when the id is unknown, so
neither the answer nor its time tells which ids exist.

One class, ``Keys``, does this for either owner; ``ApiKeys`` and ``AgencyKeys`` name the
table, the owner column and the prefix.  The two never meet: a key is looked up only in
its own owner's table, and only when it has that owner's prefix, so an agency's key never
authenticates as a company nor a company's as an agency, even where their ids coincide.

Operational rows, not ledger entries: what a key does (the offers it makes) is chained,
the key itself is not.  A key is never deleted, only revoked (``revoked`` set once).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from career_relay.ledger.offers import View
from career_relay.timestamps import stamp

PREFIX = "crk_"
AGENCY_PREFIX = "cra_"
#: The shape of a company's key; anything else is refused before the database is asked.
KEY_SHAPE = re.compile(r"crk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
NAME_MAX = 100
_DUMMY = hashlib.sha256(b"no such key").hexdigest()


class _Row:
    """What a key of either kind says of itself (the rows' fields are their classes')."""

    name: str
    revoked: str | None

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def shown_name(self) -> str:
        """The name as printed: cleaned again (a row written before names were cleaned)."""
        return clean_name(self.name)


@dataclass(frozen=True)
class ApiKey(_Row):
    """A company's key."""

    id: str
    company: str
    name: str
    created: str  # UTC stamp
    revoked: str | None = None

    @property
    def owner(self) -> str:
        return self.company


@dataclass(frozen=True)
class AgencyKey(_Row):
    """An agency's key (SPEC 11: the agency API's, ``career-relay agency-key``)."""

    id: str
    agency: str
    name: str
    created: str  # UTC stamp
    revoked: str | None = None

    @property
    def owner(self) -> str:
        return self.agency


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


K = TypeVar("K", ApiKey, AgencyKey)


class Keys(View, Generic[K]):
    """The keys of one kind of owner over one open ``Ledger``; subclasses name which."""

    TABLE: ClassVar[str]
    OWNER: ClassVar[str]   # the owner's column: company or agency
    PREFIX: ClassVar[str]
    SHAPE: ClassVar[re.Pattern[str]]
    MAKE: ClassVar[Callable[..., K]]

    def create(self, owner: str, name: str = "") -> tuple[K, str]:
        """A new key of ``owner``: its row, and the key itself (shown once, never stored)."""
        if not owner:
            raise ValueError(f"an API key needs a {self.OWNER}")
        name = clean_name(name)  # one line, bounded, nothing a terminal would obey
        key_id = secrets.token_hex(8)
        key = f"{self.PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        found = self.MAKE(key_id, owner, name, stamp(self.ledger.now()))
        with self.ledger.write() as conn:
            conn.execute(f"INSERT INTO {self.TABLE} (id, {self.OWNER}, name, hash, created)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (key_id, owner, name, digest(key), found.created))
        return found, key

    def list(self, owner: str | None = None) -> list[K]:
        """The keys of ``owner`` (every owner's when None), the newest first."""
        where, params = (f"WHERE {self.OWNER} = ?", (owner,)) if owner is not None else ("", ())
        with self.ledger.read() as conn:
            rows = conn.execute(f"SELECT id, {self.OWNER}, name, created, revoked"
                                f" FROM {self.TABLE} {where} ORDER BY created DESC, id",
                                params).fetchall()
        return [self.MAKE(*row) for row in rows]

    def get(self, key_id: str) -> K | None:
        with self.ledger.read() as conn:
            row = conn.execute(f"SELECT id, {self.OWNER}, name, created, revoked"
                               f" FROM {self.TABLE} WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else self.MAKE(*row)

    def revoke(self, key_id: str, owner: str | None = None) -> K | None:
        """Revoke the key (of ``owner`` when given); the key as it is now, None when there
        is no such key (of that owner).  Revoking a revoked key changes nothing."""
        with self.ledger.write() as conn:
            conn.execute(f"UPDATE {self.TABLE} SET revoked = ? WHERE id = ?"
                         " AND revoked IS NULL"
                         + (f" AND {self.OWNER} = ?" if owner is not None else ""),
                         (stamp(self.ledger.now()), key_id,
                          *((owner,) if owner is not None else ())))
        found = self.get(key_id)
        return found if found is not None and owner in (None, found.owner) else None

    def check(self, key: str) -> K | None:
        """The active key ``key`` is, or None (unknown, revoked, another owner's kind, or
        not a key at all).  The one check every API of this owner uses."""
        shape = self.SHAPE.fullmatch(key)
        if shape is None:
            return None
        with self.ledger.read() as conn:
            row = conn.execute(f"SELECT id, {self.OWNER}, name, created, revoked, hash"
                               f" FROM {self.TABLE} WHERE id = ?",
                               (shape.group(1),)).fetchone()
        right = hmac.compare_digest(digest(key), row[5] if row is not None else _DUMMY)
        if row is None or not right or row[4] is not None:
            return None
        return self.MAKE(*row[:5])


class ApiKeys(Keys[ApiKey]):
    """The company API's keys (SPEC 10)."""

    TABLE, OWNER, PREFIX, SHAPE = "api_keys", "company", PREFIX, KEY_SHAPE
    MAKE = ApiKey

    def revoke(self, key_id: str, company: str | None = None) -> ApiKey | None:
        return super().revoke(key_id, company)


class AgencyKeys(Keys[AgencyKey]):
    """The agencies' keys (SPEC 11); the agency API authenticates with ``check``."""

    TABLE, OWNER, PREFIX = "agency_keys", "agency", AGENCY_PREFIX
    SHAPE = re.compile(r"cra_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
    MAKE = AgencyKey

    def revoke(self, key_id: str, agency: str | None = None) -> AgencyKey | None:
        return super().revoke(key_id, agency)
