"""The company API's handlers (SPEC 10) and the one route table that both registers
them and describes them (``consent_site.api.openapi``).

Thin, as the site's views are: authenticate, limit, validate with the models, call the
ledger, answer through the models.  An API offer is made as the gateway makes a relayed
one: ``Ledger.record_rejections`` in a group commit (``batch``: the same transaction,
the ``rejections`` counter, UNIQUE (company, message_id, recipient)) with
``source = "api"``, and its link
is the gateway's: ``tokens.link`` of the token signed at the offer's creation second, so
a retried request answers the very same link.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from typing import Any

from aiohttp import web

from career_relay.consent import network_of
from career_relay.domains import a_label, address_domain
from career_relay.ledger import (
    ApiKey,
    ApiRequest,
    Offer,
    Rejection,
    new_offer_id,
    records,
    reports,
)
from career_relay.tokens import OFFER_ID, link
from consent_site.api import models
from consent_site.api.auth import authenticate, client_of
from consent_site.api.core import API, ApiError, Caller, json_response
from consent_site.api.reading import BODY_ERRORS, Route
from consent_site.api.reading import body as _body
from consent_site.api.reading import valid as _valid

log = logging.getLogger("career_relay.api")

#: Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): printable ASCII, bounded.
IDEMPOTENCY_KEY_MAX = 255


# -- POST /api/v1/offers ------------------------------------------------------------------------


async def create_offer(request: web.Request) -> web.StreamResponse:
    api, caller = request.app[API], await _caller(request)
    offer = _valid(models.OfferRequest, await _body(request))
    company = api.settings.company(caller.company)
    assert company is not None  # _caller refuses a key whose company is gone
    # As A-labels (career_relay.domains): ＡＣＭＥ.example, acme\u00ad.example and an
    # IDN's punycode are the company's own domains, whichever form is configured.
    if address_domain(offer.recipient) in {a_label(d) for d in company.domains}:
        raise ApiError(422, "Unprocessable Content", "invalid: recipient", [models.FieldError(
            field="recipient", message="is in the company's own domains: staff get no link")])
    message_id, derived = _message_id(request, offer)
    fresh = new_offer_id()
    issued = dt.datetime.fromtimestamp(int(api.clock()), dt.UTC)  # links carry whole seconds
    offer_id = await api.offers.record(ApiRequest(Rejection(
        caller.company, message_id, ((offer.recipient, fresh),), offer.job, offer.channel,
        offer.stage, issued, ("rejections",), "api"), network_of(_client(request)), derived))
    if offer_id is None:  # the same key for another recipient: checked in the write
        raise ApiError(422, "Unprocessable Content", "invalid: Idempotency-Key", [
            models.FieldError(field="Idempotency-Key", message="was used for another request")])
    if offer_id == fresh:
        log.info("api offer %s made for %s (key %s)", offer_id, caller.company, caller.key_id)
        return json_response(_created(api, offer_id, issued), 201)
    found: Offer | None = await api.read(api.ledger.offer, offer_id)
    assert found is not None
    if found.source != "api":
        # A relayed offer's link went to the candidate's mailbox alone, and the company
        # link's too: the key must not fetch it by a Message-ID it knows or computes.
        # Nothing was added (an existing offer counts nothing); no value repeated.
        raise ApiError(409, "Conflict", "the message_id and recipient belong to mail not "
                       "made through the API")
    return json_response(_created(api, offer_id, found.created), 200)


def _message_id(request: web.Request, offer: models.OfferRequest) -> tuple[str, bool]:
    """The Message-ID the offer is recorded under, and whether it was derived from the
    Idempotency-Key: the body's; else one derived from the key (the same key, the same
    id); else a fresh one (every request a new offer)."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= IDEMPOTENCY_KEY_MAX
                                and all(" " <= ch <= "~" for ch in key)):
        raise ApiError(400, "Bad Request", "Idempotency-Key: 1 to 255 printable ASCII "
                       "characters")
    if offer.message_id is not None:
        return offer.message_id, False
    if key is not None:
        digest = hashlib.sha256(key.encode("ascii")).hexdigest()[:40]
        return f"<idempotency.{digest}@api.career-relay.invalid>", True
    return f"<{secrets.token_hex(16)}@api.career-relay.invalid>", False


def _created(api: Any, offer_id: str, created: dt.datetime) -> models.OfferCreated:
    token = api.signer.token(offer_id, created.timestamp())
    return models.OfferCreated(
        offer_id=offer_id, link=link(api.settings.site.public_url, token),
        expires_at=created + dt.timedelta(days=api.settings.site.link_max_age_days))


# -- GET /api/v1/offers/{offer_id} ---------------------------------------------------------------


async def get_offer(request: web.Request) -> web.StreamResponse:
    api, caller = request.app[API], await _caller(request)
    offer_id = request.match_info["offer_id"]
    state = None
    if OFFER_ID.fullmatch(offer_id):
        state = await api.read(records.offer_state, api.ledger, offer_id)
    if state is None:
        raise ApiError(404, "Not Found", "no such offer")
    if state.company != caller.company:
        raise ApiError(403, "Forbidden", "the offer is another company's")
    # Under qualify_on = "registered" an offer's qualification is the agency's report on
    # one candidate (registered or not): never the company's to read one by one (SPEC 11;
    # attack review).
    qualified = None if api.settings.ledger.qualify_on == "registered" else state.qualified
    return json_response(models.OfferState(
        offer_id=state.id, created=state.created, viewed=state.viewed,
        decision=state.decision, qualified=qualified))  # type: ignore[arg-type]


# -- GET /api/v1/report --------------------------------------------------------------------------


async def get_report(request: web.Request) -> web.StreamResponse:
    api, caller = request.app[API], await _caller(request)
    asked = _valid(models.ReportQuery, dict(request.query))
    # Each refusal names its field and repeats no date (a value refused is never echoed).
    since, until = _day(asked.since, "since"), _day(asked.until, "until")
    try:
        when = reports.period(since, until, dt.datetime.now(dt.UTC).date())
    except reports.PeriodError as exc:
        raise _bad_day(exc.field, f"must be in the years {reports.FIRST_YEAR} to "
                       f"{reports.LAST_YEAR}" if exc.reason == "year"
                       else "must not be before since (or today)") from None
    rows = await api.off_loop(reports.report, api.ledger, [caller.company], when,
                          api.settings.ledger.credit_every)
    return json_response(models.Report.model_validate(rows[0]))


def _day(value: str | None, name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        raise _bad_day(name, "is not a day of the calendar (YYYY-MM-DD)") from None


def _bad_day(name: str, message: str) -> ApiError:
    return ApiError(422, "Unprocessable Content", f"invalid: {name}",
                    [models.FieldError(field=name, message=message)])


# -- GET /api/v1/openapi.json -------------------------------------------------------------------


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.app[API].document, content_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})


# -- authentication and the rate limit ---------------------------------------------------------


def _client(request: web.Request) -> str | None:
    return client_of(request)


async def _caller(request: web.Request) -> Caller:
    """The company of the request's key (``auth.authenticate``: 401, 403, 429)."""
    found = await authenticate(request, "company")
    assert isinstance(found, ApiKey)
    return Caller(found.id, found.company)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/offers", create_offer, "Make an offer for one rejected candidate",
          body=models.OfferRequest, responses={
              201: ("The offer, made now", models.OfferCreated),
              200: ("The offer made before for the same Idempotency-Key, or the same "
                    "message_id and recipient", models.OfferCreated),
              **BODY_ERRORS,
              400: ("Malformed: not JSON, or a bad Idempotency-Key", models.Problem),
              409: ("The message_id and recipient belong to mail not made through the API "
                    "(relayed, or the company link's): nothing made, no link answered",
                    models.Problem),
              422: ("A field failed validation (named in errors)", models.Problem)}),
    Route("GET", "/offers/{offer_id}", get_offer, "An offer's state (no personal data)",
          path_params=("offer_id",), responses={
              200: ("The offer's state", models.OfferState),
              403: ("The offer is another company's", models.Problem),
              404: ("No such offer", models.Problem)}),
    Route("GET", "/report", get_report, "The company's report (SPEC 8) for a period",
          query=models.ReportQuery, responses={
              200: ("The report", models.Report),
              422: ("A bad since or until (named in errors)", models.Problem)}),
    Route("GET", "/openapi.json", openapi, "This document", auth=False,
          responses={200: ("The OpenAPI 3.1 description of this API", None)}),
)

