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

_ALIASES = {
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932",
    "windows-31j": "cp932", "ms_kanji": "cp932", "csshiftjis": "cp932",
    "iso-2022-jp": "iso2022_jp", "csiso2022jp": "iso2022_jp",
    "euc-jp": "euc_jp", "x-euc-jp": "euc_jp",
    "us-ascii": "ascii", "ascii": "ascii", "": "ascii",
}
_ESC_ASCII = (b"\x1b(B", b"\x1b(J")
_ESC_MULTI = (b"\x1b$B", b"\x1b$@", b"\x1b(I", b"\x1b$(D", b"\x1b$(Q", b"\x1b$(O")


def codec_for(charset: str) -> str | None:
    """Python's codec for a MIME charset label, or None if Python has none."""
    label = charset.strip().strip('"').lower()
    name = _ALIASES.get(label, label)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


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
    found, i, n = [], 0, len(body)
    while i < n:
        if body.startswith(needle, i):
            found.append(i)
            i += len(needle)
            continue
        b = body[i]
        i += 2 if (0x81 <= b <= 0x9F or 0xE0 <= b <= 0xFC) else 1
    return found


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
            return text.encode(codec, errors="xmlcharrefreplace")
        return None
