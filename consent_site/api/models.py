"""The company API's requests and responses (SPEC 10) as pydantic models.

The handlers validate every request body and query with these models and build
every response through them; ``consent_site.api.openapi`` makes the OpenAPI 3.1
document from their JSON Schema.  One definition, so the document cannot drift
from what is served (``tests/test_api.py`` validates real responses against it).

Every string a client sends is bounded and refused (422, naming the field) when it
holds control characters; unknown members are refused too, so a typo in a field
name is an error and not a silently dropped value.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: C0, DEL, C1, U+2028 and U+2029: never in a value that ends up in a page or a header
#: (SPEC 4 refuses the same in envelope addresses); and lone surrogates, which JSON's
#: \ud800 escapes can make and no UTF-8 can store.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: Bidirectional formatting and zero-width characters (U+202A-202E, U+2066-2069,
#: U+200B-200F): they reorder or hide what an admin page or a mail shows (attack review).
_BIDI = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
#: One address, as SMTP carries it: local@domain, no spaces, one @, a dot in the domain.
_ATOM = r"[^@\s<>(),;:\"\[\]\\]"
_ADDRESS = re.compile(rf"{_ATOM}{{1,64}}@{_ATOM}+\.[^@\s<>(),;:\"\[\]\\.]+")


def _printable(value: str) -> str:
    if _CONTROLS.search(value):
        raise ValueError("must not contain control characters")
    if _BIDI.search(value):
        raise ValueError("must not contain bidirectional or zero-width formatting characters")
    return value


def _ours(value: str) -> str:
    """Message-IDs in career-relay.invalid are the site's own (the API's derived ids end in
    @api.career-relay.invalid; the company link's are there too): a body may not name one."""
    domain = value.rstrip(">").rpartition("@")[2].lower()
    if domain == "career-relay.invalid" or domain.endswith(".career-relay.invalid"):
        raise ValueError("must not be in career-relay.invalid (the relay's own ids)")
    return value


def _address(value: str) -> str:
    if not _ADDRESS.fullmatch(value) or ".." in value.rpartition("@")[2]:
        raise ValueError("must be one e-mail address, local@domain")
    return value


Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
Address = Annotated[str, Field(min_length=3, max_length=254), AfterValidator(_printable),
                    AfterValidator(_address)]
MessageId = Annotated[str, Field(min_length=1, max_length=250, pattern=r"^[!-~]+$"),
                      AfterValidator(_ours)]
Day = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$",
                           description="a UTC day, YYYY-MM-DD")]
Locale = Literal["ja", "en"]


class _Strict(BaseModel):
    """What a client sends: no member unknown, no type coerced (a number is no string)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Out(BaseModel):
    """What the API answers: built by the handlers, checked member by member."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OfferRequest(_Strict):
    """``POST /api/v1/offers``: one rejected candidate."""

    recipient: Address = Field(description="The candidate's address, as the ATS mails it.")
    message_id: MessageId | None = Field(
        None, description="The ATS's id of the rejection mail (its Message-ID, say): the "
        "same (message_id, recipient) answers the same offer.")
    job: Text | None = Field(None, description="The job applied for (as X-Career-Relay-Job).")
    channel: Text | None = Field(None, description="The application channel.")
    stage: Text | None = Field(None, description="The stage the candidate reached.")
    locale: Locale | None = Field(
        None, description="The language of the ATS's mail. The consent page follows the "
        "candidate's browser and the company's locale, as for relayed mail.")


class OfferCreated(_Out):
    """The offer made (201) or found again (200): the ATS puts ``link`` into its mail."""

    offer_id: str
    link: str = Field(description="The candidate's personal consent link, exactly as the "
                      "gateway would put it into a relayed rejection.")
    expires_at: dt.datetime = Field(description="When the link stops opening the offer "
                                    "(site.link_max_age_days after it was made), UTC.")


class OfferState(_Out):
    """``GET /api/v1/offers/{offer_id}``: state only, never personal data."""

    offer_id: str
    created: dt.datetime
    viewed: bool
    decision: Literal["accept", "decline", "withdraw", "erase"] | None = Field(
        description="The candidate's latest decision; null before any.")
    qualified: bool | None = Field(description="Its forward counts toward the company's "
                                   "credits; null when the ledger qualifies a forward only "
                                   "once the agency reports the candidate registered "
                                   "(ledger.qualify_on = \"registered\"): it would tell one "
                                   "candidate's outcome, which a company sees only as counts "
                                   "of at least 5.")


class ReportQuery(_Strict):
    """``GET /api/v1/report``: the period, UTC days, inclusive."""

    since: Day | None = None
    until: Day | None = None


class OffersBySource(_Out):
    relay: int
    api: int
    link: int


class OutcomeCounts(_Out):
    """SPEC 8 ``outcomes``: what the agency reported of the company's forwarded candidates,
    each once in its latest status, only for a group of at least 5 (every count null and
    ``suppressed`` otherwise: never the small number)."""

    candidates: int | None
    registered: int | None
    interviewing: int | None
    placed: int | None
    not_placed: int | None
    unreachable: int | None
    suppressed: bool
    reason: Literal["fewer_than_5", "held_back"] | None = Field(
        description="Why the counts are null: fewer than 5 candidates, or held back so "
        "that no smaller group can be found by subtraction.")
    partial: bool = Field(description="Some months' cells are left out of the counts.")


class Report(_Out):
    """The company's row of SPEC 8 for the period."""

    company: str
    since: dt.date
    until: dt.date
    rejections: int
    offers: int
    offers_by_source: OffersBySource
    not_injected: int
    unmarked_rejections: int
    views: int
    accepted: int
    declined: int
    withdrawn: int
    erased: int
    forwards_delivered: int
    qualified_forwards: int
    under_review: int
    credits_earned: int
    credits_redeemed: int
    credits_available: int
    progress_to_next_credit: int
    credit_every: int
    outcomes: OutcomeCounts
    credits_requested: int = Field(description="Free referrals asked of the agency in the "
                                   "period (SPEC 11).")
    credits_fulfilled: int = Field(description="Free referrals the agency delivered in the "
                                   "period.")
    recovered_value: int = Field(description="Referrals received in the period x the "
                                 "company's referral_value, in yen: the hiring cost "
                                 "recovered (0 when referral_value is unset).")


class FieldError(_Out):
    field: str = Field(description="The member or parameter, dotted (\"recipient\").")
    message: str


class Problem(_Out):
    """An error, RFC 9457 ``application/problem+json``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = Field(
        None, description="422: each field that failed validation.")


# -- the agency API (SPEC 11) -------------------------------------------------------------


OutcomeStatus = Literal["registered", "interviewing", "placed", "not_placed", "unreachable"]


class FeedQuery(_Strict):
    """``GET /api/v1/agency/forwards``: where to go on from, and how many."""

    after: str | None = Field(None, max_length=200, description="The `next` of the page "
                              "before (opaque); none: from the first forward.")
    limit: str | None = Field(None, pattern=r"^[0-9]{1,4}$",
                              description="Items a page, 1 to 500 (default 100).")


class FeedItem(_Out):
    """One forward or notice, as the webhook delivers it."""

    forward_id: str
    type: Literal["consent", "withdrawal", "erasure"]
    created: dt.datetime
    payload: dict[str, Any] | None = Field(description="The webhook's JSON body, member for "
                                           "member (docs/agency-webhook.md); null once the "
                                           "candidate's data was erased, or for a consent "
                                           "withdrawn before it was delivered.")


class Feed(_Out):
    """A page of the agency's forwards, oldest first."""

    items: list[FeedItem]
    next: str = Field(description="Pass as `after` for the next page; the same cursor when "
                      "nothing came after it (poll with it).")
    more: bool = Field(description="Another page is there already.")


class OutcomeRequest(_Strict):
    """``POST /api/v1/agency/forwards/{forward_id}/outcome``."""

    status: OutcomeStatus
    at: Day = Field(description="The day it happened (UTC), YYYY-MM-DD: not before the "
                    "forward was made, not after tomorrow.")


class OutcomeRecorded(_Out):
    """The outcome recorded (201), or recorded before with the same status and day (200)."""

    outcome_id: str
    forward_id: str
    status: OutcomeStatus
    at: dt.date
    recorded: dt.datetime = Field(description="When the ledger recorded it, UTC.")


CreditState = Literal["requested", "fulfilled", "cancelled"]
#: A note on a request: one line a person reads (the ledger flattens and caps it too).
Note = Annotated[str, Field(max_length=500), AfterValidator(_printable)]


class CreditsQuery(_Strict):
    """``GET /api/v1/agency/credits``: which requests, from where, how many."""

    state: CreditState | None = Field(None, description="Only requests in this state.")
    after: str | None = Field(None, max_length=100, pattern=r"^[!-~]+$",
                              description="The `next` of the page before (a request id); "
                              "none: from the first request.")
    limit: str | None = Field(None, pattern=r"^[0-9]{1,4}$",
                              description="Items a page, 1 to 500 (default 100).")


class CreditRequestItem(_Out):
    """A free referral a company asked of this agency, and where it stands."""

    credit_id: str = Field(description="The request's id (rq_...): the path's {credit_id} "
                           "to settle it.")
    company: str
    company_name: str
    state: CreditState
    requested: dt.datetime
    note: str = Field(description="What the company wrote with its request.")
    settled: dt.datetime | None = Field(description="When it was fulfilled or cancelled.")
    settled_note: str


class CreditRequests(_Out):
    """A page of the requests asked of this agency, oldest first."""

    items: list[CreditRequestItem]
    next: str | None = Field(description="Pass as `after` for the next page; null when "
                             "the page is empty.")
    more: bool = Field(description="Another page is there already.")


class CreditSettle(_Strict):
    """``POST /api/v1/agency/credits/{credit_id}``: the agency's answer to a request."""

    state: Literal["fulfilled", "cancelled"]
    note: Note = ""
