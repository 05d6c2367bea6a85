"""Bounces: RFC 3464 delivery status notifications to the envelope sender.

A DSN is sent with the null reverse-path (RFC 5321 section 4.5.5) so that it
can never cause another bounce, and it is never sent for a message whose own
sender was null.  It carries the original headers only (text/rfc822-headers,
RFC 6522), not the body, so a candidate's data does not travel twice.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate
from pathlib import Path
from string import Template

from gateway.envelope import Envelope

_STATUS = re.compile(rb"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


def _enhanced_status(reply: str, default: str) -> str:
    """RFC 3463 status from a reply such as '550 5.1.1 no such user'."""
    text = reply.split(" ", 1)[1] if " " in reply else ""
    m = _STATUS.match(text.encode())
    return m.group(1).decode() if m else default


def build_dsn(
    env: Envelope,
    original: bytes,
    failed: dict[str, str],
    *,
    hostname: str,
    remote_mta: str,
    template_dir: Path,
) -> bytes:
    """The bytes of a DSN for ``failed`` (recipient -> the reply or reason)."""
    boundary = f"=_cr_dsn_{secrets.token_hex(12)}"
    headers = original.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    human = Template((template_dir / "dsn.txt").read_text(encoding="utf-8")).safe_substitute(
        hostname=hostname,
        recipients="\n".join(f"  <{r}>: {why}" for r, why in failed.items()),
        reason="; ".join(sorted(set(failed.values()))),
    )
    arrival = format_datetime(datetime.fromtimestamp(env.arrival, UTC))
    per_rcpt = []
    for rcpt, reply in failed.items():
        code = reply.split(" ", 1)[0]
        status = _enhanced_status(reply, "5.0.0" if code.startswith("5") else "4.4.7")
        lines = [f"Final-Recipient: rfc822; {rcpt}", "Action: failed", f"Status: {status}"]
        if code.isdigit():
            lines += [f"Remote-MTA: dns; {remote_mta}", f"Diagnostic-Code: smtp; {reply}"]
        else:
            lines += [f"Diagnostic-Code: x-career-relay; {reply}"]
        per_rcpt.append("\r\n".join(lines))
    status_part = "\r\n".join([f"Reporting-MTA: dns; {hostname}",
                               f"X-Career-Relay-Queue-ID: {env.id}",
                               f"Arrival-Date: {arrival}"])
    status_part += "\r\n\r\n" + "\r\n\r\n".join(per_rcpt) + "\r\n"
    body64 = base64.encodebytes(human.encode("utf-8")).replace(b"\n", b"\r\n")
    head = "\r\n".join([
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{env.mail_from}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {formatdate(time.time(), localtime=False)}",
        f"Message-ID: <{env.id}.{secrets.token_hex(6)}@{hostname}>",
        "Auto-Submitted: auto-replied",  # RFC 3834: no auto-reply loops
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ])
    parts = [
        head.encode() + b"\r\n\r\nThis is a MIME-encapsulated delivery status notification.\r\n",
        f"--{boundary}\r\n".encode()
        + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + body64,
        f"--{boundary}\r\n".encode()
        + b"Content-Type: message/delivery-status\r\n\r\n" + status_part.encode(),
        f"--{boundary}\r\n".encode()
        + b"Content-Type: text/rfc822-headers\r\n\r\n" + headers,
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)
