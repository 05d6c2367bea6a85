"""The agency API's handlers (SPEC 11) and their rows of the route table.

Thin, as the company API's are: authenticate (an agency's key: ``auth.authenticate``),
validate with the models, call the ledger (``Outcomes``), answer through the models.

For an agency that pulls (``deliver = "pull"``) the feed is its delivery: a request with
``after`` acknowledges every forward it was given up to that place, recorded delivered as a
webhook's 2xx is, in the same write as the page it then gets (``career_relay.ledger.pulls``).
For any other agency the feed only reads.

The feed skips a forward held for review.  For an agency that pulls, one approved after
the feed passed it comes late, at the start of a later page; for any other, the webhook or
mail delivers it, and its read-only feed does not list it again.

The feed's cursor is the place of the last item given (``forwards.rowid``) and, for an
agency that pulls, the chain entry up to which approvals are accounted for
(``ledger.Place``), with the agency it was given to, signed (HMAC-SHA256 with the ledger's
hash key, under a purpose of its own): opaque to the agency, and a cursor altered, forged,
or another agency's is a 400 rather than a page that skips or repeats forwards.  Cursors
with no approvals part (``N.MAC``) are those made before it, and still valid.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from career_relay.ledger import AgencyKey, OutcomeRefused, Place, settings_hash_key
from consent_site.api import models
from consent_site.api.auth import authenticate
from consent_site.api.core import API, AgencyCaller, ApiError, json_response
from consent_site.api.reading import BODY_ERRORS, Route, body, valid

log = logging.getLogger("career_relay.api")

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
_PURPOSE = b"career-relay agency feed cursor v1"


async def agency_caller(request: web.Request) -> AgencyCaller:
    """The agency whose key the request carries (401, 403 or 429 otherwise)."""
    found = await authenticate(request, "agency")
    assert isinstance(found, AgencyKey)
    return AgencyCaller(found.id, found.agency)


def _signature(request: web.Request, agency: str, place: Place) -> str:
    key = hmac.new(settings_hash_key(request.app[API].settings), _PURPOSE,
                   hashlib.sha256).digest()
    # Without an approvals part, exactly what cursors made before it signed.
    signed = f"{agency}\n{place.n}" + (f"\n{place.approved}" if place.approved else "")
    mac = hmac.new(key, signed.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def cursor(request: web.Request, agency: str, place: Place) -> str:
    """The opaque cursor of ``place`` in ``agency``'s feed."""
    approved = f"{place.approved}." if place.approved else ""
    return f"{place.n}.{approved}{_signature(request, agency, place)}"


def page_limit(given: str | None) -> int:
    """A page's ``limit``: DEFAULT_LIMIT when not given, 422 outside 1..MAX_LIMIT."""
    limit = DEFAULT_LIMIT if given is None else int(given)
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, "Unprocessable Content", "invalid: limit", [models.FieldError(
            field="limit", message=f"must be 1 to {MAX_LIMIT}")])
    return limit


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


def _place(request: web.Request, agency: str, given: str | None) -> Place:
    if given is None:
        return Place(0)
    *numbers, mac = given.split(".")
    if len(numbers) in (1, 2) and all(_number(x) for x in numbers):
        place = Place(*(int(x) for x in numbers))
        if (len(numbers) == 1 or place.approved) and hmac.compare_digest(
                mac.encode(), _signature(request, agency, place).encode()):
            return place
    raise ApiError(400, "Bad Request", "after: not a cursor this API gave this agency")


# -- GET /api/v1/agency/forwards ------------------------------------------------------------


async def list_forwards(request: web.Request) -> web.StreamResponse:
    api, caller = request.app[API], await agency_caller(request)
    asked = valid(models.FeedQuery, dict(request.query))
    limit = page_limit(asked.limit)
    after = _place(request, caller.agency, asked.after)
    agency = api.settings.agency_by_id(caller.agency)
    if agency is not None and agency.deliver == "pull":
        # Its delivery: ``after`` acknowledges what it was given up to there (a write).
        page, more, delivered, place = await api.off_loop(api.outcomes.pull, caller.agency,
                                                          after, limit)
        if delivered:
            log.info("agency %s acknowledged %d forward(s) up to %d (key %s)",
                     caller.agency, len(delivered), after.n, caller.key_id)
    else:  # a webhook's or mail's agency reconciles: nothing recorded
        found = await api.read(api.outcomes.feed, caller.agency, after.n, limit + 1)
        page, more = found[:limit], len(found) > limit
        place = Place(page[-1].n if page else after.n, after.approved)
    return json_response(models.Feed(items=[models.FeedItem(
        forward_id=item.forward_id, type=item.kind,  # type: ignore[arg-type]
        created=dt.datetime.fromisoformat(item.created),
        payload=None if item.payload is None else json.loads(item.payload))
        for item in page], next=cursor(request, caller.agency, place), more=more))


# -- POST /api/v1/agency/forwards/{forward_id}/outcome ----------------------------------------


async def report_outcome(request: web.Request) -> web.StreamResponse:
    api, caller = request.app[API], await agency_caller(request)
    asked = valid(models.OutcomeRequest, await body(request))
    try:
        day = dt.date.fromisoformat(asked.at)
    except ValueError:
        raise _bad("at", "is not a day of the calendar (YYYY-MM-DD)") from None
    forward_id = request.match_info["forward_id"]
    try:
        # A write: off the loop, as the company API's offers are.
        done = await api.off_loop(api.outcomes.record, caller.agency, forward_id[:100],
                                  asked.status, day) if len(forward_id) <= 100 else None
    except OutcomeRefused as exc:
        raise _bad(exc.field, exc.message) from None
    if done is None:  # unknown, another agency's, not a consent: one answer for all
        raise ApiError(404, "Not Found", "no such forward of this agency")
    outcome, new = done
    if new:
        log.info("outcome %s of forward %s: %s (agency %s, key %s)", outcome.id,
                 outcome.forward_id, outcome.status, caller.agency, caller.key_id)
    return json_response(models.OutcomeRecorded(
        outcome_id=outcome.id, forward_id=outcome.forward_id,
        status=outcome.status,  # type: ignore[arg-type]
        at=dt.date.fromisoformat(outcome.at),
        recorded=dt.datetime.fromisoformat(outcome.created)), 201 if new else 200)


def _bad(name: str, message: str) -> ApiError:
    return ApiError(422, "Unprocessable Content", f"invalid: {name}",
                    [models.FieldError(field=name, message=message)])


#: Every agency route's 403 (its OpenAPI entry).
AGENCY_ONLY: dict[int, tuple[str, Any]] = {
    403: ("A company's key: the agency routes take an agency's key", models.Problem)}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/agency/forwards", list_forwards,
          "The agency's forwards and notices, oldest first, a page at a time (SPEC 11)",
          query=models.FeedQuery, responses={
              200: ("A page; `next` goes on from its last item.  For an agency that pulls "
                    "(`deliver = \"pull\"`), `after` acknowledges every forward it was given "
                    "up to there: each is then delivered", models.Feed),
              400: ("`after` is not a cursor this API gave this agency", models.Problem),
              422: ("A bad limit (named in errors)", models.Problem), **AGENCY_ONLY}),
    Route("POST", "/agency/forwards/{forward_id}/outcome", report_outcome,
          "Report what became of a forwarded candidate (SPEC 11)",
          body=models.OutcomeRequest, path_params=("forward_id",), responses={
              201: ("The outcome, recorded now (a ledger entry)", models.OutcomeRecorded),
              200: ("The same status and day were recorded before: the same outcome",
                    models.OutcomeRecorded),
              404: ("No consent forward of this agency has this id", models.Problem),
              422: ("A field failed validation (named in errors): an unknown status, a day "
                    "before the forward or after tomorrow", models.Problem),
              **BODY_ERRORS, **AGENCY_ONLY}),
)
