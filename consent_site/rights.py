"""Who may use an API offer's rights pages after its decision (SPEC 10).

An API offer's personal link ``/c/{token}`` went through the company's ATS,
so the company holds it too.  Before the decision that changes nothing the
company could not do anyway; after it, the rights pages (manage, export,
withdraw, erase) would show it the profile the candidate gave the agency and
let it act in the candidate's name.  So, for an API offer with a decision,
they need something the company does not have:

- **the rights cookie**, set by the decision's answer: HttpOnly,
  ``SameSite=Lax``, scoped to the offer's path, Secure behind https, holding
  an HMAC (itsdangerous, the site's ``signing_keys``, a salt of its own) of
  the offer id and one of the offer's receipt ids (the one the decision
  made; withdrawing later keeps it good, since receipts are never removed);
- or **a manage link**, mailed on request to the address the candidate typed
  on the form (never one given in the request): a timed token (salt of its
  own, ``LINK_MAX_AGE``) bound to the offer and a receipt, good once in this
  process; its page's button (a POST: mail scanners follow links) sets the
  cookie.

How often that mail goes out: ``OFFER_LIMIT`` a day per offer (over it the
answer is the same and nothing is sent) and the company link's per-client
limit (``link_throttle``), through the company link's mailer and its
per-company share.  Relayed and company-link offers are unchanged: their
link reached the candidate's mailbox alone.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer

from career_relay.consent import State
from career_relay.ledger import Offer
from consent_site.link_mailer import LinkMailer
from consent_site.link_throttle import LinkThrottle, _Counts
from consent_site.login_throttle import UsedNonces

COOKIE = "cr_rights"
COOKIE_SALT = "career-relay/rights-cookie"
LINK_SALT = "career-relay/rights-link"
LINK_MAX_AGE = 3600  # seconds a mailed manage link works
COOKIE_MAX_AGE = 400 * 86400  # the longest a browser keeps a cookie (RFC 6265bis 5.6)
OFFER_LIMIT, OFFER_WINDOW = 3, 86400.0  # manage-link mails per offer


class Rights:
    """The cookie's and the manage link's signers, and the limits on that mail."""

    def __init__(self, keys: Sequence[str], https: bool, mailer: LinkMailer,
                 throttle: LinkThrottle) -> None:
        self.mailer = mailer
        self.throttle = throttle  # the company link's: its per-client count
        self.offers = _Counts(OFFER_LIMIT, OFFER_WINDOW, time.monotonic)
        self.used = UsedNonces(LINK_MAX_AGE + 60)
        self.reload(keys, https)

    def reload(self, keys: Sequence[str], https: bool) -> None:
        ordered = list(reversed(keys))  # itsdangerous signs with the last (tokens.py)
        kwargs: dict[str, Any] = {"digest_method": hashlib.sha256}
        self._cookie = URLSafeSerializer(ordered, salt=COOKIE_SALT, signer_kwargs=kwargs)
        self._link = URLSafeTimedSerializer(ordered, salt=LINK_SALT, signer_kwargs=kwargs)
        self.https = https

    # -- the cookie ------------------------------------------------------------------------

    def guarded(self, offer: Offer, state: State) -> bool:
        """Whether the rights pages of this offer need the cookie: an API offer decided."""
        return offer.source == "api" and bool(state.receipts)

    def holds(self, request: web.Request, offer: Offer, state: State) -> bool:
        """Whether ``request`` may use the rights pages of ``offer``."""
        if not self.guarded(offer, state):
            return True
        try:
            bound = self._cookie.loads(request.cookies.get(COOKIE, ""))
        except BadData:
            return False
        return _bound_to(bound, offer, state)

    def grant(self, response: web.StreamResponse, base: str, offer_id: str,
              receipt_id: str) -> None:
        response.set_cookie(COOKIE, str(self._cookie.dumps([offer_id, receipt_id])),
                            path=base, max_age=COOKIE_MAX_AGE, httponly=True,
                            samesite="Lax", secure=self.https)

    # -- the manage link -------------------------------------------------------------------

    def link_key(self, offer_id: str, receipt_id: str) -> str:
        return str(self._link.dumps([offer_id, receipt_id, secrets.token_urlsafe(9)]))

    def open_key(self, key: str, offer: Offer, state: State) -> str | None:
        """The key's one-time nonce when it is ours, fresh and for this offer, else None."""
        try:
            bound = self._link.loads(key, max_age=LINK_MAX_AGE)
        except BadData:
            return None
        if not (isinstance(bound, list) and len(bound) == 3 and isinstance(bound[2], str)):
            return None
        return bound[2] if _bound_to(bound[:2], offer, state) else None


def _bound_to(bound: object, offer: Offer, state: State) -> bool:
    return (isinstance(bound, list) and len(bound) == 2 and bound[0] == offer.id
            and bound[1] in {r.id for r in state.receipts})


RIGHTS = web.AppKey("rights", Rights)
