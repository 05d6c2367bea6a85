"""Security headers on every response, and the CSRF nonce of every form (SPEC 6).

Every form carries a nonce signed (HMAC-SHA256 under a key derived for this
purpose alone) over its binding, its time and the notice the page showed; a
POST counts only if its nonce verifies, is younger than ``NONCE_MAX_AGE`` and
names the binding of the URL.  The notice digest it carries is what the
receipt cites: the text the candidate actually read.

Two bindings:

- **The candidate's pages** bind the nonce to the offer, and set no cookie:
  the link's token is the candidate's session.  A forged cross-site POST
  needs the token, and whoever holds the token can load the page and post
  anyway, cookie or not; so what stops cross-site forgery is the token, the
  nonce, and ``same_origin`` (the browser's ``Origin`` and
  ``Sec-Fetch-Site`` headers, OWASP's standard-header defence).  No cookie
  also means nothing stored in the candidate's browser at all.
- **The admin pages** bind it to a random cookie as well (and to the session),
  the classic signed double submit.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

SALT = "career-relay/csrf"
NONCE_MAX_AGE = 6 * 3600  # seconds: a form left open longer must be reloaded

# Strict by construction: no script at all, styles from our origin only, forms
# post only to us, and no page of ours can be framed (clickjacking a consent).
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CsrfError(Exception):
    """No valid nonce: the view answers 403 and records nothing."""


@dataclass(frozen=True)
class Nonce:
    offer_id: str
    notice: str  # digest of the notice shown with the form ('' for manage forms)


class Csrf:
    """Mints and checks nonces; the keys are ``secrets.signing_keys`` (newest first).

    A nonce is ``<time>.<notice>.<mac>`` where ``mac`` is HMAC-SHA256, under
    a key derived for this purpose alone, of the time, the offer (or admin
    binding), the cookie and the notice.  Hand-rolled rather
    than an itsdangerous dump because every page mints one: this costs
    about 2 us instead of 15, with the same construction (keyed MAC, purpose
    salt, key rotation, max age).
    """

    def __init__(self, keys: Sequence[str], https: bool,
                 clock: Callable[[], float] = time.time) -> None:
        derived = [hmac.new(k.encode("utf-8"), SALT.encode(), hashlib.sha256).digest()
                   for k in keys]
        # Keyed once; each nonce copies one (an HMAC's key set-up costs more than its use).
        self._keys = [hmac.new(key, digestmod=hashlib.sha256) for key in derived]
        # "__Host-": the browser accepts it only Secure, from this host, for path / (RFC 6265bis).
        self.cookie = "__Host-cr_csrf" if https else "cr_csrf"
        self.https = https
        self._clock = clock
        self._cookie_key = secrets.token_bytes(32)
        self._cookies = itertools.count()
        self._cookie_attributes = "; Path=/; HttpOnly; SameSite=Strict" + (
            "; Secure" if https else "")

    def cookie_value(self, request: web.Request) -> tuple[str, bool]:
        """(the browser's CSRF cookie, whether it is new and must be set)."""
        value = request.cookies.get(self.cookie, "")
        if len(value) == 32 and value.isalnum():
            return value, False
        return self._new_cookie(), True

    def _new_cookie(self) -> str:
        # Unpredictable without the process's random key, unique by the counter, and
        # about ten times cheaper than a getrandom() call per page.
        count = next(self._cookies).to_bytes(16, "big")
        return hashlib.blake2b(count, key=self._cookie_key, digest_size=16).hexdigest()

    def set_cookie(self, response: web.StreamResponse, value: str) -> None:
        # Written directly: the value is hex, so nothing needs quoting (RFC 6265 4.1.1).
        response.headers.add("Set-Cookie", f"{self.cookie}={value}{self._cookie_attributes}")

    def nonce(self, cookie: str, offer_id: str, notice: str = "") -> str:
        stamp = format(int(self._clock()), "x")
        return f"{stamp}.{notice}.{self._mac(self._keys[0], stamp, offer_id, cookie, notice)}"

    def check(self, request: web.Request, nonce: str, offer_id: str, *,
              cookie_bound: bool = True) -> Nonce:
        cookie = request.cookies.get(self.cookie, "") if cookie_bound else ""
        if (cookie_bound and not cookie) or not nonce:
            raise CsrfError("missing")
        if not nonce.isascii():  # compare_digest refuses non-ASCII text: a 403, not a 500
            raise CsrfError("not valid")
        stamp, _, rest = nonce.partition(".")
        notice, _, mac = rest.rpartition(".")
        try:
            minted = int(stamp, 16)
        except ValueError:
            raise CsrfError("not valid") from None
        age = self._clock() - minted
        if not 0 <= age <= NONCE_MAX_AGE + 60:  # a minute of clock skew between processes
            raise CsrfError("expired")
        if not any(hmac.compare_digest(mac, self._mac(k, stamp, offer_id, cookie, notice))
                   for k in self._keys):
            raise CsrfError("does not match")
        return Nonce(offer_id, notice)

    @staticmethod
    def _mac(key: hmac.HMAC, stamp: str, offer_id: str, cookie: str, notice: str) -> str:
        mac = key.copy()
        mac.update("|".join((stamp, offer_id, cookie, notice)).encode("utf-8"))
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def same_origin(request: web.Request, public_url: str) -> bool:
    """Whether a POST comes from our own pages, by what the browser says (RFC 6454
    ``Origin``; Fetch Metadata ``Sec-Fetch-Site``).  A client that sends neither
    (an old browser, a privacy proxy) is let through to the nonce check."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        parts = public_url.split("/", 3)
        return origin.rstrip("/") == "/".join(parts[:3])
    site = request.headers.get("Sec-Fetch-Site")
    return site is None or site in ("same-origin", "none")


def client_address(request: web.Request, trusted_proxies: Sequence[str]) -> str | None:
    """Who sent ``request``: the connection's address, or, when that is one of
    ``site.trusted_proxies``, the last address in ``X-Forwarded-For`` that is not a trusted
    proxy (the one our own proxy saw; what the client wrote before it is not believed)."""
    remote = request.remote
    proxies = _networks(tuple(trusted_proxies))
    if not proxies or not _among(remote, proxies):
        return remote
    hops = ",".join(request.headers.getall("X-Forwarded-For", ())).split(",")
    for hop in reversed([h.strip() for h in hops if h.strip()]):
        inside = _among(hop, proxies)
        if inside is None:  # not an address: nothing written before it can be believed
            return remote
        if not inside:
            return hop
    return remote


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _among(address: str | None, networks: Sequence[_Network]) -> bool | None:
    """Whether ``address`` is in one of ``networks``; None when it is no IP address."""
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in networks)


def security_headers(https: bool) -> dict[str, str]:
    """The headers every answer carries (SPEC 6: a strict CSP, no framing, no referrer)."""
    headers = {
        "Content-Security-Policy": CSP,
        # The token is in the path: no page of ours may tell another site where it came
        # from. "same-origin", not "no-referrer": under "no-referrer" browsers send
        # "Origin: null" with every POST (Fetch, "append a request Origin header"),
        # which would blind ``same_origin``.
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    }
    if https:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


def secure(response: web.StreamResponse, https: bool) -> None:
    """Add the security headers a view did not set itself (a chart keeps its own CSP)."""
    h = response.headers
    if "X-Frame-Options" in h:  # built with ``security_headers`` already (the hot page)
        return
    for name, value in security_headers(https).items():
        h.setdefault(name, value)
