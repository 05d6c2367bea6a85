"""DKIM signing for the copies the gateway changed, and removal of the signatures it broke.

RFC 6376 (DKIM). The parsing, relaxed canonicalisation (section 3.4.2 and
3.4.4), header selection (section 5.4.2) and header hashing (section 3.7) are
dkimpy's own tested functions; only the RSA step (section 3.3.1, RSASSA-PKCS1-
v1_5 with SHA-256) runs in OpenSSL through ``cryptography``, because dkimpy's
RSA is pure Python (about 7 ms a signature against about 0.3 ms).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import dkim  # dkimpy; the top-level package, not this module (absolute import)
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim import canonicalization as _canon
from dkim.canonicalization import CanonicalizationPolicy

from career_relay.errors import CareerRelayError, ConfigError

__all__ = ["OVERSIGNED", "SIGNED_HEADERS", "Signer", "SigningError", "remove_signatures"]

# The header fields signed when present (RFC 6376 section 5.4.1 lists these as
# the ones a signer SHOULD cover). Each occurrence is listed in h=.
SIGNED_HEADERS = frozenset({
    b"from", b"sender", b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version",
    b"content-type", b"content-transfer-encoding", b"reply-to", b"in-reply-to", b"references",
})

# Each listed once more in h= than it occurs (SPEC 5, RFC 6376 section 8.15): a verifier
# then hashes an empty field for the extra one, so none can be added after signing.
OVERSIGNED = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
              b"in-reply-to", b"references", b"mime-version", b"content-type",
              b"content-transfer-encoding", b"sender")

# relaxed/relaxed: survives the re-folding and whitespace changes of relays.
_POLICY = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_NAME = b"DKIM-Signature"
_WIDTH = 78  # RFC 5322 section 2.1.1: lines SHOULD be no more than 78 characters
_FOLD = b"\r\n\t"  # folding white space, RFC 5322 section 3.2.2
# A selector or domain: dot-separated labels (RFC 6376 section 3.1); A-labels for IDNs.
_LABELS = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9_-]+)*\Z")
# A DKIM-Signature field name; RFC 5322 section 4.5 (obsolete syntax) allows WSP before ':'.
_SIG_FIELD = re.compile(rb"dkim-signature[ \t]*:", re.IGNORECASE)


class SigningError(CareerRelayError):
    """The message cannot be signed (no From header field, unparsable header)."""


class Signer:
    """Signs messages for one company key: rsa-sha256, relaxed/relaxed, oversigned, no l=.

    Create once per (domain, selector, key) and reuse; ``sign`` is thread-safe.
    """

    def __init__(self, domain: str, selector: str, key: rsa.RSAPrivateKey,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.domain = _label_bytes("domain", domain)
        self.selector = _label_bytes("selector", selector)
        self._key = key
        self._clock = clock

    def sign(self, message: bytes, facts: BodyFacts | None = None) -> bytes:
        """The DKIM-Signature header field (folded, CRLF-terminated) to prepend to ``message``.

        ``facts``: what ``body_facts`` found in it, when the caller knows (the copies of a
        rejection, from the pieces they share): then no byte of it is scanned twice."""
        if (facts.crlf_only if facts is not None else _crlf_only(message)):
            end = _header_end(message)
            # The copies of a rejection share their header section: hashed once.
            fields, include = _hashed_header_section(message[:end])
            body = message[end + 2:]
        else:
            headers, body = _rfc822_parse(message)
            fields, include = _hashed_fields(headers)
            facts = None  # they were of the body after the first empty line: not this one
        # Section 3.7: the body hash over the canonicalised body; no l= tag
        # (section 8.2: l= lets anyone append content under our signature).
        bh = base64.b64encode(hashlib.sha256(_canonical_body(body, facts)).digest())
        tags: list[tuple[bytes, bytes]] = [
            (b" ", b"v=1;"), (b" ", b"a=rsa-sha256;"), (b" ", b"c=relaxed/relaxed;"),
            (b" ", b"d=" + self.domain + b";"), (b" ", b"s=" + self.selector + b";"),
            (b" ", b"t=%d;" % int(self._clock())),
        ]
        tags += _h_tag(list(include))
        tags += [(b" ", b"bh=" + bh + b";"), (b" ", b"b=")]
        unsigned, column = _fold(tags, len(_NAME) + 1)
        # Section 3.7: the header hash covers the selected fields (hashed
        # already), then this field with an empty b= value and without its final
        # CRLF; hash_headers, given no other field, does that (it also applies
        # relaxed canonicalisation to this field).
        hasher = fields.copy()  # the cached hash stays as it is for the next copy
        dkim.hash_headers(hasher, _POLICY, [], [], (_NAME, unsigned), None)
        signature = self._key.sign(hasher.digest(), padding.PKCS1v15(),
                                   utils.Prehashed(hashes.SHA256()))
        b64 = base64.b64encode(signature)
        # Section 3.5: FWS may appear anywhere in b=, so the value folds at any column.
        room, width = _WIDTH - column, _WIDTH - 1
        lines = [b64[:room], *(b64[i:i + width] for i in range(room, len(b64), width))]
        return _NAME + b":" + unsigned + _FOLD.join(lines) + b"\r\n"


def remove_signatures(message: bytes) -> bytes:
    """``message`` without its DKIM-Signature header fields; no other byte changes."""
    end = _header_end(message)
    head = message[:end]
    if b"dkim-signature" not in head.lower():
        return message
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        # RFC 5322 section 2.2.3: a line starting with WSP continues the field above.
        if line[:1] not in (b" ", b"\t"):
            dropping = _SIG_FIELD.match(line) is not None
        if not dropping:
            kept.append(line)
    return b"".join(kept) + message[end:]


def _parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse(message)``, without splitting and re-joining the body.

    When every line ends in CRLF (RFC 5322 section 2.1; the gateway refuses
    bare LF), the header section ends at the first empty line and the body is
    the rest, byte for byte, which is what rfc822_parse returns; a test checks
    the two agree. Anything else goes to rfc822_parse whole.
    """
    if not _crlf_only(message):
        return _rfc822_parse(message)
    end = _header_end(message)
    headers, _ = _rfc822_parse(message[:end] + b"\r\n")
    return headers, message[end + 2:]


def _crlf_only(message: bytes) -> bool:
    """No bare LF (a bare CR is part of its line for rfc822_parse as for us)."""
    return message.count(b"\n") == message.count(b"\r\n")


def _rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse``, its errors as SigningError."""
    try:
        headers, body = dkim.rfc822_parse(message)
    except dkim.MessageFormatError as exc:
        raise SigningError(f"cannot sign: {exc}") from None
    except IndexError:  # rfc822_parse's answer to a continuation line before any field
        raise SigningError("cannot sign: the header section starts with a folded line") from None
    return headers, body


@functools.lru_cache(maxsize=64)
def _hashed_header_section(head: bytes) -> tuple[Any, tuple[bytes, ...]]:
    """``_hashed_fields`` of a header section that ends in CRLF (cached: copy the hash).

    Every copy of a rejection has the header section of the original, so its
    parsing, canonicalisation and hashing (a quarter of a signature's Python
    work) is done once per rejection, not once per copy.
    """
    headers, _ = _rfc822_parse(head + b"\r\n")
    return _hashed_fields(headers)


def _hashed_fields(headers: list[list[bytes]]) -> tuple[Any, tuple[bytes, ...]]:
    """A SHA-256 fed with the signed fields, canonicalised and in h= order, and the h= list.

    What ``dkim.hash_headers`` feeds its hash before the DKIM-Signature field.
    """
    include = _header_list(headers)
    hasher = hashlib.sha256()
    for name, value in dkim.select_headers(_POLICY.canonicalize_headers(headers), include):
        hasher.update(name + b":" + value)
    return hasher, tuple(include)


@dataclass(frozen=True)
class BodyFacts:
    """What relaxed canonicalisation needs to know of a message: whether every LF ends a CRLF
    (the whole message), and whether its body has WSP at a line end or a WSP run."""

    crlf_only: bool
    trailing_wsp: bool
    wsp_run: bool


# The patterns _canonical_body looks for; none is longer than three bytes, so two bytes
# either side of a seam between pieces find every occurrence that crosses it.
_TRAILING = (b" \r\n", b"\t\r\n")
_RUN = (b"\t", b"  ")


def chunk_facts(chunk: bytes | memoryview) -> tuple[int, bool, bool]:
    """(LFs not preceded by CR, trailing WSP, WSP run) within one chunk."""
    data = bytes(chunk)
    return (data.count(b"\n") - data.count(b"\r\n"), *_whitespace(data))


def pieces_facts(message: bytes, base: bytes, pieces: Iterable[bytes | tuple[int, int]],
                 cache: dict[tuple[int, int], tuple[int, bool, bool]]) -> BodyFacts:
    """``BodyFacts`` of ``message``, which is ``pieces`` joined (new bytes, and ranges of
    ``base``), from the facts of each piece and the seams between them.

    The copies of one rejection are the same ranges of one message with a few new bytes
    between: a range's facts are found once (``cache``, kept with the message) and every
    other copy scans only its own new bytes.  Scanning a 3 MB copy for the patterns took
    five times as long as hashing it.  The answer is the one a scan of ``message`` gives,
    which a test checks.
    """
    body_at = _header_end(message) + 2  # beyond the end: no body, every piece is header
    view = memoryview(base)
    facts: list[tuple[int, bool, bool]] = []
    ends: list[tuple[bytes, bytes]] = []
    body_start = None
    at = 0
    for piece in pieces:
        length = piece[1] - piece[0] if isinstance(piece, tuple) else len(piece)
        cuts = [at, body_at, at + length] if at < body_at < at + length else [at, at + length]
        for start, end in itertools.pairwise(cuts):
            if body_start is None and start >= body_at:
                body_start = len(facts)
            if isinstance(piece, tuple):
                key = (piece[0] + start - at, piece[0] + end - at)
                found = cache.get(key)
                if found is None:
                    found = cache[key] = chunk_facts(view[key[0]:key[1]])
                chunk: bytes | memoryview = view[key[0]:key[1]]
            else:
                chunk = piece[start - at:end - at]
                found = chunk_facts(chunk)
            facts.append(found)
            ends.append((bytes(chunk[:2]), bytes(chunk[-2:])))
        at += length
    return _joined(ends, facts, len(facts) if body_start is None else body_start)


def _joined(ends: list[tuple[bytes, bytes]], facts: list[tuple[int, bool, bool]],
            body_start: int) -> BodyFacts:
    bare_lf = sum(f[0] for f in facts)
    trailing = any(f[1] for f in facts[body_start:])
    run = any(f[2] for f in facts[body_start:])
    tail = b""  # the last two bytes before this chunk, across chunks shorter than two
    for i, (first, last) in enumerate(ends):
        if tail.endswith(b"\r") and first.startswith(b"\n"):
            bare_lf -= 1  # a CRLF cut in two: each half counted its LF as bare
        if i > body_start:
            seam = tail + first
            trailing = trailing or any(p in seam for p in _TRAILING)
            run = run or any(p in seam for p in _RUN)
        tail = (tail + last)[-2:] if len(last) < 2 else last
    return BodyFacts(bare_lf == 0, trailing, run)


def _canonical_body(body: bytes, facts: BodyFacts | None = None) -> bytes:
    """dkimpy's relaxed body canonicalisation (section 3.4.4), skipping no-op steps.

    Each of dkimpy's whitespace steps runs only when its pattern occurs (a
    regex substitution over every space of the body is most of the cost of a
    signature otherwise); the result is the same, and a test checks it.
    ``facts`` says which occur, when the caller knows.
    """
    trailing, run = ((facts.trailing_wsp, facts.wsp_run) if facts is not None
                     else _whitespace(body))
    if trailing:
        body = _canon.strip_trailing_whitespace(body)  # a. WSP at the end of a line
    # A run that a. took leaves b. nothing to do: the same bytes either way.
    if run:
        body = _canon.compress_whitespace(body)  # b. a WSP run that is not one SP
    # c. drop empty lines at the end; under relaxed an empty body stays empty.
    return bytes(_canon.correct_empty_body(_canon.strip_trailing_lines(body)))


def _whitespace(body: bytes) -> tuple[bool, bool]:
    """(WSP at a line end, a WSP run): whether ``_TRAILING`` and ``_RUN`` occur.  Most
    bodies hold no tab, and a tab is found with one ``memchr``: then the two patterns
    with a tab are not looked for (each is a scan of the whole body, 7 us for 11 KB)."""
    tab = b"\t" in body
    return b" \r\n" in body or (tab and b"\t\r\n" in body), tab or b"  " in body


def _header_end(message: bytes) -> int:
    """Where the header section ends: the offset of the empty line, or the end of the message."""
    if message.startswith(b"\r\n"):
        return 0
    end = message.find(b"\r\n\r\n")
    return len(message) if end < 0 else end + 2


def _header_list(headers: list[list[bytes]]) -> list[bytes]:
    """The h= list: every signed field present, in order, then each of OVERSIGNED once more.

    Section 5.4.2: a name listed more often than the field occurs makes the
    verifier hash an empty field for the extra one, so a From, Subject, To or
    Reply-To added later (above or below) breaks the signature (section 8.15,
    oversigning).
    """
    include = [name.lower() for name, _ in headers if name.lower() in SIGNED_HEADERS]
    if b"from" not in include:
        # Section 5.4: the From header field MUST be signed.
        raise SigningError("cannot sign: the message has no From header field")
    return [*include, *OVERSIGNED]


def _h_tag(include: list[bytes]) -> list[tuple[bytes, bytes]]:
    """h= as fold pieces; section 3.5 allows FWS after each ':'."""
    names = [name + b":" for name in include[:-1]] + [include[-1] + b";"]
    return [(b" ", b"h=" + names[0]), *((b"", name) for name in names[1:])]


def _fold(pieces: Iterable[tuple[bytes, bytes]], column: int) -> tuple[bytes, int]:
    """Join (separator, text) pieces, folding before a piece that would pass column 78.

    A fold replaces the separator with CRLF TAB, which is FWS wherever the
    pieces allow it (section 3.2: around tags; section 3.5: after a ':' in h=).
    Returns the folded bytes and the column where they end.
    """
    out = bytearray()
    for sep, text in pieces:
        if column + len(sep) + len(text) > _WIDTH and column > 1:
            out += _FOLD
            column = 1
        else:
            out += sep
            column += len(sep)
        out += text
        column += len(text)
    return bytes(out), column


def _label_bytes(what: str, value: str) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise ConfigError(f"DKIM {what} {value!r} must be ASCII (use the A-label)") from None
    if not _LABELS.match(raw):
        raise ConfigError(f"DKIM {what} {value!r} is not a valid DNS name")
    return raw
