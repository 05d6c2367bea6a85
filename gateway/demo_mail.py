"""The first hour's two helpers: ``send-test`` and ``outbox last`` (issue 14, item 5).

``send_test`` sends an ordinary or a rejection test message to the running
gateway over SMTP on ``gateway.listen`` with Python's own ``smtplib``, so the
Quickstart needs nothing that ``make run`` did not install (it needed
``swaks``).  ``last_message`` reads the newest ``.eml`` the demo's capture
upstream wrote and returns its links decoded: in the file a long link is cut by
quoted-printable soft breaks (RFC 2045 6.7: lines of at most 76 characters,
``=`` at the end of a broken one), so copied from there it gives a 404.

``send_test`` itself is ``career_relay.sample_mail``'s (the admin pages' "Get started"
sends its test rejection with it too); it is named here for the command line.

Both run in the command line's process, never on the SMTP path: a blocking
``smtplib`` and the ``email`` package's full parse are at home here.
"""

from __future__ import annotations

import dataclasses
import email.header
import email.policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from career_relay.errors import UserError
from career_relay.sample_mail import MARKER, Sent, message_links, send_test
from career_relay.terminal import printable

__all__ = ["MARKER", "Captured", "Sent", "last_message", "read_captured", "send_test"]

# -- the demo's outbox ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Captured:
    path: Path
    sender: str
    to: str
    subject: str
    links: tuple[str, ...]  # every http(s) link of the text and HTML parts, decoded, once


def last_message(directory: Path) -> Captured:
    """The newest message the capture upstream wrote to ``directory``, with its links."""
    found = sorted(directory.glob("*.eml"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    if not found:
        raise UserError(f"no message in {directory} yet: send one with `career-relay "
                        "send-test` while `career-relay serve` runs")
    return read_captured(found[-1])


def read_captured(path: Path) -> Captured:
    """The message in ``path``; one nested deeper than Python's stack allows (the parser
    and ``walk`` recurse per level) is a ``UserError``, not a RecursionError."""
    try:
        with path.open("rb") as f:
            message = BytesParser(policy=email.policy.default).parse(f)
        return Captured(path, _header(message, "From"), _header(message, "To"),
                        _header(message, "Subject"), message_links(message))
    except RecursionError:
        raise UserError(f"{printable(str(path))}: the message's MIME parts are nested too "
                        "deeply to read") from None


def _header(message: EmailMessage, name: str) -> str:
    """The header decoded (RFC 2047), or as it was written when the email package cannot
    decode it: an encoded display name holding a CR or LF is a ValueError there, and its
    header parsers have raised IndexError and AttributeError on other odd input."""
    try:
        return str(message.get(name, ""))
    except Exception:  # any parse failure: decoded word by word, or as it is
        raw = next((str(v) for k, v in message.raw_items() if k.lower() == name.lower()), "")
        try:
            return str(email.header.make_header(email.header.decode_header(raw)))
        except Exception:
            return raw
