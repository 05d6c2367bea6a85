"""The yearly human-capital (人的資本) report (issue 15 item 6): one company, one calendar year.

What the company can put in its human-capital and ESG disclosure: how many rejected
candidates were offered a next step, how many took it, how many found work through the
agency, which job types moved most, the credits earned and referrals received, and the
hiring cost recovered.  Counts only; nothing in it names or identifies a person.

The year is the UTC calendar year, like every report's days (``reports``): the figures
are those of ``career-relay report --since YEAR-01-01 --until YEAR-12-31``, so a reader
can check one against the other.  Outcomes follow the k ≥ 5 rule
(``ledger.yearly``); the jobs' offers and opt-ins follow it too, because a
small job's row beside its placements would narrow a group down to a few people.

``build`` reads the ledger; ``render_html`` turns the result into one self-contained,
autoescaped A4 document (inline CSS, no fetch of anything); ``career_relay.pdf`` prints it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from career_relay.ledger import Book, Ledger, reports, yearly
from career_relay.settings import Settings
from career_relay.timestamps import zone, zone_label

TEMPLATES = Path(__file__).parent / "templates"
#: What a group of fewer than K_MIN shows in place of its number.
FEWER = f"{yearly.K_MIN}未満"


@dataclass(frozen=True)
class JobRow:
    name: str               # '': offers sent without X-Career-Relay-Job
    offers: int | None      # each None below K_MIN: "fewer than 5"
    accepted: int | None
    placed: int | None


@dataclass(frozen=True)
class YearlyReport:
    company: str
    company_name: str
    year: int
    since: str
    until: str
    generated: str          # in site.time_zone, with the zone named
    offers: int
    accepted: int
    placed: int | None      # None: fewer than K_MIN
    jobs: tuple[JobRow, ...]
    credits_earned: int
    referrals_received: int
    referrals_fulfilled: int
    referral_value: int
    recovered_value: int
    head_seq: int
    head_hash: str
    k_min: int = yearly.K_MIN

    @property
    def opt_in_rate(self) -> str:
        return f"{self.accepted / self.offers:.1%}" if self.offers else "–"


def year_period(year: int) -> reports.Period:
    """1 January to 31 December of ``year`` (UTC days); ``reports.PeriodError`` outside the
    years a report can count in."""
    if not reports.FIRST_YEAR <= year <= reports.LAST_YEAR:
        raise reports.PeriodError("year", "year", f"the year must be from {reports.FIRST_YEAR} "
                                                  f"to {reports.LAST_YEAR} (got {year})")
    return reports.Period(dt.date(year, 1, 1), dt.date(year, 12, 31))


def build(ledger: Ledger, settings: Settings, company: str, year: int,
          now: dt.datetime) -> YearlyReport:
    """The report of ``company`` (configured) for ``year``, generated at ``now`` (UTC)."""
    when = year_period(year)
    known = settings.company(company)
    value = known.referral_value if known else 0
    with ledger.snapshot() as conn:
        r = reports.company_report(conn, company, when, settings.ledger.credit_every,
                                   details=True, referral_value=value)
        placed = yearly.placements(conn, company, when)
    # Read after the figures: the chain up to this head holds every entry they count.
    seq, _, digest = Book(ledger).head().partition(":")
    offers = yearly.at_least_k_each({j["name"]: j["offers"] for j in r["by_job"]},
                                    r["offers"])
    opted = yearly.at_least_k_each({j["name"]: j["accepted"] for j in r["by_job"]},
                            sum(j["accepted"] for j in r["by_job"]))
    jobs = [JobRow(j["name"], offers[j["name"]], opted[j["name"]],
                   placed.by_job.get(j["name"])) for j in r["by_job"]]
    # Placements of offers made before the year (the job's offers are not this year's).
    listed = {j.name for j in jobs}
    jobs += [JobRow(name, None, None, n) for name, n in placed.by_job.items()
             if name not in listed]
    # Most moved first, by what may be shown: a hidden figure sorts as nothing, so the
    # order never tells one hidden group from another.
    jobs.sort(key=lambda j: (-(j.placed or 0), -(j.accepted or 0), -(j.offers or 0),
                             j.name == "", j.name))
    tz = zone(settings.site.time_zone)
    return YearlyReport(
        company=company, company_name=known.name if known and known.name else company,
        year=year, since=when.since.isoformat(), until=when.until.isoformat(),
        generated=f"{now.astimezone(tz):%Y-%m-%d %H:%M} ({zone_label(tz, now)})",
        offers=r["offers"], accepted=r["accepted"], placed=placed.total,
        jobs=tuple(jobs),
        credits_earned=r["credits_earned"], referrals_received=r["credits_redeemed"],
        referrals_fulfilled=r["credits_fulfilled"], referral_value=value,
        recovered_value=r["recovered_value"], head_seq=int(seq or 0), head_hash=digest)


# -- the document ----------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["n"] = _number
    env.filters["yen"] = lambda v: f"¥{v:,}"
    return env


def _number(value: int | None) -> str:
    return FEWER if value is None else f"{value:,}"


_ENV = _environment()
#: The report's one style sheet, put inline; its hash lets the admin page's CSP allow it
#: and nothing else (no 'unsafe-inline').
CSS = (TEMPLATES / "yearly_report.css").read_text(encoding="utf-8")
CSS_HASH = "sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()


def render_html(report: YearlyReport, *, toolbar: dict[str, Any] | None = None) -> str:
    """The report as one HTML document.  ``toolbar``: the admin page's links (year, PDF,
    back), shown on screen only; none in a file or a PDF."""
    return _ENV.get_template("yearly_report.html").render(r=report, css=CSS, css_hash=CSS_HASH,
                                                          toolbar=toolbar)
