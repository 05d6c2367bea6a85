"""The candidate's pages (SPEC 6): HTTP in, ``career_relay.consent`` calls, pages out.

A GET or HEAD never changes consent state (DESIGN decision 3): the first GET
records a view, nothing else.  Decisions are POSTs carrying the page's CSRF
nonce.  Token errors become pages: 404 for a token we did not sign, 410 for
one that expired; neither records anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from career_relay.consent import FIELDS, Client, ConsentError, State, validate_profile
from career_relay.ledger import Offer
from career_relay.tokens import TokenExpired, TokenInvalid
from consent_site import i18n, rights_words
from consent_site.page_cache import NONCE_MARGIN, Page
from consent_site.rights import RIGHTS
from consent_site.security import NONCE_MAX_AGE, CsrfError, client_address, same_origin
from consent_site.site import Site, has_application

SITE = web.AppKey("site", Site)

#: Pages with a token in their URL: never stored by a browser or proxy cache.
_NO_STORE = {"Cache-Control": "no-store"}


class PageError(Exception):
    """Answered with an error page in the candidate's language; nothing was recorded."""

    def __init__(self, status: int, key: str, locale: str = "ja",
                 retry_after: int | None = None, agency: str | None = None) -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        self.locale = locale
        self.retry_after = retry_after  # seconds, for a 429 (RFC 6585 4)
        self.agency = agency  # the legal name the page names, when the offer is known


@dataclass(frozen=True)
class Visit:
    site: Site
    token: str
    offer: Offer
    locale: str
    expires: float  # when the link expires, seconds since the epoch

    @property
    def t(self) -> i18n.Words:
        return i18n.TEXTS[self.locale]

    @property
    def base(self) -> str:
        return f"/c/{self.token}"

    def names(self) -> dict[str, str]:
        return self.site.names(self.offer)

    def client(self, request: web.Request) -> Client:
        return Client(request.headers.get("User-Agent", "")[:500],
                      client_address(request, self.site.settings.site.trusted_proxies))


def _visit(request: web.Request, locale_field: str | None = None, *,
           rights: bool = False) -> Visit:
    """The offer behind the token, or the page that says why not.

    ``rights``: manage, export, withdraw and erase.  For a candidate who decided,
    they outlive the link (SPEC 6): ``link_max_age_days`` limits the offer, not the
    right to withdraw at any time that the notice promised (APPI 30, GDPR 7(3)).
    """
    site = request.app[SITE]
    token = request.match_info["token"]
    query = locale_field or request.query.get("lang")
    try:
        offer_id, expires = site.signer.open(token)
    except TokenExpired as exc:
        decided = _decided_offer(site, exc.offer_id) if rights else None
        if decided is None:
            expired = site.offer(exc.offer_id) if exc.offer_id else None
            agency = None if expired is None else site.settings.agency_of(expired.company)
            raise PageError(410, "410", i18n.choose(
                query, request.headers.get("Accept-Language"), "ja"),
                agency=None if agency is None else agency.name) from None
        offer_id, expires = decided, 0.0
    except TokenInvalid:
        raise PageError(404, "404", i18n.choose(query, request.headers.get("Accept-Language"),
                                                "ja")) from None
    offer = site.offer(offer_id)
    if offer is None:  # signed by us, but its offer is gone (purged): as good as expired
        raise PageError(410, "410", i18n.choose(query, request.headers.get("Accept-Language"),
                                                "ja"))
    company = site.company(offer.company)
    default = company.locale if company is not None else "ja"
    locale = i18n.choose(query, request.headers.get("Accept-Language"), default)
    return Visit(site, token, offer, locale, expires)


def _decided_offer(site: Site, offer_id: str | None) -> str | None:
    """``offer_id`` when its candidate has decided (a receipt exists), else None."""
    offer = site.offer(offer_id) if offer_id else None
    if offer is None or site.consents.state(offer).decision is None:
        return None
    return offer.id


def _html(visit: Visit, template: str, **context: Any) -> str:
    other = "en" if visit.locale == "ja" else "ja"
    return visit.site.templates.get_template(template).render(
        t=visit.t, lang=visit.locale, names=visit.names(), base=visit.base,
        switch_url=f"{visit.base}{context.pop('switch_path', '')}?lang={other}",
        privacy_url=visit.site.names(visit.offer)["privacy_url"], **context)


def _render(visit: Visit, template: str, status: int = 200, **context: Any) -> web.Response:
    return web.Response(text=_html(visit, template, **context), status=status,
                        content_type="text/html", charset="utf-8", headers=_NO_STORE)


def _state_name(visit: Visit, state: State) -> str | None:
    if state.decision is None:
        return None
    if state.decision == "accept":
        current = state.current
        if current is not None and current.review is not None:
            verdict = visit.site.consents.store.review_verdict(current.id)
            if verdict is None:
                return "under_review"
            if verdict == "reject":
                return "not_sent"
        return "accepted"
    return {"decline": "declined", "withdraw": "withdrawn", "erase": "erased"}[state.decision]


# -- the offer page -------------------------------------------------------------------------


async def offer_page(request: web.Request) -> web.StreamResponse:
    """The link's page (GET and HEAD): a GET records the first view, nothing else."""
    site = request.app[SITE]
    # The raw query string, not ``request.query``: a hit parses nothing.
    key = (request.match_info["token"], request.query_string,
           request.headers.get("Accept-Language"))
    get = request.method == "GET"
    cached = site.pages.get(key, site.generation(), time.time())
    if cached is not None:
        if get and not site.viewed(cached.offer_id):  # a page first rendered for a HEAD
            await site.record_view(cached.offer_id)
        return _serve(request, site, cached)
    visit = _visit(request)
    if get:
        await site.record_view(visit.offer.id)
    # The ledger's version before reading what the page shows: a commit landing in
    # between then retires the page at once, instead of leaving it stale.
    generation = site.generation()
    state = site.consents.state(visit.offer)
    shown = _state_name(visit, state)
    if shown in ("accepted", "under_review", "erased"):
        page = Page(_html(visit, "state.html", state=shown,
                          receipt=state.current).encode("utf-8"),
                    200, visit.offer.id, generation, visit.expires)
    else:
        page = await _form_page(visit, state, values={"email": visit.offer.recipient},
                                generation=generation)
    site.pages.put(key, page)
    return _serve(request, site, page)


async def _form_page(visit: Visit, state: State, *, values: dict[str, str],
                     errors: dict[str, str] | None = None, share: bool = False,
                     status: int = 200, generation: int = -1) -> Page:
    """The form, with a nonce for this offer and notice that every visit may share."""
    site = visit.site
    notice, notice_html = site.notice(visit.offer, visit.locale)
    await site.record_notice(visit.offer, notice)
    minted = time.time()
    body = _html(visit, "offer.html", state=_state_name(visit, state), notice_html=notice_html,
                 values=values, errors=errors or {}, share=share, fields=FIELDS,
                 csrf=site.csrf.nonce("", visit.offer.id, notice.digest),
                 application=has_application(visit.offer))
    expires = min(visit.expires, minted + NONCE_MAX_AGE - NONCE_MARGIN)
    return Page(body.encode("utf-8"), status, visit.offer.id, generation, expires)


def _serve(request: web.Request, site: Site, page: Page) -> web.Response:
    """A rendered page with every header (the hot path: nothing is computed here)."""
    return web.Response(body=page.body, status=page.status, headers=site.page_headers)


async def decide(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    visit = _visit(request, _lang_field(form.get("lang")))
    site = visit.site
    nonce = _nonce(request, visit, str(form.get("csrf", "")))
    notice = site.notice_by_digest(nonce.notice)
    if notice is None:  # a nonce we signed cites a notice we kept: only a wiped ledger gets here
        raise PageError(403, "403", visit.locale)
    rights = request.app[RIGHTS]
    if not rights.holds(request, visit.offer, site.consents.state(visit.offer)):
        # An API offer decided already: deciding again (after a withdrawal) would hand the
        # company a cookie that opens the candidate's earlier receipts (``rights``).
        return _see_other(f"{visit.base}/manage?lang={visit.locale}")
    client = visit.client(request)
    decision = form.get("decision")
    receipt = None
    try:
        if decision == "decline":
            receipt = await site.write(site.consents.decline, visit.offer, notice, client)
        elif decision == "accept":
            values = {f: str(form.get(f, "")) for f in FIELDS}
            profile, errors = validate_profile(values)
            # Only what the form offered: without application data there is no tick box,
            # and the notice cited never mentioned sharing it.
            share = form.get("share_application") == "yes" and has_application(visit.offer)
            if form.get("agree") != "yes":
                errors["agree"] = "agree"
            if errors:
                state = site.consents.state(visit.offer)
                page = await _form_page(visit, state, values=values, errors=errors,
                                        share=share, status=400)
                return _serve(request, site, page)
            receipt = await site.write(site.consents.accept, visit.offer, notice, profile,
                                       share, client)
            site.on_forward()
        else:
            raise PageError(400, "generic", visit.locale)
    except ConsentError:
        pass  # erased meanwhile: the done page says so
    answer = _see_other(f"{visit.base}/done?lang={visit.locale}")
    if receipt is not None and visit.offer.source == "api":  # its link is the company's too
        rights.grant(answer, visit.base, visit.offer.id, receipt.id)
    return answer


def _see_other(location: str) -> web.Response:
    """303 (RFC 9110 15.4.4): after a POST the browser GETs the result page, so a reload
    never posts the decision again."""
    return web.Response(status=303, headers={"Location": location, **_NO_STORE})


def _lang_field(value: object) -> str | None:
    return value if isinstance(value, str) and value in i18n.LOCALES else None


def _nonce(request: web.Request, visit: Visit, nonce: str) -> Any:
    """The form's nonce, from a page of ours (``security``: the token is the session)."""
    if not same_origin(request, visit.site.settings.site.public_url):
        raise PageError(403, "403", visit.locale)
    try:
        return visit.site.csrf.check(request, nonce, visit.offer.id, cookie_bound=False)
    except CsrfError:
        raise PageError(403, "403", visit.locale) from None


async def done(request: web.Request) -> web.StreamResponse:
    visit = _visit(request)
    state = visit.site.consents.state(visit.offer)
    if state.decision is None:
        return _see_other(f"{visit.base}?lang={visit.locale}")
    return _render(visit, "state.html", state=_state_name(visit, state), receipt=state.current,
                   switch_path="/done")


# -- manage, withdraw, export, erase --------------------------------------------------------


async def manage(request: web.Request) -> web.StreamResponse:
    visit = _visit(request, rights=True)
    site = visit.site
    state = site.consents.state(visit.offer)
    if not request.app[RIGHTS].holds(request, visit.offer, state):  # ``rights``
        return _render(visit, "rights_locked.html", state=_state_name(visit, state),
                       csrf=site.csrf.nonce("", visit.offer.id), switch_path="/manage",
                       sent=request.query.get("sent") == "1",
                       w=rights_words.TEXTS[visit.locale])
    return _render(visit, "manage.html", state=_state_name(visit, state),
                   receipts=state.receipts, csrf=site.csrf.nonce("", visit.offer.id),
                   switch_path="/manage")


async def withdraw(request: web.Request) -> web.StreamResponse:
    return await _retract(request, "withdraw")


async def erase(request: web.Request) -> web.StreamResponse:
    return await _retract(request, "erase")


async def _retract(request: web.Request, how: str) -> web.StreamResponse:
    """Withdraw or erase (the manage page's two forms): checked like a decision."""
    form = await request.post()
    visit = _visit(request, _lang_field(form.get("lang")), rights=True)
    _nonce(request, visit, str(form.get("csrf", "")))
    writer = visit.site.consents
    if not request.app[RIGHTS].holds(request, visit.offer, writer.state(visit.offer)):
        raise PageError(403, "403", visit.locale)  # an API offer's link alone (``rights``)
    act = writer.withdraw if how == "withdraw" else writer.erase
    await visit.site.write(act, visit.offer, visit.locale, visit.client(request))
    visit.site.on_forward()
    return _see_other(f"{visit.base}/manage?lang={visit.locale}")


async def export(request: web.Request) -> web.StreamResponse:
    visit = _visit(request, rights=True)
    if not request.app[RIGHTS].holds(request, visit.offer,
                                     visit.site.consents.state(visit.offer)):
        return _see_other(f"{visit.base}/manage?lang={visit.locale}")  # ``rights``
    body = json.dumps(visit.site.consents.export(visit.offer), ensure_ascii=False, indent=2)
    return web.Response(
        text=body, content_type="application/json", charset="utf-8",
        headers={**_NO_STORE,
                 "Content-Disposition": 'attachment; filename="career-relay-data.json"'})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/c/{token}", offer_page)  # HEAD too: aiohttp answers it from the GET
    app.router.add_post("/c/{token}", decide)
    app.router.add_get("/c/{token}/done", done)
    app.router.add_get("/c/{token}/manage", manage)
    app.router.add_post("/c/{token}/withdraw", withdraw)
    app.router.add_post("/c/{token}/erase", erase)
    app.router.add_get("/c/{token}/export", export)
