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
from consent_site import dns_check, start_mail, start_words
from consent_site.admin import ADMIN, Scope, render, scope, see_other, user_of
from consent_site.admin_views import _company_link

log = logging.getLogger("career_relay.admin")
T = TypeVar("T")

#: The templates shown: marker ones for mail through the gateway, company-link ones for
#: mail an ATS sends itself; each titled by ``start_words``' ``tpl_<lang>_<kind>``.
TEMPLATES = tuple(f"{kind}_{lang}.{ext}" for kind in ("rejection", "company_link")
                  for lang in ("ja", "en") for ext in ("txt", "html"))
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
    for name in TEMPLATES:
        text = (email_templates_dir() / name).read_text(encoding="utf-8")
        stem, ext = name.rsplit(".", 1)
        out.append({"id": name.replace(".", "-").replace("_", "-"), "file": name,
                    "title": f"tpl_{stem[-2:]}_{ext}",
                    "text": Template(text).safe_substitute(known)})
    return out


async def _page(request: web.Request, s: Scope, *, status: int = 200,
                test_id: str | None = None, lang: str | None = None,
                **extra: Any) -> web.Response:
    admin = request.app[ADMIN]
    lang = lang or start_words.locale(request.query.get("lang"))
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
        "source": "", "to": None, "max_source": start_mail.MAX_SOURCE, "lang": lang,
        "w": start_words.WORDS[lang]}
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
    lang = start_words.locale(form.get("lang"))
    words = start_words.WORDS[lang]
    error, status, wait = None, 400, 0
    if not s.company.domains:
        error = words["err_no_domains"]
    elif to is None:
        error = words["err_address"]
    elif own_address(s.company, to):
        error = words["err_own"]
    elif start_mail.needs_auth(admin.settings, s.company) and not (
            s.company.smtp_username and password):
        error = words["err_password" if s.company.smtp_username else "err_no_auth"]
    elif wait := request.app[START].limit.take(user.id):
        error, status = words["err_limit"].format(limit=TEST_LIMIT, wait=wait), 429
    if error is not None:
        response = await _page(request, s, status=status, error=error, lang=lang,
                               to=str(form.get("to")))
        if status == 429:
            response.headers["Retry-After"] = str(wait)
        return response
    assert to is not None
    try:
        sent = await _thread(start_mail.send, admin.settings, s.company, user.email, to,
                             password)
    except UserError as exc:
        log.warning("test rejection for company %s not accepted by the gateway", s.company.id)
        return await _page(request, s, status=502, to=to, lang=lang,
                           error=words["err_gateway"].format(arg=exc))
    # Never the address at INFO: the admin's own, or one they typed.
    log.info("test rejection for company %s sent by admin user %d", s.company.id, user.id)
    extra = {"lang": "en"} if lang == "en" else {}
    return see_other(f"/admin/start?{s.query(test=sent.message_id, **extra)}#test")


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
                       test_id=str(form.get("test", "")),
                       lang=start_words.locale(form.get("lang")))


def add_routes(app: web.Application) -> None:
    app[START] = Start()
    app.router.add_get("/start", start)
    app.router.add_post("/start/test", send_test)
    app.router.add_post("/start/verify", verify)
