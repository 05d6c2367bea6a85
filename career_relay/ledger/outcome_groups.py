"""What a company may see of the outcomes its agency reports (SPEC 8 ``outcomes``, SPEC 11;
issue 15 items 4 and 5): counts only, of groups of at least ``K`` candidates.

**Who is counted.**  A candidate is one consent forward of the company (not cancelled: not
withdrawn before the agency had it, not rejected on review), whether or not the agency has
reported on it: the groups, and so which of them are shown, are made of the candidates the
company already knows it forwarded, never of those the agency reported on.  Groups made of
the reported ones changed shape when one candidate alone in a cell got an outcome (a
neighbouring row turned held back or partial: an attack review read from it that the
agency had reported on that one person).  Each candidate appears once per group, with its
*latest* status: the outcome with the latest day ``at`` (the agency's correction, "placed"
then "not_placed", wins), and on one day the furthest along (``RANK``); none yet: counted
in ``candidates`` and in no status.  A candidate belongs to the month of the rejection (the
offer), its job, channel and stage (X-Career-Relay-Job, -Channel, -Stage; '' when the mail
named none).

**The cohort is whole months.**  The figures are of the offers of every calendar month the
period touches (2026-03-10 to 2026-06-20: March to June), never of single days: with days,
two reports whose periods differ by one day would differ by that day's one or two
candidates.

**Cells, fixed once per month.**  Every figure is a sum of *cells*, and a cell is either
shown whole or left out, the same way in every report:

- a month's candidates are a cell; a month of fewer than ``K`` is left out of everything
  (the ``outcomes`` totals too), so no two periods differ by a small month;
- in each month that is shown, the candidates of one job, channel *and* stage together are
  a cell; a cell of fewer than ``K`` is left out, and when the cells left out of a month
  hold fewer than ``K`` together, the next smallest are left out too until they hold at
  least ``K`` (or all are).  Every table (by job, by channel, by stage) and every total is a
  sum of the same shown cells, so the total less a table, one table less another (job A
  less stage S1: the company names the groups, through X-Career-Relay-Job/-Stage, and an
  attack review made a job and a stage differ by one chosen candidate that way when each
  dimension had cells of its own), or one period less another, is a sum and difference of
  whole cells of at least ``K``, or of the left-out cells of a month together, never a group
  of fewer than ``K``.

A row with no cell shown is ``suppressed`` (its numbers are None): ``fewer_than_5`` when the
whole row has fewer than ``K`` candidates, ``held_back`` otherwise; a row shown without
some of its cells is ``partial``.

**As of now.**  Outcomes count as reported up to now, whatever period is asked: every report
read at one moment gives a month the same figures.  With an "as of" that moved with the
period (its end, or the end of its last month), two reports of the same month as of two
dates differed by one candidate's new status (attack reviews).  Not protected: figures
read on two different days differ by what the agency reported in between, as any live
figure does.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: The smallest group whose counts are shown.
K = 5
STATUSES = ("registered", "interviewing", "placed", "not_placed", "unreachable")
#: How far along each status is: on one day the furthest wins.
RANK = {"unreachable": 0, "registered": 1, "interviewing": 2, "not_placed": 3, "placed": 4}
#: The statuses that say the candidate registered with the agency (``registered_rate``).
REGISTERED = ("registered", "interviewing", "placed", "not_placed")
DIMENSIONS = ("job", "channel", "stage")
FEWER, HELD_BACK = "fewer_than_5", "held_back"

# The company's consent forwards of the offers of the cohort's months, each with every outcome
# the agency reported on it (none: one row of NULLs): ``forwards_company`` (company, created)
# finds them, the primary keys and ``outcomes``' UNIQUE (forward_id, ...) the rest.
OUTCOME_ROWS = (
    "SELECT f.id, o.status, o.at, COALESCE(x.job, ''), COALESCE(x.channel, ''),"
    " COALESCE(x.stage, ''), substr(x.created, 1, 10) FROM forwards f"
    " JOIN offers x ON x.id = f.offer_id LEFT JOIN outcomes o ON o.forward_id = f.id"
    " WHERE f.company = :company AND f.kind = 'consent' AND f.created >= :cohort_start"
    " AND x.created >= :cohort_start AND x.created < :cohort_end"
    " AND NOT EXISTS (SELECT 1 FROM forward_events e WHERE e.forward_id = f.id"
    " AND e.event = 'cancelled')")
#: A candidate the agency has not reported on yet.
NONE = ""


@dataclass(frozen=True)
class Candidate:
    month: str            # YYYY-MM of the offer
    job: str
    channel: str
    stage: str
    status: str           # the latest (see the module's docstring); NONE: no report yet
    days_to_placed: int | None  # offer day to the day ``placed``, when that is the status


def cohort(since: dt.date, until: dt.date) -> dict[str, str]:
    """The stamps of the cohort's whole months: from ``since``'s month to ``until``'s."""
    first = since.replace(day=1)
    after = (until.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    return {"cohort_start": f"{first.isoformat()}T00:00:00Z",
            "cohort_end": f"{after.isoformat()}T00:00:00Z",
            "cohort_start_day": first.isoformat(),
            "cohort_end_day": (after - dt.timedelta(days=1)).isoformat()}


def latest(rows: Iterable[Sequence[Any]]) -> list[Candidate]:
    """One ``Candidate`` per forward from ``OUTCOME_ROWS``' rows."""
    best: dict[str, tuple[str, int, Sequence[Any]]] = {}
    for row in rows:
        forward = str(row[0])
        status, at = (NONE, "") if row[1] is None else (str(row[1]), str(row[2]))
        key = (at, RANK.get(status, -1))
        if forward not in best or key > best[forward][:2]:
            best[forward] = (at, key[1], row)
    out = []
    for at, _, row in best.values():
        status = NONE if row[1] is None else str(row[1])
        offered = dt.date.fromisoformat(str(row[6]))
        days = (dt.date.fromisoformat(at) - offered).days if status == "placed" else None
        out.append(Candidate(str(row[6])[:7], str(row[3]), str(row[4]), str(row[5]),
                             status, days))
    return out


def shown_months(candidates: Sequence[Candidate]) -> set[str]:
    """The months of at least ``K`` candidates."""
    sizes: dict[str, int] = defaultdict(int)
    for c in candidates:
        sizes[c.month] += 1
    return {m for m, n in sizes.items() if n >= K}


def cell(c: Candidate) -> tuple[str, str, str, str]:
    """The cell a candidate belongs to: its month, job, channel and stage together."""
    return (c.month, c.job, c.channel, c.stage)


def shown_cells(candidates: Sequence[Candidate],
                months: set[str]) -> set[tuple[str, str, str, str]]:
    """The cells shown (``cell``): see the module's docstring."""
    sizes: dict[str, dict[tuple[str, str, str, str], int]] = defaultdict(
        lambda: defaultdict(int))
    for c in candidates:
        if c.month in months:
            sizes[c.month][cell(c)] += 1
    shown: set[tuple[str, str, str, str]] = set()
    for cells in sizes.values():
        # Smallest first, then by name: the same cells left out whoever asks.
        order = sorted(cells.items(), key=lambda kv: (kv[1], kv[0]))
        left = [kv for kv in order if kv[1] < K]
        rest = [kv for kv in order if kv[1] >= K]
        while left and sum(n for _, n in left) < K and rest:
            left.append(rest.pop(0))
        shown |= {key for key, _ in rest}
    return shown


def counts(group: Sequence[Candidate]) -> dict[str, int]:
    found = {s: 0 for s in STATUSES}
    for c in group:
        if c.status != NONE:
            found[c.status] += 1
    return {"candidates": len(group), **found}


def figure(everyone: Sequence[Candidate], shown: Sequence[Candidate]) -> dict[str, Any]:
    """A group's counts: ``shown`` are its candidates in cells shown, ``everyone`` all of
    them.  Suppressed: every count None, never the small number; a group of none is one
    of fewer than ``K`` too (a row of zeros that turned into "fewer than 5" told the
    company that the agency had reported on someone, and in a job of one consent, on
    whom)."""
    if len(everyone) < K or not shown:
        return {**{k: None for k in ("candidates", *STATUSES)}, "suppressed": True,
                "reason": FEWER if len(everyone) < K else HELD_BACK, "partial": False}
    return {**counts(shown), "suppressed": False, "reason": None,
            "partial": len(shown) < len(everyone)}


def total(candidates: Sequence[Candidate]) -> dict[str, Any]:
    """SPEC 8 ``outcomes``: the company's candidates of the months shown."""
    months = shown_months(candidates)
    return figure(candidates, [c for c in candidates if c.month in months])


def by(candidates: Sequence[Candidate], dimension: str) -> dict[str, dict[str, Any]]:
    """Per value of ``dimension``: its figure (``figure``), and ``placed_days``, the days to
    placement of its candidates shown (for a median)."""
    months = shown_months(candidates)
    cells = shown_cells(candidates, months)
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        groups[getattr(c, dimension)].append(c)
    out = {}
    for value, group in groups.items():
        shown = [c for c in group if cell(c) in cells]
        out[value] = {**figure(group, shown), "shown_months": {c.month for c in shown},
                      "placed_days": [c.days_to_placed for c in shown
                                      if c.days_to_placed is not None]}
    return out


def by_month(candidates: Sequence[Candidate]) -> dict[str, dict[str, Any]]:
    """Per month: its figure (a month is one cell, shown whole or not at all)."""
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        groups[c.month].append(c)
    return {m: {**figure(g, g if len(g) >= K else []),
                "placed_days": [c.days_to_placed for c in g if c.days_to_placed is not None]}
            for m, g in groups.items()}
