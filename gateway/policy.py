"""Who may relay, whose mail it is, and with which sender (SPEC 4, DESIGN decision 4).

A client relays when it authenticated as one of the configured companies
(SMTP AUTH, RFC 4954), when its address is in a company's own
``companies.allow_ips``, or when it is in ``gateway.allow_ips``.  Only the
first two make the mail a company's (links, its DKIM key, its ledger); the
global list only lets a client relay, unchanged and unsigned, because a
network such as a cloud provider's is shared by many tenants and proves
nobody.  The From header never decides whose mail it is; it must then
match the proven company.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from career_relay.passwords import verify_password
from career_relay.settings import CompanySettings, Settings
from gateway.throttle import AuthThrottle


class RelayPolicy:
    def __init__(self, settings: Settings, workers: int = 1):
        self.throttle = AuthThrottle(workers)
        self._networks = [ipaddress.ip_network(n, strict=False)
                          for n in settings.gateway.allow_ips]
        self._require_auth = settings.gateway.require_auth
        self._by_user: dict[str, CompanySettings] = {}
        self._owned: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                CompanySettings]] = []
        self.auth_offered = False
        self.reload(settings)

    def reload(self, settings: Settings) -> None:
        """The companies' logins from ``settings`` (SIGHUP): a new table, swapped in whole.

        A session that already authenticated keeps its company for its
        transactions; the next AUTH checks against the new table.
        """
        by_user = {c.smtp_username: c for c in settings.companies if c.smtp_username}
        owned = [(ipaddress.ip_network(n, strict=False), c)
                 for c in settings.companies for n in c.allow_ips]
        self._by_user, self._owned = by_user, owned
        self.auth_offered = self._require_auth and bool(by_user)

    def client_allowed(self, ip: str) -> bool:
        """May this address relay without AUTH (the global list, or a company's own)?"""
        addr = _ip(ip)
        return addr is not None and (any(addr in net for net in self._networks)
                                     or any(addr in net for net, _ in self._owned))

    def owners(self, ip: str) -> tuple[CompanySettings, ...]:
        """The companies whose own networks hold this address (usually one)."""
        addr = _ip(ip)
        if addr is None:
            return ()
        found: list[CompanySettings] = []
        for net, company in self._owned:
            if addr in net and company not in found:
                found.append(company)
        return tuple(found)

    def authenticate(self, username: bytes, password: bytes) -> CompanySettings | None:
        """Blocking (argon2 is deliberately slow): call it from a thread."""
        company = self._by_user.get(username.decode("utf-8", "replace"))
        if company is None:
            # Spend the same time as a real check so user names cannot be probed.
            verify_password(_DUMMY_HASH, password)
            return None
        return company if verify_password(company.smtp_password_hash, password) else None


@functools.lru_cache(maxsize=1024)
def _ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Asked for MAIL, RCPT and DATA of every message (2 us a parse): a relay's clients
    # are few, and a flood of new addresses only turns the bounded cache over.
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def company_by_from(owners: tuple[CompanySettings, ...], header_block: bytes
                    ) -> CompanySettings | None:
    """Among the proven ``owners`` of a client, the one whose domain is the From's; None
    when the From is not exactly one mailbox of one of them (SPEC 4)."""
    domain = single_from_domain(header_block)
    return next((c for c in owners if domain in c.domains), None)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def from_mailboxes(header_block: bytes) -> list[list[str]]:
    """The addresses of each From: field, in order (RFC 5322 3.6.2, 3.4).

    Parsed here, in one pass, rather than with ``email.utils.getaddresses``:
    that recurses into nested comments (a From of 500 of them raised
    RecursionError) and, before the CVE-2023-27043 fix that Python 3.11.7
    lacks, reads some lists as one address.  A group (``name: a, b;``) yields
    a ``":"`` entry, which is never a mailbox.
    """
    return [_mailboxes(value) for name, value in _fields(header_block) if name == "from"]


def single_from_domain(header_block: bytes) -> str | None:
    """The From domain when there is exactly one From field with exactly one mailbox."""
    found = from_mailboxes(header_block)
    if len(found) != 1 or len(found[0]) != 1 or "@" not in found[0][0]:
        return None
    return domain_of(found[0][0])


def from_domains(header_block: bytes) -> list[str]:
    """The domains of the addresses in the From: header field(s)."""
    return [domain_of(a) for field in from_mailboxes(header_block) for a in field if "@" in a]


def foreign_from_domains(header_block: bytes, company: CompanySettings) -> list[str]:
    """What is wrong with the From of a company's message: [] when it is exactly one
    mailbox of one of the company's domains (SPEC 4)."""
    found = from_mailboxes(header_block)
    if not found or not any(found):
        return ["(no From address)"]
    if len(found) != 1 or len(found[0]) != 1 or "@" not in found[0][0]:
        return ["(not exactly one From mailbox)"]
    domain = domain_of(found[0][0])
    return [] if domain in company.domains else [domain]


def _fields(header_block: bytes) -> list[tuple[str, str]]:
    text = header_block.decode("utf-8", "replace")
    # RFC 5322 section 2.2.3: a CRLF followed by white space continues the field.
    lines = text.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n")
    out = []
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            out.append((name.strip().lower(), value))
    return out


_PLAIN_MAILBOX = re.compile(r"[^()\\\",:;<>]*(?:<[^()\\\",:;<>]*>)?[ \t]*")


def _mailboxes(value: str) -> list[str]:
    """Addresses of a mailbox-list, split at top-level commas; comments, quoted strings
    and angle brackets read with counters, never recursion."""
    if _PLAIN_MAILBOX.fullmatch(value):  # the common "Name <a@b>" or "a@b": one mailbox
        address = _address(value)
        return [address] if address else []
    out: list[str] = []
    bare: list[str] = []  # the current mailbox's characters outside comments/quotes
    angle: list[str] | None = None
    depth, quoted, escaped, group, bad = 0, False, False, False, False
    for ch in value:
        if escaped:
            escaped = False
            if not depth and angle is not None:
                angle.append(ch)
            elif not depth:
                bare.append(ch)
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
        elif depth:
            depth += {"(": 1, ")": -1}.get(ch, 0)
        elif quoted:
            quoted = ch != '"'
            if angle is not None:
                angle.append(ch)
            else:
                bare.append(ch)
        elif ch == "(":
            depth = 1
        elif ch == '"':
            quoted = True
            (angle if angle is not None else bare).append(ch)
        elif ch == "<" and angle is None:
            bad = bad or any(piece.startswith("<") for piece in bare)  # a second <addr>
            angle = []
        elif ch == ">" and angle is not None:
            bare, angle = ["<" + "".join(angle) + ">"], None
        elif angle is not None:
            angle.append(ch)
        elif ch in ",;":
            out.append(" " if bad else _address("".join(bare)))
            bare, bad = [], False
        elif ch == ":":
            group, bare = True, []
        else:
            bare.append(ch)
    if angle is not None or quoted or depth or bad:
        out.append(" ")  # unbalanced, or two addresses in one: never a valid mailbox
    else:
        out.append(_address("".join(bare)))
    found = [a for a in out if a]
    return [*found, ":"] if group else found



def _address(text: str) -> str:
    text = text.strip()
    if "<" in text and text.endswith(">"):
        inner = text[text.rindex("<") + 1:-1].strip()
        return inner.rpartition(":")[2].strip()  # obsolete route: <@a,@b:user@host>
    return "" if " " in text else text


_DUMMY_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA"
               "$VFaQsYwVhgn0ZlLhcTlBQvfuVLmKB9nZ8MkeMIqPO6k")
