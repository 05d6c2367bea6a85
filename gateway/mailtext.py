"""The text of a mail as the classifier reads it: never raises, never the ``email`` parser.

``classifier_input`` takes the subject and the first text parts of a message's MIME map
(``gateway.mime``, walked by ``gateway.textparts``), decodes them with fallbacks that
real Japanese mail needs (``decode_bytes``), strips HTML in linear time, and caps what
it reads.  ``extract_text`` does the same for a whole message, for tests and tools.
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
import re

from gateway import mime
from gateway.message import header_block
from gateway.textparts import text_parts

log = logging.getLogger("career_relay.detect")

MAX_CHARS = 200_000  # what extract_text reads at most
# What the gateway reads of a message for the classifier: the first text parts, this
# many decoded bytes in all.  A rejection says what it is in its first screen.
CLASSIFY_BYTES = 16_384

_JIS_ESC = re.compile(rb"\x1b(\$@|\$B|\(B|\(J|\(I)")


def _jis_to_cp932(data: bytes, errors: str = "strict") -> str:
    """Decode ISO-2022-JP as CP50220 does: JIS X 0208 rows 13 and 89-92 (①, Ⅱ, ㈱, 髙).

    Python's iso2022_jp codecs reject NEC row 13; mapping each JIS pair to Shift_JIS
    and decoding as CP932 keeps them (research/consent_domain.md 4.3).
    """
    out, mode = bytearray(), b"(B"
    for i, chunk in enumerate(_JIS_ESC.split(data)):
        if i % 2:
            mode = chunk
            continue
        if mode in (b"$@", b"$B"):
            for j in range(0, len(chunk) - 1, 2):
                hi, lo = chunk[j], chunk[j + 1]
                s1 = ((hi + 1) >> 1) + (0x70 if hi <= 0x5E else 0xB0)
                s2 = lo + (0x1F if hi % 2 else 0x7E) + (1 if hi % 2 and lo >= 0x60 else 0)
                out += bytes((s1 & 0xFF, s2 & 0xFF))
        elif mode == b"(I":
            out += bytes((b | 0x80) for b in chunk)
        else:
            out += chunk
    return out.decode("cp932", errors=errors)


_JIS_CODECS = ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2004", "iso2022_jp_2")
_FALLBACKS = ("utf-8", "cp932", "euc_jp")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` labelled ``charset``, never raising: declared → variants → guesses.

    Mail labelled ISO-2022-JP may carry CP50220 characters, or be UTF-8 in disguise
    (research/consent_domain.md 4.3); a JIS body is 7-bit, so 8-bit bytes rule it out.
    """
    label = (charset or "").strip().strip('"').lower().replace("-", "_")
    if label in ("shift_jis", "sjis", "x_sjis", "windows_31j", "ms932", "shift_jisx0213"):
        label = "cp932"  # the superset every Japanese Windows client really sends
    seven_bit = data.isascii()
    jis = seven_bit and (label.startswith(("iso_2022_jp", "iso2022_jp")) or b"\x1b$" in data)
    tries = (*_JIS_CODECS, "cp50220") if jis else (label,) if label else ()
    for codec in (*tries, *_FALLBACKS):
        try:
            return _jis_to_cp932(data) if codec == "cp50220" else data.decode(codec)
        except (ValueError, LookupError):  # UnicodeError ("undefined"), a NUL in the label
            continue
    return _jis_to_cp932(data, "replace") if jis else data.decode("utf-8", errors="replace")


_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t]+(?==\?)")


def decode_header_value(raw: bytes) -> str:
    """A header field's value for reading: unfolded, RFC 2047 words decoded with the
    same fallbacks as bodies, raw 8-bit text too.  Never raises; linear in the value."""
    text = raw.decode("utf-8", "surrogateescape")
    text = re.sub(r"\r\n(?=[ \t])", "", text)  # unfold (RFC 5322 2.2.3)
    text = _BETWEEN_WORDS.sub("", text)  # space between two encoded words is not text

    def word(m: re.Match[str]) -> str:
        charset = m.group(1).partition("*")[0]  # RFC 2231 section 5: charset*lang
        data = m.group(3).encode("ascii", "surrogateescape")
        try:
            if m.group(2) in "bB":
                raw_bytes = base64.b64decode(data + b"=" * (-len(data) % 4))
            else:
                raw_bytes = binascii.a2b_qp(data, header=True)
        except (binascii.Error, ValueError):
            return m.group(0)
        return decode_bytes(raw_bytes, charset)

    text = _ENCODED_WORD.sub(word, text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def header_field(block: bytes, name: bytes) -> bytes | None:
    """The raw value of the first ``name`` field in a header block (folds kept)."""
    pattern = re.compile(rb"(?im)^" + re.escape(name) + rb"[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)")
    found = pattern.search(block)
    return None if found is None else found.group(1).strip()


_RAW_BLOCK = re.compile(r"<(script|style)\b|<!--", re.IGNORECASE)
_BREAK = re.compile(r"<(?:br|/p|/div|/tr|/li|/h[1-6])\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*>")


def html_to_text(markup: str) -> str:
    """Crude but enough for phrases: drop scripts, styles and comments, then tags.

    Linear in the markup: a script, style or comment that never closes ends the
    text (a flood of unclosed ``<script`` took seconds with a lazy ``.*?``).
    """
    kept, pos = [], 0
    lower = markup.lower()
    while True:
        opened = _RAW_BLOCK.search(markup, pos)
        if opened is None:
            kept.append(markup[pos:])
            break
        kept.append(markup[pos:opened.start()])
        closer = "-->" if opened.group(0) == "<!--" else f"</{opened.group(1).lower()}"
        close = lower.find(closer, opened.end())
        if close < 0:
            break
        gt = markup.find(">", close)
        pos = len(markup) if gt < 0 else gt + 1
        kept.append(" ")
    text = _BREAK.sub("\n", "".join(kept))
    return html.unescape(_TAG.sub(" ", text))


def classifier_input(message: bytes, root: mime.Part,
                     limit: int = CLASSIFY_BYTES) -> tuple[str, str]:
    """(subject, text) the classifier reads: the plain-text parts, or failing those
    the HTML ones, ``limit`` decoded bytes in all."""
    subject = header_field(header_block(message), b"subject")
    plain: list[str] = []
    markup: list[str] = []
    budget = limit
    for tp in text_parts(message, root):
        if budget <= 0:
            break
        if tp.html:
            if not plain and not markup:
                markup.append(html_to_text(decode_bytes(_head(tp.raw, limit), tp.charset)))
            continue
        raw = _head(tp.raw, budget)
        budget -= len(raw)
        plain.append(decode_bytes(raw, tp.charset))
    return decode_header_value(subject or b""), "\n".join(plain or markup)


def _head(raw: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, cut after a line so that no character is split."""
    if len(raw) <= limit:
        return raw
    cut = raw.rfind(b"\n", 0, limit)
    return raw[:cut + 1] if cut > 0 else raw[:limit]


def extract_text(message: bytes) -> tuple[str, str]:
    """(subject, text) of a whole message for tests and tools; never raises."""
    try:
        return classifier_input(message, mime.parse(message), MAX_CHARS)
    except mime.MimeError:
        log.debug("extract_text: unmappable message", exc_info=True)
        return "", decode_bytes(message, None)
