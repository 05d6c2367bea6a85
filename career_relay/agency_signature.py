"""The signature on every webhook forward (SPEC 7): ``X-Career-Relay-Signature``.

    X-Career-Relay-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of b"<t>." + body>

The scheme is Stripe's, which agencies' developers already know: the
timestamp is inside the signed bytes, so a captured request cannot be
replayed later (``verify`` refuses a ``t`` outside ``tolerance``), and the
header may carry several ``v1=`` values, so a secret can be rotated without
a moment in which a correctly signed forward is refused: the sender signs
with the old and the new secret, or the receiver accepts either.

Pure: no I/O and no clock of its own; the callers pass the time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from career_relay.errors import CareerRelayError

HEADER = "X-Career-Relay-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300  # seconds, either side of the receiver's clock

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class SignatureError(CareerRelayError):
    """A forward whose signature does not prove it came from career-relay just now."""


class MalformedSignature(SignatureError):
    """The header is missing or is not ``t=<digits>,v1=<64 hex digits>``."""


class BadSignature(SignatureError):
    """No ``v1`` value matches the body with any of the secrets (tampered, or a wrong secret)."""


class StaleSignature(SignatureError):
    """The signature is genuine but its timestamp is outside the tolerance (a replay?)."""


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def _secrets(secret: str | Sequence[str]) -> list[str]:
    # A str is itself a Sequence[str]: one secret, not one per character.
    found = [secret] if isinstance(secret, str) else list(secret)
    if not found or not all(found):
        raise ValueError("a webhook signature needs a non-empty secret")
    return found


def sign(secret: str | Sequence[str], body: bytes, timestamp: int) -> str:
    """The header value for ``body`` sent at ``timestamp``: one ``v1=`` per secret given."""
    parts = [f"t={int(timestamp)}"]
    parts += [f"{SCHEME}={_digest(s, body, int(timestamp))}" for s in _secrets(secret)]
    return ",".join(parts)


def parse(header: str | None) -> tuple[int, list[str]]:
    """(timestamp, the ``v1`` values) of a header; unknown schemes are ignored (future versions).

    Raises ``MalformedSignature`` when the header is missing, has no single
    integer ``t`` or no well-formed ``v1``.
    """
    if not header or not header.strip():
        raise MalformedSignature(f"the {HEADER} header is missing")
    timestamps: list[str] = []
    values: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise MalformedSignature(f"{HEADER}: {item.strip()[:40]!r} is not key=value")
        if key == "t":
            timestamps.append(value)
        elif key == SCHEME:
            if not _HEX_DIGEST.fullmatch(value):
                raise MalformedSignature(f"{HEADER}: a {SCHEME} value is not 64 lower-case "
                                         "hex digits")
            values.append(value)
    if len(timestamps) != 1 or not (timestamps[0].isascii() and timestamps[0].isdigit()):
        raise MalformedSignature(f"{HEADER}: needs exactly one t=<unix time>")
    if not values:
        raise MalformedSignature(f"{HEADER}: no {SCHEME}= signature")
    return int(timestamps[0]), values


def verify(secret: str | Sequence[str], header: str | None, body: bytes, now: float,
           tolerance: float = DEFAULT_TOLERANCE) -> None:
    """Return when ``header`` signs ``body`` with (one of) ``secret`` at a time near ``now``.

    ``body`` must be the raw request body, byte for byte (not re-serialised
    JSON).  The signature is checked before the time, so a stale error is
    only ever said about a genuine request.  Comparisons are constant-time.
    """
    timestamp, values = parse(header)
    expected = [_digest(s, body, timestamp).encode("ascii") for s in _secrets(secret)]
    matched = False
    for value in values:
        for digest in expected:
            # No early exit: the time taken does not depend on which one matched.
            matched |= hmac.compare_digest(digest, value.encode("ascii"))
    if not matched:
        raise BadSignature(f"{HEADER}: the signature does not match the body")
    if abs(now - timestamp) > tolerance:
        raise StaleSignature(f"{HEADER}: signed at {timestamp}, {int(now - timestamp)} s from "
                             f"now; more than {int(tolerance)} s apart")
