""""Get started" (はじめに), per company (issue 14, item 4): from a first login to a
verified test rejection without opening docs/.

One page, four steps: the templates to copy (with the marker for mail through the
gateway; with the company's own link for mail sent elsewhere), the API keys (the
``admin_keys`` tab), the DNS records to publish with a check (``dns_check``), and a
test rejection sent through the gateway to the admin, whose status the page reads
from the ledger and whose pasted source it verifies (``start_mail``).

Thin like the other views: scope first (another company's page is 404), the ledger on
the admin's thread, DNS and SMTP on the loop's default executor (neither may queue
the ledger's reads).  ``Start`` holds what tests replace: the TXT resolver (a
``dns_check.TxtLookup``) and the per-admin limit of test mails.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from string import Template
from typing import Any, TypeVar

from aiohttp import web

from career_relay.company_link import normal_address, own_address
from career_relay.errors import UserError
from career_relay.paths import email_templates_dir
from career_relay.settings import CompanySettings, Settings
from consent_site import dns_check, start_mail
from consent_site.admin import ADMIN, Scope, render, scope, see_other, user_of
from consent_site.admin_views import _company_link

log = logging.getLogger("career_relay.admin")
T = TypeVar("T")

#: The templates shown: (file, title).  Marker ones for mail through the gateway,
#: company-link ones for mail an ATS sends itself.
TEMPLATES = (
    ("rejection_ja.txt", "日本語・テキスト"), ("rejection_ja.html", "日本語・HTML"),
    ("rejection_en.txt", "English, text"), ("rejection_en.html", "English, HTML"),
    ("company_link_ja.txt", "日本語・テキスト"), ("company_link_ja.html", "日本語・HTML"),
    ("company_link_en.txt", "English, text"), ("company_link_en.html", "English, HTML"),
)
TEST_LIMIT = 5  # test rejections per admin ...
TEST_WINDOW = 3600.0  # ... per hour (each is a real mail and an offer in the report)


class PerUser:
    """At most ``limit`` events per user in ``window`` seconds (the site process's memory)."""

    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._seen: dict[int, deque[float]] = {}

    def take(self, user: int) -> int:
        """0 and the event counted, or the seconds until the next one is allowed."""
        now = self._clock()
        seen = self._seen.setdefault(user, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if len(seen) >= self.limit:
            return max(1, int(seen[0] + self.window - now) + 1)
        seen.append(now)
        return 0


@dataclass
class Start:
    resolver: dns_check.TxtLookup = dns_check.system_txt
    limit: PerUser = field(default_factory=lambda: PerUser(TEST_LIMIT, TEST_WINDOW))


START = web.AppKey("start", Start)


async def _thread(fn: Callable[..., T], *args: Any) -> T:
    """Blocking network work (DNS, SMTP, dkimpy) on the loop's default executor."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


def templates(settings: Settings, company: CompanySettings) -> list[dict[str, str]]:
    """The templates with what the site knows filled in: names, licence, the company link."""
    link = _company_link(settings, company.id) or "${company_link}"
    known = {"company_name": company.name, "agency_name": settings.agency.name,
             "agency_license_no": settings.agency.license_no, "company_link": link}
    out = []
    for name, title in TEMPLATES:
        text = (email_templates_dir() / name).read_text(encoding="utf-8")
        out.append({"id": name.replace(".", "-").replace("_", "-"), "file": name,
                    "title": title, "text": Template(text).safe_substitute(known)})
    return out


async def _page(request: web.Request, s: Scope, *, status: int = 200,
                test_id: str | None = None, **extra: Any) -> web.Response:
    admin = request.app[ADMIN]
    settings, company = admin.settings, s.company
    records, no_dkim = dns_check.expected(company)
    checks = None
    if request.method == "GET" and request.query.get("check") == "dns":
        checks = await _thread(dns_check.check, records, request.app[START].resolver)
    test = await _status(request, company, test_id if test_id is not None else
                         request.query.get("test", ""))
    user = user_of(request)
    context: dict[str, Any] = {
        "templates": templates(settings, company), "company_link": _company_link(
            settings, company.id), "records": records, "no_dkim": no_dkim,
        "checks": checks, "test": test, "needs_auth": start_mail.needs_auth(settings, company),
        "default_to": "" if own_address(company, user.email) else user.email,
        "own_domain": own_address(company, user.email), "error": None, "verdict": None,
        "verdict_offers": [],
        "source": "", "to": None, "max_source": start_mail.MAX_SOURCE}
    context.update(extra)
    return render(request, "start.html", page="start", status=status, scope=s, q=s.query(),
                  item_labels={}, **context)


async def _status(request: web.Request, company: CompanySettings,
                  message_id: str) -> dict[str, Any] | None:
    """The ledger's view of a test rejection: its offer (the gateway injected a link) and
    whether that link was opened."""
    if not message_id:
        return None
    admin = request.app[ADMIN]
    found = await admin.run(admin.ledger.offers_of_message, company.id, message_id[:200], 1)
    offer = found[0] if found else None
    viewed = await admin.run(admin.store.first_viewed, offer.id) if offer else None
    return {"message_id": message_id, "offer": offer, "viewed": viewed}


async def start(request: web.Request) -> web.StreamResponse:
    return await _page(request, scope(request))


async def send_test(request: web.Request) -> web.StreamResponse:
    """Send the test rejection: the address checked, the admin's limit, AUTH if needed."""
    admin = request.app[ADMIN]
    form = await request.post()
    s = scope(request, form)
    user = user_of(request)
    to = normal_address(str(form.get("to", "")))
    password = str(form.get("smtp_password", "")) or None
    error, status = None, 400
    if not s.company.domains:
        error = ("この会社にはドメイン（companies.domains）が設定されていません。"
                 "運営者に依頼してください。")
    elif to is None:
        error = "送信先のメールアドレスを確認してください。"
    elif own_address(s.company, to):
        error = ("社内のドメインのアドレスには、リンクの代わりに社内向けの一文が入ります（社員に"
                 "リンクは送りません）。社外で受け取れるアドレスを入力してください。")
    elif start_mail.needs_auth(admin.settings, s.company) and not (
            s.company.smtp_username and password):
        error = ("この会社のメールはSMTP認証でゲートウェイに届けます。SMTPパスワードを入力して"
                 "ください。" if s.company.smtp_username else
                 "この会社にはSMTP認証もサイトからの送信の許可（companies.allow_ips）もありません。"
                 "運営者に設定を依頼してください。")
    elif wait := request.app[START].limit.take(user.id):
        error = f"テスト送信は1時間に{TEST_LIMIT}通までです。{wait}秒後にお試しください。"
        status = 429
    if error is not None:
        response = await _page(request, s, status=status, error=error, to=str(form.get("to")))
        if status == 429:
            response.headers["Retry-After"] = str(wait)
        return response
    assert to is not None
    try:
        sent = await _thread(start_mail.send, admin.settings, s.company, user.email, to,
                             password)
    except UserError as exc:
        log.warning("test rejection for company %s not accepted by the gateway", s.company.id)
        return await _page(request, s, status=502, to=to,
                           error=f"ゲートウェイが受け付けませんでした: {exc}")
    # Never the address at INFO: the admin's own, or one they typed.
    log.info("test rejection for company %s sent by admin user %d", s.company.id, user.id)
    return see_other(f"/admin/start?{s.query(test=sent.message_id)}#test")


async def verify(request: web.Request) -> web.StreamResponse:
    """The pasted source: signature and link, and the link's offer in this company."""
    admin = request.app[ADMIN]
    form = await request.post()
    s = scope(request, form)
    source = str(form.get("source", ""))[:start_mail.MAX_SOURCE]
    verdict = await _thread(start_mail.verify, admin.settings, s.company, source,
                            request.app[START].resolver)
    offers: list[dict[str, Any]] = []
    for offer_id, link in verdict.offers.items():
        offer = await admin.run(admin.ledger.offer, offer_id)
        if offer is not None and offer.company == s.company.id:
            offers.append({"offer": offer, "link": link, "viewed": await admin.run(
                admin.store.first_viewed, offer.id)})
    verdict.offers = {o["offer"].id: o["link"] for o in offers}  # this company's only
    return await _page(request, s, verdict=verdict, verdict_offers=offers, source=source,
                       test_id=str(form.get("test", "")))


def add_routes(app: web.Application) -> None:
    app[START] = Start()
    app.router.add_get("/start", start)
    app.router.add_post("/start/test", send_test)
    app.router.add_post("/start/verify", verify)
