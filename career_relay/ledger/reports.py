"""The ledger's report (SPEC 8) as named queries, each with a title and a description.

Every count is of events inside the period (``since`` 00:00 to ``until``
24:00, UTC) for one company, except the credit balance and the progress to
the next credit, which are as of the end of the period.  The same numbers
feed ``career-relay report`` (table, CSV, JSON) and the admin pages.

Speed (docs/performance.md, "Ledger report"): each query reads one company's
rows through an index that starts with the company, and never one row per
offer: offers, opt-in by job and channel and the monthly offers come from
per-day counts (``offer_stats``), the time to decide from ``first_decisions``,
views from ``offer_views_company``, decisions from ``receipts_company_decision``
(migration ``0007_report_indexes``).  A report costs what that company has in
the period, not what the ledger holds.  The details read ``offer_stats`` once
(the query ``offer_stats``: by job, channel and month) and add it up three ways
in Python: in PostgreSQL a company's rows of that table lie on about as many
heap pages as it has rows (SQLite keeps them together, in key order), so every
read of them costs (docs/performance.md, "Both backends").
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from career_relay.ledger import analytics
from career_relay.ledger.offers import Ledger

#: SPEC 8's fields, in the order the table and CSV show them.
FIELDS = ("company", "since", "until", "rejections", "offers", "not_injected",
          "unmarked_rejections", "views", "accepted", "declined", "withdrawn", "erased",
          "forwards_delivered", "qualified_forwards", "under_review", "credits_earned",
          "credits_redeemed", "credits_available", "progress_to_next_credit", "credit_every",
          "credits_requested", "credits_fulfilled", "recovered_value")
#: Where offers came from (SPEC 10): ``offers_by_source`` in the report.
SOURCES = ("relay", "api", "link")
#: The table's and the CSV's columns: FIELDS, with ``offers_by_source`` (an object in the
#: JSON) as one column per source after ``offers``.
#: SPEC 8 ``outcomes`` (an object in the JSON, under the k >= 5 rule: ``analytics``).
OUTCOMES = ("registered", "interviewing", "placed", "not_placed")
COLUMNS = (*FIELDS[:FIELDS.index("offers") + 1], *(f"offers_{s}" for s in SOURCES),
           *FIELDS[FIELDS.index("offers") + 1:], *(f"outcomes_{s}" for s in OUTCOMES))
#: What the table and the CSV show for a count left out (``outcome_groups``).
SUPPRESSED = {"fewer_than_5": "fewer than 5", "held_back": "held back"}


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    description: str
    sql: str


# Parameters: :company, :start and :end (UTC stamps; start inclusive, end exclusive),
# :start_day and :end_day (dates, inclusive).
QUERIES: tuple[Query, ...] = (
    Query("counters", "Rejections that passed",
          "The gateway's daily counters: rejections relayed, those relayed without a link, "
          "and classifier hits without the marker (counted only).",
          "SELECT COALESCE(SUM(rejections), 0), COALESCE(SUM(not_injected), 0),"
          " COALESCE(SUM(unmarked_rejections), 0) FROM daily_counts"
          " WHERE company = :company AND day BETWEEN :start_day AND :end_day"),
    Query("offers", "Links sent", "Offers made: one per outside recipient of a rejection.",
          "SELECT COALESCE(SUM(offers), 0) FROM offer_stats"
          " WHERE company = :company AND day BETWEEN :start_day AND :end_day"),
    # From the partial index offers_source, which holds no relayed offer (0010): relay is
    # the offers less these, so a million relayed offers cost nothing here.
    Query("offers_by_source", "Links by source",
          "Offers made through the company API and the company link (SPEC 10); the rest "
          "came through the gateway.",
          "SELECT source, COUNT(*) FROM offers WHERE company = :company AND source <> 'relay'"
          " AND created >= :start AND created < :end GROUP BY source"),
    Query("views", "Pages opened", "Offers whose page was opened for the first time.",
          "SELECT COUNT(*) FROM offer_views"
          " WHERE company = :company AND first_viewed >= :start AND first_viewed < :end"),
    Query("decisions", "Decisions", "Consent receipts by decision.",
          "SELECT decision, COUNT(*) FROM receipts WHERE company = :company"
          " AND decision IN ('accept', 'decline', 'withdraw', 'erase')"
          " AND created >= :start AND created < :end GROUP BY decision"),
    Query("delivered", "Forwards delivered",
          "Consents the agency received (provision records).",
          "SELECT COUNT(*) FROM entries WHERE company = :company AND kind = 'provision'"
          " AND created >= :start AND created < :end"),
    Query("qualified", "Qualified forwards", "Forwards that count toward credits (SPEC 8).",
          "SELECT COUNT(*) FROM qualified"
          " WHERE company = :company AND created >= :start AND created < :end"),
    Query("under_review", "Held for review",
          "Accepts held as possibly automated, with no verdict yet.",
          "SELECT COUNT(*) FROM receipts r WHERE r.company = :company"
          " AND r.created >= :start AND r.created < :end AND r.review IS NOT NULL"
          " AND r.decision = 'accept'"
          " AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.receipt_id = r.id)"),
    Query("credits", "Credits earned and redeemed",
          "Credits minted and redeemed in the period.",
          "SELECT (SELECT COUNT(*) FROM credits WHERE company = :company"
          "        AND created >= :start AND created < :end),"
          " (SELECT COUNT(*) FROM redemptions WHERE company = :company"
          "        AND created >= :start AND created < :end)"),
    # credit_requests_company and credit_request_states_company (0015): a few rows a year.
    Query("requests", "Free referrals asked and received",
          "Free referrals asked of the agency, and those it fulfilled, in the period "
          "(SPEC 11).",
          "SELECT (SELECT COUNT(*) FROM credit_requests WHERE company = :company"
          "        AND created >= :start AND created < :end),"
          " (SELECT COUNT(*) FROM credit_request_states WHERE company = :company"
          "        AND state = 'fulfilled' AND created >= :start AND created < :end)"),
    Query("balance", "Credit balance", "As of the end of the period: credits minted, "
          "redeemed, and qualified forwards in all.",
          "SELECT (SELECT COUNT(*) FROM credits WHERE company = :company AND created < :end),"
          " (SELECT COUNT(*) FROM redemptions WHERE company = :company AND created < :end),"
          " (SELECT COUNT(*) FROM qualified WHERE company = :company AND created < :end)"),
    # From the per-day counts (``offer_stats``, kept by triggers): a few hundred rows, not
    # every offer; by_job, by_channel and the monthly offers add them up (``_details``).
    Query("offer_stats", "Opt-in by job and channel",
          "For the offers of the period, by the job they applied for (X-Career-Relay-Job), "
          "the application channel (X-Career-Relay-Channel) and the month: offers, and "
          "offers accepted at least once.",
          "SELECT job, channel, substr(day, 1, 7), SUM(offers), SUM(accepted) FROM offer_stats"
          " WHERE company = :company AND day BETWEEN :start_day AND :end_day"
          " GROUP BY 1, 2, 3"),
    Query("decision_hours", "Time to decide",
          "Hours from the rejection to the candidate's first accept or decline, for the "
          "offers of the period.",
          "SELECT hours FROM first_decisions WHERE company = :company"
          " AND offer_created >= :start AND offer_created < :end"),
    Query("monthly", "Monthly trend",
          "Per month of the period: accepts, qualified forwards (and the offers, from "
          "offer_stats).",
          # Integers and an alias in both dialects (PostgreSQL sums a sum as numeric and
          # names every subquery).
          "SELECT month, CAST(SUM(accepted) AS INTEGER), CAST(SUM(qualified) AS INTEGER)"
          " FROM (SELECT substr(created, 1, 7) AS month, COUNT(*) AS accepted, 0 AS qualified"
          "  FROM receipts WHERE company = :company AND decision = 'accept'"
          "  AND created >= :start AND created < :end GROUP BY 1"
          " UNION ALL SELECT substr(created, 1, 7), 0, COUNT(*) FROM qualified"
          "  WHERE company = :company AND created >= :start AND created < :end GROUP BY 1)"
          " AS monthly GROUP BY month ORDER BY month"),
)

_BY_NAME = {q.name: q for q in QUERIES}


@dataclass(frozen=True)
class Period:
    since: dt.date
    until: dt.date

    @property
    def params(self) -> dict[str, str]:
        end = self.until + dt.timedelta(days=1)
        return {"start": f"{self.since.isoformat()}T00:00:00Z",
                "end": f"{end.isoformat()}T00:00:00Z",
                "start_day": self.since.isoformat(), "end_day": self.until.isoformat()}


#: The first day a report covers when no ``since`` is given.
EPOCH = dt.date(2000, 1, 1)
#: The years a period may name.  Before 1000 ``strftime("%Y")`` and ISO stamps stop being
#: four digits, and the day after 9999-12-31 does not exist (``Period.params``' end).
FIRST_YEAR, LAST_YEAR = 1000, 2999


class PeriodError(ValueError):
    """A period that cannot be reported on: ``field`` is ``since`` or ``until``, ``reason``
    ``year`` (outside FIRST_YEAR to LAST_YEAR) or ``order`` (it ends before it starts)."""

    def __init__(self, field: str, reason: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.reason = field, reason


def period(since: dt.date | None, until: dt.date | None, today: dt.date) -> Period:
    """The report's period: from the first day the ledger can hold to today by default."""
    start = since or EPOCH
    end = until or today
    for field, day in (("since", start), ("until", end)):
        if not FIRST_YEAR <= day.year <= LAST_YEAR:
            raise PeriodError(field, "year", f"the year must be from {FIRST_YEAR} to "
                                             f"{LAST_YEAR} (got {day.isoformat()})")
    if end < start:
        raise PeriodError("until", "order", f"the period ends ({end}) before it starts ({start})")
    return Period(start, end)


def _run(conn: sqlite3.Connection, name: str, params: dict[str, Any]) -> list[Any]:
    return conn.execute(_BY_NAME[name].sql, params).fetchall()


def company_report(conn: sqlite3.Connection, company: str, when: Period,
                   credit_every: int, *, details: bool = False,
                   referral_value: int = 0) -> dict[str, Any]:
    """SPEC 8's fields for one company; with ``details`` also by job, by channel, time to
    decide and the monthly trend.  ``referral_value``: yen one free referral is worth to
    the company (``companies.referral_value``); ``recovered_value`` is the referrals
    received in the period (every credit spent: fulfilled by the agency, or redeemed)
    times it."""
    p = {"company": company, **when.params}
    stats = _run(conn, "offer_stats", p) if details else None
    (rejections, not_injected, unmarked), = _run(conn, "counters", p)
    decisions = dict(_run(conn, "decisions", p))
    earned, redeemed = _run(conn, "credits", p)[0]
    requested, fulfilled = _run(conn, "requests", p)[0]
    minted_total, redeemed_total, qualified_total = _run(conn, "balance", p)[0]
    offers = _run(conn, "offers", p)[0][0] if stats is None else sum(r[3] for r in stats)
    by_source = {"relay": 0, "api": 0, "link": 0, **dict(_run(conn, "offers_by_source", p))}
    by_source["relay"] = offers - by_source["api"] - by_source["link"]
    report: dict[str, Any] = {
        "company": company, "since": when.since.isoformat(), "until": when.until.isoformat(),
        "rejections": rejections, "offers": offers, "offers_by_source": by_source,
        "not_injected": not_injected, "unmarked_rejections": unmarked,
        "views": _run(conn, "views", p)[0][0],
        "accepted": decisions.get("accept", 0), "declined": decisions.get("decline", 0),
        "withdrawn": decisions.get("withdraw", 0), "erased": decisions.get("erase", 0),
        "forwards_delivered": _run(conn, "delivered", p)[0][0],
        "qualified_forwards": _run(conn, "qualified", p)[0][0],
        "under_review": _run(conn, "under_review", p)[0][0],
        "credits_earned": earned, "credits_redeemed": redeemed,
        "credits_available": minted_total - redeemed_total,
        "progress_to_next_credit": qualified_total % credit_every,
        "credit_every": credit_every,
        "credits_requested": requested, "credits_fulfilled": fulfilled,
        # A fulfilled request spends its credit as a redemption (credit_requests), so the
        # referrals received are the redemptions: never one counted twice.
        "recovered_value": redeemed * referral_value,
    }
    # What the agency reported, under the k >= 5 rule (``analytics``, ``outcome_groups``).
    found = analytics.candidates(conn, company, when.since, when.until)
    report["outcomes"] = analytics.outcomes(found)
    if stats is not None:
        report.update(_details(conn, p, stats, when))
        report["analytics"] = analytics.analytics(conn, company, when.since, when.until, found,
                                                  from_data=when.since == EPOCH)
    return report


def _details(conn: sqlite3.Connection, p: dict[str, Any], stats: Sequence[Any],
             when: Period) -> dict[str, Any]:
    """By job and by channel (the most offers first, then by name), the time to decide and
    the monthly trend (every month, empty ones as zero); ``stats`` is what the query
    ``offer_stats`` returned."""
    jobs: dict[str, list[int]] = {}
    channels: dict[str, list[int]] = {}
    months: dict[str, list[int]] = {}
    for job, channel, month, offers, accepted in stats:
        for sums, key in ((jobs, job), (channels, channel)):
            found = sums.setdefault(key, [0, 0])
            found[0] += offers
            found[1] += accepted
        months.setdefault(month, [0, 0, 0])[0] += offers
    for month, accepted, qualified in _run(conn, "monthly", p):
        months.setdefault(month, [0, 0, 0])[1:] = [accepted, qualified]

    def rates(sums: dict[str, list[int]]) -> list[dict[str, Any]]:
        # Names in byte order, as the ledger's ORDER BY has them (UTF-8 keeps code points').
        return [{"name": name, "offers": offers, "accepted": accepted,
                 "opt_in_rate": round(accepted / offers, 4) if offers else 0.0}
                for name, (offers, accepted) in sorted(sums.items(),
                                                       key=lambda kv: (-kv[1][0], kv[0]))]

    hours = [h for (h,) in _run(conn, "decision_hours", p) if h is not None]
    return {
        "by_job": rates(jobs),
        "by_channel": rates(channels),
        "decision_hours": {"decided": len(hours),
                           "median": round(statistics.median(hours), 1) if hours else None},
        "monthly": [{"month": m, "offers": o, "accepted": a, "qualified": q}
                    for m, (o, a, q) in _every_month(months, when)],
    }


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """A report's row with a value for each of ``COLUMNS`` (the table's, the CSV's)."""
    out = row["outcomes"]
    return {**row, **{f"offers_{s}": row["offers_by_source"][s] for s in SOURCES},
            **{f"outcomes_{s}": SUPPRESSED[out["reason"]] if out["suppressed"] else out[s]
               for s in OUTCOMES}}


#: The most months the monthly trend fills in with zeros (20 years).
MAX_MONTHS = 240


def _month(day: dt.date) -> str:
    # Not strftime("%Y-%m"): glibc does not pad a year before 1000 to four digits.
    return f"{day.year:04d}-{day.month:02d}"


def _months_between(first: str, last: str) -> int:
    return (int(last[:4]) - int(first[:4])) * 12 + int(last[5:7]) - int(first[5:7])


def _every_month(months: dict[str, list[int]], when: Period) -> list[tuple[str, list[int]]]:
    """The months with their counts, and the months between them with zeros: a chart that
    skips an empty month reads as if nothing was missing (issue 14).

    From the period's first month when ``since`` was given, else from the first month
    with data (not from 2000); to the period's last month.  No data: no months.  A
    period of more than ``MAX_MONTHS`` (a typed ``until=2999-12-31``) keeps to the months
    with data and those between them.
    """
    if not months:
        return []
    first = min(months) if when.since == EPOCH else _month(when.since)
    last = _month(when.until)
    if _months_between(first, last) > MAX_MONTHS:
        first, last = min(months), max(months)
    first, last = min(first, min(months)), max(last, max(months))
    year, month = int(first[:4]), int(first[5:7])
    out = []
    while (key := f"{year:04d}-{month:02d}") <= last:
        out.append((key, months.get(key, [0, 0, 0])))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def report(ledger: Ledger, companies: Sequence[str], when: Period, credit_every: int, *,
           details: bool = False, referral_values: Mapping[str, int] | None = None
           ) -> list[dict[str, Any]]:
    """One object per company, in the order given (SPEC 8 ``report --format json``);
    ``referral_values``: company -> ``companies.referral_value`` (0 for one not named)."""
    values = referral_values or {}
    # One snapshot for every query: a delivery committed meanwhile must not make
    # qualified_forwards and the credit balance disagree.
    with ledger.snapshot() as conn:
        return [company_report(conn, c, when, credit_every, details=details,
                               referral_value=values.get(c, 0)) for c in companies]
