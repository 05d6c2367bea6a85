"""What a candidate may download about themselves (SPEC 6 export; GDPR art. 15 and 20,
APPI art. 33 with the provision records): the offer, every receipt with the
profile given, every forward and where it stands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from career_relay.ledger import Offer, Receipt
from career_relay.timestamps import stamp

if TYPE_CHECKING:
    from career_relay.consent import Consents


def export(consents: Consents, offer: Offer) -> dict[str, Any]:
    """Everything held about the candidate of this offer, and every receipt (GDPR art. 15
    and 20; APPI art. 33 including the provision records)."""
    state = consents.state(offer)
    forwards = consents.store.forwards(offer.id)
    viewed = consents.store.first_viewed(offer.id)
    settings = consents.settings
    agency = settings.agency_of(offer.company)
    return {
        "offer": {
            "company": consents.company(offer),
            "sent_to": offer.recipient,
            "sent": stamp(offer.created),
            "job": offer.job,
            "stage": offer.stage,
            "first_viewed": None if viewed is None else stamp(viewed),
        },
        "decision": state.decision,
        "receipts": [_receipt_json(consents, r) for r in state.receipts],
        "forwards": [{
            "forward_id": f.forward.id,
            "type": f.forward.kind,
            "created": stamp(f.forward.created),
            # The agency this forward went to (its own, whatever the company's is now).
            "recipient": _agency_name(consents, f.forward.agency),
            "delivered": None if f.delivered is None else stamp(f.delivered),
            "status": ("delivered" if f.delivered else "cancelled" if f.cancelled
                       else "held" if f.held else "pending"),
        } for f in forwards],
        "agency": None if agency is None else {
            "name": agency.name, "license_no": agency.license_no,
            "privacy_url": agency.privacy_url},
    }


def _agency_name(consents: Consents, agency_id: str) -> str:
    found = consents.settings.agency_by_id(agency_id)
    return agency_id if found is None else found.name

def _receipt_json(consents: Consents, r: Receipt) -> dict[str, Any]:
    return {
        "receipt_id": r.id,
        "time": stamp(r.created),
        "decision": r.decision,
        "company": r.company,
        "agency": r.agency,
        "notice_version": r.notice_version,
        "notice_hash": r.notice_hash,
        "locale": r.locale,
        "purposes": list(r.purposes),
        "data_items": list(r.data_items),
        "profile": consents.store.profile(r.id),
        "user_agent": r.user_agent,
        "network": r.network,
        "under_review": r.review is not None,
    }
