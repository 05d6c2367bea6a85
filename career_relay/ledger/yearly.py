"""What the yearly human-capital report needs from the ledger beyond ``reports`` (issue 15
item 6): the placements the agency reported, with the k ≥ 5 rule already applied.

STAND-IN: the aggregates of outcomes by job, channel, stage and month (issue 15 item 4,
built on another branch) are the one home of outcome figures.  ``placements`` is the only
outcome figure the yearly report reads; once that module lands, point ``placements`` at it
(same answer: a total and a figure per job, each ``None`` below ``K_MIN``) and delete the
query here.  Nothing else in this module may read ``outcomes``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from career_relay.ledger.reports import Period

#: The smallest group of candidates whose count a company may see (SPEC 11): a smaller
#: group is shown as "fewer than 5", never its number, nor zero (a zero beside a hidden
#: figure would tell the two apart).
K_MIN = 5


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
    """Candidates the agency reported ``placed`` with a day in the period: in all and by the
    job of the offer they came from ('': no job given, as in ``offer_stats``).  Each figure
    is ``None`` for a group of fewer than ``K_MIN``, and a hidden job is never found by
    subtracting the shown ones from the total (``at_least_k_each``)."""

    total: int | None
    by_job: dict[str, int | None]


def placements(conn: sqlite3.Connection, company: str, when: Period) -> Placements:
    """STAND-IN for the outcomes aggregates (see the module's docstring).

    A candidate is a consent forward (outcomes carry no one's identity), counted once
    however often the agency reported them placed in the period; the day is the one the
    agency gave (``outcomes.at``, a UTC day), as ``Outcomes.counts`` reads it.  Through
    the index ``outcomes_company`` (company, at, status): a company's few rows a year.
    """
    rows = conn.execute(
        "SELECT COALESCE(o.job, ''), COUNT(DISTINCT oc.forward_id) FROM outcomes oc"
        " JOIN forwards f ON f.id = oc.forward_id JOIN offers o ON o.id = f.offer_id"
        " WHERE oc.company = ? AND oc.at >= ? AND oc.at <= ? AND oc.status = 'placed'"
        " GROUP BY 1",
        (company, when.since.isoformat(), when.until.isoformat())).fetchall()
    by_job = {str(job): int(n) for job, n in rows}
    total = sum(by_job.values())
    shown = at_least_k(total)
    return Placements(shown, at_least_k_each(by_job, total if shown is not None else 0))
