"""How a part the splicer changed is written back (``gateway.inject``).

Its new text in its transfer encoding (RFC 2045 section 6: base64, quoted-printable
on CRLF lines, or as it is), and its header fields set or added without touching the
others (RFC 5322 section 2.2.3 folding; RFC 2231 parameters).
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re

__all__ = ["encode_cte", "longest_line", "set_field", "set_param"]


def encode_cte(raw: bytes, cte: str, *, trailing: bool) -> bytes:
    if cte == "base64":
        return base64.encodebytes(raw).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        # Encoded on LF lines; hard line breaks go out as CRLF.
        text = raw.replace(b"\r\n", b"\n")
        if b"\r" in text:
            # A lone CR must go out as =0D (RFC 2045 6.7; raw, it is a bare CR, RFC 5321
            # 2.3.8).  binascii.b2a_qp takes "\r\n" for a line break (so "\r\r\n" lost a
            # CR and switched its line ends) and counts a CR as one column: so each line is
            # encoded alone, with every CR and LF as data, and folds at 76 with the
            # escapes counted (attack review).
            encoded = b"\n".join(binascii.b2a_qp(line, istext=False)
                                 for line in text.split(b"\n"))
        else:
            encoded = quopri.encodestring(text)
        encoded = encoded.replace(b"\n", b"\r\n")
        return encoded if encoded.endswith(b"\r\n") or not trailing else encoded + b"\r\n"
    return raw


def longest_line(raw: bytes) -> int:
    return max((len(line) for line in raw.split(b"\r\n")), default=0)


def set_field(header: bytes, name: str, value: str) -> bytes:
    """Replace a header field (with its folded lines) or add it, leaving the rest."""
    # A field runs to its CRLF, plus folded lines (RFC 5322 2.2.3); "." would eat the CR.
    pattern = re.compile(rb"(?im)^" + re.escape(name.encode())
                         + rb"[ \t]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*")
    line = f"{name}: {value}".encode()
    if pattern.search(header):
        return pattern.sub(lambda _: line, header, count=1)
    return header[:-2] + line + b"\r\n\r\n" if header.endswith(b"\r\n\r\n") else (
        line + b"\r\n" + header)


def set_param(header: bytes, param: str, value: str) -> bytes:
    # charset*=utf-8''... (RFC 2231) is the same parameter: it is replaced, never doubled.
    # An empty value ("charset=") is the parameter too: replaced, never doubled.
    pattern = re.compile(rb"(?i)(;\s*" + param.encode() + rb")\*?(\s*=[ \t]*)(\"[^\"]*\"|[^;\s]*)")
    ctype = re.compile(rb"(?im)^content-type[ \t]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*")
    m = ctype.search(header)
    if m is None:
        return set_field(header, "Content-Type", f"text/plain; {param}={value}")
    field = m.group(0)
    new_field = (pattern.sub(lambda mm: mm.group(1) + mm.group(2) + value.encode(), field,
                             count=1)
                 if pattern.search(field) else field + f"; {param}={value}".encode())
    return header[:m.start()] + new_field + header[m.end():]
