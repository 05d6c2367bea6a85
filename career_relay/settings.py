"""Loading a configuration: TOML, environment overrides, checks, frozen settings.

The settings themselves are declared once, in ``career_relay.settings_table``
(re-exported here).  The loader rejects any key that is not in the table,
parses ``CAREER_RELAY_<SECTION>_<KEY>`` overrides (SPEC 3), and resolves
relative paths against the directory of the configuration file, never the
working directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from career_relay.errors import ConfigError
from career_relay.settings_table import (
    DEFAULT_AGENCY,
    MASK,
    SECTIONS,
    AgencyEntrySettings,
    AgencySettings,
    ApiSettings,
    CompanySettings,
    DemoSettings,
    GatewaySettings,
    LedgerSettings,
    LogSettings,
    QueueSettings,
    SecretsSettings,
    Settings,
    SiteSettings,
    UpstreamSettings,
    _Section,
    iter_settings,
)

__all__ = [
    "CONFIG_ENV", "DEFAULT_AGENCY", "DEFAULT_CONFIG", "ENV_PREFIX", "MASK", "SECTIONS",
    "AgencyEntrySettings", "AgencySettings",
    "ApiSettings", "CompanySettings", "DemoSettings", "GatewaySettings", "LedgerSettings",
    "LogSettings", "QueueSettings", "SecretsSettings", "Settings", "SiteSettings",
    "UpstreamSettings", "agency_env", "config_path", "from_mapping", "iter_settings", "load",
]

ENV_PREFIX = "CAREER_RELAY_"
CONFIG_ENV = "CAREER_RELAY_CONFIG"
DEFAULT_CONFIG = "career-relay.toml"


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
        if name not in SECTIONS and name not in _ARRAYS:
            raise ConfigError(f"unknown section [{name}]")
    sections: dict[str, Any] = {}
    overridden: set[str] = set()
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        overrides = _env_overrides(name, cls, env)
        if overrides:
            overridden.add(name)
        sections[name] = _build(cls, name, table, base, overrides)
    companies = _array(raw, "companies", CompanySettings, base)
    agencies = _array(raw, "agencies", AgencyEntrySettings, base, env)
    _reject_unknown_env(env, agencies)
    settings = Settings(companies=companies, source=source, agencies=agencies,
                        agency_given="agency" in raw or "agency" in overridden, **sections)
    if check:
        from career_relay.validate import check_values  # validation reads settings

        check_values(settings)
    return settings


#: The arrays of tables: each entry built like a section, configured in the file only.
_ARRAYS = ("companies", "agencies")


def _array(raw: Mapping[str, Any], name: str, cls: type[_Section], base: Path,
           env: Mapping[str, str] | None = None) -> tuple[Any, ...]:
    """``env`` given: each entry's keys may be overridden as ``agency_env(id)_<KEY>``."""
    found = raw.get(name, [])
    if not isinstance(found, list):
        raise ConfigError(f"[[{name}]] must be an array of tables")
    return tuple(
        _build(cls, f"{name}[{i}]", table, base,
               _entry_overrides(table, cls, env) if env is not None else {})
        for i, table in enumerate(found))


def agency_env(agency_id: str) -> str:
    """The prefix of an ``[[agencies]]`` entry's variables: ``CAREER_RELAY_AGENCIES_<ID>``
    (upper case, ``-`` as ``_``), so that its secrets need not be in the file."""
    return f"{ENV_PREFIX}agencies_{agency_id}".upper().replace("-", "_")


def _entry_overrides(table: Any, cls: type[_Section], env: Mapping[str, str]
                     ) -> dict[str, Any]:
    agency_id = table.get("id") if isinstance(table, dict) else None
    if not isinstance(agency_id, str) or not agency_id:
        return {}
    found = _env_overrides(agency_env(agency_id)[len(ENV_PREFIX):], cls, env)
    found.pop("id", None)  # the id names the entry; a variable cannot rename it
    return found


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


def _reject_unknown_env(env: Mapping[str, str],
                       agencies: tuple[AgencyEntrySettings, ...] = ()) -> None:
    # Companies are an array of tables configured in the file only; each agency of the
    # file may take its keys (its secrets) from CAREER_RELAY_AGENCIES_<ID>_<KEY>.
    known = {CONFIG_ENV}
    for section, f in iter_settings():
        if section not in _ARRAYS:
            known.add(f"{ENV_PREFIX}{section}_{f.name}".upper())
        elif section == "agencies" and f.name != "id":
            known.update(f"{agency_env(a.id)}_{f.name}".upper() for a in agencies if a.id)
    for var in env:
        if var.startswith(ENV_PREFIX) and var not in known:
            raise ConfigError(f"unknown setting in the environment: {var}")
