"""The text a rejection is read from and written into: one walker for detect and inject.

``text_parts`` yields the inline ``text/plain`` and ``text/html`` leaves of a
message's map (``gateway.mime``), never attachments, attached messages or
anything under ``multipart/signed`` / ``multipart/encrypted`` (RFC 1847: any
change breaks them).  Each knows its body with the transfer encoding undone
(decoded once per message and shared by every copy) and its codec; the
characters are decoded only when someone reads them.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

from gateway import mime
from gateway.charsets import ascii_positions, codec_for, scannable

MARKER = b"[[CAREER_RELAY_LINK]]"
MARKER_TEXT = MARKER.decode("ascii")
# HTML editors write a pasted link URL-encoded: href="%5B%5BCAREER_RELAY_LINK%5D%5D".
ENCODED_MARKER = re.compile(rb"%5B%5BCAREER_RELAY_LINK%5D%5D", re.IGNORECASE)
UNTOUCHABLE = ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
               "application/x-pkcs7-mime")
KNOWN_CTES = ("7bit", "8bit", "binary", "", "quoted-printable", "base64")


class Undecodable(ValueError):
    """A part whose bytes cannot be read back as what it claims to be."""


@dataclass(frozen=True)
class TextPart:
    part: mime.Part
    raw: bytes  # the body, transfer encoding undone
    charset: str
    codec: str | None  # None: a charset Python does not know (or not a text encoding)

    @property
    def html(self) -> bool:
        return self.part.content_type == "text/html"

    @property
    def known_cte(self) -> bool:
        return self.part.cte in KNOWN_CTES

    def marker_spans(self) -> list[tuple[int, int]]:
        """Byte spans of the marker in ``raw`` (charset-aware), [] if none.

        Raises Undecodable for a charset where the marker could hide but cannot
        be located in bytes (UTF-16, an unknown label), or for a part whose
        header block readers split differently: the caller decides.
        """
        if self.part.irregular:
            if MARKER in self.raw:
                raise Undecodable("marker in a part with a malformed header block")
            return []
        if scannable(self.codec):
            return [(p, p + len(MARKER)) for p in ascii_positions(self.raw, MARKER, self.codec)]
        if self.codec is None:
            if MARKER in self.raw:
                raise Undecodable(f"marker in a part of unknown charset {self.charset[:40]!r}")
            return []
        try:
            text = self.raw.decode(self.codec)
        except UnicodeError:
            raise Undecodable(f"a {self.codec} part that does not decode") from None
        if MARKER_TEXT in text:
            raise Undecodable(f"marker in a {self.codec} part")  # spans are in characters
        return []

    def has_marker(self) -> bool:
        try:
            return bool(self.marker_spans()) or (
                self.html and ENCODED_MARKER.search(self.raw) is not None)
        except Undecodable:
            return True


def text_parts(message: bytes, root: mime.Part, *, body_only: bool = False,
               signed_too: bool = False) -> Iterator[TextPart]:
    """The inline text leaves, in order.

    With ``body_only`` (appending the consent block): the message body as a
    reader sees it: every alternative, the root of multipart/related and the
    first part of multipart/mixed.  With ``signed_too`` (detection only): also
    the text under ``multipart/signed``, which is never changed but may well be
    a marked rejection to count as not injected.
    """
    stack = [root]
    while stack:
        part = stack.pop()
        if part.disposition == "attachment" or (
                part.content_type in UNTOUCHABLE
                and not (signed_too and part.content_type == "multipart/signed")):
            continue
        if part.is_multipart:
            children = part.children
            if body_only and part.content_type in ("multipart/mixed", "multipart/related"):
                children = children[:1]
            stack.extend(reversed(children))
        elif part.content_type in ("text/plain", "text/html"):
            charset = part.params.get("charset", "us-ascii")
            yield TextPart(part, decoded(message, part), charset, codec_for(charset))


def decoded(message: bytes, part: mime.Part) -> bytes:
    """The part's body with its transfer encoding undone, once per part.

    Lenient, as mail readers are: base64 ignores stray characters and missing
    padding; an unknown encoding is read as it is (``TextPart.known_cte`` says).
    """
    if part.decoded is None:
        body = message[part.body_start:part.body_end]
        if part.cte == "base64":
            part.decoded = _b64(body)
        elif part.cte == "quoted-printable":
            part.decoded = _crlf(binascii.a2b_qp(body))
        else:
            part.decoded = body
    return part.decoded


def base64_intact(message: bytes, part: mime.Part) -> bool:
    """True when the base64 body decodes without repairs (safe to re-encode)."""
    try:
        binascii.a2b_base64(message[part.body_start:part.body_end], strict_mode=False)
    except binascii.Error:
        return False
    return True


def _b64(body: bytes) -> bytes:
    try:
        return binascii.a2b_base64(body)
    except binascii.Error:  # padding: what readers show is the longest decodable prefix
        clean = _NOT_B64.sub(b"", body)
        try:
            return binascii.a2b_base64(clean[: len(clean) // 4 * 4])
        except binascii.Error:
            return b""


_NOT_B64 = re.compile(rb"[^A-Za-z0-9+/]")


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
