"""The admin's test rejection (issue 14, item 4): sent through the gateway, then verified.

``send`` hands a rejection with the marker to the gateway on ``gateway.listen`` over
SMTP, as the company: with SMTP AUTH (the password the admin types, used for this one
connection and never kept) unless the site's host is in the company's own
``allow_ips``.  It is ``career-relay send-test``'s client (``career_relay.sample_mail``);
it blocks, so the view runs it on a thread.

``verify`` reads the message source the admin pasted, as their mailbox received it:
the DKIM signature of the company's domain checked with dkimpy, its key looked up
through the same replaceable resolver as the DNS check (``dns_check.TxtLookup``), and
the career-relay link found in the decoded text and HTML parts.
"""

from __future__ import annotations

import contextlib
import email.policy
import ipaddress
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser

import dkim

from career_relay.sample_mail import Sent, message_links, send_test
from career_relay.settings import CompanySettings, Settings
from career_relay.tokens import LinkSigner, TokenError
from career_relay.validate import parse_hostport
from consent_site.dns_check import TxtLookup, dkim_dnsfunc

#: The test's channel (``X-Career-Relay-Channel``): the report's "by channel" names it.
CHANNEL = "career-relay-test"
MAX_SOURCE = 60_000  # characters of a pasted message; a test rejection is about 3 KB
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def needs_auth(settings: Settings, company: CompanySettings) -> bool:
    """Whether the gateway must be told by AUTH that this mail is the company's: unless
    the address the site connects from (loopback, to ``gateway.listen``) is in the
    company's own ``allow_ips`` (SPEC 4: the global list proves nobody)."""
    host, _ = parse_hostport("gateway.listen", settings.gateway.listen)
    address = ipaddress.ip_address(_LOOPBACK.get(host, host))
    return not any(address in ipaddress.ip_network(n, strict=False) for n in company.allow_ips)


def sender_of(company: CompanySettings, admin_email: str) -> str:
    """The From: the admin's own address when it is in one of the company's domains (a
    bounce comes back to them), else ``postmaster@`` the company's first domain."""
    if admin_email.rpartition("@")[2].lower() in {d.lower() for d in company.domains}:
        return admin_email
    return f"postmaster@{company.domains[0]}"


def send(settings: Settings, company: CompanySettings, admin_email: str, to: str,
         password: str | None) -> Sent:
    """The test rejection to ``to`` through the gateway (blocking; a ``UserError`` names
    the gateway's refusal or that it cannot be reached)."""
    return send_test(settings, rejection=True, to=[to], sender=sender_of(company, admin_email),
                     company_id=company.id, subject=None, password=password,
                     headers={"X-Career-Relay-Channel": CHANNEL}, timeout=20)


@dataclass
class Verdict:
    """What the pasted message shows."""

    signature: str  # "valid", "invalid", "none" (no signature of the company's domain)
    detail: str = ""  # why not valid: a key of ``start_words``
    detail_arg: str = ""
    domain: str = ""  # d= of the signature checked
    selector: str = ""
    links: list[str] = field(default_factory=list)  # career-relay consent links found
    offers: dict[str, str] = field(default_factory=dict)  # offer id -> its link (signed)
    other_signers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.signature == "valid" and bool(self.offers)


def raw_message(pasted: str) -> bytes:
    """The pasted source as a message: CRLF line ends (RFC 5322 2.1; a browser may send
    either), leading blank lines dropped."""
    text = re.sub(r"\r\n|\r|\n", "\r\n", pasted.lstrip("\r\n"))
    return text.encode("utf-8", "surrogateescape")


def verify(settings: Settings, company: CompanySettings, pasted: str,
           lookup: TxtLookup) -> Verdict:
    """Blocking (DNS, and dkimpy's RSA): run it on a thread."""
    raw = raw_message(pasted)
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    verdict = _signature(raw, message, company, lookup)
    prefix = settings.site.public_url.rstrip("/") + "/c/"
    signer = LinkSigner.from_settings(settings)
    for link in message_links(message):
        if not link.startswith(prefix):
            continue
        verdict.links.append(link)
        # A link of another site's keys, or cut when it was copied, names no offer.
        with contextlib.suppress(TokenError):
            verdict.offers.setdefault(signer.offer_id(link[len(prefix):].split("?")[0]), link)
    return verdict


def _signature(raw: bytes, message: EmailMessage, company: CompanySettings,
               lookup: TxtLookup) -> Verdict:
    domains = {d.lower() for d in company.domains}
    others: list[str] = []
    for idx, value in enumerate(message.get_all("DKIM-Signature") or []):
        tags = dict(_tags(str(value)))
        domain, selector = tags.get("d", "").lower(), tags.get("s", "")
        if domain not in domains:
            others.append(domain or "?")
            continue
        try:
            good = dkim.DKIM(raw).verify(idx=idx, dnsfunc=dkim_dnsfunc(lookup))
            why, arg = ("", "") if good else ("mismatch", "")
        except dkim.DKIMException as exc:
            good, why, arg = False, "cannot", str(exc)
        return Verdict("valid" if good else "invalid", why, arg, domain, selector,
                       other_signers=others)
    return Verdict("none", "unsigned", ", ".join(sorted(domains)), other_signers=others)


def _tags(value: str) -> list[tuple[str, str]]:
    """A DKIM-Signature's tag=value pairs (RFC 6376 3.2), white space removed."""
    pairs = []
    for item in value.split(";"):
        name, eq, text = item.partition("=")
        if eq:
            pairs.append((name.strip(), re.sub(r"\s+", "", text)))
    return pairs
