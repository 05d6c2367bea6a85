"""The report as a terminal table, CSV or JSON (SPEC 2 ``report --format``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from career_relay.ledger import reports


def render(rows: Sequence[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(list(rows), ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
        writer.writerow(reports.COLUMNS)
        for row in rows:
            writer.writerow([reports.flat(row)[f] for f in reports.COLUMNS])
        return out.getvalue()
    return _table(rows)


def _table(rows: Sequence[dict[str, Any]]) -> str:
    """One column per company, one line per field: reads well for one company or several."""
    if not rows:
        return "no companies configured\n"
    names = [str(r["company"]) for r in rows]
    rows = [reports.flat(r) for r in rows]
    width = max(len(f) for f in reports.COLUMNS)
    cols = [max(len(n), *(len(str(r[f])) for f in reports.COLUMNS)) for n, r in zip(names, rows,
                                                                            strict=True)]
    lines = []
    for f in reports.COLUMNS:
        cells = [str(r[f]).rjust(w) for r, w in zip(rows, cols, strict=True)]
        lines.append(f"{f.ljust(width)}  {'  '.join(cells)}")
    return "\n".join(lines) + "\n"
