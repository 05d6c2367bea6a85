"""The company API's offers (SPEC 10): made as the gateway makes its own, with what the API
alone knows of them beside the offer, in table ``api_offers`` (migration 0012):

- the Idempotency-Key's Message-ID: the same key for another recipient is refused, and
  the check is made in the write that makes the offer (under the ledger's one write
  lock), so of requests racing with one key and different recipients exactly one makes
  an offer (attack review: several were made);
- the network the request came from (the receipts' form, ``consent.network_of``): an
  accept from that network is held for review (``career_relay.consent``), so a company
  cannot make offers to addresses it controls and accept them from its own office to
  mint credits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from career_relay.ledger.offers import Rejection, View


@dataclass(frozen=True)
class ApiRequest:
    """One ``POST /api/v1/offers``: a rejection of one recipient and where it came from."""

    rejection: Rejection  # one (recipient, fresh offer id); source "api"
    network: str | None  # the requester's network (/24, /48), None when unknown
    idempotent: bool = False  # its Message-ID stands for an Idempotency-Key


class ApiOffers(View):
    """The company API's offers over one open ``Ledger``."""

    def record(self, asked: Sequence[ApiRequest]) -> list[str | None]:
        """Each request's offer id (made now, or found: the caller checks its source), or
        None when its Idempotency-Key was used for another recipient.  One transaction:
        ``Ledger.record_rejections``'s write (``insert_prepared``), the keys checked and
        the rows of ``api_offers`` added in it."""
        answers: list[str | None] = [None] * len(asked)
        keys: dict[tuple[str, str], str] = {}  # (company, key's Message-ID) -> recipient
        kept: list[int] = []
        prepared = self.ledger.prepare([a.rejection for a in asked])  # before the lock
        with self.ledger.write() as conn:
            for n, a in enumerate(asked):
                r = a.rejection
                ((recipient, _),) = r.offers
                if a.idempotent:
                    if (r.company, r.message_id) not in keys:
                        row = conn.execute(
                            "SELECT o.recipient FROM api_offers a JOIN offers o"
                            " ON o.id = a.offer_id WHERE a.company = ? AND a.idempotency = ?",
                            (r.company, r.message_id)).fetchone()
                        keys[r.company, r.message_id] = recipient if row is None else row[0]
                    if keys[r.company, r.message_id] != recipient:
                        continue  # the key is another recipient's: nothing made
                kept.append(n)
            made = self.ledger.insert_prepared(conn, prepared.only(kept))
            rows = []
            for n, ids in zip(kept, made, strict=True):
                r = asked[n].rejection
                ((recipient, fresh),) = r.offers
                answers[n] = ids[recipient]
                if ids[recipient] == fresh:
                    rows.append((fresh, r.company,
                                 r.message_id if asked[n].idempotent else None,
                                 asked[n].network))
            if rows:
                conn.executemany("INSERT INTO api_offers (offer_id, company, idempotency,"
                                 " network) VALUES (?, ?, ?, ?)", rows)
        return answers

    def network(self, offer_id: str) -> str | None:
        """The network the API offer ``offer_id`` was requested from (None: not known)."""
        with self.ledger.read() as conn:
            row = conn.execute("SELECT network FROM api_offers WHERE offer_id = ?",
                               (offer_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])
