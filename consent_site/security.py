"""Security headers on every response, and the CSRF nonce of every form (SPEC 6).

The nonce: the page sets a random cookie and puts in its form a nonce signed
(itsdangerous, a salt used for nothing else) over the offer, a digest of the
cookie, and the notice the page showed.  A POST counts only if its nonce
verifies, is younger than ``NONCE_MAX_AGE``, names the offer of the URL, and
matches the cookie the browser sends back: another site cannot read the
cookie or the page, so it cannot forge the pair.  The notice digest it
carries is what the receipt cites: the text the candidate actually read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from itsdangerous import BadData, URLSafeTimedSerializer

SALT = "career-relay/csrf"
NONCE_MAX_AGE = 6 * 3600  # seconds: a form left open longer must be reloaded

# Strict by construction: no script at all, styles from our origin only, forms
# post only to us, and no page of ours can be framed (clickjacking a consent).
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

class CsrfError(Exception):
    """No valid nonce: the view answers 403 and records nothing."""


@dataclass(frozen=True)
class Nonce:
    offer_id: str
    notice: str  # digest of the notice shown with the form ('' for manage forms)


class Csrf:
    def __init__(self, keys: Sequence[str], https: bool) -> None:
        self._serializer = URLSafeTimedSerializer(
            list(reversed(keys)), salt=SALT, signer_kwargs={"digest_method": hashlib.sha256})
        # "__Host-": the browser accepts it only Secure, from this host, for path / (RFC 6265bis).
        self.cookie = "__Host-cr_csrf" if https else "cr_csrf"
        self.https = https

    def cookie_value(self, request: web.Request) -> tuple[str, bool]:
        """(the browser's CSRF cookie, whether it is new and must be set)."""
        value = request.cookies.get(self.cookie, "")
        if len(value) == 32 and value.isalnum():
            return value, False
        return secrets.token_hex(16), True

    def set_cookie(self, response: web.StreamResponse, value: str) -> None:
        response.set_cookie(self.cookie, value, path="/", secure=self.https, httponly=True,
                            samesite="Strict")

    def nonce(self, cookie: str, offer_id: str, notice: str = "") -> str:
        return str(self._serializer.dumps([offer_id, _digest(cookie), notice]))

    def check(self, request: web.Request, nonce: str, offer_id: str) -> Nonce:
        cookie = request.cookies.get(self.cookie, "")
        if not cookie or not nonce:
            raise CsrfError("missing")
        try:
            payload = self._serializer.loads(nonce, max_age=NONCE_MAX_AGE)
        except BadData:
            raise CsrfError("not valid") from None
        if (not isinstance(payload, list) or len(payload) != 3
                or not all(isinstance(p, str) for p in payload)):
            raise CsrfError("not valid")
        nonce_offer, cookie_digest, notice = payload
        if nonce_offer != offer_id or not hmac.compare_digest(cookie_digest, _digest(cookie)):
            raise CsrfError("does not match")
        return Nonce(nonce_offer, notice)


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()[:32]


def headers_middleware(https: bool) -> Middleware:
    @web.middleware
    async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        _secure(response, https)
        return response

    return security_headers


def _secure(response: web.StreamResponse, https: bool) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    # The token is in the path: no page of ours may tell another site where it came from.
    h["Referrer-Policy"] = "no-referrer"
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), interest-cohort=()"
    if https:
        h["Strict-Transport-Security"] = "max-age=31536000"
