"""The agency's side of free referrals (SPEC 11): the requests companies made of it, and
its answer, fulfilled or cancelled.

Thin: authenticate (an agency's key), validate with the models, call the ledger's
``Referrals`` (which checks, under the write lock, that the request is this agency's and
still open), answer through the models.  A request is addressed by its own id
(``rq_...``): a credit may be asked for again after a cancellation, so the credit's id
does not name one request.  Answering again with the state already recorded is a 200 with
the request as it stands (a retry after a lost reply), any other answer to a settled
request a 409.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging

from aiohttp import web

from career_relay.errors import CreditRequestSettled, UnknownCreditRequest
from career_relay.ledger import CreditRequest
from consent_site.api import models
from consent_site.api.agency import AGENCY_ONLY, agency_caller, page_limit
from consent_site.api.core import API, ApiError, json_response
from consent_site.api.reading import BODY_ERRORS, Route, body, valid

log = logging.getLogger("career_relay.api")

#: A request id is rq_ and a ledger id; anything longer is no request of anyone's.
MAX_ID = 100


def _item(request: web.Request, found: CreditRequest) -> models.CreditRequestItem:
    company = request.app[API].settings.company(found.company)
    return models.CreditRequestItem(
        credit_id=found.id, company=found.company,
        company_name=company.name if company is not None else found.company,
        state=found.state, requested=dt.datetime.fromisoformat(found.requested),
        note=found.note, settled=(dt.datetime.fromisoformat(found.settled)
                                  if found.settled else None),
        settled_note=found.settled_note)


def _not_found() -> ApiError:
    # Unknown, or another agency's: one answer for both (an id is no oracle).
    return ApiError(404, "Not Found", "no such credit request of this agency")


# -- GET /api/v1/agency/credits ----------------------------------------------------------------


async def list_credits(request: web.Request) -> web.StreamResponse:
    api, caller = request.app[API], await agency_caller(request)
    asked = valid(models.CreditsQuery, dict(request.query))
    limit = page_limit(asked.limit)
    try:
        found = await api.read(functools.partial(
            api.referrals.requests_for_agency, caller.agency, state=asked.state,
            after=asked.after, limit=limit + 1))
    except UnknownCreditRequest:
        raise ApiError(400, "Bad Request",
                       "after: not a credit request of this agency") from None
    page = found[:limit]
    return json_response(models.CreditRequests(
        items=[_item(request, r) for r in page],
        next=page[-1].id if page else asked.after, more=len(found) > limit))


# -- POST /api/v1/agency/credits/{credit_id} ---------------------------------------------------


async def settle_credit(request: web.Request) -> web.StreamResponse:
    api, caller = request.app[API], await agency_caller(request)
    asked = valid(models.CreditSettle, await body(request))
    request_id = request.match_info["credit_id"]
    if len(request_id) > MAX_ID:
        raise _not_found()
    try:
        # A write: off the loop, as the outcomes are.
        done = await api.off_loop(api.referrals.settle_request, request_id, caller.agency,
                                  asked.state, asked.note)
    except UnknownCreditRequest:  # NotTheAgencysRequest too
        raise _not_found() from None
    except CreditRequestSettled:
        now = await api.read(api.referrals.request_of, request_id)
        if now is None or now.agency != caller.agency:
            raise _not_found() from None
        if now.state == asked.state:  # the same answer again: as it stands
            return json_response(_item(request, now))
        raise ApiError(409, "Conflict", f"the request is {now.state} already") from None
    log.info("credit request %s %s by agency %s (key %s)", done.id, done.state,
             caller.agency, caller.key_id)
    return json_response(_item(request, done))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/agency/credits", list_credits,
          "The free referrals companies asked of this agency, oldest first (SPEC 11)",
          query=models.CreditsQuery, responses={
              200: ("A page; `next` goes on from its last item", models.CreditRequests),
              400: ("`after` is not a request of this agency", models.Problem),
              422: ("A bad state or limit (named in errors)", models.Problem),
              **AGENCY_ONLY}),
    Route("POST", "/agency/credits/{credit_id}", settle_credit,
          "Answer a free referral request: fulfilled (the referral was made) or cancelled "
          "(SPEC 11)", body=models.CreditSettle, path_params=("credit_id",), responses={
              200: ("The request as it stands now (also for the same answer again)",
                    models.CreditRequestItem),
              404: ("No request of this agency has this id", models.Problem),
              409: ("The request was answered otherwise already", models.Problem),
              422: ("A field failed validation (named in errors)", models.Problem),
              **BODY_ERRORS, **AGENCY_ONLY}),
)
