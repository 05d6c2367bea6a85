"""The views of ``rights``: ask for a manage link, and open one.

- ``POST /c/{token}/manage-link``: the locked manage page's button.  Checked as
  every POST (our origin, the page's nonce), limited per client and per offer;
  the link goes to the address the candidate typed on the form, found in the
  ledger, never one from the request.  Always the same 303 to the locked page,
  which names no address.
- ``GET /c/{token}/access/{key}``: the mailed link's page, with one button; it
  changes nothing (mail scanners follow links, DESIGN decision 3).
- ``POST /c/{token}/access/{key}``: uses the key once, sets the rights cookie
  and sends the browser to the manage page.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

from aiohttp import web

from career_relay import company_link as core
from career_relay.consent import State
from consent_site import rights_words
from consent_site.candidate import (
    SITE,
    PageError,
    Visit,
    _lang_field,
    _nonce,
    _render,
    _see_other,
    _visit,
)
from consent_site.company_link import LINKS
from consent_site.link_mailer import Asked, Outgoing
from consent_site.rights import RIGHTS, Rights
from consent_site.security import client_address

log = logging.getLogger("career_relay.rights")


async def ask(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    visit = _visit(request, _lang_field(form.get("lang")), rights=True)
    _nonce(request, visit, str(form.get("csrf", "")))
    rights = request.app[RIGHTS]
    state = visit.site.consents.state(visit.offer)
    answer = _see_other(f"{visit.base}/manage?lang={visit.locale}&sent=1")
    if not rights.guarded(visit.offer, state):
        return _see_other(f"{visit.base}/manage?lang={visit.locale}")
    client = client_address(request, visit.site.settings.site.trusted_proxies)
    wait = rights.throttle.client_wait(client)
    if wait:
        raise PageError(429, "429", visit.locale, retry_after=wait)
    rights.throttle.count_client(client)
    if rights.offers.full(visit.offer.id):  # the same answer: nothing sent
        log.info("manage link of offer %s not sent: over its limit", visit.offer.id)
        return answer
    address = _typed_address(visit, state)
    receipt = state.receipts[0]
    if address is None or not rights.mailer.has_room(visit.offer.company, address):
        return answer
    rights.offers.add(visit.offer.id)
    url = (f"{visit.site.settings.site.public_url.rstrip('/')}{visit.base}/access/"
           f"{rights.link_key(visit.offer.id, receipt.id)}")
    rights.mailer.submit(Asked(visit.offer.company, address, visit.locale),
                         Outgoing(visit.offer.id, address, _mail(visit, address, url)))
    log.info("manage link of offer %s queued", visit.offer.id)
    return answer


def _typed_address(visit: Visit, state: State) -> str | None:
    """The address typed on the form with the newest accept, if still held (not erased)."""
    for receipt in reversed(state.receipts):
        profile = visit.site.consents.store.profile(receipt.id)
        if profile and isinstance(profile.get("email"), str):
            return core.normal_address(profile["email"])
    return None


def _mail(visit: Visit, address: str, url: str) -> EmailMessage:
    words = rights_words.TEXTS[visit.locale]
    names = visit.names()
    hostname = visit.site.settings.gateway.hostname
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = Address(display_name=names["agency"], addr_spec=f"career-relay@{hostname}")
    msg["To"] = address
    msg["Subject"] = words["subject"].format(**names)
    msg["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = email.utils.make_msgid("manage-link", domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834
    # Base64: a quoted-printable soft break would cut the link (as the company link's mail).
    msg.set_content(words["mail"].format(link=url, **names), charset="utf-8", cte="base64")
    return msg


def _checked(request: web.Request, rights: Rights, visit: Visit) -> tuple[State, str]:
    """The offer's state and the key's nonce, or the page that says the link is spent."""
    state = visit.site.consents.state(visit.offer)
    nonce = rights.open_key(request.match_info["key"], visit.offer, state)
    if nonce is None:
        raise PageError(410, "410", visit.locale, agency=visit.names()["agency"])
    return state, nonce


async def page(request: web.Request) -> web.StreamResponse:
    visit = _visit(request, rights=True)
    _checked(request, request.app[RIGHTS], visit)
    return _render(visit, "rights_open.html", w=rights_words.TEXTS[visit.locale],
                   csrf=visit.site.csrf.nonce("", visit.offer.id),
                   action=f"{visit.base}/access/{request.match_info['key']}")


async def use(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    visit = _visit(request, _lang_field(form.get("lang")), rights=True)
    _nonce(request, visit, str(form.get("csrf", "")))
    rights = request.app[RIGHTS]
    state, nonce = _checked(request, rights, visit)
    if not rights.used.use(nonce):
        raise PageError(410, "410", visit.locale, agency=visit.names()["agency"])
    answer = _see_other(f"{visit.base}/manage?lang={visit.locale}")
    rights.grant(answer, visit.base, visit.offer.id, state.receipts[0].id)
    return answer


def add_routes(app: web.Application) -> None:
    """After ``company_link.add_routes``: the manage link goes through its mailer."""
    site, links = app[SITE], app[LINKS]
    app[RIGHTS] = Rights(site.settings.secrets.signing_keys,
                         site.settings.site.public_url.startswith("https://"),
                         links.mailer, links.throttle)
    app.router.add_post("/c/{token}/manage-link", ask)
    app.router.add_get("/c/{token}/access/{key}", page)
    app.router.add_post("/c/{token}/access/{key}", use)

