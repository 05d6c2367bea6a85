"""The company link's pages (SPEC 10): ``/j/{company_token}``, double opt-in.

- ``GET /j/{token}`` (and HEAD): the page and its form asking for the
  candidate's address.  It changes nothing: scanners follow every link.
- ``POST /j/{token}``: the form, checked as every POST of the site is (our
  origin, a nonce bound to the company, here good for one POST), limited
  per client, per company and per address (``link_throttle``), then an
  offer (``source = "link"``) for the address and a mail to it with the
  personal link (``link_mailer``, behind the answer).  Always a 303 to the
  same "check your mail" page, whether the address was new, used before, or
  over its limit.
- ``GET /j/{token}/sent``: that page; it names no address.

Only the personal link leads to the consent page of SPEC 6, and its accept
is held for review (``career_relay.consent``: reason ``link``): nothing
proves the company rejected that person.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from career_relay import company_link as core
from career_relay.ledger import Offer, Rejection, new_offer_id, settings_hash_key
from career_relay.settings import CompanySettings, Settings
from career_relay.tokens import CompanySigner, TokenInvalid, link
from consent_site import i18n, link_words
from consent_site.candidate import SITE, PageError
from consent_site.link_mailer import Asked, LinkMailer, Outgoing
from consent_site.link_throttle import LinkThrottle
from consent_site.login_throttle import UsedNonces
from consent_site.security import NONCE_MAX_AGE, CsrfError, client_address, same_origin
from consent_site.site import Site

#: The form holds one address and a nonce: a body larger than this is not ours.
MAX_BODY = 2048
_NO_STORE = {"Cache-Control": "no-store"}


class CompanyLinks:
    """What the company link's views share: the signer, the limits, the used nonces, the
    mailer.  Counts live in this process's memory (``link_throttle``)."""

    def __init__(self, settings: Settings, site: Site) -> None:
        self.settings = settings
        self.site = site
        self.signer = CompanySigner(settings.secrets.signing_keys)
        self.id_key = core.message_id_key(settings_hash_key(settings))
        self.throttle = LinkThrottle()
        self.nonces = UsedNonces(NONCE_MAX_AGE + 60)
        self.mailer = LinkMailer(settings, self.prepare)

    def reload(self, settings: Settings) -> None:
        """SIGHUP: the companies, the upstream and the keys of ``settings``; the counts stay."""
        self.settings = settings
        self.signer = CompanySigner(settings.secrets.signing_keys)
        self.mailer.settings = settings

    async def prepare(self, asked: Asked) -> Outgoing | None:
        """The offer for the address (made once per address and period, ``source = "link"``)
        and the mail with its personal link; the mailer's, behind the form's answer."""
        site, settings = self.site, self.settings
        company = settings.company(asked.company)
        if company is None:  # removed by a reload meanwhile
            return None
        message_id = core.offer_message_id(self.id_key, company.id, asked.address, time.time(),
                                           settings.site.link_max_age_days)
        rejection = Rejection(company.id, message_id, ((asked.address, new_offer_id()),),
                              counters=(), source="link")
        (made,) = await site.write(site.ledger.record_rejections, [rejection])
        offer: Offer | None = site.offer(made[asked.address])
        if offer is None:  # purged between the two statements: nothing to send
            return None
        token = site.signer.token(offer.id, offer.created.timestamp())
        message = core.personal_mail(settings, company, asked.address,
                                     link(settings.site.public_url, token), asked.locale,
                                     dt.datetime.now(dt.UTC))
        return Outgoing(offer.id, asked.address, message)


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
    settings = request.app[LINKS].settings
    agency = settings.agency_of(visit.company.id) or settings.agency
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
    client = client_address(request, links.settings.site.trusted_proxies)
    wait = links.throttle.client_wait(client)
    if wait:
        raise _too_many(visit, wait)
    links.throttle.count_client(client)
    typed = form.get("email", "")
    typed = typed if isinstance(typed, str) else ""
    address = core.normal_address(typed)
    if address is None or core.own_address(visit.company, address):
        return _form(request, visit, value=typed[:254], status=400,
                     error="email" if address is None else "company")
    wait = links.throttle.company_wait(visit.company.id)
    if wait or not links.mailer.has_room(visit.company.id, address):
        raise _too_many(visit, wait or 60)
    # Over its share: the same answer as a send, as fast, and nothing sent (the page never
    # tells whether an address was used; the offer is made behind the answer).
    if links.throttle.take_address(core.throttle_key(address)):
        links.throttle.count_company(visit.company.id)
        links.mailer.submit(Asked(visit.company.id, address, visit.locale))
    return web.Response(status=303, headers={
        "Location": f"{visit.base}/sent?lang={visit.locale}", **_NO_STORE})


def _too_many(visit: _Visit, wait: int) -> PageError:
    return PageError(429, "429", visit.locale, retry_after=wait)


def add_routes(app: web.Application, settings: Settings) -> None:
    links = CompanyLinks(settings, app[SITE])
    app[LINKS] = links
    app.cleanup_ctx.append(links.mailer.running)
    app.router.add_get("/j/{token}", page)  # HEAD too: aiohttp answers it from the GET
    app.router.add_post("/j/{token}", ask)
    app.router.add_get("/j/{token}/sent", sent)
