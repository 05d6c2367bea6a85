"""Who may relay, and with which sender: the gateway is never an open relay.

A client relays when it authenticated as one of the configured companies
(SMTP AUTH, RFC 4954) or when its address is in ``gateway.allow_ips``.  An
authenticated company may only send as its own domains (SPEC 4).
"""

from __future__ import annotations

import ipaddress
from email.utils import getaddresses

from career_relay.passwords import verify_password
from career_relay.settings import CompanySettings, Settings


class RelayPolicy:
    def __init__(self, settings: Settings):
        self._networks = [ipaddress.ip_network(n, strict=False)
                          for n in settings.gateway.allow_ips]
        self._require_auth = settings.gateway.require_auth
        self._by_user: dict[str, CompanySettings] = {}
        self.auth_offered = False
        self.reload(settings)

    def reload(self, settings: Settings) -> None:
        """The companies' logins from ``settings`` (SIGHUP): a new table, swapped in whole.

        A session that already authenticated keeps its company for its
        transactions; the next AUTH checks against the new table.
        """
        by_user = {c.smtp_username: c for c in settings.companies if c.smtp_username}
        self._by_user, self.auth_offered = by_user, self._require_auth and bool(by_user)

    def client_allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._networks)

    def authenticate(self, username: bytes, password: bytes) -> CompanySettings | None:
        """Blocking (argon2 is deliberately slow): call it from a thread."""
        company = self._by_user.get(username.decode("utf-8", "replace"))
        if company is None:
            # Spend the same time as a real check so user names cannot be probed.
            verify_password(_DUMMY_HASH, password)
            return None
        return company if verify_password(company.smtp_password_hash, password) else None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def from_domains(header_block: bytes) -> list[str]:
    """The domains of the addresses in the From: header field(s)."""
    values = []
    for line in _unfolded_fields(header_block):
        name, _, value = line.partition(":")
        if name.strip().lower() == "from":
            values.append(value)
    return [domain_of(addr) for _, addr in getaddresses(values) if addr]


def foreign_from_domains(header_block: bytes, company: CompanySettings) -> list[str]:
    """Domains in the From: header(s) that are not the company's own."""
    found = from_domains(header_block)
    if not found:
        return ["(no From address)"]
    return [d for d in found if d not in company.domains]


def _unfolded_fields(header_block: bytes) -> list[str]:
    text = header_block.decode("utf-8", "replace")
    # RFC 5322 section 2.2.3: a CRLF followed by white space continues the field.
    return text.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n")


_DUMMY_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA"
               "$VFaQsYwVhgn0ZlLhcTlBQvfuVLmKB9nZ8MkeMIqPO6k")
