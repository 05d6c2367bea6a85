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
from typing import Any, NamedTuple

#: The smallest group whose counts are shown.
K = 5
STATUSES = ("registered", "interviewing", "placed", "not_placed", "unreachable")
#: How far along each status is: on one day the furthest wins.
RANK = {"unreachable": 0, "registered": 1, "interviewing": 2, "not_placed": 3, "placed": 4}
#: The statuses that say the candidate registered with the agency (``registered_rate``).
REGISTERED = ("registered", "interviewing", "placed", "not_placed")
DIMENSIONS = ("job", "channel", "stage")
FEWER, HELD_BACK = "fewer_than_5", "held_back"

# The company's candidates of the cohort's months, counted by cell and by latest status: one
# range of ``outcome_candidates_company`` read in its order, without a sort (migration 0017
# keeps one row per consent forward not cancelled, with its latest status by the rule
# above), a row per cell however many outcomes the agency reported.  Then the days to
# placement of those placed, by cell (for the medians).
CELL_ROWS = (
    "SELECT month, job, channel, stage, COUNT(*), "
    + ", ".join(f"SUM(CASE WHEN status = '{s}' THEN 1 ELSE 0 END)" for s in STATUSES)
    + " FROM outcome_candidates WHERE company = :company"
    " AND month BETWEEN :cohort_start_month AND :cohort_end_month"
    " GROUP BY month, job, channel, stage")
PLACED_DAYS = (  # status in the GROUP BY, one value, keeps the index's order: no sort
    "SELECT month, job, channel, stage, days, COUNT(*) FROM outcome_candidates"
    " WHERE company = :company AND month BETWEEN :cohort_start_month AND :cohort_end_month"
    " AND status = 'placed' GROUP BY month, job, channel, stage, status, days")

Key = tuple[str, str, str, str]


class Cell(NamedTuple):
    """The candidates of one cell (its month, job, channel and stage together): how many, how
    many are in each latest status (``STATUSES``' order; the rest have none yet), and the
    days from the offer to the placement of each one placed."""
    month: str            # YYYY-MM of the offers
    job: str
    channel: str
    stage: str
    candidates: int
    statuses: tuple[int, ...]
    placed_days: tuple[int, ...] = ()


@dataclass(frozen=True)
class Found:
    """A company's cells of a cohort, and the months and cells of them shown (worked out once
    for every table of a report)."""
    cells: Sequence[Cell]
    months: frozenset[str]
    shown: frozenset[Key]


def found(cells: Sequence[Cell]) -> Found:
    months = shown_months(cells)
    return Found(cells, frozenset(months), frozenset(shown_cells(cells, months)))


def size(group: Iterable[Cell]) -> int:
    """How many candidates ``group`` holds."""
    return sum(c.candidates for c in group)


def cohort(since: dt.date, until: dt.date) -> dict[str, str]:
    """The cohort's whole months, from ``since``'s month to ``until``'s: first and last day
    (``offer_stats``), first and last month (``outcome_candidates``)."""
    first = since.replace(day=1)
    after = (until.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    last = after - dt.timedelta(days=1)
    return {"cohort_start_day": first.isoformat(),
            "cohort_end_day": last.isoformat(),
            "cohort_start_month": first.isoformat()[:7],
            "cohort_end_month": last.isoformat()[:7]}


def read(cells: Iterable[Sequence[Any]], days: Iterable[Sequence[Any]]) -> Found:
    """The cells of ``CELL_ROWS``' rows, with the days of ``PLACED_DAYS``' rows."""
    placed: dict[Key, list[int]] = defaultdict(list)
    for month, job, channel, stage, n_days, n in days:
        placed[(str(month), str(job), str(channel), str(stage))].extend([int(n_days)] * int(n))
    out = []
    for month, job, channel, stage, n, *statuses in cells:
        key = (str(month), str(job), str(channel), str(stage))
        out.append(Cell(*key, int(n), tuple(int(x) for x in statuses),
                        tuple(placed.get(key, ()))))
    return found(out)


def shown_months(cells: Iterable[Cell]) -> set[str]:
    """The months of at least ``K`` candidates."""
    sizes: dict[str, int] = defaultdict(int)
    for c in cells:
        sizes[c.month] += c.candidates
    return {m for m, n in sizes.items() if n >= K}


def shown_cells(cells: Iterable[Cell], months: set[str]) -> set[Key]:
    """The cells shown: see the module's docstring."""
    sizes: dict[str, list[tuple[int, Key]]] = defaultdict(list)
    for c in cells:
        if c.month in months:
            sizes[c.month].append((c.candidates, c[:4]))
    shown: set[Key] = set()
    for month_cells in sizes.values():
        # Smallest first, then by name: the same cells left out whoever asks.
        order = sorted(month_cells)
        left = [nk for nk in order if nk[0] < K]
        rest = [nk for nk in order if nk[0] >= K]
        while left and sum(n for n, _ in left) < K and rest:
            left.append(rest.pop(0))
        shown |= {key for _, key in rest}
    return shown


def counts(group: Sequence[Cell]) -> dict[str, int]:
    return {"candidates": size(group),
            **{s: sum(c.statuses[i] for c in group) for i, s in enumerate(STATUSES)}}


def figure(everyone: Sequence[Cell], shown: Sequence[Cell]) -> dict[str, Any]:
    """A group's counts: ``shown`` are its cells shown, ``everyone`` all of them.
    Suppressed: every count None, never the small number; a group of none is one of fewer
    than ``K`` too (a row of zeros that turned into "fewer than 5" told the company that the
    agency had reported on someone, and in a job of one consent, on whom)."""
    whole = size(everyone)
    if whole < K or not shown:
        return {**{k: None for k in ("candidates", *STATUSES)}, "suppressed": True,
                "reason": FEWER if whole < K else HELD_BACK, "partial": False}
    return {**counts(shown), "suppressed": False, "reason": None,
            "partial": size(shown) < whole}


def total(found: Found) -> dict[str, Any]:
    """SPEC 8 ``outcomes``: the company's candidates of the months shown."""
    return figure(found.cells, [c for c in found.cells if c.month in found.months])


def by(found: Found, dimension: str) -> dict[str, dict[str, Any]]:
    """Per value of ``dimension``: its figure (``figure``), and ``placed_days``, the days to
    placement of its candidates shown (for a median)."""
    groups: dict[str, list[Cell]] = defaultdict(list)
    for c in found.cells:
        groups[getattr(c, dimension)].append(c)
    out = {}
    for value, group in groups.items():
        shown = [c for c in group if c[:4] in found.shown]
        out[value] = {**figure(group, shown), "shown_months": {c.month for c in shown},
                      "placed_days": placed_days(shown)}
    return out


def by_month(found: Found) -> dict[str, dict[str, Any]]:
    """Per month: its figure (a month is one cell, shown whole or not at all)."""
    groups: dict[str, list[Cell]] = defaultdict(list)
    for c in found.cells:
        groups[c.month].append(c)
    return {m: {**figure(g, g if size(g) >= K else []), "placed_days": placed_days(g)}
            for m, g in groups.items()}


def placed_days(group: Iterable[Cell]) -> list[int]:
    """The days to placement of each candidate placed in ``group`` (for a median)."""
    return [d for c in group for d in c.placed_days]
