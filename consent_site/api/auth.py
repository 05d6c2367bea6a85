"""Who is calling the API: a company's key (``crk_``, SPEC 10) or an agency's (``cra_``,
SPEC 11), each checked by ``Api.checked`` (one cache, one failure limit for both), and the
rate limit per key.

The two kinds never cross: a company route takes only a company's key and an agency route
only an agency's.  A key of the other kind that is right is answered 403 (it is a key, for
another part of the API: saying so helps the integrator and reveals nothing the holder
does not know); a key of neither kind, or a wrong or revoked one, 401.
"""

from __future__ import annotations

from aiohttp import web

from career_relay.clients import client_key
from career_relay.ledger import AgencyKey, ApiKey
from consent_site.api.core import API, ApiError, KeyKind, too_many_failures
from consent_site.security import client_address

_PREFIX: dict[KeyKind, str] = {"company": "crk_", "agency": "cra_"}
_OTHER: dict[KeyKind, KeyKind] = {"company": "agency", "agency": "company"}


def client_of(request: web.Request) -> str | None:
    """The client as the receipts and the site's other limits see it: behind a proxy of
    ``site.trusted_proxies``, the address it saw (the receipts' network is compared with
    the one recorded here: ``own_network``)."""
    return client_address(request, request.app[API].settings.site.trusted_proxies)


async def authenticate(request: web.Request, kind: KeyKind) -> ApiKey | AgencyKey:
    """The active key of ``kind``, whose owner is still configured; or 401 (no key, a bad
    one, a revoked one), 403 (a right key of the other kind) or 429 (over the key's limit;
    or a bad key from an address that keeps sending bad ones).

    A right key is never refused for its address's failures: behind a proxy every client
    has one address, and another's guesses must not lock an owner out.  (Right: found so
    by this process within ``VOUCHED_SECONDS``.  Any other key from a client over its
    limit is 429 before the database is asked, so a flood costs the ledger nothing.)"""
    api = request.app[API]
    # Counted per client as the site's other throttles count (an IPv6 /64 is one).
    client = client_key(client_of(request) or "")
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    bearer = scheme.lower() == "bearer" and bool(key)
    other = _OTHER[kind]
    if bearer and key.startswith(_PREFIX[other]) and _owned(
            request, other, await api.checked(other, key, client)):
        article = {"company": "a", "agency": "an"}
        raise ApiError(403, "Forbidden", f"this is {article[other]} {other} key: the {kind} "
                       f"routes need {article[kind]} {kind} key")
    found = await api.checked(kind, key, client) if bearer else None
    if found is None or not _owned(request, kind, found):
        wait = api.failures.take(client)
        if wait is not None:
            raise too_many_failures(wait)
        raise ApiError(401, "Unauthorized", "an API key is needed: Authorization: Bearer <key>"
                       if not key else "the API key is not valid (unknown or revoked)",
                       headers={"WWW-Authenticate": 'Bearer realm="career-relay"'
                                + ("" if not key else ', error="invalid_token"')})
    # Buckets per key id, by kind: a company's key and an agency's never share one.
    wait = api.limits.take(f"{kind}:{found.id}")
    if wait is not None:
        raise ApiError(429, "Too Many Requests",
                       f"over api.rate_limit ({api.limits.per_minute} requests a minute)",
                       headers={"Retry-After": str(wait)})
    return found


def _owned(request: web.Request, kind: KeyKind, found: ApiKey | AgencyKey | None) -> bool:
    """Whether ``found`` is a key whose company or agency the settings still hold (a reload
    may have removed it)."""
    settings = request.app[API].settings
    if isinstance(found, ApiKey):
        return kind == "company" and settings.company(found.company) is not None
    if isinstance(found, AgencyKey):
        return kind == "agency" and settings.agency_by_id(found.agency) is not None
    return False
