"""Circulation analytics (issue 15 item 5): for each job and channel, offers, opt-in, and
what the agency reports became of the candidates; by stage; a monthly trend with every
month shown.  ``report --format json`` prints it as ``analytics``, the admin pages show it
with charts and CSVs.

Everything here is of the cohort of ``outcome_groups``: the offers of the whole months the
period touches, the outcomes as reported up to now, under the rule of at least ``K`` candidates.
Offers and opt-in come from the per-day counts (``offer_stats``, as the report's
``by_job``), so they never cost a row per offer; the outcomes from ``outcome_groups``.

The rates are of the cells shown: ``registered_rate`` is the candidates whose latest
status says they registered (``REGISTERED``) over the offers of the same job (channel,
month) in the months whose outcomes are shown, ``placed_rate`` likewise; a median of days
from the rejection to the placement needs ``K`` placements of its own (a median of one is
that person's date).
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from typing import Any

from career_relay.ledger import outcome_groups as og

# The offers of the cohort's months by job, channel and month (``offer_stats``' key).
COHORT_OFFERS = (
    "SELECT job, channel, substr(day, 1, 7), SUM(offers), SUM(accepted) FROM offer_stats"
    " WHERE company = :company AND day BETWEEN :cohort_start_day AND :cohort_end_day"
    " GROUP BY 1, 2, 3")
#: The most months the trend fills in (20 years), as the report's monthly trend.
MAX_MONTHS = 240


def candidates(conn: Any, company: str, since: dt.date, until: dt.date) -> og.Found:
    params = {"company": company, **og.cohort(since, until)}
    return og.read(conn.execute(og.CELL_ROWS, params).fetchall(),
                   conn.execute(og.PLACED_DAYS, params).fetchall())


def outcomes(found: og.Found) -> dict[str, Any]:
    """SPEC 8's ``outcomes``: the four statuses, and the candidates, ``unreachable``,
    ``suppressed``, ``reason`` and ``partial`` that say what the four are of."""
    return og.total(found)


def analytics(conn: Any, company: str, since: dt.date, until: dt.date,
              found: og.Found, *, from_data: bool) -> dict[str, Any]:
    """The ``analytics`` object; ``from_data``: the trend starts at the first month with
    data rather than at ``since`` (a report with no ``since``)."""
    stats = conn.execute(COHORT_OFFERS, {"company": company,
                                         **og.cohort(since, until)}).fetchall()
    offers: dict[str, dict[tuple[str, str], list[int]]] = {
        d: defaultdict(lambda: [0, 0]) for d in ("job", "channel", "month")}
    for job, channel, month, n, accepted in stats:
        for d, value in (("job", job), ("channel", channel), ("month", "")):
            cell = offers[d][(str(value), str(month))]
            cell[0] += int(n)
            cell[1] += int(accepted)
    first = og.cohort(since, until)["cohort_start_day"][:7]
    return {
        "months": {"from": first, "to": until.isoformat()[:7]},
        "k": og.K,
        "by_job": _rows(offers["job"], og.by(found, "job")),
        "by_channel": _rows(offers["channel"], og.by(found, "channel")),
        "by_stage": [{"name": name, **_public(fig)} for name, fig in
                     sorted(og.by(found, "stage").items(),
                            key=lambda kv: (-(kv[1]["candidates"] or 0), kv[0]))],
        "monthly": _monthly(offers["month"], og.by_month(found),
                            None if from_data else first, until.isoformat()[:7]),
    }


def _public(fig: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fig.items() if k not in ("placed_days", "shown_months")}


def _rate(part: int | None, whole: int) -> float | None:
    return round(part / whole, 4) if part is not None and whole else None


def _registered(fig: dict[str, Any]) -> int | None:
    return None if fig["suppressed"] else sum(fig[s] for s in og.REGISTERED)


def _rows(offers: dict[tuple[str, str], list[int]], figures: dict[str, dict[str, Any]]
          ) -> list[dict[str, Any]]:
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (value, _), (n, accepted) in offers.items():
        per[value][0] += n
        per[value][1] += accepted
    rows = []
    for name in set(per) | set(figures):
        n, accepted = per.get(name, [0, 0])
        fig = figures.get(name) or {**og.figure([], []), "shown_months": set(),
                                    "placed_days": []}
        # Offers of the months whose outcomes are shown: the rates' whole.
        base = sum(o[0] for (v, m), o in offers.items()
                   if v == name and (m in fig["shown_months"] or not fig["candidates"]))
        days = fig["placed_days"]
        rows.append({
            "name": name, "offers": n, "accepted": accepted,
            "opt_in_rate": round(accepted / n, 4) if n else 0.0, **_public(fig),
            "registered_rate": _rate(_registered(fig), base),
            "placed_rate": _rate(fig["placed"], base),
            "median_days_to_placement": statistics.median(days) if len(days) >= og.K else None,
        })
    return sorted(rows, key=lambda r: (-r["offers"], r["name"]))


def _monthly(offers: dict[tuple[str, str], list[int]], figures: dict[str, dict[str, Any]],
             first: str | None, last: str) -> list[dict[str, Any]]:
    by_month = {m: o for (_, m), o in offers.items()}
    known = sorted(set(by_month) | set(figures))
    if not known:
        return []
    start = first if first is not None else known[0]
    if _between(start, last) > MAX_MONTHS:
        start = known[0]
    start, last = min(start, known[0]), max(last, known[-1])
    out = []
    year, month = int(start[:4]), int(start[5:7])
    while (key := f"{year:04d}-{month:02d}") <= last:
        n, accepted = by_month.get(key, [0, 0])
        fig = figures.get(key) or og.figure([], [])
        out.append({"month": key, "offers": n, "accepted": accepted,
                    "opt_in_rate": round(accepted / n, 4) if n else 0.0, **_public(fig),
                    "registered_rate": _rate(_registered(fig), n),
                    "placed_rate": _rate(fig["placed"], n)})
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _between(first: str, last: str) -> int:
    return (int(last[:4]) - int(first[:4])) * 12 + int(last[5:7]) - int(first[5:7])
