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

import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway import mime
from gateway.charsets import ascii_view, encode_text, ends_in_ascii, scannable
from gateway.html_context import HtmlContext
from gateway.part_writing import encode_cte, longest_line, set_field, set_param
from gateway.spliced import Base, Spliced
from gateway.spliced import splice as spliced_edits
from gateway.textparts import (
    ENCODED_MARKER as _ENCODED_MARKER,
)
from gateway.textparts import (
    MARKER,
    UNTOUCHABLE,
    TextPart,
    Undecodable,
    base64_intact,
    text_parts,
)

_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)
_MAX_LINE = 998  # octets, without CRLF (RFC 5322 section 2.1.1)
_GLUE_WINDOW = 2048  # bytes looked back for the word a marker is glued to
# A template holds a marker or two per part; a million of them turned a 25 MB message
# into 116 MB copies at 10 s of CPU each.  More than this: the message is not changed.
MAX_MARKERS_PER_PART = 100
_MAX_TRIES = 8  # </body> positions tried for the appended block


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
    """How many inline text parts carry the marker after their encodings are undone."""
    root = root or mime.parse(message)
    return sum(1 for tp in text_parts(message, root)
               if tp.has_marker() or (tp.html and _ENCODED_MARKER.search(tp.raw)))


def inject(message: bytes, repl: Replacement, *, append: bool,
           root: mime.Part | None = None) -> bytes:
    """The message with the marker replaced, or (``append``) the block added.

    Raises NotInjectable when nothing could take the link, or when a part that
    should take it cannot (an unknown charset or transfer encoding, broken
    base64): a copy never goes out with the link in one part and a bare marker
    in another.  ``root`` is ``mime.parse(message)`` when the caller has it.
    """
    return bytes(splice(Base("", message), repl, append=append, root=root))


def splice(base: Base, repl: Replacement, *, append: bool,
           root: mime.Part | None = None) -> Spliced:
    """``inject``, as the pieces that make the copy from ``base`` (``gateway.spliced``):
    the copies of one rejection share the message and differ in a few bytes."""
    message = base.data
    root = root or mime.parse(message)
    if root.content_type in UNTOUCHABLE:
        raise NotInjectable(f"{root.content_type} is never changed")
    edits: list[tuple[int, int, bytes]] = []
    boundaries = [p.params["boundary"].encode("latin-1") for p in root.walk()
                  if p.is_multipart and p.params.get("boundary")]
    for tp in text_parts(message, root, body_only=append):
        new = _edit_part(message, tp, repl, append=append)
        if new is not None:
            new = _no_delimiters(new, boundaries)
            edits.append((tp.part.header_start, tp.part.body_end, new))
    if not edits:
        raise NotInjectable("no text part could take the link")
    return spliced_edits(base, edits)


def _no_delimiters(part: bytes, boundaries: list[bytes]) -> bytes:
    """A changed part must not hold a line that delimits an enclosing multipart.

    Decoded text may say "--alt--" harmlessly while encoded (=2D=2Dalt--, base64); a
    part written back as quoted-printable would close the multipart early (RFC 2046
    5.1.1), so such a line is written =2D-alt-- (RFC 2045 6.7).  Unencoded, it cannot
    be escaped: the message is not changed.
    """
    if not boundaries or b"\r\n--" not in part:
        return part
    lines = part.split(b"\r\n")
    quoted = b"quoted-printable" in part[:part.find(b"\r\n\r\n")].lower()
    for i, line in enumerate(lines):
        if line.startswith(b"--") and any(line[2:].startswith(b) for b in boundaries):
            if not quoted:
                raise NotInjectable("the new text would hold a multipart delimiter")
            lines[i] = b"=2D" + line[1:]
    return b"\r\n".join(lines)


def _edit_part(message: bytes, tp: TextPart, repl: Replacement, *,
               append: bool) -> bytes | None:
    part, raw, codec = tp.part, tp.raw, tp.codec
    header = message[part.header_start:part.body_start]
    body = message[part.body_start:part.body_end]
    html = tp.html
    flowed = part.params.get("format", "").lower() == "flowed"
    try:
        spans = [] if append else _spans(tp)
    except Undecodable as exc:  # the marker is there, but only in decoded characters
        spans = None
        reason = str(exc)
    if not append and spans == []:
        return None  # nothing to do in this part
    if part.irregular:
        raise NotInjectable("a text part whose header block readers split differently")
    if not tp.known_cte:
        raise NotInjectable(f"a text part with unknown transfer encoding {part.cte[:40]!r}")
    if part.cte == "base64" and not base64_intact(message, part):
        raise NotInjectable("broken base64 in a text part")
    if spans is None:
        new = _as_utf8(header, raw, codec, lambda utf8: _replace_markers(
            utf8, "utf-8", _spans_in(utf8, html), repl, html=html, flowed=flowed))
        if new is None:
            raise NotInjectable(reason)
        return new
    if append:
        # In UTF-16 and the like, line ends and the block are no ASCII bytes: the part
        # becomes UTF-8, where they are.
        new_raw = _append_block(raw, codec, repl, html=html) if scannable(codec) else None
        if new_raw is None:  # the charset cannot hold the block: UTF-8 it is
            new = _as_utf8(header, raw, codec, lambda utf8: _append_block(
                utf8, "utf-8", repl, html=html))
            if new is None:
                raise NotInjectable(f"cannot add the block to a {tp.charset[:40]!r} part")
            return new
    else:
        if not html and encode_text(repl.text, codec, html=False) is None:
            # The replacement (say, the Japanese sentence for colleagues) does not
            # fit this charset: the part becomes UTF-8 rather than show "????".
            new = _as_utf8(header, raw, codec, lambda utf8: _replace_markers(
                utf8, "utf-8", _spans_in(utf8, html), repl, html=False, flowed=flowed))
            if new is None:  # its bytes are not its charset: it cannot be re-encoded
                raise NotInjectable(f"a marked part whose bytes are not {tp.charset[:40]!r}")
            return new
        new_raw = _replace_markers(raw, codec, spans, repl, html=html, flowed=flowed)
        if new_raw is None:
            return None
    cte = part.cte
    if cte in ("7bit", "8bit", "binary", "") and longest_line(new_raw) > _MAX_LINE:
        cte = "quoted-printable"  # keep every line within SMTP's limit
        header = set_field(header, "Content-Transfer-Encoding", cte)
    if cte in ("7bit", "") and raw.isascii() and not new_raw.isascii():
        # Stay 7-bit on the wire: the client may not have declared BODY=8BITMIME.
        cte = "quoted-printable"
        header = set_field(header, "Content-Transfer-Encoding", cte)
    return header + encode_cte(new_raw, cte, trailing=body[-2:] == b"\r\n")


def _spans(tp: TextPart) -> list[tuple[int, int]]:
    spans = tp.marker_spans()
    if tp.html:
        spans += [(m.start(), m.end()) for m in _ENCODED_MARKER.finditer(tp.raw)]
    if len(spans) > MAX_MARKERS_PER_PART:
        raise NotInjectable(f"more than {MAX_MARKERS_PER_PART} markers in one part")
    return sorted(spans)


def _spans_in(utf8: bytes, html: bool) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    at = utf8.find(MARKER)
    while at >= 0 and len(spans) <= MAX_MARKERS_PER_PART:
        spans.append((at, at + len(MARKER)))
        at = utf8.find(MARKER, at + len(MARKER))
    if html:
        spans += [(m.start(), m.end()) for m in _ENCODED_MARKER.finditer(utf8)]
    return sorted(spans)


def _replace_markers(raw: bytes, codec: str | None, spans: list[tuple[int, int]],
                     repl: Replacement, *, html: bool, flowed: bool) -> bytes | None:
    """``raw`` with each marker where a link belongs replaced; None if there is none.

    Linear in the part however many markers it holds: the HTML context is
    read once, front to back (a 5.9 MB part of markers took 13 s when each
    marker searched back to the start).
    """
    if not spans:
        return None
    nl = _newline(raw)
    view = ascii_view(raw, codec)  # the ASCII structure: kanji bytes are never tags
    where = HtmlContext(view) if html else None
    out, last = [], 0
    for start, end in spans:
        if start < last:
            continue  # inside a link element already replaced
        if where is None:
            new = _text_replacement(view, start, end, repl, codec, nl, flowed=flowed)
            if new is None:
                continue
        else:
            found = _html_replacement(view, start, end, repl, codec, where)
            if found is None:
                continue
            start, end, new = found
        out += [raw[last:start], new]
        last = end
    if not out:
        return None
    out.append(raw[last:])
    return b"".join(out)


_LINK_OPEN = re.compile(rb"<a[\s>]", re.IGNORECASE)
_HREF_BEFORE = re.compile(rb"\shref\s*=\s*([\"']?)$", re.IGNORECASE)


def _html_replacement(raw: bytes, start: int, end: int, repl: Replacement, codec: str | None,
                      where: HtmlContext) -> tuple[int, int, bytes] | None:
    """(start, end, bytes) replacing the marker at start..end, or None to leave it.

    A link goes only where one belongs (SPEC 5): the whole href of an <a>, or
    HTML text.  In any other attribute (img src, a style, a form action), inside
    a longer URL, a comment or a script, the marker stays as it is, so the
    personal link never reaches a third party.
    """
    r_start, r_end, kind = where.at(start)
    if kind == "text":
        if _in_longer_url(raw, start):
            return None
        return start, end, _html_bytes(repl.html_text, codec)
    if kind != "tag" or not _LINK_OPEN.match(raw, r_start):
        return None
    before = _HREF_BEFORE.search(raw, r_start, start)
    if before is None:
        return None
    quote = before.group(1)
    following = raw[end:end + 1]
    if quote and following != quote:
        return None  # inside a longer value
    if not quote and following not in (b" ", b"\t", b"\r", b"\n", b">", b"/"):
        return None
    if repl.html_attr is not None:
        return start, end, _html_bytes(repl.html_attr, codec)
    closing = where.closing_a(r_end - 1)  # a copy without a link: the whole element goes
    nested = _LINK_OPEN.search(raw, r_end, closing) if closing is not None else None
    if closing is None or nested is not None:
        return start, end, _html_bytes("#", codec)
    return r_start, closing, _html_bytes(repl.html_text, codec)


def _html_bytes(text: str, codec: str | None) -> bytes:
    return encode_text(text, codec, html=True) or text.encode("ascii", "xmlcharrefreplace")


def _text_replacement(raw: bytes, start: int, end: int, repl: Replacement, codec: str | None,
                      nl: bytes, *, flowed: bool) -> bytes | None:
    """The URL on a line of its own, so auto-linkers see all of it; None inside a URL."""
    if _in_longer_url(raw, start):
        return None
    encoded = encode_text(repl.text, codec, html=False) or repl.text.encode("ascii", "replace")
    before = b"" if start == 0 or raw[start - 1:start] == b"\n" else nl
    if flowed and before == b"" and raw[max(0, start - len(nl) - 1):start] == b" " + nl:
        before = nl  # RFC 3676: a line ending in a space flows into the next one
    after = b"" if raw[end:end + 1] in (b"\r", b"\n", b"") else nl
    return before + encoded + after


def _in_longer_url(raw: bytes, start: int) -> bool:
    """True when the marker ends a word that is a URL (``https://t.example/?u=``): a
    link there would reach that host (SPEC 5).  Looks back a bounded window only."""
    window = raw[max(0, start - _GLUE_WINDOW):start]
    cut = max(window.rfind(b" "), window.rfind(b"\n"), window.rfind(b"\t"),
              window.rfind(b'"'), window.rfind(b"'"), window.rfind(b">"))
    if cut < 0 and start > _GLUE_WINDOW:
        return True  # a word longer than any real one: take it for a URL
    word = window[cut + 1:].lower()
    return b"://" in word or word.startswith(b"www.") or word.endswith((b"=", b"/", b"?", b"&"))


def _newline(raw: bytes) -> bytes:
    # Inside base64 the text may use bare LF (Python's generator writes it so): keep its style.
    return b"\r\n" if b"\r\n" in raw or b"\n" not in raw else b"\n"


def _append_block(raw: bytes, codec: str | None, repl: Replacement, *,
                  html: bool) -> bytes | None:
    block = encode_text(repl.html_block if html else repl.text_block, codec, html=html)
    if block is None or not ends_in_ascii(raw, codec):
        return None
    if html:
        # Just before the last </body> that is HTML text (not in a comment, a textarea or
        # a script, whose "</body>" is no end), else at the very end if that is text;
        # else nowhere: a block inside a form's textarea would be posted to its action.
        view = ascii_view(raw, codec)
        ends = [m.start() for m in _BODY_END.finditer(view)][-_MAX_TRIES:]
        for at in [*reversed(ends), len(raw)]:
            if HtmlContext(view).at(at)[2] == "text":
                return raw[:at] + block + raw[at:]
        return None
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
    except UnicodeError:
        return None
    new_raw = change(text.encode("utf-8"))
    if new_raw is None:
        return None
    header = set_param(header, "charset", "utf-8")
    header = set_field(header, "Content-Transfer-Encoding", "quoted-printable")
    return header + encode_cte(new_raw, "quoted-printable", trailing=True)
