"""``career-relay ledger migrate --to URL`` (SPEC 12): the SQLite ledger (``ledger.path``)
copied to an empty PostgreSQL database, then checked.

Before the copy, ``ledger verify`` on the SQLite ledger (a broken ledger is not copied).
The copy itself is ``career_relay.ledger.copy_to``: one transaction, rows as they are.
After it, ``ledger verify`` on the copy against the SQLite ledger's head, and the
report of every configured company, for all time and with its details, on both sides:
they must be equal.  Any difference is one line and exit 1; the SQLite file is only
read, and stays as it was (the backup).

The URL's password is never printed: the summary shows it masked, and an error that
quotes it (a driver may quote its connection string) has it replaced by ``***``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import sys
import time
import urllib.parse
from pathlib import Path

from career_relay.errors import CareerRelayError
from career_relay.ledger import (
    DERIVED_TABLES,
    Book,
    Ledger,
    Rules,
    copy_to,
    open_configured,
    reports,
)
from career_relay.settings import Settings

#: The last day of "for all time": the last a report's period may name.
LAST_DAY = dt.date(reports.LAST_YEAR, 12, 31)
PROGRESS_EVERY = 100_000  # rows of one table between two progress lines


def run(settings: Settings, url: str) -> int:
    """The command: copy, verify both sides, compare the reports, print a summary."""
    path = Path(settings.ledger.path)
    if not path.exists():
        raise CareerRelayError(f"no ledger at {path}")
    try:
        return _migrate(settings, url)
    except CareerRelayError as exc:
        scrubbed = scrub(str(exc), url)
        if scrubbed == str(exc):
            raise
        raise CareerRelayError(scrubbed) from None


def _migrate(settings: Settings, url: str) -> int:
    began = time.monotonic()
    rules = Rules.from_settings(settings)
    with open_configured(_ledger_at(settings, "")) as source:
        count, problem = Book(source, rules).verify()
        if problem is not None:
            raise CareerRelayError(f"the SQLite ledger does not verify ({problem}): nothing "
                                   "was copied (see `career-relay ledger verify`)")
        copied = copy_to(source, url, progress=_progress)
        after = source.head_text()
        if after != copied.head_text:
            raise CareerRelayError(
                f"the SQLite ledger changed during the copy (its head moved from "
                f"{copied.head_text} to {after}): stop every gateway and site, drop and "
                "create the target database again, and run ledger migrate again")
        with open_configured(_ledger_at(settings, url)) as target:
            target_count, problem = Book(target, rules).verify(copied.head)
            if problem is not None:
                raise CareerRelayError(
                    f"ledger verify FAILED on the copy in PostgreSQL ({problem}); the SQLite "
                    "ledger is unchanged: drop and create the target database again before "
                    "another try")
            difference = _reports_differ(source, target, settings)
            if difference:
                raise CareerRelayError(f"the reports differ after the copy: {difference}")
            target_head = target.head_text()
    print(f"ledger migrate: {settings.ledger.path} -> {masked(url)}")
    for table, rows in copied.rows.items():
        built = " (built by PostgreSQL's triggers; equal to SQLite's)" \
            if table in DERIVED_TABLES else ""
        print(f"{rows:10d}  {table}{built}")
    print(f"chain head: {copied.head_text} in SQLite, {target_head} in PostgreSQL")
    print(f"ledger verify: ok on both ({count} entries in SQLite, {target_count} in "
          "PostgreSQL)")
    print(f"reports equal ({len(settings.companies)} companies, for all time)")
    print(f"copied in {copied.seconds:.1f} s, checked in "
          f"{time.monotonic() - began - copied.seconds:.1f} s; now set ledger.url to the "
          "target and start the gateways and sites (the SQLite file stays as it was)")
    return 0


def _ledger_at(settings: Settings, url: str) -> Settings:
    """The settings with ``ledger.url`` replaced: "" for the SQLite file ``ledger.path``."""
    return dataclasses.replace(settings, ledger=dataclasses.replace(settings.ledger, url=url))


def _progress(table: str, rows: int, done: bool) -> None:
    if not done and rows % PROGRESS_EVERY == 0:
        print(f"ledger migrate: {table}: {rows} rows so far", file=sys.stderr, flush=True)


def _reports_differ(source: Ledger, target: Ledger, settings: Settings) -> str:
    """The first field of the first company whose report differs ("" when none does): each
    configured company, for all time, with the JSON format's details."""
    companies = [c.id for c in settings.companies]
    when = reports.period(None, LAST_DAY, LAST_DAY)
    every = settings.ledger.credit_every
    values = {c.id: c.referral_value for c in settings.companies}
    ours = reports.report(source, companies, when, every, details=True, referral_values=values)
    theirs = reports.report(target, companies, when, every, details=True,
                            referral_values=values)
    for company, mine, copied in zip(companies, ours, theirs, strict=True):
        for field in mine.keys() | copied.keys():
            if mine.get(field) != copied.get(field):
                return (f"{company}'s {field} is {_short(mine.get(field))} in SQLite, "
                        f"{_short(copied.get(field))} in PostgreSQL")
    return ""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def masked(url: str) -> str:
    """``url`` with its password (in the authority, or a ``password=`` parameter) as ``***``."""
    scheme, sep, rest = url.partition("://")
    if sep:
        at = rest.rfind("@")
        if at >= 0:
            user, colon, _ = rest[:at].partition(":")
            rest = f"{user}{':***' if colon else ''}{rest[at:]}"
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", f"{scheme}{sep}{rest}")


def scrub(message: str, url: str) -> str:
    """``message`` with every spelling of the URL's password replaced by ``***``."""
    secrets: set[str] = set()
    _, sep, rest = url.partition("://")
    if sep and "@" in rest:
        secrets.add(rest[:rest.rfind("@")].partition(":")[2])
    secrets.update(re.findall(r"(?i)password=([^&\s]*)", url))
    for secret in sorted(secrets | {urllib.parse.unquote(s) for s in secrets}, key=len,
                         reverse=True):
        if secret:
            message = message.replace(secret, "***")
    return message
