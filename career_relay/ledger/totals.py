"""The ledger's running totals for ``/metrics``: read at scrape time, so they are exact,
the same in every process, and survive restarts (the ledger is the record).

Each query reads an index that starts with the company (``0007_report_indexes``),
or a few hundred per-day rows (``daily_counts``, ``offer_stats``); none reads a
row per offer.  Aggregates only: companies and counts, never who.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from career_relay.ledger.offers import Ledger

# name -> (SQL returning label values then a count, label names)
_QUERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "rejections": ("SELECT company, SUM(rejections) FROM daily_counts GROUP BY company",
                   ("company",)),
    "offers": ("SELECT company, SUM(offers) FROM offer_stats GROUP BY company", ("company",)),
    "views": ("SELECT company, COUNT(*) FROM offer_views GROUP BY company", ("company",)),
    "decisions": ("SELECT company, decision, COUNT(*) FROM receipts GROUP BY company, decision",
                  ("company", "decision")),
    "forwards": ("SELECT f.company, f.kind, e.event, COUNT(*) FROM forward_events e"
                 " JOIN forwards f ON f.id = e.forward_id GROUP BY 1, 2, 3",
                 ("company", "kind", "status")),
    "credits": ("SELECT company, 'earned', COUNT(*) FROM credits GROUP BY company"
                " UNION ALL SELECT company, 'redeemed', COUNT(*) FROM redemptions"
                " GROUP BY company", ("company", "event")),
}

LABELS: dict[str, tuple[str, ...]] = {name: labels for name, (_, labels) in _QUERIES.items()}


@dataclass(frozen=True)
class Totals:
    """Per metric name, the count for each tuple of label values."""

    values: dict[str, dict[tuple[str, ...], int]] = field(default_factory=dict)


def totals(ledger: Ledger) -> Totals:
    """Every total in one read transaction, so they agree with each other (blocking)."""
    out: dict[str, dict[tuple[str, ...], int]] = {}
    with ledger.snapshot() as conn:
        for name, (sql, _) in _QUERIES.items():
            out[name] = {tuple(str(v) for v in row[:-1]): int(row[-1] or 0)
                         for row in conn.execute(sql)}
    return Totals(out)
