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
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from career_relay.clients import client_key
from career_relay.consent import network_of
from career_relay.domains import a_label, address_domain
from career_relay.ledger import ApiRequest, Offer, Rejection, new_offer_id, records, reports
from career_relay.tokens import OFFER_ID, link
from consent_site.api import models
from consent_site.api.core import API, ApiError, Caller, json_response, too_many_failures
from consent_site.security import client_address

log = logging.getLogger("career_relay.api")

#: The largest request body taken (a request is a few hundred bytes).
MAX_BODY = 16 * 1024
#: Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): printable ASCII, bounded.
IDEMPOTENCY_KEY_MAX = 255

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One route: how aiohttp calls it and how OpenAPI describes it."""

    method: str
    path: str  # under /api/v1
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, tuple[str, type[BaseModel] | None]] = field(default_factory=dict)
    auth: bool = True
    path_params: tuple[str, ...] = ()


# -- reading the request ----------------------------------------------------------------------


async def _body(request: web.Request) -> Any:
    """The JSON body: at most MAX_BODY bytes (413 beyond, counted as it arrives, whatever
    Content-Length says), UTF-8 JSON (400), one object with no member twice."""
    kind = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
    if kind.lower() != "application/json" and not kind.lower().endswith("+json"):
        raise ApiError(415, "Unsupported Media Type", "the body must be application/json")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "Content Too Large", f"the body may hold {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY + 1 - size):
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "Content Too Large", f"the body may hold {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks).decode("utf-8"), object_pairs_hook=_no_twice)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:200] if isinstance(exc, ValueError) else \
            "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "nested too deeply"
        raise ApiError(400, "Bad Request", f"the body is not valid JSON: {reason}") from None


def _no_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"member {key[:50]!r} given twice")
        found[key] = value
    return found


def _valid(model: type[BaseModel], value: Any) -> Any:
    """``value`` as ``model``, or 422 naming every field that failed."""
    if not isinstance(value, dict):
        raise ApiError(422, "Unprocessable Content", "the body must be a JSON object",
                       [models.FieldError(field="(body)", message="must be a JSON object")])
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [models.FieldError(field=".".join(str(p) for p in e["loc"]) or "(body)",
                                    message=_message(e)) for e in exc.errors()]
        named = ", ".join(dict.fromkeys(e.field for e in errors))
        raise ApiError(422, "Unprocessable Content", f"invalid: {named}", errors) from None


def _message(error: Any) -> str:
    """pydantic's message without the value (it may be an address: no personal data in
    an error that a proxy or a client may log)."""
    if error["type"] == "extra_forbidden":
        return "unknown member"
    return str(error["msg"])[:200]


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
    return json_response(models.OfferState(
        offer_id=state.id, created=state.created, viewed=state.viewed,
        decision=state.decision, qualified=state.qualified))  # type: ignore[arg-type]


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
    """The client as the receipts and the site's other limits see it: behind a proxy of
    ``site.trusted_proxies``, the address it saw (the receipts' network is compared with
    the one recorded here: ``own_network``)."""
    return client_address(request, request.app[API].settings.site.trusted_proxies)


async def _caller(request: web.Request) -> Caller:
    """The key's company, or 401 (no key, a bad one, a revoked one) or 429 (over the key's
    limit; or a bad key from an address that keeps sending bad ones).

    A right key is never refused for its address's failures: behind a proxy every client
    has one address, and another's guesses must not lock a company out.  (Right: found so
    by this process within ``VOUCHED_SECONDS``.  Any other key from a client over its
    limit is 429 before the database is asked, so a flood costs the ledger nothing.)"""
    api = request.app[API]
    # Counted per client as the site's other throttles count (an IPv6 /64 is one).
    client = client_key(_client(request) or "")
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    found = None
    if scheme.lower() == "bearer" and key.strip():
        found = await api.key(key.strip(), client)
    if found is None or api.settings.company(found.company) is None:
        wait = api.failures.take(client)
        if wait is not None:
            raise too_many_failures(wait)
        raise ApiError(401, "Unauthorized", "an API key is needed: Authorization: Bearer <key>"
                       if not key else "the API key is not valid (unknown or revoked)",
                       headers={"WWW-Authenticate": 'Bearer realm="career-relay"'
                                + ("" if not key else ', error="invalid_token"')})
    wait = api.limits.take(found.id)
    if wait is not None:
        raise ApiError(429, "Too Many Requests",
                       f"over api.rate_limit ({api.limits.per_minute} requests a minute)",
                       headers={"Retry-After": str(wait)})
    return Caller(found.id, found.company)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/offers", create_offer, "Make an offer for one rejected candidate",
          body=models.OfferRequest, responses={
              201: ("The offer, made now", models.OfferCreated),
              200: ("The offer made before for the same Idempotency-Key, or the same "
                    "message_id and recipient", models.OfferCreated),
              400: ("Malformed: not JSON, or a bad Idempotency-Key", models.Problem),
              409: ("The message_id and recipient belong to mail not made through the API "
                    "(relayed, or the company link's): nothing made, no link answered",
                    models.Problem),
              413: ("The body is too large", models.Problem),
              415: ("The body is not application/json", models.Problem),
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

