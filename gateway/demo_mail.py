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
import email.policy
from email.parser import BytesParser
from pathlib import Path

from career_relay.errors import UserError
from career_relay.sample_mail import MARKER, Sent, message_links, send_test

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
    with path.open("rb") as f:
        message = BytesParser(policy=email.policy.default).parse(f)
    return Captured(path, str(message.get("From", "")), str(message.get("To", "")),
                    str(message.get("Subject", "")), message_links(message))
