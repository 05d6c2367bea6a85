"""Consent-link tokens: a signed, timed, opaque offer id (SPEC 5, DESIGN house style 5).

A link is ``{site.public_url}/c/{token}``.  The token is an itsdangerous
``URLSafeTimedSerializer`` dump of one random offer id and nothing else: no
address, no name, no company, so a forwarded or leaked link tells nobody who
it was sent to.  It is signed with HMAC-SHA256 under a salt used for nothing
else, so a signature made for another purpose with the same keys never opens
a consent page.

Rotation: ``secrets.signing_keys`` is newest first.  The newest key signs;
every key in the list verifies, so links already in mailboxes keep working
after a new key is prepended, and stop working when their key is removed.
itsdangerous wants its key list the other way round (oldest to newest, the
last one signs), hence the ``reversed`` below.

The token alphabet is base64url plus ``.``: RFC 3986 "unreserved" characters
only, so the token is one path segment that never needs percent-encoding.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from itsdangerous import (
    BadData,
    SignatureExpired,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)

from career_relay.errors import CareerRelayError, ConfigError
from career_relay.settings_table import Settings

SALT = "career-relay/consent-link"

#: What an offer id may look like (the ledger makes them with ``secrets.token_urlsafe``).
#: Checked on the way in and the way out, so nothing else can ride in a token.
OFFER_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
#: Every character a token can contain: RFC 3986 unreserved, no escaping needed.
TOKEN = re.compile(r"[A-Za-z0-9_.-]+")

_SECONDS_PER_DAY = 86400


class TokenError(CareerRelayError):
    """A consent-link token cannot be used."""


class TokenInvalid(TokenError):
    """Not a token we signed (tampered, truncated, another key or purpose): the site answers 404."""


class TokenExpired(TokenError):
    """A genuine token older than ``link_max_age_days``: the site answers 410.

    ``offer_id`` is the id it carried (its signature was valid), so the page can
    say which offer lapsed without trusting anything unsigned.
    """

    def __init__(self, message: str, offer_id: str | None = None) -> None:
        super().__init__(message)
        self.offer_id = offer_id


class _ClockedSigner(TimestampSigner):
    """A ``TimestampSigner`` whose clock is injected, so tests freeze time instead of sleeping."""

    def __init__(self, *args: Any, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class LinkSigner:
    """Makes and opens consent-link tokens.

    ``keys`` is ``secrets.signing_keys`` (newest first); ``max_age_days`` is
    ``site.link_max_age_days``; ``clock`` returns seconds since the epoch.
    """

    def __init__(
        self,
        keys: Sequence[str],
        max_age_days: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(keys, str) or not keys or not all(keys):
            raise ConfigError(
                "secrets.signing_keys is empty: consent links cannot be signed "
                "(set CAREER_RELAY_SECRETS_SIGNING_KEYS or run `career-relay init`)"
            )
        if max_age_days < 1:
            raise ConfigError(f"site.link_max_age_days must be at least 1, not {max_age_days}")
        self.max_age = max_age_days * _SECONDS_PER_DAY
        self._keys = list(reversed(keys))
        self._serializer = self._serializer_at(clock)

    def _serializer_at(self, clock: Callable[[], float]) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(
            self._keys,
            salt=SALT,
            signer=_ClockedSigner,
            signer_kwargs={"digest_method": hashlib.sha256, "clock": clock},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkSigner:
        return cls(settings.secrets.signing_keys, settings.site.link_max_age_days)

    def __repr__(self) -> str:
        return f"LinkSigner(keys=<masked>, max_age={self.max_age})"

    def token(self, offer_id: str, issued_at: float | None = None) -> str:
        """Sign ``offer_id`` (an opaque random id, never personal data) with the newest key.

        ``issued_at`` (the offer's creation time) gives a resent copy the very
        same link, with the same expiry, instead of a new one.
        """
        if not OFFER_ID.fullmatch(offer_id):
            raise ValueError("a token carries only an opaque offer id (URL-safe, 8-64 chars)")
        serializer = self._serializer if issued_at is None else self._at(issued_at)
        return str(serializer.dumps(offer_id))

    @functools.lru_cache(maxsize=16)  # noqa: B019 - one signer object, a few seconds
    def _at(self, issued_at: float) -> URLSafeTimedSerializer:
        """The serializer for tokens issued at ``issued_at``: every copy of one rejection
        shares one second, so it is built once per message, not once per copy."""
        return self._serializer_at(lambda: issued_at)

    def offer_id(self, token: str) -> str:
        """The offer id inside ``token``; ``TokenInvalid`` or ``TokenExpired`` otherwise."""
        return self.open(token)[0]

    def open(self, token: str) -> tuple[str, float]:
        """(the offer id inside ``token``, when the link expires: seconds since the epoch);
        ``TokenInvalid`` or ``TokenExpired`` otherwise."""
        if not TOKEN.fullmatch(token):
            raise TokenInvalid("not a consent-link token")
        try:
            payload, signed = self._serializer.loads(token, max_age=self.max_age,
                                                     return_timestamp=True)
        except SignatureExpired as exc:
            # Raised only after the signature checked out, so the payload is ours.
            raise TokenExpired("consent link expired", self._expired_offer_id(exc)) from None
        except BadData:
            raise TokenInvalid("consent link not valid") from None
        offer_id = _offer_id_or_none(payload)
        if offer_id is None:
            raise TokenInvalid("consent link carries no offer id")
        return offer_id, signed.timestamp() + self.max_age

    def _expired_offer_id(self, exc: SignatureExpired) -> str | None:
        if not isinstance(exc.payload, bytes):
            return None
        try:
            return _offer_id_or_none(self._serializer.load_payload(exc.payload))
        except BadData:
            return None


def _offer_id_or_none(payload: object) -> str | None:
    if isinstance(payload, str) and OFFER_ID.fullmatch(payload):
        return payload
    return None


def link(public_url: str, token: str) -> str:
    """``{public_url}/c/{token}``: the token is already a single URL-safe path segment."""
    if not TOKEN.fullmatch(token):
        raise ValueError("not a consent-link token")
    return f"{public_url.rstrip('/')}/c/{token}"


# -- the company link (SPEC 10) -------------------------------------------------------------

COMPANY_SALT = "career-relay/company-link"


class CompanySigner:
    """Makes and opens the token of a company's one fixed link ``/j/{token}`` (SPEC 10).

    The token is an itsdangerous ``URLSafeSerializer`` dump of the company id
    under a salt used for nothing else, signed with the newest of
    ``secrets.signing_keys``; every key in the list opens it.  It has no time
    in it and does not expire: it is pasted once into templates that hold only
    a fixed URL, and the same key always gives the same link.  It stops
    working when its key is removed from the list (print it again after a
    rotation, once the old key is to go).  It names the company only; without a
    key nobody can make one for another company, and a consent-link token never
    opens it (nor the other way round: another salt).
    """

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str) or not keys or not all(keys):
            raise ConfigError("secrets.signing_keys is empty: company links cannot be signed")
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt=COMPANY_SALT,
                                             signer_kwargs={"digest_method": hashlib.sha256})

    def __repr__(self) -> str:
        return "CompanySigner(keys=<masked>)"

    def token(self, company_id: str) -> str:
        if not COMPANY_ID.fullmatch(company_id):
            raise ValueError("a company token carries only a company id")
        return str(self._serializer.dumps(company_id))

    def company_id(self, token: str) -> str:
        """The company id inside ``token``; ``TokenInvalid`` otherwise."""
        if not TOKEN.fullmatch(token) or len(token) > 200:
            raise TokenInvalid("not a company-link token")
        try:
            payload = self._serializer.loads(token)
        except BadData:
            raise TokenInvalid("company link not valid") from None
        if not isinstance(payload, str) or not COMPANY_ID.fullmatch(payload):
            raise TokenInvalid("company link carries no company id")
        return payload


#: What a company id in a company token may look like.
COMPANY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def company_link(public_url: str, token: str) -> str:
    """``{public_url}/j/{token}``: the company's one fixed link."""
    if not TOKEN.fullmatch(token):
        raise ValueError("not a company-link token")
    return f"{public_url.rstrip('/')}/j/{token}"
