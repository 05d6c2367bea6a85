"""Put a candidate's link into a rejection by splicing bytes (SPEC 5, DESIGN decision 2).

For each text part that takes the link: undo the transfer encoding, splice
ASCII bytes where the marker was (or append the consent block), redo the
transfer encoding, and put the part back between the same boundaries.
Headers, boundaries, other parts and attachments are never rewritten.  A
part keeps its charset and transfer encoding where the new text fits; a
plain-text part whose charset cannot hold an appended Japanese block is
re-encoded as UTF-8 quoted-printable.  Signed or encrypted messages and
attached messages are never touched (RFC 1847: any change breaks them).
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway import mime
from gateway.charsets import ascii_positions, codec_for, encode_text, ends_in_ascii

MARKER = b"[[CAREER_RELAY_LINK]]"
_ENCODED_MARKER = re.compile(rb"%5B%5BCAREER_RELAY_LINK%5D%5D", re.IGNORECASE)
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)
_UNTOUCHABLE = ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
                "application/x-pkcs7-mime")
_MAX_LINE = 998  # octets, without CRLF (RFC 5322 section 2.1.1)


class NotInjectable(Exception):
    """The message cannot take the link safely; it is relayed as it came."""


@dataclass(frozen=True)
class Replacement:
    """What one recipient's copy gets (all prepared by the caller, per recipient).

    ``text``: replaces the marker in text/plain (the URL, or the neutral
    sentence for internal recipients).  ``html_attr``: replaces it inside an
    HTML attribute such as href; None replaces the whole link element with
    ``html_text`` (a copy without a link).  ``html_text``: replaces it in HTML text (a
    link).  ``text_block`` / ``html_block``: appended when only the header
    marked the message.
    """

    text: str
    html_attr: str | None
    html_text: str
    text_block: str
    html_block: str


def marked_parts(message: bytes, root: mime.Part | None = None) -> int:
    """How many inline text parts carry the marker after their encodings are undone.

    ``root`` is ``mime.parse(message)`` when the caller has it already.
    """
    count = 0
    for part in _text_parts(root or mime.parse(message), body_only=False):
        try:
            raw = _decoded(message, part)
        except NotInjectable:
            continue  # broken base64: it cannot carry a marker we could replace
        codec = codec_for(part.params.get("charset", "us-ascii"))
        if ascii_positions(raw, MARKER, codec) or (
                part.content_type == "text/html" and _ENCODED_MARKER.search(raw)):
            count += 1
    return count


def inject(message: bytes, repl: Replacement, *, append: bool,
           root: mime.Part | None = None) -> bytes:
    """The message with the marker replaced, or (``append``) the block added.

    Raises NotInjectable when nothing could take the link.  ``root`` is
    ``mime.parse(message)`` when the caller has it (one parse for every copy).
    """
    root = root or mime.parse(message)
    if root.content_type in _UNTOUCHABLE:
        raise NotInjectable(f"{root.content_type} is never changed")
    edits: list[tuple[int, int, bytes]] = []
    for part in _text_parts(root, body_only=append):
        new = _edit_part(message, part, repl, append=append)
        if new is not None:
            edits.append((part.header_start, part.body_end, new))
    if not edits:
        raise NotInjectable("no text part could take the link")
    out, last = [], 0
    for start, end, new in edits:
        out += [message[last:start], new]
        last = end
    out.append(message[last:])
    return b"".join(out)


def _text_parts(part: mime.Part, *, body_only: bool) -> list[mime.Part]:
    """The text/plain and text/html leaves that may change.

    With ``body_only`` (appending a block): the message body as a reader sees
    it, i.e. every alternative, the root of multipart/related and the first
    part of multipart/mixed.  Otherwise every inline text part (the marker
    decides).
    """
    if part.content_type in _UNTOUCHABLE or part.disposition == "attachment":
        return []
    if not part.is_multipart:
        return [part] if part.content_type in ("text/plain", "text/html") else []
    children = part.children
    if body_only and part.content_type in ("multipart/mixed", "multipart/related"):
        children = children[:1]
    return [leaf for child in children for leaf in _text_parts(child, body_only=body_only)]


def _edit_part(message: bytes, part: mime.Part, repl: Replacement, *,
               append: bool) -> bytes | None:
    header = message[part.header_start:part.body_start]
    body = message[part.body_start:part.body_end]
    raw = _decoded(message, part)
    codec = codec_for(part.params.get("charset", "us-ascii"))
    html = part.content_type == "text/html"
    flowed = part.params.get("format", "").lower() == "flowed"
    if append:
        new_raw = _append_block(raw, codec, repl, html=html)
        if new_raw is None:  # the charset cannot hold the block: UTF-8 it is
            return _as_utf8(header, raw, codec, lambda utf8: _append_block(
                utf8, "utf-8", repl, html=html))
    else:
        if not html and encode_text(repl.text, codec, html=False) is None:
            # The replacement (say, the Japanese sentence for colleagues) does not
            # fit this charset: the part becomes UTF-8 rather than show "????".
            return _as_utf8(header, raw, codec, lambda utf8: _replace_markers(
                utf8, "utf-8", repl, html=False, flowed=flowed))
        new_raw = _replace_markers(raw, codec, repl, html=html, flowed=flowed)
        if new_raw is None:
            return None
    cte = part.cte
    if cte in ("7bit", "8bit", "binary", "") and _longest_line(new_raw) > _MAX_LINE:
        cte = "quoted-printable"  # keep every line within SMTP's limit
        header = _set_field(header, "Content-Transfer-Encoding", cte)
    if cte in ("7bit", "") and raw.isascii() and not new_raw.isascii():
        # Stay 7-bit on the wire: the client may not have declared BODY=8BITMIME.
        cte = "quoted-printable"
        header = _set_field(header, "Content-Transfer-Encoding", cte)
    return header + _encode_cte(new_raw, cte, trailing=body[-2:] == b"\r\n")


def _replace_markers(raw: bytes, codec: str | None, repl: Replacement, *, html: bool,
                     flowed: bool) -> bytes | None:
    spans = [(p, p + len(MARKER)) for p in ascii_positions(raw, MARKER, codec)]
    if html:
        spans += [(m.start(), m.end()) for m in _ENCODED_MARKER.finditer(raw)]
    if not spans:
        return None
    if html and repl.html_attr is None:
        spans = [_enclosing_link(raw, start, end) for start, end in spans]
    out, last = [], 0
    for start, end in sorted(set(spans)):
        if start < last:
            continue  # inside a link element already replaced
        out += [raw[last:start], _replacement_at(raw, start, end, repl, codec, html=html,
                                                 flowed=flowed)]
        last = end
    out.append(raw[last:])
    return b"".join(out)


_LINK_OPEN = re.compile(rb"<a[\s>]", re.IGNORECASE)
_LINK_CLOSE = re.compile(rb"</a\s*>", re.IGNORECASE)


def _enclosing_link(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """The <a ...>...</a> around a marker in its href, or the marker alone."""
    tag = raw.rfind(b"<", 0, start)
    if tag <= raw.rfind(b">", 0, start) or not _LINK_OPEN.match(raw, tag):
        return start, end  # in text, or in another tag (img alt=, a comment): the marker alone
    closing = _LINK_CLOSE.search(raw, end)
    if closing is None or _LINK_OPEN.search(raw, end, closing.start()):
        return start, end
    return tag, closing.end()


def _replacement_at(raw: bytes, start: int, end: int, repl: Replacement, codec: str | None,
                    *, html: bool, flowed: bool) -> bytes:
    if html:
        in_tag = raw.rfind(b"<", 0, start) > raw.rfind(b">", 0, start)
        text = repl.html_attr if in_tag and repl.html_attr is not None else repl.html_text
        return encode_text(text, codec, html=True) or text.encode("ascii", "xmlcharrefreplace")
    # Text: the URL on a line of its own, so auto-linkers see all of it.  Inside
    # base64 the text may use bare LF (Python's generator writes it so): keep its style.
    nl = _newline(raw)
    encoded = encode_text(repl.text, codec, html=False) or repl.text.encode("ascii", "replace")
    before = b"" if start == 0 or raw[start - 1:start] == b"\n" else nl
    if flowed and before == b"" and raw[max(0, start - len(nl) - 1):start] == b" " + nl:
        before = nl  # RFC 3676: a line ending in a space flows into the next one
    after = b"" if raw[end:end + 1] in (b"\r", b"\n", b"") else nl
    return before + encoded + after


def _newline(raw: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in raw or b"\n" not in raw else b"\n"


def _append_block(raw: bytes, codec: str | None, repl: Replacement, *,
                  html: bool) -> bytes | None:
    block = encode_text(repl.html_block if html else repl.text_block, codec, html=html)
    if block is None or not ends_in_ascii(raw, codec):
        return None
    if html:
        ends = list(_BODY_END.finditer(raw))
        if ends:  # just before the last </body>; Outlook's conditional comments stay as they are
            at = ends[-1].start()
            return raw[:at] + block + raw[at:]
        return raw + block
    # The block brings its own blank line first (templates/emails/README.md).
    nl = _newline(raw)
    sep = b"" if raw.endswith(b"\n") or not raw else nl
    block = block.replace(b"\r\n", b"\n").replace(b"\n", nl)
    return raw + sep + block + (b"" if block.endswith(nl) else nl)


def _as_utf8(header: bytes, raw: bytes, codec: str | None,
             change: Callable[[bytes], bytes | None]) -> bytes | None:
    """Re-encode a text part as UTF-8 quoted-printable, with ``change`` applied."""
    if codec is None:
        return None
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        return None
    new_raw = change(text.encode("utf-8"))
    if new_raw is None:
        return None
    header = _set_param(header, "charset", "utf-8")
    header = _set_field(header, "Content-Transfer-Encoding", "quoted-printable")
    return header + _encode_cte(new_raw, "quoted-printable", trailing=True)


def _decoded(message: bytes, part: mime.Part) -> bytes:
    """The part's body with its transfer encoding undone, decoded once per part (the
    parts of one parse are those of one message, so the copies share the work)."""
    if part.decoded is None:
        part.decoded = _decode_cte(message[part.body_start:part.body_end], part.cte)
    return part.decoded


def _decode_cte(body: bytes, cte: str) -> bytes:
    if cte == "base64":
        try:
            return base64.b64decode(body)
        except binascii.Error as exc:
            raise NotInjectable(f"broken base64: {exc}") from None
    if cte == "quoted-printable":
        return _crlf(quopri.decodestring(body))
    return body


def _encode_cte(raw: bytes, cte: str, *, trailing: bool) -> bytes:
    if cte == "base64":
        return base64.encodebytes(raw).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        # quopri works on LF lines; hard line breaks stay CRLF on the wire.
        encoded = quopri.encodestring(raw.replace(b"\r\n", b"\n"))
        encoded = _crlf(encoded)
        return encoded if encoded.endswith(b"\r\n") or not trailing else encoded + b"\r\n"
    return raw


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _longest_line(raw: bytes) -> int:
    return max((len(line) for line in raw.split(b"\r\n")), default=0)


def _set_field(header: bytes, name: str, value: str) -> bytes:
    """Replace a header field (with its folded lines) or add it, leaving the rest."""
    # A field runs to its CRLF, plus folded lines (RFC 5322 2.2.3); "." would eat the CR.
    pattern = re.compile(rb"(?im)^" + re.escape(name.encode())
                         + rb"[ \t]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*")
    line = f"{name}: {value}".encode()
    if pattern.search(header):
        return pattern.sub(lambda _: line, header, count=1)
    return header[:-2] + line + b"\r\n\r\n" if header.endswith(b"\r\n\r\n") else (
        line + b"\r\n" + header)


def _set_param(header: bytes, param: str, value: str) -> bytes:
    pattern = re.compile(rb"(?i)(;\s*" + param.encode() + rb"\s*=\s*)(\"[^\"]*\"|[^;\s]+)")
    ctype = re.compile(rb"(?im)^content-type[ \t]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*")
    m = ctype.search(header)
    if m is None:
        return _set_field(header, "Content-Type", f"text/plain; {param}={value}")
    field = m.group(0)
    new_field = (pattern.sub(lambda mm: mm.group(1) + value.encode(), field, count=1)
                 if pattern.search(field) else field + f"; {param}={value}".encode())
    return header[:m.start()] + new_field + header[m.end():]
