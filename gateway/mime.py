"""A byte-level map of a MIME message: where each part's headers and body are.

Python's ``email`` generator rewrites boundaries and re-folds headers
(cpython#105333, #79062), so the gateway never re-serialises a message.
This module finds the byte ranges of every part (RFC 2045, RFC 2046
section 5.1) so that a changed part can be spliced back and every other
byte stays as it was.

It reads only the three fields it needs (Content-Type, -Transfer-Encoding,
-Disposition), in one pass over each header block, in time linear in the
message's size: the ``email`` package's parameter parser is quadratic in
the number of ``;"`` pairs (a 163 KB Content-Type took 49 s).  Where this
map and the ``email`` package (and so most mail readers) would read a
message differently (a field twice, a parameter twice, a header line that
ends the header block for one reader and not the other), the map says so
with ``Ambiguous``: a rejection is then relayed as it came, never changed
in a way one reader sees and another does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_DEPTH = 30  # nesting deeper than any real mail client produces (SPEC 5)
DEFAULT_MAX_PARTS = 1000  # gateway.max_mime_parts
# The header lines of all of a message's entities together.  Each costs about 1 us here;
# 5 million lines of "X:y" (24 MB) took 4.9 s.  Real mail has tens to hundreds (a
# hundred Received fields and a few DKIM and ARC sets stay under a thousand); Postfix
# keeps only the first 100 KB of a header (header_size_limit).
MAX_HEADER_LINES = 100_000

_KEY_PARAMS = ("boundary", "charset", "format", "delsp")  # what the map or inject reads
_WANTED = {b"content-type", b"content-transfer-encoding", b"content-disposition"}
# A header line as the ``email`` feed parser sees one: a field name of printable ASCII
# without ":" directly followed by ":", or a continuation.  Any other line ends the
# header block for it (and for readers built on it), not for a lenient reader.
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


class MimeError(ValueError):
    """The structure cannot be mapped safely (a boundary that never closes, ...)."""


class TooComplex(MimeError):
    """More parts than ``max_parts``, or nesting deeper than ``MAX_DEPTH``."""


class Ambiguous(MimeError):
    """Readers would disagree about the structure; never change such a message."""


@dataclass
class Part:
    """One entity: ``headers`` and ``body`` are half-open byte ranges into the message."""

    header_start: int
    body_start: int
    body_end: int
    content_type: str
    params: dict[str, str]
    cte: str
    disposition: str
    children: list[Part] = field(default_factory=list)
    # A line in the header block that is not a field: readers split such a block
    # differently, so this part is never changed (its fields were read up to there).
    irregular: bool = False
    # The body with its transfer encoding undone, once someone needed it (detection
    # and every copy of a rejection read the same parts: ``gateway.textparts``).
    decoded: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    def walk(self) -> list[Part]:
        out: list[Part] = []
        stack = [self]
        while stack:
            part = stack.pop()
            out.append(part)
            stack.extend(reversed(part.children))
        return out


def parse(message: bytes, *, max_parts: int = DEFAULT_MAX_PARTS) -> Part:
    """The map of ``message``; MimeError (TooComplex, Ambiguous) when it cannot be made."""
    budget = [max_parts, MAX_HEADER_LINES]
    return _entity(message, 0, len(message), "text/plain", 0, budget)


def _entity(data: bytes, start: int, end: int, default_type: str, depth: int,
            budget: list[int]) -> Part:
    if depth > MAX_DEPTH:
        raise TooComplex(f"MIME nesting deeper than {MAX_DEPTH}")
    budget[0] -= 1
    if budget[0] < 0:
        raise TooComplex("more MIME parts than gateway.max_mime_parts")
    if data.startswith(b"\r\n", start):  # no header fields at all
        header_end, body_start = start, min(start + 2, end)
    else:
        sep = data.find(b"\r\n\r\n", start, end)
        header_end, body_start = (end, end) if sep < 0 else (sep + 2, sep + 4)
    budget[1] -= data.count(b"\r\n", start, header_end)  # counted in C, before the loop
    if budget[1] < 0:
        raise TooComplex(f"more than {MAX_HEADER_LINES} header lines")
    fields, irregular = _fields(data, start, header_end)
    content_type, params = _content_type(fields.get(b"content-type"), default_type)
    cte = (fields.get(b"content-transfer-encoding") or b"7bit").decode("latin-1")
    disposition = (fields.get(b"content-disposition") or b"").decode("latin-1")
    part = Part(start, body_start, end, content_type, params, cte.strip().lower(),
                disposition.split(";")[0].strip().lower(), irregular=irregular)
    boundary = params.get("boundary")
    if part.is_multipart and boundary:
        child_type = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
        for child_start, child_end in _split(data, body_start, end, boundary.encode("latin-1")):
            part.children.append(
                _entity(data, child_start, child_end, child_type, depth + 1, budget))
    return part


def _fields(data: bytes, start: int, end: int) -> tuple[dict[bytes, bytes], bool]:
    """The unfolded values of the wanted fields (RFC 5322 2.2.3), each at most once,
    and whether a line that is not a field came first (where ``email`` starts the
    body); a wanted field after such a line is read by some readers and not others."""
    found: dict[bytes, list[bytes]] = {}  # joined at the end: += would be quadratic
    current: bytes | None = None
    irregular = False
    pos = start
    while pos < end:
        nl = data.find(b"\r\n", pos, end)
        line_end = end if nl < 0 else nl
        if data[pos:pos + 1] in (b" ", b"\t"):
            if current is not None:
                found[current].append(data[pos:line_end].strip())
        elif pos == 0 and data.startswith(b"From ", 0):
            current = None  # an mbox "From " line: no field, and no reader takes it for one
        elif _FIELD.match(data, pos, line_end) is None:
            irregular, current = True, None
        else:
            colon = data.index(b":", pos, line_end)
            name = data[pos:colon].lower()
            current = None
            if name in _WANTED:
                if irregular:
                    raise Ambiguous(f"{name.decode()} after a line that is not a field")
                if name in found:
                    raise Ambiguous(f"{name.decode()} given twice")
                found[name] = [data[colon + 1:line_end].strip()]
                current = name
        pos = line_end + 2
    return {name: b" ".join(pieces) for name, pieces in found.items()}, irregular


def _content_type(value: bytes | None, default: str) -> tuple[str, dict[str, str]]:
    """Type and parameters as the ``email`` package reads them (RFC 2045 5.1)."""
    if value is None:
        return default, {}
    text = value.decode("latin-1")
    head, _, rest = text.partition(";")
    ctype = head.strip().lower()
    if ctype.count("/") != 1:
        return "text/plain", {}  # what email.message.Message.get_content_type answers
    return ctype, _params(rest)


def _params(text: str) -> dict[str, str]:
    """``name=value`` pairs split at ``;`` outside quoted strings, in one pass."""
    params: dict[str, str] = {}
    for segment in _segments(text):
        name, eq, value = segment.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        if "*" in name:  # RFC 2231: charset*=utf-8''x, boundary*0=...
            base, _, section = name.partition("*")
            if base in _KEY_PARAMS:
                if section:
                    raise Ambiguous(f"{base} split into RFC 2231 sections")
                value, name = _rfc2231(value.strip()), base
        if name in params and name in _KEY_PARAMS:
            raise Ambiguous(f"parameter {name} given twice")
        params[name] = _unquote(value.strip())
    return params


def _segments(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    out: list[str] = []
    start, quoted, escaped = 0, False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            out.append(text[start:i])
            start = i + 1
    if quoted:
        raise Ambiguous("a quoted parameter that never closes")
    out.append(text[start:])
    return out


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if len(value) >= 2 and value[0] == "<" and value[-1] == ">":
        return value[1:-1]  # email.utils.unquote takes <> off too
    return value


def _rfc2231(value: str) -> str:
    """``charset'language'percent-encoded`` (RFC 2231 section 4), the value only."""
    parts = value.split("'", 2)
    raw = parts[2] if len(parts) == 3 else value
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), raw)


def _split(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Byte ranges of a multipart body's parts (RFC 2046 section 5.1.1).

    A delimiter is CRLF "--" boundary at the start of a line; the CRLF before
    it belongs to the delimiter, not to the part that precedes it.
    """
    dash = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    open_at: int | None = None
    at = data.find(dash, start, end)
    while at >= 0:
        # The CRLF before a delimiter belongs to it; the CRLF that ended the
        # previous delimiter line cannot serve twice (an empty part needs its own).
        line_start = at == start or (data[at - 2:at] == b"\r\n"
                                     and (open_at is None or at - 2 >= open_at))
        after = at + len(dash)
        closing = data[after:after + 2] == b"--"
        rest = after + 2 if closing else after
        line_end = data.find(b"\r\n", rest, end)
        line_end = end if line_end < 0 else line_end
        if line_start and not data[rest:line_end].strip(b" \t"):
            if open_at is not None:
                ranges.append((open_at, at - 2 if at > start else at))
            if closing:
                return ranges
            open_at = min(line_end + 2, end)
        at = data.find(dash, at + 1, end)
    raise MimeError(f"multipart boundary {boundary.decode(errors='replace')!r} never closes")
