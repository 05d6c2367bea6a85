"""SIGHUP: read the configuration file again and say what can change while running.

What a running process takes from a new file is the ``[[companies]]``
(domains, SMTP logins, DKIM keys and selectors, names, locale, detect); the
templates are read again by each component's ``reload``.  Every other
setting (listen addresses, the ledger, the spool, workers, the upstream,
secrets, ...) needs a restart: a change to one is named in one WARNING line
and the running value is kept.  A file that does not load is named in one
ERROR line and nothing changes.

Settings stay frozen: the result is a new ``Settings``, the old one with the
new companies, which each component turns into new objects of its own.
"""

from __future__ import annotations

import dataclasses
import logging

from career_relay import settings as settings_mod
from career_relay.errors import ConfigError
from career_relay.settings import Settings, iter_settings
from career_relay.validate import file_problems

log = logging.getLogger("career_relay.reload")


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """The settings outside ``[[companies]]`` whose value changed, as ``section.key``."""
    changed = []
    for section, f in iter_settings():
        if section in ("companies", "agencies"):
            continue
        if getattr(getattr(old, section), f.name) != getattr(getattr(new, section), f.name):
            changed.append(f"{section}.{f.name}")
    if old.all_agencies != new.all_agencies:
        changed.append("[[agencies]]")
    return changed


def reread(current: Settings) -> Settings | None:
    """The settings to swap in after a SIGHUP, or None when the file is not usable (logged).

    The file is the one the process started with (``Settings.source``), read
    with the same environment overrides.
    """
    if current.source is None:
        log.error("reload: the configuration did not come from a file; nothing reloaded")
        return None
    try:
        new = settings_mod.load(current.source)
        problems = file_problems(new)
        if problems:
            raise ConfigError(problems[0])
    except ConfigError as exc:
        log.error("reload of %s failed, the running configuration stays: %s",
                  current.source, exc)
        return None
    unknown = sorted({c.agency for c in new.companies if current.agency_by_id(c.agency) is None})
    if unknown:  # a new agency needs a restart: its company's forwards must not go astray
        log.error("reload of %s failed, the running configuration stays: agency %s is not "
                  "running yet (a new agency needs a restart)", current.source,
                  ", ".join(unknown))
        return None
    kept = restart_needed(current, new)
    if kept:
        log.warning("reload: %s changed but need(s) a restart; kept as they were",
                    ", ".join(kept))
    return dataclasses.replace(current, companies=new.companies)
