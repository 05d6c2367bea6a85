"""The yearly human-capital report on the admin pages (issue 15 item 6): the very document
``career-relay report --format html`` writes, with a toolbar (year, PDF, back) on screen.

Who sees it is ``admin.scope``'s rule: a company's user their own company only (another
company's answers 404), an operator any.  The page is the report's own self-contained
document, so it carries its own CSP: its one inline style sheet by hash, nothing else.

The PDF is Chromium's print (``career_relay.pdf``), a process of a second or two: off the
event loop on a thread of its own (never the ledger's), one at a time (a second request
waits up to ``site.pdf_timeout`` for its turn, then answers 503), and stopped after
``site.pdf_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import re
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from career_relay import yearly_report
from career_relay.errors import UserError
from career_relay.ledger import reports
from career_relay.pdf import html_to_pdf
from consent_site.admin import ADMIN, NO_STORE, BadField, Scope, render, scope


class PdfPrinter:
    """One Chromium at a time, on a thread of its own."""

    def __init__(self) -> None:
        self.turn = asyncio.Semaphore(1)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="admin-pdf")

    async def close(self, _: web.Application) -> None:
        self.pool.shutdown(wait=True)

    async def print(self, html: str, chromium: str, timeout: int) -> bytes:
        try:
            await asyncio.wait_for(self.turn.acquire(), timeout)
        except TimeoutError:
            raise UserError("another PDF is being printed; try again in a minute") from None
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.pool, functools.partial(html_to_pdf, html, chromium, timeout))
        finally:
            self.turn.release()


PDF = web.AppKey("yearly_pdf", PdfPrinter)


def _year(request: web.Request) -> int:
    text = request.query.get("year", "")
    if not text:
        return dt.datetime.now(dt.UTC).year
    if not re.fullmatch(r"[0-9]{4}", text) or not (
            reports.FIRST_YEAR <= int(text) <= reports.LAST_YEAR):
        raise BadField("year", f"年は{reports.FIRST_YEAR}年から{reports.LAST_YEAR}年までの"
                               "4桁で指定してください。")
    return int(text)


async def _build(request: web.Request) -> tuple[Scope, yearly_report.YearlyReport]:
    admin = request.app[ADMIN]
    s = scope(request)
    year = _year(request)
    built = await admin.run(yearly_report.build, admin.ledger, admin.settings, s.company.id,
                            year, dt.datetime.now(dt.UTC))
    return s, built


async def page(request: web.Request) -> web.StreamResponse:
    s, built = await _build(request)
    query = s.query(year=str(built.year))
    html = yearly_report.render_html(built, toolbar={
        "back": f"/admin/?{s.query()}", "pdf": f"/admin/yearly.pdf?{query}",
        "company": s.company.id})
    csp = (f"default-src 'none'; style-src '{yearly_report.CSS_HASH}'; form-action 'self'; "
           "frame-ancestors 'none'; base-uri 'none'")
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": csp, **NO_STORE})


async def pdf(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    s, built = await _build(request)
    site = admin.settings.site
    try:
        body = await request.app[PDF].print(yearly_report.render_html(built), site.chromium,
                                            site.pdf_timeout)
    except UserError as exc:
        return render(request, "error.html", status=503, title="PDF を作成できませんでした",
                      text=str(exc))
    company = re.sub(r"[^A-Za-z0-9_.-]", "_", s.company.id)
    name = f"career-relay-{company}-human-capital-{built.year}.pdf"
    return web.Response(body=body, headers={
        "Content-Type": "application/pdf",
        "Content-Disposition": f'attachment; filename="{name}"', **NO_STORE})


def add_routes(app: web.Application) -> None:
    printer = PdfPrinter()
    app[PDF] = printer
    app.on_cleanup.append(printer.close)
    app.router.add_get("/yearly", page)
    app.router.add_get("/yearly.pdf", pdf)
