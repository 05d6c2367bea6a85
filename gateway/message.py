"""Byte-level helpers for the parts of a message the relay must look at.

Pass-through mail is never parsed with the ``email`` package (about 2 ms a
message, and its generator rewrites headers): the relay only needs the
header block, found by its blank line (RFC 5322 section 2.1).
"""

from __future__ import annotations

import hashlib
import re
from email.utils import formatdate

_RELAY_FIELD = re.compile(rb"^x-career-relay[a-z0-9-]*[ \t]*:", re.IGNORECASE)


def header_block(data: bytes) -> bytes:
    """The header fields, each ending with CRLF, without the blank separator line."""
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


# RFC 5321 6.3: "Simple counting of the number of Received: header fields in a message
# has proven to be an effective, although rarely optimal, method of detecting loops in
# mail systems.  SMTP servers using this technique SHOULD use a large rejection
# threshold, normally at least 100 Received entries."  (Postfix's hopcount_limit is 50.)
MAX_HOPS = 100


def hops(data: bytes) -> int:
    """How many Received fields the header of ``data`` (a message or its header block)
    holds (DATA has no bare LF: the handler refuses it, so every field starts after a
    CRLF or at the top)."""
    return (b"\r\n" + header_block(data)).lower().count(b"\r\nreceived:")


def message_id(data: bytes) -> str:
    """The Message-ID, or a digest of the message: either is the same when a client retries."""
    head = header_block(data)
    lower = head.lower()  # found in C: a header may have millions of lines
    at = lower.find(b"message-id")
    while at >= 0:
        start = head.rfind(b"\r\n", 0, at)
        start = 0 if start < 0 else start + 2  # no CRLF before it: the first line
        end = head.find(b"\r\n", at)
        end = len(head) if end < 0 else end
        line = head[start:end]
        name, colon, value = line.partition(b":")
        if colon and line[:1] not in (b" ", b"\t") and name.strip().lower() == b"message-id":
            # A long field is folded onto lines that begin with white space (RFC 5322
            # 2.2.3): Python's email.policy.SMTP folds a long id onto a line of its own.
            pieces = [value]
            while head[end + 2:end + 3] in (b" ", b"\t"):
                nxt = head.find(b"\r\n", end + 2)
                nxt = len(head) if nxt < 0 else nxt
                pieces.append(head[end + 2:nxt])
                end = nxt
            # No NUL: PostgreSQL's text cannot hold one (SQLite's can), and the offers of
            # one message must be recordable on either backend.
            found = b"".join(pieces).strip().decode("utf-8", "replace").replace("\x00", "")
            if found:
                return found
        at = lower.find(b"message-id", end)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def has_bare_newline(data: bytes) -> bool:
    """True when a LF or CR appears other than in a CRLF pair.

    RFC 5321 section 2.3.8 allows CR and LF only together; accepting either
    alone is what SMTP smuggling (CVE-2023-51764 and friends) exploits.
    """
    crlf = data.count(b"\r\n")
    return data.count(b"\n") != crlf or data.count(b"\r") != crlf


def strip_relay_headers(data: bytes) -> tuple[bytes, dict[str, str]]:
    """Remove our own X-Career-Relay* fields; return them (last value wins) too.

    They carry instructions to the gateway only and must not leak to the
    recipient (SPEC 4, 5).  Every other byte of the message stays as it was.
    """
    head = header_block(data)
    if b"x-career-relay" not in head.lower():
        return data, {}
    kept: list[bytes] = []
    found: dict[str, str] = {}
    current = ""  # the X-Career-Relay* field being removed, while it continues
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):  # a folded continuation (RFC 5322 2.2.3)
            if current:
                found[current] += " " + line.strip().decode("utf-8", "replace")
            else:
                kept.append(line)
            continue
        current = ""
        if _RELAY_FIELD.match(line):
            name, _, value = line.partition(b":")
            current = name.strip().decode("ascii", "replace").lower()
            found[current] = value.strip().decode("utf-8", "replace")
        else:
            kept.append(line)
    new_head = b"".join(line + b"\r\n" for line in kept)
    return new_head + data[len(head):], found


def received_header(
    *, helo: str, ip: str, hostname: str, protocol: str, queue_id: str, rcpts: list[str]
) -> bytes:
    """The trace field we prepend (RFC 5321 section 4.4, protocols from RFC 3848).

    "for" names the recipient only when there is exactly one, as Postfix
    does, so Bcc recipients are not revealed to each other.
    """
    helo = "".join(ch for ch in helo if 32 < ord(ch) < 127)[:255] or "unknown"
    for_clause = f"\r\n\tfor <{rcpts[0]}>" if len(rcpts) == 1 else ""
    return (f"Received: from {helo} ([{ip}])\r\n\tby {hostname} (career-relay) with "
            f"{protocol} id {queue_id}{for_clause};\r\n\t{formatdate(localtime=True)}\r\n"
            ).encode()
