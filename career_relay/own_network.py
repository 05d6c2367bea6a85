"""Whether an accept of an API offer comes from the company's side (attack review).

A company could mint free-referral credits alone: offers through the API to addresses
it controls, each link opened from its own office after ``site.review_window``, and
accepted.  Such an accept is held for review (reason ``api-network``, SPEC 8) when it
comes from the network the offer was requested from (``ApiOffers.network``, in the
receipts' form: /24 for IPv4, /48 for IPv6) or from inside the company's ``allow_ips``
(its own sending hosts).  A held accept's forward waits, and it neither qualifies nor
mints a credit, until an admin approves it.  A candidate who happens to share the
company's network is held, not refused: an admin lets it through.
"""

from __future__ import annotations

import ipaddress

from career_relay.ledger import ApiOffers, Ledger, Offer
from career_relay.settings_table import Settings

#: ``receipts.review`` for such an accept.
REASON = "api-network"


def company_side(settings: Settings, ledger: Ledger, offer: Offer, address: str | None,
                 network: str) -> bool:
    """Whether the client at ``address`` (its ``network``, as receipts store it) is the
    API offer's requester's network or inside the company's ``allow_ips``."""
    if offer.source != "api":
        return False
    company = settings.company(offer.company)
    if company is not None and address and _inside(address, company.allow_ips):
        return True
    return network != "unknown" and ApiOffers(ledger).network(offer.id) == network


def _inside(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for cidr in networks:
        try:
            if ip in ipaddress.ip_network(cidr, strict=False):
                return True
        except ValueError:  # validate.py refuses a bad CIDR at start-up
            continue
    return False
