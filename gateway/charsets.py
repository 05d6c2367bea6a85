"""Charsets as the injector needs them: find an ASCII marker without decoding.

The marker ``[[CAREER_RELAY_LINK]]`` and the URL that replaces it are ASCII.
In UTF-8, EUC-JP and the ISO-8859 family an ASCII byte is always an ASCII
character, so a byte search is exact.  Two Japanese charsets need care:

* Shift_JIS / CP932: the second byte of a double-byte character may be an
  ASCII letter or bracket (0x40-0x7E), so the scan steps over lead bytes.
* ISO-2022-JP (RFC 1468): bytes 0x21-0x7E mean kanji after ``ESC $ B``; the
  marker counts only in ASCII (or JIS Roman) state.  Mail labelled
  ISO-2022-JP often carries CP50220 characters (①, Ⅱ) that Python cannot
  decode; scanning the escape states works without decoding anything.

Splicing ASCII bytes at such positions leaves every other byte as it was.
"""

from __future__ import annotations

import codecs
import functools
import re

_ALIASES = {
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932",
    "windows-31j": "cp932", "ms_kanji": "cp932", "csshiftjis": "cp932",
    "iso-2022-jp": "iso2022_jp", "csiso2022jp": "iso2022_jp",
    "euc-jp": "euc_jp", "x-euc-jp": "euc_jp",
    "us-ascii": "ascii", "ascii": "ascii", "": "ascii",
}
# Python's own text codecs that no mail charset names: decoding mail with them means
# nothing (unicode_escape turns "\\n" into a newline, and warns).
_NOT_CHARSETS = {"unicode-escape", "raw-unicode-escape", "punycode", "idna", "undefined"}
_ESC_ASCII = (b"\x1b(B", b"\x1b(J")
_ESC_MULTI = (b"\x1b$B", b"\x1b$@", b"\x1b(I", b"\x1b$(D", b"\x1b$(Q", b"\x1b$(O")


@functools.lru_cache(maxsize=256)
def codec_for(charset: str) -> str | None:
    """Python's text codec for a MIME charset label, or None if Python has none.

    The label is the sender's: ``base64``, ``zlib`` or ``rot13`` name codecs that
    are not text encodings, ``undefined`` refuses everything, and a NUL makes the
    look-up raise.  None of those is a charset (RFC 2046 4.1.2).
    """
    label = charset.strip().strip('"').lower()
    name = _ALIASES.get(label, label)
    try:
        info = codecs.lookup(name)
        if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
            return None
        "a".encode(info.name).decode(info.name)
    except (LookupError, ValueError, TypeError):  # UnicodeError is a ValueError
        return None
    return info.name


def byte_exact(codec: str | None) -> bool:
    """True when every ASCII byte in the encoded text is that ASCII character.

    Then the marker is found, and the URL spliced in, without decoding: UTF-8,
    EUC, the single-byte charsets.  Shift_JIS and ISO-2022-JP have scanners of
    their own below; anything else (UTF-16, UTF-7, EBCDIC, Big5, ...) is decoded.
    """
    if codec is None or codec.startswith(("iso2022", "hz", "utf-7")):
        return False  # stateful: ASCII bytes mean other letters after an escape
    return codec in _BYTE_EXACT or _single_byte_ascii(codec)


def scannable(codec: str | None) -> bool:
    """True when ``ascii_positions`` finds real characters in this codec's bytes."""
    return byte_exact(codec) or codec in ("cp932", "shift_jis") or (
        codec is not None and codec.startswith("iso2022_jp"))


_BYTE_EXACT = {"ascii", "utf-8", "euc_jp", "euc_jis_2004", "euc_jisx0213", "euc_kr",
               "gb2312", "latin-1", "iso8859-1"}
_ASCII = bytes(range(128))


@functools.lru_cache(maxsize=64)
def _single_byte_ascii(codec: str) -> bool:
    try:
        return (_ASCII.decode(codec) == _ASCII.decode("ascii")
                and len(bytes(range(256)).decode(codec, "replace")) == 256
                and all(len(ch.encode(codec, "replace")) == 1
                        for ch in bytes(range(128, 256)).decode(codec, "replace")))
    except (UnicodeError, LookupError, TypeError):
        return False


def ascii_positions(body: bytes, needle: bytes, codec: str | None) -> list[int]:
    """Start offsets of ``needle`` (ASCII) that really are those characters."""
    if codec in ("cp932", "shift_jis"):
        return _positions_sjis(body, needle)
    if codec is not None and codec.startswith("iso2022_jp"):
        return _positions_iso2022(body, needle)
    found, at = [], body.find(needle)
    while at >= 0:
        found.append(at)
        at = body.find(needle, at + len(needle))
    return found


def _positions_sjis(body: bytes, needle: bytes) -> list[int]:
    """Step over double-byte characters as readers do: a lead byte whose pair is no
    CP932 character is one character alone (U+FFFD), and the next byte starts anew."""
    if needle not in body:
        return []  # the common case: no scan at all
    found, i, n = [], 0, len(body)
    valid = _cp932_pairs()
    while i < n:
        if body.startswith(needle, i):
            found.append(i)
            i += len(needle)
            continue
        b = body[i]
        i += 2 if (0x81 <= b <= 0x9F or 0xE0 <= b <= 0xFC) and body[i:i + 2] in valid else 1
    return found


@functools.cache
def _cp932_pairs() -> frozenset[bytes]:
    """Every two-byte sequence that CP932 decodes as one character."""
    pairs = []
    for lead in (*range(0x81, 0xA0), *range(0xE0, 0xFD)):
        for trail in (*range(0x40, 0x7F), *range(0x80, 0xFD)):
            pair = bytes((lead, trail))
            try:
                pair.decode("cp932")
            except UnicodeDecodeError:
                continue
            pairs.append(pair)
    return frozenset(pairs)


def _positions_iso2022(body: bytes, needle: bytes) -> list[int]:
    found, i, n, ascii_state = [], 0, len(body), True
    while i < n:
        if body[i] == 0x1B:
            if body.startswith(_ESC_ASCII, i):
                ascii_state = True
                i += 3
                continue
            for esc in _ESC_MULTI:
                if body.startswith(esc, i):
                    ascii_state = False
                    i += len(esc)
                    break
            else:
                i += 1
            continue
        if ascii_state and body.startswith(needle, i):
            found.append(i)
            i += len(needle)
            continue
        i += 1  # ESC never occurs inside a double-byte character, so stepping by one is safe
    return found


_JIS_MULTI = re.compile(rb"\x1b(?:\$B|\$@|\(I|\$\(D|\$\(Q|\$\(O)[^\x1b]*")


def ascii_view(body: bytes, codec: str | None) -> bytes:
    """``body`` with the bytes of ISO-2022-JP double-byte runs masked (same length).

    In kanji state ``!<`` is the letter "ー", not a tag: whoever reads the
    ASCII structure (HTML tags, URLs) reads this view and splices ``body``.
    """
    if codec is None or not codec.startswith("iso2022_jp") or b"\x1b" not in body:
        return body
    return _JIS_MULTI.sub(lambda m: b"\x80" * len(m.group()), body)


def ends_in_ascii(body: bytes, codec: str | None) -> bool:
    """For ISO-2022-JP: True when text appended at the end starts in ASCII state."""
    if codec is None or not codec.startswith("iso2022_jp"):
        return True
    last_ascii = max(body.rfind(e) for e in _ESC_ASCII)
    last_multi = max(body.rfind(e) for e in _ESC_MULTI)
    return last_ascii >= last_multi


def encode_text(text: str, codec: str | None, *, html: bool) -> bytes | None:
    """``text`` in the part's own charset, or None if the charset cannot hold it.

    HTML can carry any character as a numeric reference, so it always fits.
    """
    if codec is None:
        return None
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        if html:
            try:
                return text.encode(codec, errors="xmlcharrefreplace")
            except UnicodeError:
                return None
        return None
    except UnicodeError:  # a codec that refuses every text
        return None
