"""Checks of a configuration beyond types: each problem is one line naming the setting.

``check_values`` runs on every load and raises on the first problem, so a
broken configuration stops a process at start-up.  ``problems`` collects
every problem, including the files the configuration points to, for
``career-relay check-config``.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from career_relay.errors import ConfigError
from career_relay.settings_base import DEFAULT_AGENCY
from career_relay.timestamps import zone
from career_relay.upstream_loop import upstream_is_gateway

if TYPE_CHECKING:
    from career_relay.settings import AgencySettings, Settings

_CHOICES = {
    ("gateway", "on_error"): ("pass", "tempfail"),
    ("upstream", "tls"): ("none", "starttls", "tls"),
    ("agency", "deliver"): ("webhook", "email", "pull"),
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("log", "format"): ("text", "json"),
    ("ledger", "qualify_on"): ("delivered", "registered"),
}


def parse_hostport(name: str, text: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT) and check both halves."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    digits = port_text.isascii() and port_text.isdigit()  # "²".isdigit() is True
    if not sep or not host or not digits or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{name}: bad listen address {text!r} (expected HOST:PORT)")
    return host, int(port_text)


def check_values(settings: Settings) -> None:
    found = value_problems(settings)
    if found:
        raise ConfigError(found[0])


def value_problems(settings: Settings) -> list[str]:
    out: list[str] = []
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(settings, section), key)
        if value not in allowed:
            out.append(f"{section}.{key} must be one of {', '.join(allowed)}, not {value!r}")
    listen: dict[str, tuple[str, int]] = {}
    for name in ("gateway.listen", "site.listen", "site.metrics_listen"):
        section, key = name.split(".")
        if name == "site.metrics_listen" and not settings.site.metrics_listen:
            continue  # no metrics endpoint
        try:
            listen[name] = parse_hostport(name, getattr(getattr(settings, section), key))
        except ConfigError as exc:
            out.append(str(exc))
    out += _network_problems("gateway.allow_ips", settings.gateway.allow_ips,
                             "every address may relay (an open relay)")
    out += _network_problems("site.trusted_proxies", settings.site.trusted_proxies,
                             "every client could claim any address")
    hostname = settings.gateway.hostname
    if not hostname or any(not (ch.isascii() and (ch.isalnum() or ch in ".-")) for ch in hostname):
        out.append(f"gateway.hostname must be a host name (letters, digits, dots, hyphens), "
                   f"not {hostname!r}")
    if not 0 < settings.upstream.port < 65536:
        out.append(f"upstream.port must be between 1 and 65535, not {settings.upstream.port}")
    if "gateway.listen" in listen and upstream_is_gateway(settings, *listen["gateway.listen"]):
        out.append(f"upstream {settings.upstream.host}:{settings.upstream.port} is where "
                   f"gateway.listen ({settings.gateway.listen}) listens: every message would "
                   "come back to the gateway (a mail loop); set upstream to the company's "
                   "mail server")
    if settings.site.metrics_listen and settings.site.metrics_listen == settings.site.listen:
        out.append("site.metrics_listen must differ from site.listen: metrics are not for "
                   "candidates' eyes")
    out += _ledger_url_problems(settings.ledger.url)
    try:
        zone(settings.site.time_zone)
    except ValueError as exc:
        out.append(f"site.time_zone: {exc}")
    if settings.site.review_window < 0:
        out.append(f"site.review_window must be 0 or more, not {settings.site.review_window}")
    if bool(settings.gateway.tls_cert) != bool(settings.gateway.tls_key):
        out.append("gateway.tls_cert and gateway.tls_key must be set together")
    out += _positive(settings)
    out += _agency_problems(settings)
    out += _company_problems(settings)
    return out


def _ledger_url_problems(url: str) -> list[str]:
    """Never the URL in the message: it holds a password."""
    if not url:
        return []
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError:  # "Invalid IPv6 URL": a traceback before
        scheme = ""
    if scheme not in ("postgresql", "postgres"):
        return ["ledger.url must be a PostgreSQL URL (postgresql://user:password@host/db) "
                "or empty for the SQLite file ledger.path"]
    from career_relay.ledger import check_url

    try:
        check_url(url)
    except ConfigError as exc:
        return [str(exc)]
    return []


def _loopback(url: str) -> bool:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _agency_problems(settings: Settings) -> list[str]:
    """What the consent page and the forwarding worker need (SPEC 6, 7, 11), per agency.

    An empty destination is allowed (a gateway-only host never forwards);
    the site then keeps that agency's forwards in its outbox and says so at start-up.
    """
    out = []
    for name in ("site.public_url", "agency.webhook_url", "agency.privacy_url"):
        section, key = name.split(".")
        url = getattr(getattr(settings, section), key)
        if url and not url.startswith(("http://", "https://")):
            out.append(f"{name} must be an http:// or https:// URL, not {url!r}")
    out += _one_agency("agency", settings.agency)
    from career_relay.settings import agency_env  # the loader imports this module

    seen: set[str] = set()
    variables: dict[str, str] = {}
    for i, agency in enumerate(settings.agencies):
        where = f"agencies[{agency.id}]" if agency.id else f"agencies[{i}]"
        if not agency.id:
            out.append(f"{where}.id is required")
        elif not _AGENCY_ID.fullmatch(agency.id):
            out.append(f"{where}.id must be lower-case letters, digits, - and _ "
                       f"(at most 32), not {agency.id!r}")
        elif agency.id in seen:
            out.append(f"{where}.id is used twice")
        seen.add(agency.id)
        other = variables.setdefault(agency_env(agency.id), agency.id)
        if agency.id and other != agency.id:
            out.append(f"{where}.id reads the same environment variables as {other} "
                       f"({agency_env(agency.id)}_*): choose ids apart by more than - and _")
        if agency.id == DEFAULT_AGENCY and settings.agency_given:
            out.append(f"{where}: both [agency] and this [[agencies]] entry define the agency "
                       f"{DEFAULT_AGENCY!r}; keep one")
        for key in ("name", "license_no", "privacy_url"):
            if not getattr(agency, key).strip():
                out.append(f"{where}.{key} is required (the consent page shows it)")
        if agency.deliver not in _DELIVER:
            out.append(f"{where}.deliver must be one of {', '.join(_DELIVER)}, "
                       f"not {agency.deliver!r}")
        if agency.privacy_url and not agency.privacy_url.startswith(("http://", "https://")):
            out.append(f"{where}.privacy_url must be an http:// or https:// URL, "
                       f"not {agency.privacy_url!r}")
        if agency.webhook_url and not agency.webhook_url.startswith(("http://", "https://")):
            out.append(f"{where}.webhook_url must be an http:// or https:// URL, "
                       f"not {agency.webhook_url!r}")
        out += _one_agency(where, agency)
    secrets: dict[str, str] = {}
    for agency in settings.all_agencies:
        other = secrets.setdefault(agency.webhook_secret, agency.id)
        if agency.webhook_secret and other != agency.id:  # never the secret in the message
            out.append(f"agencies[{agency.id}].webhook_secret is also {other}'s: each agency "
                       "needs its own, or one could sign forwards as the other")
    for i, c in enumerate(settings.companies):
        if settings.agency_by_id(c.agency) is None:
            known = ", ".join(dict.fromkeys(a.id for a in settings.all_agencies)) or "none"
            out.append(f"companies[{c.id or i}].agency: no agency {c.agency!r} "
                       f"(configured: {known})")
    return out


_DELIVER = ("webhook", "email", "pull")
_AGENCY_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def _one_agency(where: str, agency: AgencySettings) -> list[str]:
    out = []
    if agency.webhook_url.startswith("http://") and not _loopback(agency.webhook_url):
        out.append(f"{where}.webhook_url must be https:// (http:// only to this machine's "
                   "loopback): forwards carry candidates' personal data")
    if agency.webhook_url and not agency.webhook_secret:
        out.append(f"{where}.webhook_secret is required with {where}.webhook_url: the agency "
                   "checks every forward's signature with it")
    if agency.deliver == "pull":
        # Pull sends nothing: a destination set as well is a configuration half changed, and
        # its operator would wait for deliveries that never come (or think they go there).
        for key in ("webhook_url", "email"):
            if getattr(agency, key):
                out.append(f'{where}.{key} is set but {where}.deliver is "pull": a pulling '
                           "agency is sent nothing; remove it, or choose webhook or email")
    if agency.email and "@" not in agency.email:
        out.append(f"{where}.email must be an e-mail address, not {agency.email!r}")
    if agency.retention_months <= 0:
        out.append(f"{where}.retention_months must be greater than 0, not "
                   f"{agency.retention_months}")
    if agency.timeout <= 0:
        out.append(f"{where}.timeout must be greater than 0, not {agency.timeout}")
    if not agency.retry_schedule or min(agency.retry_schedule) <= 0:
        out.append(f"{where}.retry_schedule must list at least one delay, each greater than 0")
    return out


def _positive(settings: Settings) -> list[str]:
    out = []
    checks = {
        "gateway.max_message_size": settings.gateway.max_message_size,
        "gateway.timeout": settings.gateway.timeout,
        "gateway.max_mime_parts": settings.gateway.max_mime_parts,
        "gateway.max_recipients": settings.gateway.max_recipients,
        "upstream.connections": settings.upstream.connections,
        "upstream.timeout": settings.upstream.timeout,
        "queue.max_age": settings.queue.max_age,
        "ledger.credit_every": settings.ledger.credit_every,
        "site.link_max_age_days": settings.site.link_max_age_days,
        "site.pdf_timeout": settings.site.pdf_timeout,
        "api.rate_limit": settings.api.rate_limit,
    }
    for name, value in checks.items():
        if value <= 0:
            out.append(f"{name} must be greater than 0, not {value}")
    if settings.gateway.workers < 0:
        out.append(f"gateway.workers must be 0 or more, not {settings.gateway.workers}")
    if not settings.queue.retry_schedule or min(settings.queue.retry_schedule) <= 0:
        out.append("queue.retry_schedule must list at least one delay, each greater than 0")
    return out


def _company_problems(settings: Settings) -> list[str]:
    out: list[str] = []
    seen_ids: set[str] = set()
    seen_domains: dict[str, str] = {}
    for i, c in enumerate(settings.companies):
        where = f"companies[{i}]" if not c.id else f"companies[{c.id}]"
        if not c.id:
            out.append(f"{where}.id is required")
        elif c.id in seen_ids:
            out.append(f"{where}.id is used twice")
        seen_ids.add(c.id)
        if not c.domains:
            out.append(f"{where}.domains must list at least one domain")
        for d in c.domains:
            if d != d.lower() or "@" in d or not d:
                out.append(f"{where}.domains: {d!r} must be a lower-case domain name")
            if d in seen_domains:
                other = seen_domains[d]
                out.append(f"{where}.domains: {d} is listed twice" if other == c.id
                           else f"{where}.domains: {d} also belongs to {other}")
            seen_domains[d] = c.id
        if c.locale not in ("ja", "en"):
            out.append(f"{where}.locale must be ja or en, not {c.locale!r}")
        if c.detect not in ("marker", "auto"):
            out.append(f"{where}.detect must be marker or auto, not {c.detect!r}")
        if c.smtp_username and not c.smtp_password_hash.startswith("$argon2"):
            out.append(f"{where}.smtp_password_hash must be an argon2 hash")
        if bool(c.dkim_selector) != bool(c.dkim_key_file):
            out.append(f"{where}: dkim_selector and dkim_key_file must be set together")
        if not 0 <= c.referral_value <= 1_000_000_000:  # a typo's extra zeros, not a fee
            out.append(f"{where}.referral_value must be from 0 to 1000000000 yen, "
                       f"not {c.referral_value}")
        out += _network_problems(f"{where}.allow_ips", c.allow_ips,
                                 "every address would send as it")
    return out


def _network_problems(name: str, networks: tuple[str, ...], why: str) -> list[str]:
    """Each entry a network, and none that holds every address (``why`` says the harm)."""
    out = []
    for net in networks:
        try:
            network = ipaddress.ip_network(net, strict=False)
        except ValueError:
            out.append(f"{name}: {net!r} is not an address or network")
            continue
        if network.prefixlen == 0:
            out.append(f"{name} must not contain {net}: {why}")
    return out


def file_problems(settings: Settings) -> list[str]:
    """Files the configuration names that cannot be read (checked at start-up too)."""
    out: list[str] = []
    files = [("gateway.tls_cert", settings.gateway.tls_cert),
             ("gateway.tls_key", settings.gateway.tls_key)]
    files += [(f"companies[{c.id}].dkim_key_file", c.dkim_key_file) for c in settings.companies]
    for name, path in files:
        if not path:
            continue
        try:
            Path(path).read_bytes()
        except OSError as exc:
            out.append(f"{name}: cannot read {path}: {exc.strerror or exc}")
    return out
