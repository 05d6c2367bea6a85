"""CSV exports of the admin pages: the report, the forwards, the provision record.

RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or
line break, the same number of fields on every line, a header line.  UTF-8
with a byte-order mark, because Excel (the Japanese HR office's tool) reads
a CSV without one in the system's code page (CP932) and garbles every kanji.

A cell that begins with ``= + - @``, a tab or a carriage return is prefixed
with ``'``: a spreadsheet would otherwise run it as a formula, and the
candidate typed some of these values (OWASP "CSV Injection").  Times are
UTC, ISO 8601, as in the ledger.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from career_relay.ledger import records, reports
from career_relay.timestamps import stamp
from consent_site import admin_outcomes
from consent_site.admin import ADMIN, NO_STORE, Scope, scope
from consent_site.admin_views import ITEM_LABELS, KIND_LABELS, STATUS_LABELS, shown

BOM = "\ufeff"
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "|",
            # Full-width forms spreadsheets in Japanese locales read as the ASCII ones.
            "\uff1d", "\uff0b", "\uff0d", "\uff20")
#: What a spreadsheet skips before it looks for a formula: spaces (an ideographic one
#: too), a byte order mark, zero-width characters (attack review).
_SKIPPED = " \u3000\ufeff\u200b\u200c\u200d\u2060"

FORWARD_COLUMNS = ("作成日時 (UTC)", "種類", "状況", "提供日時 (UTC)", "氏名", "メールアドレス",
                   "提供した項目", "同意記録ID", "通知文の版", "転送ID")
PROVISION_COLUMNS = ("提供日 (UTC)", "提供先", "本人の氏名", "本人のメールアドレス",
                     "案内の送信先", "提供した項目", "同意記録ID", "通知文の版",
                     "同意日時 (UTC)", "転送ID")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return stamp(value)
    text = str(value)
    return "'" + text if text.lstrip(_SKIPPED).startswith(_FORMULA) else text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180; quotes only where needed
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(v) for v in row])
    return (BOM + out.getvalue()).encode("utf-8")


def _items(items: Sequence[str]) -> str:
    return "、".join(ITEM_LABELS.get(i, i) for i in items)


def _attachment(body: bytes, s: Scope, what: str) -> web.Response:
    company = re.sub(r"[^A-Za-z0-9_.-]", "_", s.company.id)
    name = f"career-relay-{company}-{what}-{s.period.since}_{s.period.until}.csv"
    return web.Response(body=body, headers={
        "Content-Type": "text/csv; charset=utf-8; header=present",
        "Content-Disposition": f'attachment; filename="{name}"', **NO_STORE})


async def report_csv(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    s = scope(request)
    r = await admin.run(admin.report, s.company.id, s.period)
    row = reports.flat(r)
    return _attachment(to_csv(reports.COLUMNS, [[row[f] for f in reports.COLUMNS]]), s,
                       "report")


async def forwards_csv(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    s = scope(request)
    rows = shown(admin.settings,
                 await admin.run(records.forwards, admin.ledger, s.company.id, s.period))
    body = to_csv(FORWARD_COLUMNS, (
        [f.created, KIND_LABELS.get(f.kind, f.kind), STATUS_LABELS.get(f.status, f.status),
         f.delivered, f.name, f.email, _items(f.items), f.receipt_id, f.notice_version, f.id]
        for f in rows))
    return _attachment(body, s, "forwards")


async def provisions_csv(request: web.Request) -> web.StreamResponse:
    """The record of each provision to a third party (APPI art. 29; SPEC 8)."""
    admin = request.app[ADMIN]
    s = scope(request)
    rows = await admin.run(records.provisions, admin.ledger, s.company.id, s.period)
    body = to_csv(PROVISION_COLUMNS, (
        [p.delivered, p.recipient, p.name if p.name is not None else "（消去済み）",
         p.email if p.email is not None else "（消去済み）", p.sent_to, _items(p.items),
         p.receipt_id, p.notice_version, p.consented, p.forward_id]
        for p in rows))
    return _attachment(body, s, "provisions")


async def outcomes_csv(request: web.Request) -> web.StreamResponse:
    """One table of the circulation analytics; a count left out in words (``admin_outcomes``)."""
    name = request.match_info["name"]
    if name not in admin_outcomes.TABLES:
        raise web.HTTPNotFound()
    admin = request.app[ADMIN]
    s = scope(request)
    r = await admin.run(admin.report, s.company.id, s.period)
    first, columns = admin_outcomes.TABLES[name]
    body = to_csv([first, *(label for _, label in columns)], admin_outcomes.table(r, name))
    return _attachment(body, s, f"outcomes-{name}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/export/outcomes-{name}.csv", outcomes_csv)
    app.router.add_get("/export/report.csv", report_csv)
    app.router.add_get("/export/forwards.csv", forwards_csv)
    app.router.add_get("/export/provisions.csv", provisions_csv)
