"""What the yearly human-capital report needs from the ledger beyond ``reports`` (issue 15
item 6): the placements the agency reported, with the k ≥ 5 rule already applied.

``placements`` reads the outcomes aggregates (``outcome_groups``, ``analytics``), the one
home of outcome figures; nothing in this module reads ``outcomes`` itself.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from career_relay.ledger import analytics
from career_relay.ledger import outcome_groups as og
from career_relay.ledger.reports import Period

#: The smallest group of candidates whose count a company may see (SPEC 11): the outcomes
#: aggregates' (one rule for every page that shows a count).  In the per-job offers and
#: opt-ins below, a smaller count is shown as "fewer than 5", never its number.
K_MIN = og.K


def at_least_k(count: int) -> int | None:
    """``count`` when the group is large enough to show, else None ("fewer than 5")."""
    return count if count >= K_MIN else None


def at_least_k_each(counts: dict[str, int], total: int) -> dict[str, int | None]:
    """Each group's count by ``at_least_k``, and more hidden while the hidden ones add up to
    1 to ``K_MIN - 1``: with ``total`` shown, the total less the shown groups would give a
    small group away (secondary suppression; the smallest shown group goes first)."""
    shown: dict[str, int | None] = {k: at_least_k(n) for k, n in counts.items()}
    hidden = total - sum(n for n in shown.values() if n is not None)
    while 0 < hidden < K_MIN:
        smallest = min((k for k, n in shown.items() if n is not None),
                       key=lambda k: (counts[k], k), default=None)
        if smallest is None:
            break
        hidden += counts[smallest]
        shown[smallest] = None
    return shown


@dataclass(frozen=True)
class Placements:
    """Candidates of the period's offers the agency reported ``placed``: in all and by the
    job of the offer they came from ('': no job given, as in ``offer_stats``).  Each figure
    is ``None`` where its group is suppressed (``outcome_groups``)."""

    total: int | None
    by_job: dict[str, int | None]


def placements(conn: sqlite3.Connection, company: str, when: Period) -> Placements:
    """The candidates placed, from the outcomes aggregates (``outcome_groups``, the one home
    of outcome figures, so that the yearly report, ``report --format json`` and the admin
    pages' analytics never publish two cuts of the same groups that could be subtracted):
    of the offers of the period's whole months (a calendar year: exactly its offers), each
    forward once in its latest status as of the period's end.  A figure is None where its
    group is suppressed (fewer than ``K_MIN`` candidates, or held back so that no smaller
    group is found by subtraction)."""
    found = analytics.candidates(conn, company, when.since, when.until)
    whole = og.total(found)
    jobs = og.by(found, "job")
    return Placements(None if whole["suppressed"] else whole["placed"],
                      {job: None if fig["suppressed"] else fig["placed"]
                       for job, fig in jobs.items()})
