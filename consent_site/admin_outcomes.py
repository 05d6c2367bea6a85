"""The dashboard's circulation analytics (issue 15 item 5): what the agency reports became of
the candidates, by job, channel, stage and month, as CSVs and an SVG chart.

Thin: the figures are ``career_relay.ledger``'s ``analytics`` (``report --format json``'s),
already under the rule of at least 5 candidates; a count left out is shown in words
(``SUPPRESSED``), never as a number, in the page, the CSV and the chart alike.  The CSVs and
the chart (``admin_exports``, ``admin_charts``) are GETs behind the admin guard (login, a
company's user sees only its own), as the other exports; nothing changes anything, so no
form and no CSRF nonce.
"""

from __future__ import annotations

from typing import Any

#: A count left out, in words (``outcome_groups``: ``fewer_than_5``, ``held_back``).
SUPPRESSED = {"fewer_than_5": "5人未満", "held_back": "非公開（差し引き防止）"}
STATUS_LABELS = {"candidates": "結果の報告があった候補者", "registered": "登録",
                 "interviewing": "選考中", "placed": "就職", "not_placed": "不成立",
                 "unreachable": "連絡不能"}
_RATES = (("offers", "案内"), ("opt_in_rate", "同意率"), ("registered_rate", "登録率"),
          ("placed_rate", "就職率"), ("median_days_to_placement", "就職までの日数（中央値）"))
_COUNTS = tuple(STATUS_LABELS.items())
#: Each table: its key in ``analytics``, the first column's name, the columns.
TABLES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "jobs": ("職種", (*_RATES, *_COUNTS)),
    "channels": ("応募経路", (*_RATES, *_COUNTS)),
    "stages": ("選考段階", _COUNTS),
    "monthly": ("月", (*_RATES[:4], *_COUNTS)),
}
_SOURCE = {"jobs": "by_job", "channels": "by_channel", "stages": "by_stage",
           "monthly": "monthly"}


def shown(row: dict[str, Any], key: str) -> str:
    """A cell as the page and the CSV show it."""
    value = row.get(key)
    if row.get("suppressed") and key not in ("offers", "opt_in_rate", "accepted"):
        return SUPPRESSED[row["reason"]]
    if value is None:
        return "–"
    if key.endswith("_rate"):
        return f"{value * 100:.1f}%"
    return str(value)


def table(r: dict[str, Any], name: str) -> list[list[str]]:
    """The rows of one table: its name (or month) then each column."""
    _, columns = TABLES[name]
    rows = r["analytics"][_SOURCE[name]]
    return [[row.get("month", row.get("name")) or "（未設定）",
             *(shown(row, key) for key, _ in columns)] for row in rows]
