"""Consent decisions (SPEC 6, 7): what each one records and what it sends the agency.

The site's views turn HTTP into calls here; nothing here sees a request.

- ``accept``: a receipt, the profile the candidate gave, and a consent
  forward, in one transaction.  Accepting again while accepted changes
  nothing (a double click, a resubmitted form) and returns the receipt in force.
- ``decline``: a receipt, nothing else; nothing the candidate typed is kept.
- ``withdraw``: a receipt; a consent not yet sent is cancelled, one the
  agency has (or may have) gets a withdrawal forward telling it to delete.
- ``erase``: as withdraw, and every value the candidate typed is erased,
  here and in the forwards kept; the receipts stay (who decided what, when,
  under which notice: the provision record of APPI art. 29 needs them).

Held for review (SPEC 8; DESIGN decision 3): a decision from a known
scanner's user agent, or within ``site.review_window`` seconds of the link
being sent, is recorded with ``review`` set; its forward waits in the outbox
until an admin approves it, so a scanner's "consent" never reaches the agency.
So is every accept of a company-link offer (``link``, SPEC 10: nothing proves
the company rejected that person), and an API offer's accept from the
company's own network (``api-network``: ``own_network``).  The window is
measured from the offer's creation: the gateway signs the link when it takes
the mail, a few milliseconds before it delivers it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from career_relay import consent_export, own_network

# Re-exported: the site and the tests took them from here before consent_form existed.
from career_relay.consent_form import FIELDS as FIELDS
from career_relay.consent_form import network_of as network_of
from career_relay.consent_form import scanner_like as scanner_like
from career_relay.consent_form import validate_profile as validate_profile
from career_relay.errors import DecisionRaced, UserError
from career_relay.ledger import ConsentLedger, Decision, Forward, ForwardKind, Offer, Receipt
from career_relay.own_network import company_side
from career_relay.settings_table import AgencyEntrySettings as AgencySettings
from career_relay.settings_table import Settings
from career_relay.timestamps import stamp

#: The job and stage they applied for: shared only when ``share_application`` is ticked.
APPLICATION = "application"

PURPOSE_REGISTRATION = "agency_registration"
PURPOSE_APPLICATION = "share_application"
#: Decisions made again when another site recorded one on the same offer meanwhile.
DECISION_TRIES = 3
T = TypeVar("T")


class ConsentError(UserError):
    """A decision that cannot be taken in the offer's current state."""


@dataclass(frozen=True)
class Notice:
    """The exact notice text a candidate was shown, and what a receipt cites of it."""

    text: str
    locale: str
    digest: str
    version: str

    @classmethod
    def of(cls, text: str, locale: str) -> Notice:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls(text, locale, digest, f"{locale}-{digest[:12]}")


@dataclass(frozen=True)
class Client:
    """Who sent a decision: kept in the receipt (user agent; network, not the address)."""

    user_agent: str
    address: str | None

    @property
    def network(self) -> str:
        return network_of(self.address)


@dataclass(frozen=True)
class State:
    """Where an offer stands: its decision in force and its history."""

    decision: Decision | None
    current: Receipt | None
    receipts: tuple[Receipt, ...]

    @property
    def accepted(self) -> bool:
        return self.decision == "accept"

    @property
    def erased(self) -> bool:
        return self.decision == "erase"


def _newest(state: State) -> str | None:
    """The receipt a decision on ``state`` follows (``record_decision``'s ``after``)."""
    return None if state.current is None else state.current.id


def subject_id(offer_id: str) -> str:
    """The candidate's stable id at the agency: unlinkable to the link that carries ``offer_id``."""
    return "sb_" + hashlib.sha256(f"career-relay/subject:{offer_id}".encode()).hexdigest()[:24]


class Consents:
    """The decisions of candidates, over the ledger's consent tables."""

    def __init__(self, settings: Settings, store: ConsentLedger) -> None:
        self.settings = settings
        self.store = store

    def state(self, offer: Offer) -> State:
        receipts = tuple(self.store.receipts(offer.id))
        # Only these four change where an offer stands; the newest one wins.
        current = receipts[-1] if receipts else None
        return State(None if current is None else current.decision, current, receipts)

    def view(self, offer: Offer) -> None:
        self.store.record_view(offer.id)

    def shown(self, offer: Offer, notice: Notice) -> None:
        """Keep the notice text (once): a receipt cites its hash, this keeps the proof."""
        self.store.record_notice(notice.digest, notice.version, notice.locale, offer.company,
                                 notice.text)

    def review_reason(self, offer: Offer, client: Client, now: dt.datetime) -> str | None:
        if scanner_like(client.user_agent):
            return "scanner"
        if offer.source == "link":  # nothing proves the company rejected them (SPEC 10)
            return "link"
        if (now - offer.created).total_seconds() < self.settings.site.review_window:
            return "review_window"
        if company_side(self.settings, self.store.ledger, offer, client.address, client.network):
            return own_network.REASON  # an API offer accepted from the company's network
        return None

    # -- decisions ------------------------------------------------------------------------

    def accept(self, offer: Offer, notice: Notice, profile: dict[str, str],
               share_application: bool, client: Client) -> Receipt:
        return self._decided(offer, lambda state: self._accept(
            state, offer, notice, profile, share_application, client))

    def _accept(self, state: State, offer: Offer, notice: Notice, profile: dict[str, str],
                share_application: bool, client: Client) -> Receipt:
        if state.erased:
            raise ConsentError("this candidate's data was erased; the link no longer accepts")
        if state.accepted and state.current is not None and not self._rejected(state.current):
            return state.current  # a resubmitted form: the consent in force stands
        now = self.store.ledger.now()
        purposes = [PURPOSE_REGISTRATION] + ([PURPOSE_APPLICATION] if share_application else [])
        items = [f for f in FIELDS if profile.get(f)]
        if share_application:
            items.append(APPLICATION)
        agency = self.agency(offer)
        receipt = self._receipt(offer, "accept", now, client, notice, purposes, items,
                                review=self.review_reason(offer, client, now))
        forward_id = self._new_id("fw")
        payload = self._consent_payload(forward_id, offer, receipt, profile, share_application)
        forward = Forward(forward_id, offer.id, receipt.id, offer.company, "consent", now,
                          payload, agency=agency.id)
        self.store.record_decision(receipt, profile=profile, forward=forward,
                                   notice_text=notice.text, after=_newest(state))
        return receipt

    def _decided(self, offer: Offer, decide: Callable[[State], T]) -> T:
        """``decide`` on the offer's state, decided again if another site recorded a decision
        meanwhile (``after``): two sites taking one form at once forwarded the candidate's
        data to the agency twice (attack review)."""
        for _ in range(DECISION_TRIES - 1):
            with contextlib.suppress(DecisionRaced):
                return decide(self.state(offer))
        return decide(self.state(offer))

    def _rejected(self, receipt: Receipt) -> bool:
        """An accept held for review that an admin rejected: never sent, so the candidate
        may accept again (and be held again only if it again looks automated)."""
        return receipt.review is not None and self.store.review_verdict(receipt.id) == "reject"

    def decline(self, offer: Offer, notice: Notice, client: Client) -> Receipt:
        return self._decided(offer, lambda state: self._decline(state, offer, notice, client))

    def _decline(self, state: State, offer: Offer, notice: Notice, client: Client) -> Receipt:
        if state.erased:
            raise ConsentError("this candidate's data was erased; the link no longer accepts")
        if state.decision in ("decline", "accept") and state.current is not None:
            return state.current  # declining while registered: withdrawing is the way out
        now = self.store.ledger.now()
        receipt = self._receipt(offer, "decline", now, client, notice, [], [], review=None)
        self.store.record_decision(receipt, notice_text=notice.text, after=_newest(state))
        return receipt

    def withdraw(self, offer: Offer, locale: str, client: Client) -> Receipt | None:
        """None when there is nothing to withdraw (the offer is not accepted)."""
        return self._decided(offer, lambda state: self._retract(
            state, offer, "withdraw", locale, client) if state.accepted else None)

    def erase(self, offer: Offer, locale: str, client: Client) -> Receipt:
        return self._decided(offer, lambda state: state.current if state.erased and (
            state.current is not None) else self._retract(state, offer, "erase", locale, client))

    def _retract(self, state: State, offer: Offer, decision: Decision, locale: str,
                 client: Client) -> Receipt:
        now = self.store.ledger.now()
        # The notice goes where the consent went, whatever the company's agency is now.
        consents = [f.forward for f in self.store.forwards(offer.id)
                    if f.forward.kind == "consent"]
        agency_id = consents[-1].agency if consents else self.agency(offer).id
        known = self.settings.agency_by_id(agency_id)
        receipt = Receipt(self._new_id("rc"), offer.id, offer.company,
                          known.name if known is not None else agency_id,
                          decision, now, None, None, locale, (), (), client.user_agent[:500],
                          client.network)
        kind: ForwardKind = "withdrawal" if decision == "withdraw" else "erasure"
        forward_id = self._new_id("fw")
        consent_ids = [f.id for f in consents if f.agency == agency_id]
        payload = json.dumps({
            "forward_id": forward_id,
            "type": kind,
            "created": stamp(now),
            "subject_id": subject_id(offer.id),
            "company": self.company(offer),
            "refers_to": consent_ids,
            "receipt_id": receipt.id,
            "instruction": "delete",
        }, ensure_ascii=False, sort_keys=True)
        forward = Forward(forward_id, offer.id, receipt.id, offer.company, kind, now, payload,
                          agency=agency_id)
        self.store.record_decision(receipt, forward=forward, cancel_pending_consent=True,
                                   erase=decision == "erase", after=_newest(state))
        return receipt

    # -- what the candidate may see of themselves (SPEC 6 export) -------------------------

    def export(self, offer: Offer) -> dict[str, Any]:
        """Everything held about the candidate of this offer (``consent_export``)."""
        return consent_export.export(self, offer)

    # -- helpers --------------------------------------------------------------------------

    def _receipt(self, offer: Offer, decision: Decision, now: dt.datetime, client: Client,
                 notice: Notice, purposes: list[str], items: list[str],
                 review: str | None) -> Receipt:
        return Receipt(self._new_id("rc"), offer.id, offer.company, self.agency(offer).name,
                       decision, now, notice.digest, notice.version, notice.locale,
                       tuple(purposes), tuple(items), client.user_agent[:500], client.network,
                       review)

    def _new_id(self, prefix: str) -> str:
        """96 random bits from the ledger's generator (seeded in the example ledger)."""
        return f"{prefix}_{self.store.ledger.new_id()}"

    def agency(self, offer: Offer) -> AgencySettings:
        """The agency the offer's company names (``companies.agency``; SPEC 11): its name is
        on the page, the receipt and the notice, and its forwards go there alone."""
        found = self.settings.agency_of(offer.company)
        if found is None:  # check-config refuses it; a company removed by a reload
            raise ConsentError(f"no agency is configured for company {offer.company!r}")
        return found

    def company(self, offer: Offer) -> dict[str, str]:
        found = self.settings.company(offer.company)
        return {"id": offer.company, "name": found.name if found else offer.company}

    def _consent_payload(self, forward_id: str, offer: Offer, receipt: Receipt,
                         profile: dict[str, str], share_application: bool) -> str:
        application = ({"job": offer.job, "stage": offer.stage, "channel": offer.channel}
                       if share_application else None)
        company = self.company(offer)
        return json.dumps({
            "forward_id": forward_id,
            "type": "consent",
            "created": stamp(receipt.created),
            "subject_id": subject_id(offer.id),
            "company": company,
            "candidate": profile,
            "application": application,
            # What the agency must confirm and record as the recipient (APPI art. 30):
            # how the data was obtained, and the consent it rests on.
            "collection": {
                "method": "consent_page",
                "from_candidate": [f for f in FIELDS if profile.get(f)],
                "from_company": [APPLICATION] if share_application else [],
                "provider": company["name"] if share_application else None,
            },
            "consent": {
                "receipt_id": receipt.id,
                "time": stamp(receipt.created),
                "notice_version": receipt.notice_version,
                "notice_hash": receipt.notice_hash,
                "locale": receipt.locale,
                "purposes": list(receipt.purposes),
                "data_items": list(receipt.data_items),
            },
        }, ensure_ascii=False, sort_keys=True)


