"""The DNS records a company publishes, and a check of what DNS answers (issue 14, item 4).

``expected`` derives, from the configuration alone, the DKIM TXT record of each of the
company's domains (its ``dkim_selector`` and the public half of its ``dkim_key_file``,
as ``career-relay check-config`` prints it) and the SPF and DMARC advice of
``docs/integrations/dns.md``.  ``check`` compares them with what a resolver answers and
says, for each record, ``ok`` (found and matching), ``different`` (found but not what it
should be) or ``missing``, with what to fix.

The resolver is a boundary, as dkimpy's ``dnsfunc=``: a ``TxtLookup`` takes a name and
returns its TXT records (each record's strings joined, RFC 7208 3.3), ``[]`` when the
name has none or does not exist, and raises ``DnsFailure`` when the lookup itself fails.
``system_txt`` asks the system's resolver through dnspython; tests pass a fake, and the
admin's pasted test rejection is verified through the same boundary (``dkim_dnsfunc``).
Lookups block: callers run them on a thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.resolver

from career_relay.dkimkeys import load_key, public_record
from career_relay.errors import ConfigError
from career_relay.settings import CompanySettings

TxtLookup = Callable[[str], list[str]]
Status = Literal["ok", "different", "missing", "error"]
SMARTHOST = "include:<送信サーバー（スマートホスト）の指定>"
TIMEOUT = 5.0  # seconds for one lookup (dkimpy's default too)


class DnsFailure(Exception):
    """The lookup failed (timeout, no server answered): nothing is known about the name."""


def system_txt(name: str) -> list[str]:
    """The TXT records of ``name`` from the system's resolver (dnspython)."""
    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=TIMEOUT, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise DnsFailure(type(exc).__name__) from None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def dkim_dnsfunc(lookup: TxtLookup) -> Callable[..., bytes | None]:
    """``lookup`` as dkimpy's ``dnsfunc(name, timeout=5)``: the first TXT record, or None."""

    def dnsfunc(name: bytes, timeout: float = TIMEOUT) -> bytes | None:
        try:
            found = lookup(name.decode("ascii").rstrip("."))
        except (UnicodeDecodeError, DnsFailure):
            return None
        return found[0].encode("utf-8") if found else None

    return dnsfunc


@dataclass(frozen=True)
class Record:
    """One record to publish: its kind, its name, the value to publish (or advice)."""

    kind: Literal["DKIM", "SPF", "DMARC"]
    name: str
    value: str

    @property
    def zone_line(self) -> str:
        """As a zone file holds it: strings of at most 255 octets (RFC 1035 3.3.14)."""
        chunks = " ".join(f'"{self.value[i:i + 255]}"' for i in range(0, len(self.value), 255))
        return f"{self.name}. IN TXT ( {chunks} )" if len(self.value) > 255 else (
            f"{self.name}. IN TXT {chunks}")


@dataclass(frozen=True)
class Checked:
    record: Record
    status: Status
    found: tuple[str, ...]
    fix: str = ""  # what to do: a key of ``start_words`` ('' when nothing)
    arg: str = ""  # what the words name: a count, the failure


def expected(company: CompanySettings) -> tuple[list[Record], tuple[str, str] | None]:
    """The records to publish for each of the company's domains, and why DKIM has none
    (a key of ``start_words`` and its argument; None when it has)."""
    records: list[Record] = []
    why = None
    value = ""
    if not (company.dkim_selector and company.dkim_key_file):
        why = ("no_key", "")
    else:
        try:
            value = public_record(load_key(company.dkim_key_file))
        except ConfigError as exc:
            why = ("bad_key", str(exc))
    for domain in company.domains:
        if value:
            records.append(Record("DKIM", f"{company.dkim_selector}._domainkey.{domain}", value))
        records.append(Record("SPF", domain, f"v=spf1 {SMARTHOST} ~all"))
        records.append(Record("DMARC", f"_dmarc.{domain}",
                              f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}"))
    return records, why


def check(records: list[Record], lookup: TxtLookup) -> list[Checked]:
    """Each record against what ``lookup`` answers for its name."""
    return [_check(record, lookup) for record in records]


def _check(record: Record, lookup: TxtLookup) -> Checked:
    try:
        answers = lookup(record.name)
    except DnsFailure as exc:
        return Checked(record, "error", (), "fix_error", str(exc))
    if record.kind == "DKIM":
        return _dkim(record, answers)
    prefix = "v=spf1" if record.kind == "SPF" else "v=dmarc1"
    found = tuple(a for a in answers if a.strip().lower().startswith(prefix))
    if not found:
        return Checked(record, "missing", (), f"fix_{record.kind.lower()}_missing")
    if len(found) > 1:
        # RFC 7208 4.5 and RFC 7489 6.6.3: more than one record is an error (no policy).
        return Checked(record, "different", found, "fix_many", str(len(found)))
    return Checked(record, "ok", found)


def _dkim(record: Record, answers: list[str]) -> Checked:
    found = tuple(a for a in answers if "p=" in a.replace(" ", "") or "dkim1" in a.lower())
    if not found:
        return Checked(record, "missing", (), "fix_dkim_missing")
    want = _key(record.value)
    if any(_key(a) == want for a in found):
        return Checked(record, "ok", found)
    revoked = any(_key(a) == "" for a in found)
    return Checked(record, "different", found,
                   "fix_dkim_revoked" if revoked else "fix_dkim_different")


_TAG = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*(?:;|$)", re.DOTALL)


def _key(record: str) -> str:
    """The p= tag of a DKIM key record (RFC 6376 3.6.1), white space removed."""
    for name, value in _TAG.findall(record):
        if name == "p":
            return re.sub(r"\s+", "", value)
    return ""
