"""Offers and the daily counters: what the gateway writes (SPEC 8).

``offers`` holds one row per outside recipient of a rejection, and
``daily_counts`` the per-company daily counters the report needs.  An offer
row is written once and never updated (retention may erase its address);
what happens to it later (views, decisions, forwards) are rows of their own.
The counters are aggregates (how many, never who), incremented in place.

Chained: every offer inserted appends an ``offer`` entry in the same
transaction, with a digest of the row and a keyed hash of the recipient, so
moving an offer to another company, changing its recipient or deleting it
shows in ``ledger verify``.

Idempotent: ``UNIQUE (company, message_id, recipient)`` makes a retried
submission find the offer the first made, whichever process or host races.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from career_relay.ledger import chain as ledger_chain
from career_relay.ledger.rules import Rules
from career_relay.ledger.store import Store
from career_relay.timestamps import parse_stamp, stamp

CounterKind = Literal["rejections", "not_injected", "unmarked_rejections"]
COUNTER_KINDS: tuple[str, ...] = get_args(CounterKind)
#: Where an offer came from (SPEC 10): the gateway, the company API, the company link.
OfferSource = Literal["relay", "api", "link"]
OFFER_SOURCES: tuple[str, ...] = get_args(OfferSource)


@dataclass(frozen=True)
class Offer:
    id: str
    company: str
    message_id: str
    recipient: str
    created: dt.datetime
    job: str | None = None
    channel: str | None = None
    stage: str | None = None
    source: OfferSource = "relay"


@dataclass(frozen=True)
class Rejection:
    """What the ledger records for one accepted rejection."""

    company: str
    message_id: str
    offers: tuple[tuple[str, str], ...]  # (recipient, fresh offer id)
    job: str | None = None
    channel: str | None = None
    stage: str | None = None
    created: dt.datetime | None = None  # when its links were signed (default: now)
    # Counted once per message; a retried submission (its offers exist) counts nothing.
    counters: tuple[CounterKind, ...] = ("rejections",)
    source: OfferSource = "relay"  # SPEC 10: the API's offers are "api", the link's "link"


#: An offer's row: id, company, message_id, recipient, created, job, channel, stage, source.
_Row = tuple[str, str, str, str, str, str | None, str | None, str | None, str]


@dataclass(frozen=True)
class Prepared:
    """Rejections made ready to write (``Ledger.prepare``): their offers' rows and entries."""

    rejections: tuple[Rejection, ...]
    rows: tuple[_Row, ...]
    made: Mapping[str, ledger_chain.NewEntry]  # offer id -> its entry, if inserted
    day: str  # the counters' UTC day

    def only(self, kept: Sequence[int]) -> Prepared:
        """The rejections at the indexes ``kept``, and only their offers' rows."""
        rejections = tuple(self.rejections[n] for n in kept)
        ids = {oid for r in rejections for _, oid in r.offers}
        return Prepared(rejections, tuple(r for r in self.rows if r[0] in ids), self.made,
                        self.day)


class Ledger(Store):
    """The ledger's public face: the store, and the offers and counters the gateway writes.
    The consent side, the outbox, the credits and the admin users are views over it
    (``career_relay.ledger.ConsentLedger``, ``Outbox``, ``Book``, ``AdminUsers``)."""

    def record_offer(
        self,
        company: str,
        message_id: str,
        recipient: str,
        job: str | None = None,
        channel: str | None = None,
        stage: str | None = None,
        source: OfferSource = "relay",
    ) -> Offer:
        """The offer for (``message_id``, ``recipient``), created on the first call only.

        A retried submission (same Message-ID, same recipient) gets the offer
        made the first time, with its id, so its link is the same and no second
        offer exists, even when two processes race.
        """
        if not (company and message_id and recipient):
            raise ValueError("an offer needs a company, a Message-ID and a recipient")
        _check_source(source)
        created = stamp(self._clock())
        row = (self._new_id(), company, message_id, recipient, created, job, channel, stage,
               source)
        with self.write() as conn:
            added = conn.execute(
                "INSERT INTO offers (id, company, message_id, recipient, created, job, channel,"
                " stage, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (company, message_id, recipient) DO NOTHING",
                row,
            ).rowcount
            if added:  # a retried submission finds its offer, and its entry, made already
                ledger_chain.append_many(conn, [self._offer_entry(*row)])
            found = conn.execute(
                f"SELECT {_OFFER_COLUMNS} FROM offers"
                " WHERE company = ? AND message_id = ? AND recipient = ?",
                (company, message_id, recipient),
            ).fetchone()
        return _offer(found)

    def record_rejection(
        self,
        company: str,
        message_id: str,
        offers: Sequence[tuple[str, str]],
        job: str | None = None,
        channel: str | None = None,
        stage: str | None = None,
    ) -> dict[str, str]:
        """One accepted rejection: its counter and an offer per outside recipient.

        ``offers`` pairs each recipient with a fresh id; a recipient that already
        has an offer for this Message-ID (a retried submission) keeps the one it
        had.  Returns recipient -> offer id.
        """
        rejection = Rejection(company, message_id, tuple(offers), job, channel, stage)
        return self.record_rejections([rejection])[0]

    def record_rejections(self, rejections: Sequence[Rejection],
                          counts: Mapping[tuple[str, CounterKind], int] | None = None,
                          *, wait: bool = True) -> list[dict[str, str]]:
        """Several rejections in one transaction: the gateway calls this before its 250,
        and every commit waits for the disk, so concurrent messages share one commit
        (``career_relay.ledger.writer``).  ``counts`` adds (company, counter) totals
        in the same transaction (the classifier's tallies of ordinary mail).

        The transaction holds the ledger's one write lock (SQLite's, or PostgreSQL's
        advisory lock that every host's writers queue on), so what it does while holding
        it sets how many offers the ledger takes a second, whatever the number of hosts
        (docs/performance.md, "Both backends": the ceiling).  Hence everything that needs
        no lock (rows, digests, keyed hashes) is made before it, and the statements in it
        do not grow with the batch: one insert of every offer, whose ``RETURNING`` names
        the offers it made; the chain's head and its new entries; one upsert per counter.
        Each statement is a round trip to the server, and on PostgreSQL the other hosts
        wait through every one of them.

        ``wait=False``: ``WouldWait`` rather than wait for the lock (``Store.write_now``:
        the gateway's event loop)."""
        prepared = self.prepare(rejections)
        with self.write() if wait else self.write_now() as conn:
            return self.insert_prepared(conn, prepared, counts)

    def prepare(self, rejections: Sequence[Rejection]) -> Prepared:
        """What needs no lock: the rows of the offers and their entries (digests, keyed
        hashes), made before the write begins."""
        now = self._clock()
        rows: list[_Row] = []
        for r in rejections:
            _check_source(r.source)
            created = stamp(r.created or now)
            rows.extend((oid, r.company, r.message_id, rcpt, created, r.job, r.channel,
                         r.stage, r.source) for rcpt, oid in r.offers)
        return Prepared(tuple(rejections), tuple(rows),
                        {row[0]: self._offer_entry(*row) for row in rows},
                        now.astimezone(dt.UTC).date().isoformat())

    def insert_prepared(self, conn: Any, prepared: Prepared,
                        counts: Mapping[tuple[str, CounterKind], int] | None = None,
                        ) -> list[dict[str, str]]:
        """The write of ``record_rejections`` in the transaction ``conn`` holds (the
        company API's, which checks its Idempotency-Keys in it: ``ApiOffers``)."""
        results: list[dict[str, str]] = []
        tallies: collections.Counter[tuple[str, str]] = collections.Counter(counts or {})
        entries: list[ledger_chain.NewEntry] = []  # the inserted offers', appended at the end
        inserted = _insert_offers(conn, prepared.rows)
        for r in prepared.rejections:
            added = sum(oid in inserted for _, oid in r.offers)
            # A retried submission adds no offer and is not a second rejection.
            if added or not r.offers:
                tallies.update((r.company, kind) for kind in r.counters)
            if added == len(r.offers):  # every offer is new: its id is the one given
                results.append(dict(r.offers))
            else:  # a retry (or a recipient twice): the offers made before keep their ids
                results.append({rcpt: str(conn.execute(
                    "SELECT id FROM offers WHERE company = ? AND message_id = ?"
                    " AND recipient = ?", (r.company, r.message_id, rcpt)).fetchone()[0])
                    for rcpt, _ in r.offers})
            # The entries of the offers this transaction made, in the rejections' order.
            entries.extend(prepared.made[oid] for _, oid in r.offers if oid in inserted)
        ledger_chain.append_many(conn, entries)
        _add_tallies(conn, prepared.day, tallies)
        return results

    def _offer_entry(self, oid: str, company: str, message_id: str, recipient: str,
                     created: str, job: str | None, channel: str | None, stage: str | None,
                     source: str = "relay") -> ledger_chain.NewEntry:
        """The ``offer`` entry of a row just inserted: the row by digest, the recipient by
        keyed hash (``verify._offers_agree`` checks both)."""
        digest = ledger_chain.offer_digest(
            [oid, company, message_id, created, job, channel, stage], source)
        return (created, company, "offer", oid,
                {"digest": digest,
                 "candidate": ledger_chain.candidate_hash(self.hash_key, recipient)})

    def offer(self, offer_id: str) -> Offer | None:
        with self.read() as conn:
            found = conn.execute(
                f"SELECT {_OFFER_COLUMNS} FROM offers WHERE id = ?", (offer_id,)
            ).fetchone()
        return None if found is None else _offer(found)

    def offers_of_message(self, company: str, message_id: str, limit: int = 2) -> list[Offer]:
        """Up to ``limit`` offers of one message of ``company`` (the company API asks
        whether an Idempotency-Key was used for another recipient)."""
        with self.read() as conn:
            found = conn.execute(
                f"SELECT {_OFFER_COLUMNS} FROM offers WHERE company = ? AND message_id = ?"
                " ORDER BY recipient LIMIT ?", (company, message_id, limit)).fetchall()
        return [_offer(row) for row in found]

    def count(self, company: str, kind: CounterKind, day: dt.date | None = None) -> int:
        """Add one to ``kind`` for ``company`` on ``day`` (UTC today by default); the new total."""
        if kind not in COUNTER_KINDS:
            raise ValueError(f"unknown counter {kind!r}; one of {', '.join(COUNTER_KINDS)}")
        if isinstance(day, dt.datetime):  # a moment, not a day: take its UTC date
            day = day.astimezone(dt.UTC).date()
        when = (day or self._clock().astimezone(dt.UTC).date()).isoformat()
        # ``kind`` is one of the column names above, never caller text.
        with self.write() as conn:
            (total,) = conn.execute(
                f"INSERT INTO daily_counts (company, day, {kind}) VALUES (?, ?, 1)"
                f" ON CONFLICT (company, day) DO UPDATE SET {kind} = daily_counts.{kind} + 1"
                f" RETURNING {kind}",
                (company, when),
            ).fetchone()
        return int(total)

    def counts(self, company: str, day: dt.date) -> dict[str, int]:
        """Every counter of ``company`` on ``day`` (zeros when nothing was counted)."""
        with self.read() as conn:
            found = conn.execute(
                f"SELECT {', '.join(COUNTER_KINDS)} FROM daily_counts"
                " WHERE company = ? AND day = ?",
                (company, day.isoformat()),
            ).fetchone()
        return dict(zip(COUNTER_KINDS, found or (0,) * len(COUNTER_KINDS), strict=True))


#: Offers per ``INSERT``: 9 parameters each, far below SQLite's 32,766 (and PostgreSQL's 65,535).
_INSERT_CHUNK = 500


def _insert_offers(conn: Any, rows: Sequence[Sequence[Any]]) -> set[str]:
    """Insert the offers; the ids of those inserted (a retried submission's exist already:
    ``ON CONFLICT DO NOTHING`` skips them, and ``RETURNING`` names only the rows made)."""
    inserted: set[str] = set()
    for at in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[at:at + _INSERT_CHUNK]
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        found = conn.execute(
            "INSERT INTO offers (id, company, message_id, recipient, created, job, channel,"
            f" stage, source) VALUES {values}"
            " ON CONFLICT (company, message_id, recipient) DO NOTHING RETURNING id",
            [value for row in chunk for value in row]).fetchall()
        inserted.update(str(oid) for (oid,) in found)
    return inserted


def _add_tallies(conn: Any, day: str, tallies: Mapping[tuple[str, str], int]) -> None:
    """Add the batch's counts to ``daily_counts``: one statement per counter, whatever the
    number of companies (``executemany`` is one round trip on PostgreSQL: a pipeline)."""
    by_kind: dict[str, list[tuple[str, str, int]]] = collections.defaultdict(list)
    for (company, kind), n in sorted(tallies.items()):
        if kind not in COUNTER_KINDS:  # column names from COUNTER_KINDS only
            raise ValueError(f"unknown counter {kind!r}")
        by_kind[kind].append((company, day, n))
    for kind, values in by_kind.items():
        conn.executemany(
            f"INSERT INTO daily_counts (company, day, {kind}) VALUES (?, ?, ?)"
            # The column qualified: PostgreSQL finds a bare name ambiguous here.
            f" ON CONFLICT (company, day) DO UPDATE"
            f" SET {kind} = daily_counts.{kind} + excluded.{kind}", values)


_OFFER_COLUMNS = "id, company, message_id, recipient, created, job, channel, stage, source"


def _offer(row: Any) -> Offer:
    oid, company, message_id, recipient, created, job, channel, stage, source = row
    return Offer(oid, company, message_id, recipient, parse_stamp(created), job, channel, stage,
                 source)


def _check_source(source: str) -> None:
    if source not in OFFER_SOURCES:  # the table's CHECK says the same, later and less clearly
        raise ValueError(f"unknown offer source {source!r}; one of {', '.join(OFFER_SOURCES)}")


class View:
    """A part of the ledger over one open ``Ledger`` (``Outbox``, ``ConsentLedger``,
    ``Book``): the rules given, else the ledger's."""

    def __init__(self, ledger: Ledger, rules: Rules | None = None) -> None:
        self.ledger = ledger
        self._rules = rules

    @property
    def rules(self) -> Rules:
        """The rules given, else the ledger's (which a reload replaces)."""
        return self._rules or self.ledger.rules
