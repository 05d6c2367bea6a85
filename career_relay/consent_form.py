"""The consent form's fields and the facts kept about who sent it (SPEC 6): the profile a
candidate may give and its checks, the network a receipt keeps, scanners held for review.

Plain functions over strings; ``career_relay.consent`` records what they decide.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

#: The profile a candidate may give (SPEC 6), in the order the form shows them.
FIELDS = ("name", "email", "phone", "desired_job", "desired_location", "note")
REQUIRED = ("name", "email")
MAX_LENGTH = {"name": 100, "email": 254, "phone": 30, "desired_job": 200,
              "desired_location": 200, "note": 2000}
# Deliberately loose (RFC 5322 allows far more than any form should police):
# one @, no spaces, a dot in the domain.  The agency confirms the address itself.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"[0-9０-９+()（）\-‐－ 　]{6,30}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: User agents of link scanners and previewers (research/consent_domain.md 5.1).
#: A decision from one of them is held for review, never forwarded on its own.
SCANNER_AGENTS = re.compile(
    r"bot\b|crawler|spider|preview|scanner|headlesschrome|phantomjs|python-requests|"
    r"python-urllib|aiohttp|go-http-client|curl/|wget/|libwww|java/|okhttp|"
    r"safelinks|proofpoint|mimecast|barracuda|urldefense|msoffice|ms-office|"
    r"microsoft office|outlook-ios|skypeuripreview|slack|discord|facebookexternalhit",
    re.IGNORECASE,
)


def network_of(address: str | None) -> str:
    """The client's network, not its address: /24 for IPv4, /48 for IPv6 (data minimisation)."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def validate_profile(form: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(the cleaned profile, field -> error code).  Codes: required, too_long, email, phone.

    Values are kept as typed (trimmed, control characters removed); the
    caller shows them back on errors, escaped.
    """
    profile: dict[str, str] = {}
    errors: dict[str, str] = {}
    for field in FIELDS:
        value = _CONTROL.sub("", str(form.get(field, ""))).strip()
        if field != "note":
            value = " ".join(value.split())
        profile[field] = value
        if not value:
            if field in REQUIRED:
                errors[field] = "required"
            continue
        if len(value) > MAX_LENGTH[field]:
            errors[field] = "too_long"
        elif field == "email" and not _EMAIL.fullmatch(value):
            errors[field] = "email"
        elif field == "phone" and not _PHONE.fullmatch(value):
            errors[field] = "phone"
    return {k: v for k, v in profile.items() if v}, errors


def scanner_like(user_agent: str) -> bool:
    return not user_agent.strip() or bool(SCANNER_AGENTS.search(user_agent))
