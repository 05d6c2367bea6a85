"""The one settings table.

Every setting is declared once, below, as a field of a frozen dataclass with
its default and its help text (``setting(...)``).  The configuration
reference in ``docs/configuration.md`` is checked against this table by a
test, the loader rejects any key that is not in it, and secrets are masked in
``repr()`` so they never reach a log.

A configuration is TOML; any key can be overridden from the environment as
``CAREER_RELAY_<SECTION>_<KEY>`` (SPEC 3).  Relative paths are resolved
against the directory of the configuration file, never the working directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from career_relay.errors import ConfigError

ENV_PREFIX = "CAREER_RELAY_"
CONFIG_ENV = "CAREER_RELAY_CONFIG"
DEFAULT_CONFIG = "career-relay.toml"
MASK = "********"


def setting(default: Any, help: str, *, secret: bool = False, path: bool = False) -> Any:
    """Declare one setting: its default, its help text, whether it is secret or a path."""
    meta = {"help": help, "secret": secret, "path": path}
    if isinstance(default, list | tuple):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """Shared behaviour of the section dataclasses: masked repr, field listing."""

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            shown = _masked(value) if f.metadata.get("secret") else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _masked(value: Any) -> str:
    if isinstance(value, tuple):
        return repr(tuple(MASK for _ in value))
    return repr(MASK if value else "")


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
        ["127.0.0.1/32"], "Networks whose clients may relay without AUTH (CIDR notation)."
    )
    tls_cert: str = setting("", "PEM certificate; STARTTLS is offered when cert and key are set.",
                            path=True)
    tls_key: str = setting("", "PEM private key for tls_cert.", path=True)
    on_error: str = setting(
        "pass",
        'What to do when a rejection cannot be changed: "pass" relays the original '
        'unmodified, "tempfail" answers 451.',
    )
    timeout: int = setting(300, "Seconds an idle SMTP client may wait between commands.")
    workers: int = setting(
        0,
        "SMTP intake processes sharing the listening port (SO_REUSEPORT); each delivers the "
        "mail it accepted. 0 means one per CPU.",
    )


@dataclass(frozen=True, repr=False)
class UpstreamSettings(_Section):
    host: str = setting("127.0.0.1", "The company's smarthost that relayed mail is sent to.")
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
    public_url: str = setting("http://127.0.0.1:8080", "Base of every consent link.")
    link_max_age_days: int = setting(90, "Days a consent link stays valid.")
    review_window: int = setting(
        30, "Seconds after delivery in which a consent POST is held for review."
    )


@dataclass(frozen=True, repr=False)
class LedgerSettings(_Section):
    path: str = setting("var/ledger.db", "The SQLite ledger.", path=True)
    credit_every: int = setting(10, "Qualified forwards per free referral credit.")


@dataclass(frozen=True, repr=False)
class SecretsSettings(_Section):
    signing_keys: tuple[str, ...] = setting(
        [], "Keys that sign consent links, newest first; older keys still verify.", secret=True
    )


@dataclass(frozen=True, repr=False)
class AgencySettings(_Section):
    name: str = setting("株式会社サンプル人材", "Legal name of the agency shown to candidates.")
    license_no: str = setting("13-ユ-000000", "Recruitment licence number shown to candidates.")
    privacy_url: str = setting("https://agency.example/privacy", "The agency's privacy policy.")
    deliver: str = setting("webhook", "webhook | email: how forwards reach the agency.")
    webhook_url: str = setting("", "Where forwards are POSTed as JSON.")
    webhook_secret: str = setting("", "HMAC key for X-Career-Relay-Signature.", secret=True)
    email: str = setting("", "Where forwards are mailed when deliver = email.")


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


@dataclass(frozen=True, repr=False)
class CompanySettings(_Section):
    id: str = setting("", "Short identifier used in reports and the command line.")
    name: str = setting("", "The company's name as candidates know it.")
    domains: tuple[str, ...] = setting(
        [], "Its From domains; also the domains of its internal recipients."
    )
    locale: str = setting("ja", "ja | en: language of the appended block and the pages.")
    detect: str = setting("marker", "marker | auto: how rejections are recognised.")
    dkim_selector: str = setting("", "DKIM selector of the company's signing key.")
    dkim_key_file: str = setting("", "PEM RSA private key for DKIM signing.", path=True)
    smtp_username: str = setting("", "User name the company's systems authenticate with.")
    smtp_password_hash: str = setting(
        "", "argon2 hash of the SMTP password (career-relay hash-password).", secret=True
    )


SECTIONS: dict[str, type[_Section]] = {
    "gateway": GatewaySettings,
    "upstream": UpstreamSettings,
    "queue": QueueSettings,
    "site": SiteSettings,
    "ledger": LedgerSettings,
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

    def company_for_domain(self, domain: str) -> CompanySettings | None:
        domain = domain.lower()
        for company in self.companies:
            if domain in company.domains:
                return company
        return None


def iter_settings() -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """Every (section, field) of the table, companies last: the docs are checked against it."""
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            yield name, f
    for f in dataclasses.fields(CompanySettings):
        yield "companies", f


def config_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The configuration file: --config, else $CAREER_RELAY_CONFIG, else ./career-relay.toml."""
    env = os.environ if env is None else env
    return Path(explicit or env.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load(path: Path, env: Mapping[str, str] | None = None, *, check: bool = True) -> Settings:
    """Read, override from the environment, check and freeze a configuration."""
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file not found: {path} (write one with `career-relay init`)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_mapping(raw, base=path.resolve().parent, env=env, source=path, check=check)


def from_mapping(
    raw: Mapping[str, Any],
    *,
    base: Path,
    env: Mapping[str, str] | None = None,
    source: Path | None = None,
    check: bool = True,
) -> Settings:
    """Build settings from parsed TOML; ``check`` stops at the first bad value."""
    env = {} if env is None else env
    for name in raw:
        if name not in SECTIONS and name != "companies":
            raise ConfigError(f"unknown section [{name}]")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _build(cls, name, table, base, _env_overrides(name, cls, env))
    _reject_unknown_env(env)
    companies_raw = raw.get("companies", [])
    if not isinstance(companies_raw, list):
        raise ConfigError("[[companies]] must be an array of tables")
    companies = tuple(
        _build(CompanySettings, f"companies[{i}]", table, base, {})
        for i, table in enumerate(companies_raw)
    )
    settings = Settings(companies=companies, source=source, **sections)
    if check:
        from career_relay.validate import check_values  # validation reads settings

        check_values(settings)
    return settings


def _build(
    cls: type[_Section], where: str, table: Any, base: Path, overrides: dict[str, Any]
) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in {**table, **overrides}.items():
        if key not in known:
            raise ConfigError(f"unknown setting {where}.{key}")
        value = _coerce(f"{where}.{key}", hints[key], value)
        if known[key].metadata.get("path") and value:
            value = str((base / value) if not Path(value).is_absolute() else Path(value))
        values[key] = value
    for key, f in known.items():
        if key not in values and f.metadata.get("path") and f.default:
            default = str(f.default)
            values[key] = str(base / default) if not Path(default).is_absolute() else default
    return cls(**values)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_type, _) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, not {_tname(value)}")
        return tuple(_coerce(f"{name}[{i}]", item_type, v) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {_tname(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, not {_tname(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, not {_tname(value)}")
        return value
    raise ConfigError(f"{name}: unsupported type {hint}")  # pragma: no cover - table bug


def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", str: "a string", float: "a number",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _env_overrides(section: str, cls: type[_Section], env: Mapping[str, str]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    found: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        var = f"{ENV_PREFIX}{section}_{f.name}".upper()
        if var in env:
            found[f.name] = _parse_env(var, hints[f.name], env[var])
    return found


def _parse_env(var: str, hint: Any, text: str) -> Any:
    """Environment values are strings: integers, booleans and lists are parsed here."""
    if typing.get_origin(hint) is tuple:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{var}: not a JSON list: {exc}") from None
            return _coerce(var, hint, items)
        (item_type, _) = typing.get_args(hint)
        items = [s.strip() for s in stripped.split(",") if s.strip()]
        return [_parse_env(var, item_type, s) for s in items]
    if hint is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{var} must be true or false, not {text!r}")
    if hint is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError(f"{var} must be an integer, not {text!r}") from None
    return text


def _reject_unknown_env(env: Mapping[str, str]) -> None:
    # Companies are an array of tables: they are configured in the file only.
    known = {CONFIG_ENV}
    for section, f in iter_settings():
        if section != "companies":
            known.add(f"{ENV_PREFIX}{section}_{f.name}".upper())
    for var in env:
        if var.startswith(ENV_PREFIX) and var not in known:
            raise ConfigError(f"unknown setting in the environment: {var}")
