"""Retention (SPEC 9): how long the ledger keeps a candidate's personal data.

Every offer has a retention end, after which the personal data behind it is
erased; what it was for (the counts, the decisions, the hash-chained
entries) stays:

- an offer never provided to the agency (undecided, declined, withdrawn or
  erased before delivery, rejected on review): the day its link expires
  (``offers.created`` + ``site.link_max_age_days``).  No decision can come
  after that, and nothing the ledger must prove needs the person.
- an offer provided to the agency (a consent forward delivered: the
  provision record of APPI art. 29/30): three years after its last
  provision (APPI rules art. 21 and 24).  Until then the record names the
  person; ``entries`` name them only by a keyed hash and stay for good.
- an offer with a forward still in the outbox (held for review, or being
  retried) waits: its data may still have to reach the agency.

Erased, past the retention end: the candidate's address in ``offers``
(``recipient`` becomes ``erased:<offer id>``, unique as the table requires,
and ``candidate`` keeps the keyed hash for de-duplication), the profiles
they typed, and the payloads of the offer's forwards.  Kept: ``offer_views``
(an offer id and a time), ``notices`` (the company's text, no one's data),
``forward_events`` (times and transport errors), the daily counters, and
the append-only tables (``receipts`` with their user agent and /24 network,
``reviews``, ``entries``, ``qualified``, ``credits``, ``redemptions``): none
is changed, so ``career-relay ledger verify`` holds after a purge.

Idempotent: each run erases only what is not erased yet.  A dry run counts
the same rows inside a read snapshot and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, fields

from career_relay.ledger import chain as ledger_chain
from career_relay.ledger.offers import Ledger
from career_relay.ledger.rules import Rules
from career_relay.settings_table import Settings
from career_relay.timestamps import stamp

PROVISION_YEARS = 3
ERASED_PREFIX = ledger_chain.ERASED_PREFIX


@dataclass(frozen=True)
class Policy:
    link_max_age_days: int = 90
    provision_years: int = PROVISION_YEARS

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(settings.site.link_max_age_days)

    def link_cutoff(self, now: dt.datetime) -> str:
        """Offers made before this moment have an expired link."""
        return stamp(now - dt.timedelta(days=self.link_max_age_days))

    def provision_cutoff(self, now: dt.datetime) -> str:
        """Provisions made before this moment are past their retention (calendar years)."""
        moment = now.astimezone(dt.UTC)
        try:
            earlier = moment.replace(year=moment.year - self.provision_years)
        except ValueError:  # 29 February: its anniversary is 28 February
            earlier = moment.replace(year=moment.year - self.provision_years, day=28)
        return stamp(earlier)


@dataclass(frozen=True)
class Purged:
    """What a purge erased (or, in a dry run, would erase), by kind."""

    undecided_addresses: int = 0   # offers left undecided when their link expired
    unprovided_addresses: int = 0  # decided, never provided, link expired
    provided_addresses: int = 0    # provision records past three years
    profiles: int = 0              # what candidates typed
    payloads: int = 0              # forward bodies kept as sent

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def lines(self, policy: Policy) -> list[tuple[str, int]]:
        return [(_LABELS[f.name].format(years=policy.provision_years), getattr(self, f.name))
                for f in fields(self)]


_LABELS = {
    "undecided_addresses": "addresses of offers undecided when their link expired",
    "unprovided_addresses": "addresses of offers decided but never provided, link expired",
    "provided_addresses": "addresses of provision records older than {years} years",
    "profiles": "candidate profiles",
    "payloads": "forward payloads",
}

# The offers past their retention end, each with its kind; the other statements read it.
_DUE = """
CREATE TEMP TABLE retention_due AS
WITH provided AS (
    SELECT f.offer_id, MAX(e.created) AS last FROM forwards f
    JOIN forward_events e ON e.forward_id = f.id AND e.event = 'delivered'
    WHERE f.kind = 'consent' GROUP BY f.offer_id
)
SELECT o.id AS offer_id,
       CASE WHEN p.last IS NOT NULL THEN 'provided'
            WHEN EXISTS (SELECT 1 FROM receipts r WHERE r.offer_id = o.id) THEN 'unprovided'
            ELSE 'undecided' END AS kind
FROM offers o LEFT JOIN provided p ON p.offer_id = o.id
WHERE o.created < :link_cutoff
  AND (p.last IS NULL OR p.last < :provision_cutoff)
  AND NOT EXISTS (SELECT 1 FROM forwards f JOIN outbox x ON x.forward_id = f.id
                  WHERE f.offer_id = o.id)
"""

_ADDRESSES = ("SELECT d.kind, COUNT(*) FROM retention_due d JOIN offers o ON o.id = d.offer_id"
              " WHERE o.erased IS NULL GROUP BY d.kind")
_PROFILES = ("SELECT COUNT(*) FROM profiles p JOIN receipts r ON r.id = p.receipt_id"
             " WHERE p.data IS NOT NULL AND r.offer_id IN (SELECT offer_id FROM retention_due)")
_PAYLOADS = ("SELECT COUNT(*) FROM forwards WHERE payload IS NOT NULL"
             " AND offer_id IN (SELECT offer_id FROM retention_due)")

_DUE_ADDRESSES = ("SELECT o.id, o.recipient FROM offers o JOIN retention_due d"
                  " ON d.offer_id = o.id WHERE o.erased IS NULL")
# The keyed hash is made here, in Python, and written by id: the same statements in both
# backends' dialects (no function registered in the database).
_ERASE_ADDRESS = "UPDATE offers SET candidate = ?, recipient = ?, erased = ? WHERE id = ?"
_ERASE = (
    "UPDATE profiles SET data = NULL, erased = :now WHERE data IS NOT NULL AND receipt_id IN"
    " (SELECT r.id FROM receipts r JOIN retention_due d ON d.offer_id = r.offer_id)",
    "UPDATE forwards SET payload = NULL WHERE payload IS NOT NULL"
    " AND offer_id IN (SELECT offer_id FROM retention_due)",
)


def purge(ledger: Ledger, rules: Rules, policy: Policy, *, dry_run: bool = False) -> Purged:
    """Apply the retention rules as of the ledger's clock; what was (would be) erased."""
    now = ledger.now()
    params = {"link_cutoff": policy.link_cutoff(now),
              "provision_cutoff": policy.provision_cutoff(now), "now": stamp(now)}
    if dry_run:
        with ledger.snapshot() as conn:  # the temporary table goes with its rollback
            return _count(conn, params)
    with ledger.write() as conn:
        purged = _count(conn, params)
        conn.executemany(_ERASE_ADDRESS, [
            (rules.candidate(recipient), f"{ERASED_PREFIX}{oid}", params["now"], oid)
            for oid, recipient in conn.execute(_DUE_ADDRESSES).fetchall()])
        for sql in _ERASE:
            conn.execute(sql, params)
        conn.execute("DROP TABLE retention_due")
    return purged


def _count(conn: sqlite3.Connection, params: dict[str, str]) -> Purged:
    conn.execute("DROP TABLE IF EXISTS retention_due")  # the temporary one (searched first)
    conn.execute(_DUE, params)
    addresses = dict(conn.execute(_ADDRESSES).fetchall())
    (profiles,) = conn.execute(_PROFILES).fetchone()
    (payloads,) = conn.execute(_PAYLOADS).fetchone()
    return Purged(addresses.get("undecided", 0), addresses.get("unprovided", 0),
                  addresses.get("provided", 0), int(profiles), int(payloads))
