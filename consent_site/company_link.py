"""The company link's pages (SPEC 10): ``/j/{company_token}``, double opt-in.

- ``GET /j/{token}`` (and HEAD): the page and its form asking for the
  candidate's address.  It changes nothing: scanners follow every link.
- ``POST /j/{token}``: the form, checked as every POST of the site is (our
  origin, a nonce bound to the company, here good for one POST), limited
  per client, per company and per address (``link_throttle``), then an
  offer (``source = "link"``) for the address and a mail to it with the
  personal link (``link_mailer``).  Always a 303 to the same "check your
  mail" page, whether the address was new, used before, or over its limit.
- ``GET /j/{token}/sent``: that page; it names no address.

Only the personal link leads to the consent page of SPEC 6, and its accept
is held for review (``career_relay.consent``: reason ``link``): nothing
proves the company rejected that person.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from career_relay import company_link as core
from career_relay.ledger import Offer, Rejection, new_offer_id
from career_relay.settings import CompanySettings, Settings
from career_relay.tokens import CompanySigner, TokenInvalid, link
from consent_site import i18n, link_words
from consent_site.candidate import SITE, PageError
from consent_site.link_mailer import LinkMailer, Outgoing
from consent_site.link_throttle import LinkThrottle
from consent_site.login_throttle import UsedNonces
from consent_site.security import NONCE_MAX_AGE, CsrfError, same_origin

log = logging.getLogger("career_relay.company_link")

#: The form holds one address and a nonce: a body larger than this is not ours.
MAX_BODY = 2048
_NO_STORE = {"Cache-Control": "no-store"}


class CompanyLinks:
    """What the company link's views share: the signer, the limits, the used nonces, the
    mailer.  Counts live in this process's memory (``link_throttle``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signer = CompanySigner(settings.secrets.signing_keys)
        self.throttle = LinkThrottle()
        self.nonces = UsedNonces(NONCE_MAX_AGE + 60)
        self.mailer = LinkMailer(settings)

    def reload(self, settings: Settings) -> None:
        self.settings = settings
        self.mailer.settings = settings


LINKS = web.AppKey("company_links", CompanyLinks)


@dataclass(frozen=True)
class _Visit:
    token: str
    company: CompanySettings
    locale: str

    @property
    def base(self) -> str:
        return f"/j/{self.token}"


def _binding(company: CompanySettings) -> str:
    """What a form's nonce is bound to: this company's link, never an offer's."""
    return f"company-link:{company.id}"


def _visit(request: web.Request, field: object = None) -> _Visit:
    links = request.app[LINKS]
    token = request.match_info["token"]
    query = field if isinstance(field, str) and field in i18n.LOCALES else (
        request.query.get("lang"))
    accept = request.headers.get("Accept-Language")
    try:
        company = links.settings.company(links.signer.company_id(token))
    except TokenInvalid:
        company = None
    if company is None:  # not signed by us, or a company no longer configured
        raise PageError(404, "404", i18n.choose(query, accept, "ja"))
    return _Visit(token, company, i18n.choose(query, accept, company.locale))


def _names(request: web.Request, visit: _Visit) -> dict[str, str]:
    agency = request.app[LINKS].settings.agency
    return {"company": visit.company.name, "agency": agency.name,
            "license_no": agency.license_no}


def _render(request: web.Request, visit: _Visit, template: str, status: int = 200,
            **context: Any) -> web.Response:
    other = "en" if visit.locale == "ja" else "ja"
    path = context.pop("switch_path", "")
    body = request.app[SITE].templates.get_template(template).render(
        t=link_words.TEXTS[visit.locale], lang=visit.locale, names=_names(request, visit),
        base=visit.base, switch_url=f"{visit.base}{path}?lang={other}", **context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=_NO_STORE)


def _form(request: web.Request, visit: _Visit, *, value: str = "", error: str = "",
          status: int = 200) -> web.Response:
    # A random part, as the admin login's: two pages minted in the same second must not
    # share a nonce that only one of them may use.
    csrf = request.app[SITE].csrf.nonce("", _binding(visit.company), secrets.token_urlsafe(9))
    return _render(request, visit, "link.html", status, csrf=csrf, value=value, error=error)


async def page(request: web.Request) -> web.StreamResponse:
    """The form (GET and HEAD): records nothing."""
    return _form(request, _visit(request))


async def sent(request: web.Request) -> web.StreamResponse:
    return _render(request, _visit(request), "link_sent.html", switch_path="/sent")


async def ask(request: web.Request) -> web.StreamResponse:
    """The form's POST: checks, limits, then perhaps an offer and a mail; always the same
    answer for an address we take."""
    if request.content_length is None or request.content_length > MAX_BODY:
        raise PageError(413, "413", i18n.choose(request.query.get("lang"),
                                                request.headers.get("Accept-Language"), "ja"))
    form = await request.post()
    visit = _visit(request, form.get("lang"))
    links, site = request.app[LINKS], request.app[SITE]
    nonce = str(form.get("csrf", ""))
    if not same_origin(request, links.settings.site.public_url):
        raise PageError(403, "403", visit.locale)
    try:
        site.csrf.check(request, nonce, _binding(visit.company), cookie_bound=False)
    except CsrfError:
        raise PageError(403, "403", visit.locale) from None
    if not links.nonces.use(nonce):  # a form posts once; a replayed one is refused
        raise PageError(403, "403", visit.locale)
    wait = links.throttle.client_wait(request.remote)
    if wait:
        raise _too_many(visit, wait)
    links.throttle.count_client(request.remote)
    typed = form.get("email", "")
    typed = typed if isinstance(typed, str) else ""
    address = core.normal_address(typed)
    if address is None or core.own_address(visit.company, address):
        return _form(request, visit, value=typed[:254], status=400,
                     error="email" if address is None else "company")
    wait = links.throttle.company_wait(visit.company.id)
    if wait or not links.mailer.has_room():
        raise _too_many(visit, wait or 60)
    # Over its share: the same answer as a send, and nothing sent (the page never tells
    # whether an address was used).
    if links.throttle.take_address(core.throttle_key(address)):
        links.throttle.count_company(visit.company.id)
        await _offer_and_mail(request, visit, address)
    return web.Response(status=303, headers={
        "Location": f"{visit.base}/sent?lang={visit.locale}", **_NO_STORE})


def _too_many(visit: _Visit, wait: int) -> PageError:
    return PageError(429, "429", visit.locale, retry_after=wait)


async def _offer_and_mail(request: web.Request, visit: _Visit, address: str) -> None:
    links, site = request.app[LINKS], request.app[SITE]
    settings = links.settings
    message_id = core.offer_message_id(time.time(), settings.site.link_max_age_days)
    rejection = Rejection(visit.company.id, message_id, ((address, new_offer_id()),),
                          counters=(), source="link")
    (made,) = await site.write(site.ledger.record_rejections, [rejection])
    offer: Offer | None = site.offer(made[address])
    if offer is None:  # purged between the two statements: nothing to send
        return
    url = link(settings.site.public_url, site.signer.token(offer.id, offer.created.timestamp()))
    message = core.personal_mail(settings, visit.company, address, url, visit.locale,
                                 dt.datetime.now(dt.UTC))
    links.mailer.submit(Outgoing(offer.id, address, message))
    log.info("company-link offer %s of %s queued for mail", offer.id, visit.company.id)


def add_routes(app: web.Application, settings: Settings) -> None:
    links = CompanyLinks(settings)
    app[LINKS] = links
    app.cleanup_ctx.append(links.mailer.running)
    app.router.add_get("/j/{token}", page)  # HEAD too: aiohttp answers it from the GET
    app.router.add_post("/j/{token}", ask)
    app.router.add_get("/j/{token}/sent", sent)
