"""The one settings table: every setting, declared once with its default and help.

Each section is a frozen dataclass; ``setting(...)`` gives a field its
default, its help text and whether it is a secret (masked in ``repr()``) or
a path (resolved against the configuration file's directory).  The loader
is ``career_relay.settings``; ``docs/configuration.md`` is generated from
this table (``career_relay.settings_doc``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from career_relay.settings_base import DEFAULT_AGENCY, MASK, _Section, setting
from career_relay.settings_parties import (
    AgencyEntrySettings,
    AgencySettings,
    CompanySettings,
)

__all__ = [
    "DEFAULT_AGENCY", "MASK", "SECTIONS", "AgencyEntrySettings", "AgencySettings",
    "ApiSettings", "CompanySettings", "DemoSettings", "GatewaySettings", "LedgerSettings",
    "LogSettings", "QueueSettings", "SecretsSettings", "Settings", "SiteSettings",
    "UpstreamSettings", "_Section", "iter_settings", "setting",
]


@dataclass(frozen=True, repr=False)
class GatewaySettings(_Section):
    listen: str = setting("127.0.0.1:2525", "Address the SMTP server listens on, HOST:PORT.")
    hostname: str = setting(
        "relay.example.com", "Name used in the SMTP greeting, EHLO and the Received header."
    )
    max_message_size: int = setting(
        26214400, "Largest message accepted, in bytes; larger mail gets 552 (RFC 1870)."
    )
    require_auth: bool = setting(
        True,
        "Offer SMTP AUTH and require it from clients outside allow_ips. false: AUTH is not "
        "offered and only allow_ips may relay. Never an open relay either way.",
    )
    allow_ips: tuple[str, ...] = setting(
        ["127.0.0.1/32"],
        "Networks whose clients may relay without AUTH (CIDR notation). Their mail is no "
        "company's: relayed unchanged and unsigned (companies.allow_ips proves a company).",
    )
    tls_cert: str = setting("", "PEM certificate; STARTTLS is offered when cert and key are set.",
                            path=True)
    tls_key: str = setting("", "PEM private key for tls_cert.", path=True)
    on_error: str = setting(
        "pass",
        'What to do when a rejection cannot be changed: "pass" relays the original '
        'unmodified, "tempfail" answers 451.',
    )
    max_recipients: int = setting(
        1000, "Most RCPT per message; more get 452 4.5.3 (RFC 5321 4.5.3.1.8, 4.5.3.1.10)."
    )
    max_fanout_bytes: int = setting(
        4 * 1024**3,
        "Most bytes of copies one rejection may make (its size times its copies, one per "
        "outside recipient): each is signed whole, about 5 ms of CPU per MB. Beyond, 552 "
        "5.3.4 asks the sender to use fewer recipients per message.",
    )
    max_mime_parts: int = setting(
        1000,
        "A rejection with more MIME parts than this (or nesting deeper than 30) is relayed "
        "unmodified and counted as not_injected; bounds the work one message can cause.",
    )
    timeout: int = setting(300, "Seconds an idle SMTP client may wait between commands.")
    workers: int = setting(
        0,
        "SMTP intake processes sharing the listening port (SO_REUSEPORT); each delivers the "
        "mail it accepted. 0 means one per CPU this process may run on.",
    )


@dataclass(frozen=True, repr=False)
class UpstreamSettings(_Section):
    host: str = setting("127.0.0.1", "The company's smarthost that relayed mail is sent to; "
                        "never the gateway's own gateway.listen (a mail loop: refused).")
    port: int = setting(2526, "Port of the smarthost.")
    tls: str = setting("none", "none | starttls | tls (implicit TLS, usually port 465).")
    username: str = setting("", "SMTP AUTH user name at the smarthost; empty for no AUTH.")
    password: str = setting("", "SMTP AUTH password at the smarthost.", secret=True)
    connections: int = setting(
        10, "Most connections to the smarthost at once; each is reused for many messages."
    )
    timeout: int = setting(60, "Seconds to wait for the smarthost to answer before deferring.")
    verify_tls: bool = setting(True, "Check the smarthost's certificate when tls is not none.")


@dataclass(frozen=True, repr=False)
class QueueSettings(_Section):
    dir: str = setting("var/spool", "The durable spool directory.", path=True)
    retry_schedule: tuple[int, ...] = setting(
        [60, 300, 900, 1800, 3600, 7200, 14400],
        "Seconds to wait before each retry after a temporary failure; the last repeats.",
    )
    max_age: int = setting(
        432000, "Seconds a message may stay queued; then the sender gets a bounce (DSN)."
    )


@dataclass(frozen=True, repr=False)
class SiteSettings(_Section):
    listen: str = setting("127.0.0.1:8080", "Address the consent site listens on, HOST:PORT.")
    metrics_listen: str = setting(
        "127.0.0.1:9464",
        "Address of GET /metrics (Prometheus), HOST:PORT; never the candidates' listener. "
        'Empty: no metrics endpoint.',
    )
    public_url: str = setting("http://127.0.0.1:8080", "Base of every consent link.")
    link_max_age_days: int = setting(90, "Days a consent link stays valid.")
    review_window: int = setting(
        30, "Seconds after delivery in which a consent POST is held for review."
    )
    trusted_proxies: tuple[str, ...] = setting(
        [],
        "Reverse proxies (CIDR) in front of the site whose X-Forwarded-For it believes: a "
        "request from one of them is from the last address the proxies added. For the "
        "company link's and the admin login's limits and the receipts' network. Empty: the "
        "connection's own address.",
    )
    time_zone: str = setting(
        "Asia/Tokyo",
        "IANA time zone (Asia/Tokyo, UTC, Europe/Berlin, ...) of every time on the admin "
        "pages, which name it; the ledger, the CSV exports and the report's days stay UTC.",
    )
    chromium: str = setting(
        "/usr/bin/chromium",
        "The headless Chromium that prints the yearly report as PDF (`report --format pdf`, "
        "the admin page's PDF): a path, or a name looked up on PATH.",
    )
    pdf_timeout: int = setting(
        60, "Seconds Chromium may take to print one PDF before it is stopped."
    )


@dataclass(frozen=True, repr=False)
class LedgerSettings(_Section):
    path: str = setting("var/ledger.db", "The SQLite ledger.", path=True)
    url: str = setting(
        "",
        "A shared ledger for several gateways and sites: `postgresql://user:password@host/db` "
        "(PostgreSQL 14 or later; SPEC 12). Empty: the SQLite file `path`. Secret (it may "
        "hold a password): masked wherever settings are shown.",
        secret=True,
    )
    credit_every: int = setting(10, "Qualified forwards per free referral credit.")
    qualify_on: str = setting(
        "delivered",
        '"delivered" | "registered": when a forward counts toward credit_every. "delivered": '
        'once the agency received it (SPEC 8). "registered": only once the agency also '
        "reported the candidate registered, or a later outcome (interviewing, placed, "
        "not_placed) through the agency API (SPEC 11), for agencies that want that deal.",
    )
    head_file: str = setting(
        "",
        "The chain head (`<n>:<hash>` of the last entry) kept outside the database, so "
        "`ledger verify` notices the last entries removed; written after every commit that "
        "adds entries, mode 0600. Empty: beside the ledger, `<path>.head`. Copy or move "
        "it with the ledger.",
        path=True,
    )


@dataclass(frozen=True, repr=False)
class ApiSettings(_Section):
    rate_limit: int = setting(
        600,
        "Requests a minute each company API key may make (SPEC 10); beyond it 429 with "
        "Retry-After. Counted by each site process for itself.",
    )


@dataclass(frozen=True, repr=False)
class SecretsSettings(_Section):
    signing_keys: tuple[str, ...] = setting(
        [], "Keys that sign consent links, newest first; older keys still verify.", secret=True
    )
    hash_key: str = setting(
        "",
        "Key of the hash that stands for a candidate in the ledger (de-duplication after "
        "erasure). Set it once and never change it: the ledger keeps its fingerprint and "
        "refuses another; empty: the oldest signing key.",
        secret=True,
    )


@dataclass(frozen=True, repr=False)
class LogSettings(_Section):
    level: str = setting("info", "debug | info | warning | error.")
    format: str = setting("text", "text | json (one JSON object per line).")


@dataclass(frozen=True, repr=False)
class DemoSettings(_Section):
    capture_dir: str = setting(
        "",
        "Demo only: when set, serve also runs a capture upstream on upstream.host:port that "
        "writes every relayed message to this directory as an .eml file.",
        path=True,
    )
    agency_dir: str = setting(
        "",
        "Demo only: when set, serve also runs a stand-in agency on agency.webhook_url that "
        "checks each forward's signature and writes it to this directory as a .json file.",
        path=True,
    )


SECTIONS: dict[str, type[_Section]] = {
    "gateway": GatewaySettings,
    "upstream": UpstreamSettings,
    "queue": QueueSettings,
    "site": SiteSettings,
    "ledger": LedgerSettings,
    "api": ApiSettings,
    "secrets": SecretsSettings,
    "agency": AgencySettings,
    "log": LogSettings,
    "demo": DemoSettings,
}


@dataclass(frozen=True)
class Settings:
    gateway: GatewaySettings
    upstream: UpstreamSettings
    queue: QueueSettings
    site: SiteSettings
    ledger: LedgerSettings
    secrets: SecretsSettings
    agency: AgencySettings
    log: LogSettings
    demo: DemoSettings
    companies: tuple[CompanySettings, ...]
    source: Path | None = None
    api: ApiSettings = field(default_factory=lambda: ApiSettings())
    #: The ``[[agencies]]`` tables as written; ``all_agencies`` adds the ``[agency]`` one.
    agencies: tuple[AgencyEntrySettings, ...] = ()
    #: Whether the file (or the environment) gave an ``[agency]`` table.
    agency_given: bool = False

    @cached_property
    def all_agencies(self) -> tuple[AgencyEntrySettings, ...]:
        """Every agency by id: the ``[[agencies]]``, and ``[agency]`` as ``default`` when it
        is given, or when there is no ``[[agencies]]`` at all (the single agency of old).
        When both define ``default`` (``check-config`` refuses it) the entry wins."""
        listed = self.agencies
        if any(a.id == DEFAULT_AGENCY for a in listed) or (listed and not self.agency_given):
            return listed
        single = {f.name: getattr(self.agency, f.name)
                  for f in dataclasses.fields(AgencySettings)}
        return (AgencyEntrySettings(id=DEFAULT_AGENCY, **single), *listed)

    def agency_by_id(self, agency_id: str) -> AgencyEntrySettings | None:
        """The agency with this id; None when none has it."""
        for agency in self.all_agencies:
            if agency.id == agency_id:
                return agency
        return None

    def agency_of(self, company_id: str) -> AgencyEntrySettings | None:
        """The agency a company's candidates register with (``companies.agency``); None
        for a company that is not configured, or that names no configured agency (which
        ``check-config`` refuses): never another agency in its place."""
        company = self.company(company_id)
        return None if company is None else self.agency_by_id(company.agency)

    def company(self, company_id: str) -> CompanySettings | None:
        """The company with this id (``companies.id``); None when none has it (any more:
        a reload may remove one whose offers the ledger still holds)."""
        for company in self.companies:
            if company.id == company_id:
                return company
        return None

    def company_for_domain(self, domain: str) -> CompanySettings | None:
        domain = domain.lower()
        for company in self.companies:
            if domain in company.domains:
                return company
        return None


def iter_settings() -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """Every (section, field) of the table, then ``agencies`` (id first) and ``companies``:
    the docs are checked against it."""
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            yield name, f
    entry = {f.name: f for f in dataclasses.fields(AgencyEntrySettings)}
    yield "agencies", entry.pop("id")
    for f in entry.values():
        yield "agencies", f
    for f in dataclasses.fields(CompanySettings):
        yield "companies", f
