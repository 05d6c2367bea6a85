"""A byte-level map of a MIME message: where each part's headers and body are.

Python's ``email`` generator rewrites boundaries and re-folds headers
(cpython#105333, #79062), so the gateway never re-serialises a message.
This module finds the byte ranges of every part (RFC 2045, RFC 2046
section 5.1) so that a changed part can be spliced back and every other
byte stays as it was.  Header values are parsed with the ``email`` package,
one header block at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

_HEADERS = BytesHeaderParser(policy=compat32)
_MAX_DEPTH = 20  # nesting deeper than any real mail client produces


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
    # The body with its transfer encoding undone, once someone needed it
    # (``inject``: the marker count and every copy of a rejection read it).
    decoded: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    def walk(self) -> list[Part]:
        out = [self]
        for child in self.children:
            out += child.walk()
        return out


class MimeError(ValueError):
    """The structure cannot be mapped safely (a boundary that never closes, ...)."""


def parse(message: bytes) -> Part:
    return _entity(message, 0, len(message), "text/plain", 0)


def _entity(data: bytes, start: int, end: int, default_type: str, depth: int) -> Part:
    if depth > _MAX_DEPTH:
        raise MimeError("MIME nesting too deep")
    sep = data.find(b"\r\n\r\n", start, end)
    if data[start:start + 2] == b"\r\n":  # no header fields at all
        header_end, body_start = start, start + 2
    elif sep < 0:
        header_end = body_start = end
    else:
        header_end, body_start = sep + 2, sep + 4
    headers = _HEADERS.parsebytes(data[start:header_end])
    content_type, params = _content_type(headers, default_type)
    part = Part(start, body_start, end, content_type, params,
                str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower(),
                str(headers.get("Content-Disposition", "")).split(";")[0].strip().lower())
    boundary = params.get("boundary")
    if part.is_multipart and boundary:
        child_type = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
        for child_start, child_end in _split(data, body_start, end, boundary.encode()):
            part.children.append(_entity(data, child_start, child_end, child_type, depth + 1))
    return part


def _content_type(headers: Message, default: str) -> tuple[str, dict[str, str]]:
    if headers.get("Content-Type") is None:
        return default, {}
    ctype = headers.get_content_type()
    params: dict[str, str] = {}
    for item in headers.get_params(failobj=[]) or []:
        if isinstance(item, tuple) and len(item) == 2 and item[0] and item[0] != ctype:
            value = item[1]
            params[item[0].lower()] = (value if isinstance(value, str)
                                       else str(value[2] if isinstance(value, tuple) else value))
    return ctype, params


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
