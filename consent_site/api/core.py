"""What the company API's handlers share: the ``Api`` state (the site's ledger, the group
commit of its offers, the link signer, the keys, the limits), its errors as RFC 9457 problems, and
the middleware that turns every failure into one.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from career_relay.errors import LedgerUnavailable
from career_relay.ledger import (
    AgencyKey,
    AgencyKeys,
    ApiKey,
    ApiKeys,
    Ledger,
    Outcomes,
    Referrals,
)
from career_relay.settings import Settings
from career_relay.tokens import LinkSigner
from consent_site.api import models
from consent_site.api.batch import OfferBatches
from consent_site.api.limits import AUTH_FAILURES_PER_MINUTE, Buckets

T = TypeVar("T")
#: Whose key: a company's (``crk_``, SPEC 10) or an agency's (``cra_``, SPEC 11).
KeyKind = Literal["company", "agency"]
log = logging.getLogger("career_relay.api")

PROBLEM_TYPE = "application/problem+json"
#: API answers carry links (keys to a candidate's page) and company figures: never kept.
NO_STORE = {"Cache-Control": "no-store"}
RETRY_AFTER_UNAVAILABLE = 30
#: Seconds a right key is taken as checked (a revocation reaches every site within it).
KEY_CACHE_SECONDS = 1.0
KEY_CACHE_MAX = 10_000
#: Seconds a key found right skips its client's failure check (made before the database).
VOUCHED_SECONDS = 3600.0
#: Threads checking keys against the database, off the event loop.
KEY_CHECK_THREADS = 2


@dataclass(frozen=True)
class Caller:
    key_id: str
    company: str


@dataclass(frozen=True)
class AgencyCaller:
    key_id: str
    agency: str


class ApiError(Exception):
    """An answer other than success: its status, an RFC 9457 title and detail."""

    def __init__(self, status: int, title: str, detail: str,
                 errors: list[models.FieldError] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors
        self.headers = dict(headers or {})


class Api:
    def __init__(self, settings: Settings, ledger: Ledger, document: bytes,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.keys = ApiKeys(ledger)
        self.agency_keys = AgencyKeys(ledger)
        self.outcomes = Outcomes(ledger)
        self.referrals = Referrals(ledger)
        self.offers = OfferBatches(ledger)
        self.document = document
        self.clock = clock
        self.failures = Buckets(AUTH_FAILURES_PER_MINUTE)
        # Keyed by (kind, digest): a key is only ever found for the kind it was checked as.
        self._known: dict[tuple[KeyKind, bytes], tuple[ApiKey | AgencyKey, float]] = {}
        # Digests of keys found right lately: such a key skips the failure check made
        # before the database (a right key is never refused for its address's failures).
        self._vouched: dict[bytes, float] = {}
        # Key checks read the database: off the loop, so that a database away (each read
        # waiting for the pool) never stalls the site's other pages (attack review).
        self._checks = ThreadPoolExecutor(KEY_CHECK_THREADS, thread_name_prefix="api-keys")
        self.monotonic: Callable[[], float] = time.monotonic  # tests move it on
        self._slow = ThreadPoolExecutor(1, thread_name_prefix="api-report")
        self.limits = Buckets(settings.api.rate_limit)
        self.reload(settings)

    def reload(self, settings: Settings) -> None:
        """SIGHUP: the companies, the signing keys and the rate limit of ``settings``."""
        self.settings = settings
        self.signer = LinkSigner.from_settings(settings)
        if self.limits.per_minute != settings.api.rate_limit:
            self.limits = Buckets(settings.api.rate_limit)

    async def key(self, presented: str, client: str) -> ApiKey | None:
        """The active company key ``presented`` is, or None (``checked``)."""
        found = await self.checked("company", presented, client)
        return found if isinstance(found, ApiKey) else None

    async def agency_key(self, presented: str, client: str) -> AgencyKey | None:
        """The active agency key ``presented`` is, or None (``checked``)."""
        found = await self.checked("agency", presented, client)
        return found if isinstance(found, AgencyKey) else None

    async def checked(self, kind: KeyKind, presented: str, client: str
                      ) -> ApiKey | AgencyKey | None:
        """The active key of ``kind`` ``presented`` is, or None; 429 (``ApiError``) when ``client``
        is over its failure limit and the key is not one found right lately, before the
        database is asked.  A right key is remembered for ``KEY_CACHE_SECONDS`` (by its
        digest; never a wrong one, so guesses cannot fill the table): the check is a read
        of the ledger, and under load the costliest part of a request after the commit."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        now = self.monotonic()
        hit = self._known.get((kind, digest))
        if hit is not None and now - hit[1] < KEY_CACHE_SECONDS:
            return hit[0]
        if now - self._vouched.get(digest, -VOUCHED_SECONDS) >= VOUCHED_SECONDS:
            wait = self.failures.blocked(client)
            if wait is not None:
                raise too_many_failures(wait)
        loop = asyncio.get_running_loop()
        try:
            check = self.keys.check if kind == "company" else self.agency_keys.check
            found: ApiKey | AgencyKey | None = await loop.run_in_executor(
                self._checks, check, presented)
        except LedgerUnavailable:
            # Unchecked: counted as a failure, so that a flood while the database is away
            # stops at the client's limit instead of queueing for the pool.
            if digest not in self._vouched:
                self.failures.take(client)
            raise
        if found is None:
            self._known.pop((kind, digest), None)
            self._vouched.pop(digest, None)
        else:
            if len(self._known) >= KEY_CACHE_MAX:
                self._known.clear()
            if len(self._vouched) >= KEY_CACHE_MAX:
                self._vouched.clear()
            self._known[(kind, digest)] = (found, now)
            self._vouched[digest] = now
        return found

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """A quick read, on the loop, as the candidate's pages read (each thread has its
        own connection, and a read never waits for a commit)."""
        return fn(*args)

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """A longer read (the report: milliseconds) on a thread of its own."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._slow, functools.partial(fn, *args))

    async def close(self, _: web.Application) -> None:
        self.offers.close()
        self._checks.shutdown(wait=True)
        self._slow.shutdown(wait=True)


API = web.AppKey("api", Api)


def too_many_failures(wait: int) -> ApiError:
    return ApiError(429, "Too Many Requests", "too many failed authentications",
                    headers={"Retry-After": str(wait)})


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(body=model.model_dump_json(exclude_none=False), status=status,
                        content_type="application/json", headers=NO_STORE)


def problem_of(exc: ApiError) -> web.Response:
    body = models.Problem(title=exc.title, status=exc.status, detail=exc.detail,
                          errors=exc.errors)
    response = web.Response(body=body.model_dump_json(exclude_none=True), status=exc.status,
                            headers={**NO_STORE, **exc.headers})
    response.content_type = PROBLEM_TYPE
    return response


def http_problem(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (404 for no route, 405, 413) under /api/, as problems."""
    headers = {"Allow": exc.headers["Allow"]} if exc.status == 405 and "Allow" in exc.headers \
        else {}
    return problem_of(ApiError(exc.status, exc.reason, exc.reason, headers=headers))


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure of an API route is an ``application/problem+json`` answer."""
    try:
        return await handler(request)
    except ApiError as exc:
        return problem_of(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_problem(exc)
    except LedgerUnavailable as exc:
        log.warning("the ledger is unavailable serving the API: %s", exc)
        return problem_of(ApiError(503, "Service Unavailable",
                                   "the ledger is unavailable; try again later",
                                   headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)}))
    except Exception:
        # The route's name only: never a body, an address or a key.
        log.exception("unexpected error serving %s %s", request.method,
                      request.match_info.route.resource.canonical
                      if request.match_info.route.resource else "/api/")
        return problem_of(ApiError(500, "Internal Server Error", "an unexpected error"))
